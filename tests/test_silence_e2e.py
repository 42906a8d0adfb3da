"""Dead air end to end: a real Icecast, a listener, a track with silence at
both ends and inside, ``--silence-alarm 2 --trim-silence``: the warning while
the silence goes out, /metrics and /api/stations showing it, and the
listener's recording trimmed at the ends, whole in the middle, clean."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.test_silence import _decodes_cleanly, _encode, _loud_stretches, _pcm

pytestmark = pytest.mark.integration


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


@pytest.mark.parametrize("quiet", ["silence", "dithered"], ids=["digital", "sox-dithered"])
def test_dead_air_is_told_and_the_ends_are_trimmed(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
    quiet: str,
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    parts = [(quiet, 3), ("tone", 2), (quiet, 4), ("tone", 2), (quiet, 3)]
    _encode(music, "01-gaps", "lame-cbr128", parts)
    for leftover in music.glob("*.wav"):
        leftover.unlink()
    port = free_port()
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    station = unique_mount.strip("/")
    listener = Listener(icecast.port, unique_mount, connect_timeout=30).start()
    process = start_pushsource(
        "stream", music, url, "--once", "--silence-alarm", "2", "--trim-silence",
        "--control", str(port), "--no-console",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    gauge: list[tuple[float, float]] = []  # (time, pushsource_silence_seconds)
    alarms: list[float] = []  # when /api/stations showed the alarm
    warned: float | None = None  # when the warning line was first in the log
    pattern = re.compile(rf'pushsource_silence_seconds\{{station="{station}"\}} (\S+)')
    try:
        deadline = time.monotonic() + 40
        while process.proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            try:
                found = pattern.search(_get(f"{base}/metrics"))
                stations = json.loads(_get(f"{base}/api/stations"))
            except OSError:  # not up yet, or gone
                time.sleep(0.1)
                continue
            if found:
                gauge.append((now, float(found.group(1))))
            mine = [s for s in stations["stations"] if s["id"] == station]
            if mine and mine[0]["silence"]["alarm"]:
                alarms.append(now)
            if warned is None and "dead air" in process.stdout + process.stderr:
                warned = now
            time.sleep(0.1)
        assert process.wait(20) == 0, process.describe()
        listener.wait_closed(10)
    finally:
        listener.stop()

    log = process.stdout + process.stderr
    warnings = [line for line in log.splitlines() if "dead air:" in line]
    assert len(warnings) == 1, log
    assert "s of silence going out (track: 01-gaps [01-gaps.mp3])" in warnings[0]
    assert re.search(r"sound is back after [45] s of silence", log), log
    assert re.search(r"trimmed [23]\.\d s of silence at the start, [23]\.\d s at the end", log), log
    # The gauge went above 0 in the silence and back to 0 after it; the
    # warning and the API's alarm came while it was above 0.
    quiet = [t for t, seconds in gauge if seconds > 0]
    assert quiet, gauge
    # Back to 0 after the dead air (the 4 s run, past the 2 s alarm); what
    # the end's trim leaves (under a second) may be the last sample taken.
    dead = [t for t, seconds in gauge if seconds >= 2.0]
    assert dead, gauge
    assert any(seconds == 0 for t, seconds in gauge if t > dead[-1]), gauge
    assert warned is not None and quiet[0] <= warned <= dead[-1] + 0.5, (warned, dead)
    assert alarms and quiet[0] <= alarms[0] <= dead[-1] + 0.5, (alarms, dead)

    # What the listener heard: the ends trimmed, the middle kept, clean.
    heard = tmp_path / "heard.mp3"
    heard.write_bytes(bytes(listener.audio))
    _decodes_cleanly(heard)
    samples = _pcm(heard)
    seconds = len(samples) / 44100
    loud = _loud_stretches(samples, 44100)
    assert len(loud) == 2, loud
    assert loud[0][0] < 0.5, loud  # not 3 s of silence first
    assert abs(loud[1][0] - loud[0][1] - 4.0) < 0.15, loud  # the silence inside, whole
    assert seconds - loud[1][1] < 0.6, (seconds, loud)  # not 3 s of silence at the end
    assert 8.0 < seconds < 9.0, seconds  # 14 s less 3 at each end (and the close)
