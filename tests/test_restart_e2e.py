"""A station killed with SIGKILL and started again: the play state carries it on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, unmend

pytestmark = pytest.mark.integration


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def test_kill_9_and_restart_resumes_the_queue_without_replaying(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    an_hour_ago = time.time() - 3600
    audio = {}
    for name, freq in (("a", 300), ("b", 500), ("c", 700)):
        path = music / f"{name}.mp3"
        audio[name] = make_clean_mp3(path, 3.0, freq=freq)
        os.utime(path, (an_hour_ago, an_hour_ago))  # settled: ready at once
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    state = tmp_path / "state.json"
    args = ("stream", music, url, "--state", state, "--idle", "stop", "--cache", tmp_path)

    with Listener(icecast.port, unique_mount, connect_timeout=20) as first:
        run = start_pushsource(*args)
        # Well into b: a has played, b is part-way, c is still queued.
        wait_for(lambda: audio["b"][:20000] in first.audio, 20, "b to be well under way")
        run.proc.send_signal(signal.SIGKILL)
        assert run.wait(5) == -signal.SIGKILL
        heard_of_b = len(first.audio) - bytes(first.audio).index(audio["b"][:2000])

    # A file arrives while the station is down.
    late = music / "d.mp3"
    audio["d"] = make_clean_mp3(music / ".d.tmp", 1.0, freq=900)
    (music / ".d.tmp").rename(late)

    with Listener(icecast.port, unique_mount, connect_timeout=20) as second:
        rerun = start_pushsource(*args)
        wait_for(lambda: audio["d"] in second.audio, 30, "the late file")
        rerun.proc.send_signal(signal.SIGTERM)
        assert rerun.wait(15) == 0, rerun.describe()
    stream = bytes(second.audio)
    log = rerun.stderr
    # b goes on where it was: at most one batch again (0.1 s, 1600 bytes at
    # 128 kbps, and a frame), or the listener missed up to a 1400-byte block
    # that Icecast drops when a source leaves. (The state file alone is saved
    # every 5 s: the position file holds the rest through the kill.)
    assert "resuming b" in log, log
    # (Looked up past its first frames: those may point back into the bit
    # reservoir, before the connection's first byte, and went out silenced.)
    resumed_at = audio["b"].find(stream[4096:8096]) - 4096
    assert resumed_at > 0, "the second run did not start inside b"
    rest = audio["b"][resumed_at:]
    assert unmend(stream, rest).startswith(rest), "b did not go on frame for frame"
    batch, block, frame = 1600, 1400, 418
    assert heard_of_b - batch - frame <= resumed_at <= heard_of_b + block + frame, (
        resumed_at,
        heard_of_b,
    )
    # Then the rest of the queue, then the file that came while it was down.
    assert stream.index(audio["c"]) < stream.index(audio["d"])
    assert audio["a"][:4000] not in stream, "a was played again"
    assert "playing a " not in log
