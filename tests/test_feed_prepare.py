"""A cue never converts: a file that needs converting (or measuring) goes to
the convert lane first, and the cue is asked again."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pushsource.core.effects import Cued
from pushsource.errors import CacheError, TrackError
from pushsource.workers.feed import Feed, ListSource
from tests.synth import make_frames


def feed_of(paths: list[Path], *, broken: frozenset[Path] = frozenset()) -> tuple[Feed, list[str]]:
    said: list[str] = []
    converted: set[Path] = set()

    def prepare(path: Path) -> Path:
        if path in broken:
            raise TrackError(path, "libvlc could not decode it")
        converted.add(path)
        return path

    feed = Feed(
        ListSource(paths),
        resolve=lambda p: p,
        prepare=prepare,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: said.append(str(exc)),
        ready=converted.__contains__,
    )
    return feed, said


def test_a_file_to_convert_is_handed_back_and_stays_first(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.flac").write_bytes(b"".join(make_frames(40)))
        paths.append(tmp_path / f"{name}.flac")
    feed, said = feed_of(paths)
    first = feed.cue(None, chunk=8)
    assert first.track is None and first.prepare == paths[0]
    assert feed.queued() == paths  # still shown first while it converts
    feed.prepare(paths[0])  # on the convert lane
    again = feed.cue(None, chunk=8)
    assert again.track is not None and again.track.path == paths[0]
    assert feed.queued() == paths[1:]
    assert not said


def test_a_file_that_cannot_be_converted_is_said_once_and_skipped(tmp_path: Path) -> None:
    paths = []
    for name in ("bad", "good"):
        (tmp_path / f"{name}.flac").write_bytes(b"".join(make_frames(40)))
        paths.append(tmp_path / f"{name}.flac")
    feed, said = feed_of(paths, broken=frozenset({paths[0]}))
    assert feed.cue(None, chunk=8).prepare == paths[0]
    feed.prepare(paths[0])
    assert len(said) == 1 and "libvlc could not decode it" in said[0]
    assert feed.cue(None, chunk=8).prepare == paths[1]  # the bad one skipped, silently
    feed.prepare(paths[1])
    track = feed.cue(None, chunk=8).track
    assert track is not None and track.path == paths[1]
    assert len(said) == 1


def test_a_cache_that_cannot_be_written_costs_its_output_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An output in another format whose conversions cannot be stored (the
    disk under its cache is full) goes without its copy, said once; the
    station plays every file, and the output has its copies again when the
    disk takes them."""
    paths = []
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.mp3").write_bytes(b"".join(make_frames(40)))
        paths.append(tmp_path / f"{name}.mp3")
    full = [True]
    copies: set[Path] = set()
    skipped: list[str] = []

    def copy(path: Path) -> Path:
        if full[0]:
            raise CacheError(path, "cannot write its conversion to /c: [Errno 28] No space left")
        copies.add(path)
        return path  # frames of the station's own format serve as the copy

    feed = Feed(
        ListSource(paths),
        resolve=lambda p: p,
        prepare=lambda p: p,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: skipped.append(str(exc)),
        alternates=[("64k-22050-1", "64 kbps", copy)],
        ready=copies.__contains__,
    )

    def play_next() -> Cued:
        first = feed.cue(None, chunk=8)
        assert first.prepare is not None and first.track is None
        feed.prepare(first.prepare)  # on the convert lane
        cued = feed.cue(None, chunk=8).track
        assert cued is not None and cued.path == first.prepare
        feed.release(cued.handle)
        return cued

    with caplog.at_level(logging.INFO, logger="pushsource"):
        played = [play_next(), play_next()]
        full[0] = False
        played.append(play_next())
    assert [cued.path for cued in played] == paths
    assert [sorted(cued.alts) for cued in played] == [[], [], ["64k-22050-1"]]
    assert not skipped
    lines = [r.getMessage() for r in caplog.records if "64 kbps" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "silent" in lines[0] and "[Errno 28] No space left" in lines[0]
    assert "copies again" in lines[1] and str(paths[2]) in lines[1]
