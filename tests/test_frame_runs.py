"""next_run() (the fast path of pushsource.core.frames) on real encoder output and on
the malformed corpus: exactly the frames, skips and errors of next_event(),
however the input is cut and however many frames a run may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser, FrameRun, Skipped
from pushsource.errors import FrameError, TrackError
from pushsource.workers.tracks import Track
from tests.support.malformed import CASES as MALFORMED
from tests.support.media import CORPUS

Event = Frame | Skipped


def strict(data: bytes, size: int) -> list[Event] | int:
    """next_event()'s frames and skips, or the FrameError's offset."""
    parser, events = FrameParser(), []
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    try:
        for chunk in [*chunks, b""]:
            parser.feed(chunk)
            while (event := parser.next_event()) not in (NEED_DATA, END):
                assert isinstance(event, Frame | Skipped)
                events.append(event)
    except FrameError as exc:
        return exc.offset
    return events


def fast(data: bytes, size: int, limit: int) -> list[Event] | int:
    """next_run()'s frames (runs split up) and skips, or the FrameError's offset."""
    parser, events = FrameParser(), []
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    try:
        for chunk in [*chunks, b""]:
            parser.feed(chunk)
            while (event := parser.next_run(limit)) not in (NEED_DATA, END):
                if isinstance(event, FrameRun):
                    frames = list(event.frames())
                    assert len(frames) == event.count <= limit
                    assert event.last == frames[-1].header
                    events += frames
                else:
                    assert isinstance(event, Skipped)
                    events.append(event)
    except FrameError as exc:
        return exc.offset
    return events


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """lame's output with every kind of tag and header frame, and the malformed corpus."""
    directory = tmp_path_factory.mktemp("runs")
    for name, build in CORPUS:
        build(directory / f"{name}.mp3")
    for name, build in MALFORMED:
        build(directory / f"bad-{name}.mp3")
    return [p for p in files(directory) if p.stat().st_size]  # "empty" has nothing to cut


@pytest.mark.parametrize(("size", "limit"), [(65536, 1 << 30), (4096, 3), (333, 1), (97, 50)])
def test_runs_are_the_strict_frames_of_real_files(real: list[Path], size: int, limit: int) -> None:
    walked = 0
    for path in real:
        data = path.read_bytes()
        expected = strict(data, size)
        assert fast(data, size, limit) == expected, path.name
        walked += len(expected) if isinstance(expected, list) else 0
    assert walked > 500  # the corpus did hold audio


def test_a_track_gives_the_same_frames_by_runs_and_one_by_one(real: list[Path]) -> None:
    for path in real:
        try:
            one, runs = Track(path).open(), Track(path).open()
        except TrackError:
            continue  # refused files are test_tracks' business
        by_frame = list(iter(one.next_frame, None))
        by_run: list[Frame] = []
        while (run := runs.next_run(7)) is not None:
            by_run += run.frames()
        assert [(f.offset, f.data) for f in by_run] == [(f.offset, f.data) for f in by_frame]
        assert runs.position == one.position
