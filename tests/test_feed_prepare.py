"""A cue never converts: a file that needs converting (or measuring) goes to
the convert lane first, and the cue is asked again."""

from __future__ import annotations

from pathlib import Path

from pushsource.errors import TrackError
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
