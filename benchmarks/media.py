"""The benchmark's playlist, made at run time with sox and lame.

Ordinary files, as a station would get them: 128 kbps 44.1 kHz stereo CBR, an
ID3v2 tag with artist and title, and LAME's Info header frame. Each track has
different content (noise colours, a sweep, chords) so that no two carry the
same frames, and all have the same length, so stations started together change
track at the same moment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.mp3 import audio_frames
from pushsource.ops.trial import run_tool

#: sox synth arguments for each track's sound (left channel, right channel).
SOUNDS: tuple[tuple[str, ...], ...] = (
    ("pinknoise", "pinknoise"),
    ("sine", "220-880", "sine", "330-990"),
    ("brownnoise", "sine", "440"),
    ("square", "330", "triangle", "495"),
    ("whitenoise", "sine", "660"),
)


@dataclass(frozen=True)
class Track:
    path: Path
    seconds: float
    #: The first few audio frames, to recognise the track in a listener's stream.
    first_frames: tuple[bytes, ...]


def make_mp3(path: Path, seconds: float, sound: Sequence[str], artist: str, title: str) -> Track:
    wav = path.with_suffix(".wav")
    run_tool(
        "sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
        "synth", f"{seconds}", *sound, "vol", "0.5",
    )  # fmt: skip
    run_tool(
        "lame", "--quiet", "-b", "128", "--tt", title, "--ta", artist, "--add-id3v2", wav, path
    )
    wav.unlink()
    frames = audio_frames(path.read_bytes())
    return Track(path, seconds, tuple(frames[:3]))


def make_tracks(directory: Path, count: int, seconds: float) -> list[Track]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        make_mp3(
            directory / f"track{i + 1}.mp3",
            seconds,
            SOUNDS[i % len(SOUNDS)],
            "Benchmark",
            f"Track {i + 1}",
        )
        for i in range(count)
    ]


def make_silence(path: Path, seconds: float) -> Path:
    wav = path.with_suffix(".wav")
    run_tool(
        "sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav, "trim", "0", f"{seconds}"
    )
    run_tool("lame", "--quiet", "-b", "128", wav, path)
    wav.unlink()
    return path


def playlist_order(tracks: Sequence[Track], total_seconds: float) -> list[Track]:
    """Tracks in turn until they cover total_seconds."""
    order: list[Track] = []
    covered = 0.0
    while covered < total_seconds:
        track = tracks[len(order) % len(tracks)]
        order.append(track)
        covered += track.seconds
    return order


def fill_folder(folder: Path, order: Sequence[Track]) -> None:
    """Hard links named so that name order is play order (no copies: 300
    stations share the same few files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, track in enumerate(order, start=1):
        os.link(track.path, folder / f"{number:03d}-{track.path.name}")


def write_m3u(path: Path, order: Sequence[Track]) -> Path:
    path.write_text("".join(f"{t.path}\n" for t in order), "utf-8")
    return path
