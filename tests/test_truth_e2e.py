"""What the API says, end to end (issue 14), with a real icecast2, ``pushsource
run --config`` and real listeners. After a restart: the queue shown is what
the listener then hears (no file that played already), the history is the last
run's, the resumed track's elapsed time goes on from where it was. Through an
outage: one reconnect however many attempts, and elapsed stands still."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, temp_icecast
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.test_web_e2e import free_port, get_json, wait_until

pytestmark = pytest.mark.integration

SECONDS = 6.0


def test_after_a_restart_the_queue_leaves_out_what_played_and_history_is_kept(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    an_hour_ago = time.time() - 3600
    audio = {}
    for name, freq in (("a", 300), ("b", 500), ("c", 700), ("d", 900)):
        audio[name] = make_clean_mp3(music / f"{name}.mp3", SECONDS, freq=freq)
        os.utime(music / f"{name}.mp3", (an_hour_ago, an_hour_ago))
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "rock"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
state = "state.json"
cache = "cache"
idle = "stop"
""",
        encoding="utf-8",
    )
    api = f"http://127.0.0.1:{port}/api/stations/rock"

    def c_under_way() -> bool:
        playing = get_json(api)["now_playing"]
        return bool(playing and playing["file"] == "c.mp3" and playing["elapsed"] >= 2.0)

    first = start_pushsource("run", "--config", config)
    try:
        wait_until("c well under way", c_under_way, timeout=3 * SECONDS + 10)
        before = get_json(api)
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0, first.describe()
    except BaseException:
        print(first.describe())
        raise
    assert [h["file"] for h in before["history"]] == ["c.mp3", "b.mp3", "a.mp3"]
    stopped_at = before["now_playing"]["elapsed"]

    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        second = start_pushsource("run", "--config", config)
        try:
            status = wait_until(
                "the resumed c", lambda: (s := get_json(api))["now_playing"] and s, timeout=20
            )
            # Resumed: c goes on near where it was, and only d is still to come.
            assert status["now_playing"]["file"] == "c.mp3"
            assert stopped_at - 1.0 <= status["now_playing"]["elapsed"] <= stopped_at + 2.0
            queue = wait_until("the queue", lambda: get_json(api)["queue"], timeout=5)
            assert [q["file"] for q in queue] == ["d.mp3"]
            # The history is the last run's (c resumed is not a new entry).
            assert [h["file"] for h in status["history"]] == ["c.mp3", "b.mp3", "a.mp3"]
            wait_until("d on air", lambda: audio["d"][:20000] in listener.audio, timeout=20)
            assert [h["file"] for h in get_json(api)["history"]][:2] == ["d.mp3", "c.mp3"]
            second.proc.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, second.describe()
        except BaseException:
            print(second.describe())
            raise
    heard = bytes(listener.audio)
    # What the queue said is what the listener got: neither a nor b again.
    assert audio["a"][:4000] not in heard and audio["b"][:4000] not in heard
    assert audio["c"][-8000:] in heard


@pytest.fixture
def own_icecast() -> Iterator[IcecastServer]:
    """An icecast2 of this test's own, to kill and start again."""
    with temp_icecast("truth", start=False) as server:
        yield server


def test_an_outage_is_one_reconnect_and_elapsed_stands_still_meanwhile(
    own_icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    server = own_icecast
    server.start()
    music = tmp_path / "music"
    music.mkdir()
    make_clean_mp3(music / "long.mp3", 60.0, freq=440)
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "rock"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{server.port}{unique_mount}"
state = "state.json"
""",
        encoding="utf-8",
    )
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/rock"
    run = start_pushsource("run", "--config", config)
    try:
        with Listener(server.port, unique_mount, connect_timeout=20) as first:
            first.wait_for_audio(3 * 16000, 20)
        wait_until("on air", lambda: get_json(api)["connection"]["state"] == "on air", 10)
        server.kill()
        down = wait_until(
            "reconnecting",
            lambda: (s := get_json(api))["connection"]["state"] != "on air" and s,
            timeout=10,
        )
        frozen = down["now_playing"]["elapsed"]
        time.sleep(3.0)  # several attempts, about one a second
        later = get_json(api)
        assert later["connection"]["state"] in ("reconnecting", "connecting")
        assert later["now_playing"]["elapsed"] == frozen  # stands still off air
        assert later["connection"]["attempts"] >= 2
        assert later["connection"]["reconnects"] == 1
        server.start()
        with Listener(server.port, unique_mount, connect_timeout=20) as second:
            second.wait_for_audio(16000, 20)
            back = wait_until(
                "on air again",
                lambda: (s := get_json(api))["connection"]["state"] == "on air" and s,
                timeout=10,
            )
        connection = back["connection"]
        assert connection["reconnects"] == 1 and connection["attempts"] == 0, connection
        # It goes on from where it stood, not from the 3 s and more spent away.
        assert frozen - 0.5 <= back["now_playing"]["elapsed"] <= frozen + 2.5
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'pushsource_reconnects_total{station="rock"} 1.0' in metrics
        failures = next(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('pushsource_connect_failures_total{station="rock"}')
        )
        assert failures >= 2
    except BaseException:
        print(run.describe())
        raise
