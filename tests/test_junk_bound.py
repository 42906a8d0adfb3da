"""A file with a huge non-audio part cannot hold up the reader: the parser reads at
most a bounded run of junk (MAX_JUNK) or of non-audio bytes (MAX_GAP) and ends
there, and a Track with gigabytes of zeros after its audio ends with one line."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushsource.core.frames import END, MAX_JUNK, NEED_DATA, Frame, FrameParser, Skipped
from pushsource.errors import FrameError, TrackError
from pushsource.workers.tracks import Track
from tests.support.media import make_clean_mp3
from tests.synth import id3v2, make_frames

CHUNK = 64 * 1024


def _drain(parser: FrameParser, source: Iterator[bytes]) -> tuple[list[Frame | Skipped], int]:
    """Every event, feeding ``source`` on demand; also how many bytes were fed."""
    events: list[Frame | Skipped] = []
    fed = 0
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            data = next(source, b"")
            fed += len(data)
            parser.feed(data)
        elif event is END:
            return events, fed
        else:
            assert isinstance(event, Frame | Skipped)
            events.append(event)


def _chunks(data: bytes, then_zeros: int) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
    for _ in range(0, then_zeros, CHUNK):
        yield bytes(CHUNK)


AUDIO = b"".join(make_frames(20))


def test_a_junk_tail_ends_the_input_after_max_junk() -> None:
    parser = FrameParser()
    events, fed = _drain(parser, _chunks(AUDIO, 64 * MAX_JUNK))
    assert [e for e in events if isinstance(e, Frame)] and parser.frames == 20
    assert fed <= len(AUDIO) + MAX_JUNK + 2 * CHUNK
    assert parser.gave_up is not None and "not audio" in parser.gave_up
    assert events[-1] == Skipped(len(AUDIO), events[-1].length, "junk")


def test_the_search_for_the_first_frame_is_bounded() -> None:
    parser = FrameParser()
    with pytest.raises(FrameError, match="no MPEG audio frame"):
        _drain(parser, _chunks(b"", 64 * MAX_JUNK))


def test_a_huge_tag_in_the_middle_is_bounded_by_max_gap() -> None:
    tag = id3v2(b"\0" * 10)[:6] + bytes([0x7F, 0x7F, 0x7F, 0x7F])  # claims 256 MB
    parser = FrameParser(max_gap=4 * MAX_JUNK)
    _, fed = _drain(parser, _chunks(AUDIO + tag, 64 * MAX_JUNK))
    assert parser.frames == 20 and parser.gave_up is not None
    assert fed <= len(AUDIO) + 4 * MAX_JUNK + 2 * CHUNK


def test_junk_below_the_bound_is_still_skipped() -> None:
    """A sizeable junk run between frames (but under MAX_JUNK) keeps the frames after it."""
    data = AUDIO + bytes(MAX_JUNK // 2) + AUDIO
    events, _ = _drain(FrameParser(), _chunks(data, 0))
    assert sum(isinstance(e, Frame) for e in events) == 40


def _read_bytes() -> int:
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])


def test_track_with_2_gb_of_zeros_after_its_audio(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tail.mp3"
    audio = make_clean_mp3(path, 4.0)
    os.truncate(path, len(audio) + (2 << 30))  # sparse: no real 2 GB written
    caplog.set_level(logging.WARNING, "pushsource")
    before = _read_bytes()
    track = Track(path).open()
    frames = []
    while (frame := track.next_frame()) is not None:
        frames.append(frame)
    read = _read_bytes() - before
    assert b"".join(f.data for f in frames) == audio
    assert read < len(audio) + MAX_JUNK + 4 * CHUNK + (1 << 20)  # + mutagen's tag reads
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and "not audio" in lines[0], lines


def test_track_that_is_only_zeros_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "zeros.mp3"
    path.touch()
    os.truncate(path, 2 << 30)
    before = _read_bytes()
    with pytest.raises(TrackError, match="no MPEG audio frame"):
        Track(path).open()
    assert _read_bytes() - before < MAX_JUNK + 4 * CHUNK + (1 << 20)
