# mutagen ships py.typed but leaves its tag constructors unannotated.
# mypy: disallow-untyped-calls=False
"""Loudness levelling end to end: ``pushsource run`` streams one quiet and one
loud track (made with sox and lame at test time) to a real icecast2 twice at
once, levelled to -18 LUFS on one mount and as they are on the other; real
listeners record both, and ffmpeg's ebur128 filter measures what they got."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mutagen.id3 import ID3, TXXX

from pushsource.core.frames import parse_header
from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import decode_mp3, ebur128, make_track_at

pytestmark = pytest.mark.integration

SECONDS = 6.0
TARGET = -18.0


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode("utf-8"))


def poll(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:  # the control server is not up yet
            last = error
        if last and not isinstance(last, OSError):
            return last
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout} s for {what}; last: {last!r}")


def test_quiet_and_loud_tracks_reach_the_target_and_plain_stays_byte_exact(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    quiet = make_track_at(music / "01-quiet.mp3", -30, SECONDS)
    loud = make_track_at(music / "02-loud.mp3", -10, SECONDS, sound=("sine", "500"))
    port = free_port()
    levelled_mount, plain_mount = f"{unique_mount}-levelled", f"{unique_mount}-plain"
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "levelled"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{levelled_mount}"
once = true
cache = "cache"
loudness = {TARGET}

[[station]]
id = "plain"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{plain_mount}"
once = true
cache = "cache-plain"
""",
        encoding="utf-8",
    )
    levelled = Listener(icecast.port, levelled_mount, connect_timeout=30).start()
    plain = Listener(icecast.port, plain_mount, connect_timeout=30).start()
    process = start_pushsource("run", "--config", config)
    base = f"http://127.0.0.1:{port}"
    try:
        # While it plays: the API's now playing and history, and the metric.
        status = poll(
            "the second track in the history",
            lambda: (s := json.loads(get(f"{base}/api/stations/levelled")))["history"][1:] and s,
            timeout=30,
        )
        metrics = get(f"{base}/metrics")
        plain_status = json.loads(get(f"{base}/api/stations/plain"))
        assert process.wait(SECONDS * 2 + 20) == 0, process.describe()
        levelled.wait_closed(10)
        plain.wait_closed(10)
    finally:
        levelled.stop()
        plain.stop()

    # With the option off: the files' frames, byte for byte.
    assert bytes(plain.audio[: len(quiet) + len(loud)]) == quiet + loud

    # With it on: same frame boundaries, each track at the target, nothing at full scale.
    audio = bytes(levelled.audio)
    assert len(audio) >= len(quiet) + len(loud)
    assert parse_header(audio, len(quiet)) is not None, "the loud track starts where it did"
    segments = {"quiet": audio[: len(quiet)], "loud": audio[len(quiet) : len(quiet) + len(loud)]}
    assert segments["quiet"] != quiet and segments["loud"] != loud
    for name, segment in segments.items():
        path = tmp_path / f"heard-{name}.mp3"
        path.write_bytes(segment)
        heard = ebur128(path, input_format="mp3")
        assert heard.lufs == pytest.approx(TARGET, abs=1.0), (name, heard)
    decoded = decode_mp3(audio[: len(quiet) + len(loud)], tmp_path, "heard")
    samples = memoryview(decoded.pcm).cast("h")
    assert max(max(samples), -min(samples)) < 32767

    # The gains show in the log line, the API and the metric.
    log = process.stdout + process.stderr
    lines = [line for line in log.splitlines() if "playing" in line]
    quiet_line = next(line for line in lines if "[levelled]" in line and "01-quiet" in line)
    loud_line = next(line for line in lines if "[levelled]" in line and "02-loud" in line)
    assert re.search(r"gain \+1[0-3]\.\d dB: measured -30\.\d LUFS\)", quiet_line), quiet_line
    assert re.search(r"gain -[6-9]\.\d dB: measured -10\.\d LUFS\)", loud_line), loud_line
    assert not any("gain" in line for line in lines if "[plain]" in line), lines
    history = {entry["file"]: entry["gain_db"] for entry in status["history"]}
    assert history["01-quiet.mp3"] > 10 and history["02-loud.mp3"] < -6, history
    assert status["now_playing"]["gain_db"] == history["02-loud.mp3"]
    shown = re.search(r'pushsource_track_gain_db\{station="levelled"\} (\S+)', metrics)
    assert shown is not None and float(shown.group(1)) == history["02-loud.mp3"], metrics
    assert 'pushsource_track_gain_db{station="plain"}' not in metrics
    assert plain_status["history"]
    assert all(entry["gain_db"] is None for entry in plain_status["history"]), plain_status


def test_a_tag_asking_for_60_db_with_no_believable_peak_never_clips(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """+60 dB with a peak of 0, -1 or a tiny 0.0001: once applied in full, now
    set aside and the track measured."""
    music = tmp_path / "music"
    music.mkdir()
    frames = b""
    for n, peak in enumerate(["0.000000", "-1", "0.0001"], 1):
        path = music / f"{n:02d}-tagged.mp3"
        frames += make_track_at(path, -20, 3)
        tags = ID3()
        tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+60.00 dB"]))
        tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=[peak]))
        tags.save(path)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    listener = Listener(icecast.port, unique_mount, connect_timeout=30).start()
    try:
        process = start_pushsource(
            "stream", music, url, "--once", "--loudness", str(TARGET),
            "--cache", tmp_path / "cache", "--no-console",
        )  # fmt: skip
        assert process.wait(30) == 0, process.describe()
        listener.wait_closed(10)
    finally:
        listener.stop()

    audio = bytes(listener.audio)
    assert len(audio) >= len(frames)
    decoded = decode_mp3(audio[: len(frames)], tmp_path, "heard")
    samples = memoryview(decoded.pcm).cast("h")
    assert max(max(samples), -min(samples)) < 32767
    heard = tmp_path / "heard.mp3"
    assert ebur128(heard, input_format="mp3").lufs == pytest.approx(TARGET, abs=1.0)
    log = process.stderr.splitlines()
    playing = [line for line in log if "playing" in line and "tagged" in line]
    assert len(playing) == 3 and all("measured -20." in line for line in playing), log
    doubted = [line for line in log if "ReplayGain tag not believed" in line]
    assert len(doubted) == 3, log
