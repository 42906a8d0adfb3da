"""Crossfade end to end against a real icecast2: three sine tracks of
different pitch with ``--crossfade 3``. A listener connected before the
station records everything; at each join both tones sound together (the
outgoing falling, the incoming rising), nothing goes silent, the frames more
than a second from a join are the files' own bytes, ffmpeg and mpg123 decode
the recording without a word, and every title goes on air.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import Tagged, decode_mp3, make_tagged_audio

pytestmark = pytest.mark.integration

FADE = 3.0
SECONDS = 10.0  # at least three fades: shorter tracks are not faded
TONES = (440, 660, 990)
RATE = 44100


def _tone(pcm: list[float], start: int, freq: int, rate: int = RATE) -> float:
    """The amplitude of ``freq`` in 50 ms from ``start`` (Goertzel)."""
    window = rate // 20
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for value in pcm[start : start + window]:
        s1, s2 = value + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(0.0, power)) / window


def _left(pcm: bytes) -> list[float]:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return [value / 32768 for value in samples[::2]]


def _mono(pcm: bytes) -> list[float]:
    return [value / 32768 for value in struct.unpack(f"<{len(pcm) // 2}h", pcm)]


def _mpg123_errors(path: Path) -> str:
    done = subprocess.run(
        ["mpg123", "-t", str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    lines = done.stderr.splitlines()
    return "\n".join(line for line in lines if "error" in line.lower() or "fail" in line.lower())


def _tones(folder: Path) -> list[Tagged]:
    tracks: list[Tagged] = []
    for n, freq in enumerate(TONES):
        made = make_tagged_audio(
            folder / f"0{n + 1}-tone.mp3", SECONDS, artist="Fade", title=f"Tone {freq}", freq=freq
        )
        old = time.time() - 60
        os.utime(made.path, (old, old))
        tracks.append(made)
    return tracks


def _assert_crossfaded(audio: bytes, tmp_path: Path, name: str, rate: int = RATE) -> None:
    """Decoders say nothing; at each join both tones sound together for 1.5 s
    or more, the one falling, the other rising; no gap anywhere between."""
    decoded = decode_mp3(audio, tmp_path, name)
    assert decoded.errors == "", decoded.errors
    assert _mpg123_errors(tmp_path / f"{name}.mp3") == ""
    pcm = _left(decoded.pcm) if decoded.channels == 2 else _mono(decoded.pcm)
    window = rate // 20
    levels = [
        tuple(_tone(pcm, at, freq, rate) for freq in TONES)
        for at in range(0, len(pcm) - window, window)
    ]
    # Where the music is (the recording may start and end with silence).
    sounding = [n for n, level in enumerate(levels) if max(level) > 0.05]
    first, last = sounding[0], sounding[-1]
    loudest = max(max(level) for level in levels)
    for n in range(first, last + 1):  # no gap anywhere
        assert max(levels[n]) > loudest / 4, f"a gap at {n * 0.05:.2f} s: {levels[n]}"
    for a, b in ((0, 1), (1, 2)):
        both = [n for n, level in enumerate(levels) if min(level[a], level[b]) > loudest / 10]
        assert len(both) * 0.05 >= 1.5, f"tones {TONES[a]} and {TONES[b]} together {len(both)}"
        third = len(both) // 3
        early, late = both[:third], both[-third:]
        assert sum(levels[n][a] for n in early) > 2 * sum(levels[n][a] for n in late)
        assert sum(levels[n][b] for n in late) > 2 * sum(levels[n][b] for n in early)


def test_three_tones_crossfade_with_both_sounding_and_the_rest_byte_exact(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    tracks = _tones(folder)
    low = f"{unique_mount}-64"
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}"
    with (
        Listener(icecast.port, unique_mount, connect_timeout=20) as listener,
        Listener(icecast.port, low, connect_timeout=20) as phone,
    ):
        run = start_pushsource(
            "stream", folder, f"{url}{unique_mount}",
            "--cache", tmp_path / "cache", "--once", "--crossfade", str(FADE),
            "--output", f"{url}{low} bitrate=64 samplerate=22050 channels=1",
        )  # fmt: skip
        run.proc.wait(3 * SECONDS + 20)
        listener.wait_closed(10)
        phone.wait_closed(10)
    assert run.proc.returncode == 0, run.describe()
    audio = bytes(listener.audio)
    log = run.describe()

    # Every frame more than a second from a join is the file's own.
    edge = round((FADE + 1.0) * RATE / 1152) * 418  # bytes: frames of 417/418 at 128 kbps
    for n, made in enumerate(tracks):
        assert made.audio is not None
        start = edge if n else 0
        stop = len(made.audio) - edge if n < len(tracks) - 1 else len(made.audio)
        assert made.audio[start:stop] in audio, f"{made.title}: its frames are not on air\n{log}"
    _assert_crossfaded(audio, tmp_path, "recording")
    heard = [title for _, title in listener.titles]
    for made in tracks:
        assert made.title in heard, f"{made.title} never on air: {heard}"
    # The output in another format has the same joins, in its own frames.
    _assert_crossfaded(bytes(phone.audio), tmp_path, "phone", rate=22050)
