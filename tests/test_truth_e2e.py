"""What the API says after a restart, end to end (issue 14): a real icecast2,
``pushsource run --config`` stopped and started again, and a real listener.
The queue shown is what the listener then hears (no file that played
already), the history is the last run's, and the resumed track's elapsed
time goes on from where it was."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
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
