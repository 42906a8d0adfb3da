"""Near-silence (workers/quiet.py): the "silence" sox writes by default is
one step of dither, which lame codes with data and gains like quiet music's;
decoded, it stays under -80 dBFS, so it is dead air and trimmed as such. A
quiet tone is not, and music is never decoded for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pushsource.core.gain import silent_runs
from pushsource.workers import crossfade
from pushsource.workers.feed import read_chunk
from pushsource.workers.quiet import quiet_runs
from pushsource.workers.tracks import Track
from tests.test_silence import _decodes_cleanly, _feed, _loud_stretches, _pcm, _play

RATE = 44100


def _sox(path: Path, *effect: str, dither: bool = True) -> str:
    flags = [] if dither else ["-D"]
    command = ["sox", *flags, "-n", "-r", str(RATE), "-c", "2", "-b", "16", str(path), *effect]
    subprocess.run(command, check=True, capture_output=True)
    return str(path)


def _track(tmp_path: Path, parts: list[tuple[str, float]]) -> Path:
    """lame -b 128 of ``parts``: ("dithered", s) is sox's own silence (its
    default dither: one step of noise), ("tone", s) -6 dBFS, ("quiet", s) a
    -70 dBFS tone."""
    pieces = []
    for n, (kind, seconds) in enumerate(parts):
        piece = tmp_path / f"part{n}.wav"
        if kind == "dithered":
            pieces.append(_sox(piece, "trim", "0", str(seconds)))
        elif kind == "tone":
            pieces.append(_sox(piece, "synth", str(seconds), "sine", "440", "vol", "-6dB"))
        else:
            pieces.append(_sox(piece, "synth", str(seconds), "sine", "1000", "vol", "-70dB"))
    wav, mp3 = tmp_path / "track.wav", tmp_path / "track.mp3"
    subprocess.run(["sox", *pieces, str(wav)], check=True, capture_output=True)
    subprocess.run(["lame", "--quiet", "-b", "128", str(wav), str(mp3)], check=True)
    return mp3


def _chunk(path: Path) -> tuple[bytes, list[int]]:
    track = Track(path).open()
    chunk = read_chunk(track, 1 << 20)
    track.close()
    return chunk.data, list(chunk.ends)


def test_soxs_dithered_silence_is_near_silence_and_a_quiet_tone_is_not(tmp_path: Path) -> None:
    mp3 = _track(tmp_path, [("tone", 2), ("dithered", 3), ("quiet", 3), ("tone", 2)])
    data, ends = _chunk(mp3)
    frame = 1152 / RATE
    assert silent_runs(data, ends) == ()  # no digital silence: the dither has data
    runs = quiet_runs(data, ends, ())
    assert len(runs) == 1, runs
    start, stop = runs[0]
    assert abs(start * frame - 2.0) < 0.1 and abs(stop * frame - 5.0) < 0.1, runs


@pytest.mark.parametrize("sound", ["tone", "sweep"])
def test_music_is_not_decoded_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sound: str
) -> None:
    """A -6 dBFS sine has gains over QUIET_GAIN; a sine sweep's quiet frames
    (gains to 137) code a strong partial with the linbits tables."""
    if sound == "tone":
        mp3 = _track(tmp_path, [("tone", 4)])
    else:
        wav, mp3 = tmp_path / "sweep.wav", tmp_path / "sweep.mp3"
        _sox(wav, "synth", "20", "sine", "220-880", "sine", "330-990")
        subprocess.run(["lame", "--quiet", "-b", "128", str(wav), str(mp3)], check=True)
    data, ends = _chunk(mp3)

    def never(*args: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(crossfade, "decode", never)
    assert quiet_runs(data, ends, ()) == ()


def test_dithered_silence_at_the_ends_is_trimmed_the_middle_kept(tmp_path: Path) -> None:
    mp3 = _track(
        tmp_path, [("dithered", 3), ("tone", 2), ("dithered", 3), ("tone", 2), ("dithered", 3)]
    )
    _, data = _play(_feed(mp3))
    out = tmp_path / "trimmed.mp3"
    out.write_bytes(data)
    _decodes_cleanly(out)
    samples = _pcm(out)
    seconds = len(samples) / RATE
    assert 6.8 < seconds < 7.5, seconds  # 13 s less about 3 at each end
    loud = _loud_stretches(samples, RATE)
    assert len(loud) == 2 and loud[0][0] < 0.3, loud
    assert abs(loud[1][0] - loud[0][1] - 3.0) < 0.1  # the silence inside kept
