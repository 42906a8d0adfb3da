"""What is coming and what is wrong, as the status says it (issue 23): up
next in every idle mode (the loop's next file too, known without a walk of
the folder per request), titles and lengths of the queue, library and
history from the tags (read on a worker, never by the status), and how long
a station has been down."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pushsource.engine.loop import Engine
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import StationSettings
from pushsource.workers.catalog import Catalog
from pushsource.workers.feed import Feed, ListSource
from pushsource.workers.state import PlayState, load_state, save_state
from pushsource.workers.tracks import TrackInfo
from tests.support.media import make_clean_mp3, make_tagged_audio
from tests.synth import make_frames


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- the catalog: no reader opens a file -------------------------------------------------


def test_a_lookup_reads_nothing_and_a_worker_reads_what_was_wanted(tmp_path: Path) -> None:
    read: list[Path] = []

    def reader(path: Path) -> TrackInfo:
        read.append(path)
        return TrackInfo(f"title of {path.name}", 12.5, 128)

    catalog = Catalog(read=reader)
    a, b, c = (tmp_path / n for n in ("a.mp3", "b.mp3", "c.mp3"))
    assert catalog.lookup([a, b]) == [None, None]
    assert read == [] and catalog.wanted
    catalog.put(c, TrackInfo("C", 3.0, 128))  # opened to play: no read of its own
    assert catalog.read_some(batch=1)
    assert read == [a]
    assert catalog.read_some()
    assert read == [a, b] and not catalog.wanted
    assert not catalog.read_some()
    assert catalog.lookup([a, c]) == [
        TrackInfo("title of a.mp3", 12.5, 128),
        TrackInfo("C", 3.0, 128),
    ]
    assert read == [a, b]  # known: not read again


def test_the_catalog_keeps_a_bounded_number_of_files(tmp_path: Path) -> None:
    catalog = Catalog(read=lambda p: TrackInfo(p.name, None, None), keep=2)
    paths = [tmp_path / f"{n}.mp3" for n in range(3)]
    catalog.lookup(paths)
    while catalog.read_some():
        pass
    assert catalog.lookup(paths[1:]) == [
        TrackInfo("1.mp3", None, None),
        TrackInfo("2.mp3", None, None),
    ]
    assert catalog.lookup(paths[:1]) == [None]  # the oldest went


# -- the loop's next file ----------------------------------------------------------------


class Folder(ListSource):
    """A queue that, like a watched folder's, is never done with."""

    def exhausted(self) -> bool:
        return False


def looping_feed(paths: list[Path], queued: list[Path], scans: list[int]) -> Feed:
    def library() -> list[Path]:
        scans.append(1)
        return list(paths)

    return Feed(
        Folder(queued),
        resolve=lambda p: p,
        prepare=lambda p: p,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: None,
        library=library,
    )


def test_the_loop_next_file_is_known_ahead_and_is_what_plays(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.mp3").write_bytes(b"".join(make_frames(20)))
        paths.append(tmp_path / f"{name}.mp3")
    scans: list[int] = []
    extra = tmp_path / "queued.mp3"
    extra.write_bytes(b"".join(make_frames(20)))
    feed = looping_feed(paths, [extra], scans)
    assert feed.loop_next() is None  # nothing cued yet
    # The queue's last file: the loop's first is known while it plays.
    first = feed.cue(None, chunk=4).track
    assert first is not None and first.path == extra
    assert feed.loop_next() == paths[0]
    last = first.path
    played = []
    for _ in range(7):  # past the end of a cycle: the next is known there too
        said = feed.loop_next()
        track = feed.cue(None, last=last, chunk=4).track
        assert track is not None
        assert track.path == said, (played, said)
        played.append(track.path.name)
        feed.release(track.handle)
        last = track.path
    assert played == ["a.mp3", "b.mp3", "c.mp3", "a.mp3", "b.mp3", "c.mp3", "a.mp3"]
    # One walk of the folder per cycle, as before: asking is free.
    for _ in range(100):
        feed.loop_next()
    assert len(scans) == 3


def test_the_loop_next_file_is_never_the_one_that_just_started(tmp_path: Path) -> None:
    """A shuffled cycle that begins with the file just played puts it last;
    up next says so."""
    import random

    paths = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp3").write_bytes(b"".join(make_frames(20)))
        paths.append(tmp_path / f"{name}.mp3")
    feed = Feed(
        Folder([]),
        resolve=lambda p: p,
        prepare=lambda p: p,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: None,
        library=lambda: list(paths),
        shuffle=True,
        rng=random.Random(7),
    )
    last = None
    for _ in range(12):
        said = feed.loop_next()
        track = feed.cue(None, last=last, chunk=4).track
        assert track is not None
        if said is not None:
            assert track.path == said
        assert feed.loop_next() != track.path
        feed.release(track.handle)
        last = track.path


# -- a station's status ------------------------------------------------------------------


@pytest.fixture
def music(tmp_path: Path) -> Path:
    folder = tmp_path / "music"
    folder.mkdir()
    an_hour_ago = time.time() - 3600
    make_tagged_audio(folder / "a.mp3", 1.0, artist="Alpha", title="First")
    make_tagged_audio(folder / "b.mp3", 2.0, artist="Beta", title="Second")
    make_clean_mp3(folder / "c.mp3", 0.5, freq=300)  # no tags: its name
    for name in ("a", "b", "c"):
        os.utime(folder / f"{name}.mp3", (an_hour_ago, an_hour_ago))
    return folder


@contextmanager
def station_of(music: Path, tmp_path: Path, **more: Any) -> Iterator[StationRunner]:
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        **more,
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    station._setup()  # the folder's first walk, as start() would; it never connects
    station.feed.refresh()
    try:
        yield station
    finally:
        engine.stop()
        station.close()


@pytest.fixture
def runner(music: Path, tmp_path: Path) -> Iterator[StationRunner]:
    with station_of(music, tmp_path) as station:
        yield station


def test_the_queue_has_titles_and_lengths_from_the_tags(runner: StationRunner) -> None:
    def titled() -> list[tuple[str, Any, Any]]:
        return [(q["file"], q["title"], q["duration"]) for q in runner.status()["queue"]]

    wait_for(lambda: [t[0] for t in titled()] == ["a.mp3", "b.mp3", "c.mp3"])
    # A worker reads them after the first ask; the status itself opens nothing.
    wait_for(lambda: all(t[1] is not None for t in titled()))
    (a, b, c) = titled()
    assert a[1] == "Alpha - First" and b[1] == "Beta - Second" and c[1] == "c"
    assert a[2] == pytest.approx(1.0, abs=0.1) and b[2] == pytest.approx(2.0, abs=0.1)
    status = runner.status()
    assert status["up_next"] == {**status["queue"][0], "source": "queue"}
    assert status["idle"] == "silence"

    found = runner.library("")["files"]
    assert [(f["file"], f["title"]) for f in found] == [
        ("a.mp3", "Alpha - First"), ("b.mp3", "Beta - Second"), ("c.mp3", "c"),
    ]  # fmt: skip
    assert found[1]["duration"] == pytest.approx(2.0, abs=0.1)


def test_the_status_opens_no_file(runner: StationRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status and the library answer from what is known; the tags are
    read on the tags pool's thread only."""
    import threading

    import pushsource.workers.tracks as tracks

    wait_for(lambda: len(runner.status()["queue"]) == 3)
    readers: list[str] = []
    real = tracks.read_info
    monkeypatch.setattr(tracks, "read_info", lambda p: readers.append(
        threading.current_thread().name) or real(p))  # fmt: skip
    runner._catalog = Catalog(read=tracks.read_info)  # nothing known yet
    status = runner.status()
    assert [q["title"] for q in status["queue"]] == [None, None, None]
    runner.library("")
    wait_for(lambda: runner.status()["queue"][0]["title"] == "Alpha - First")
    assert readers and all(name.startswith("pushsource-tags") for name in readers), readers


def test_the_overview_reads_the_first_files_of_a_queue_a_view_the_rest(
    tmp_path: Path,
) -> None:
    """Every status build (the overview builds all stations') asks for the tags
    of the first few queued files only; the station's view, which asks for
    the library when it opens, has the rest of the first 50 read."""
    from pushsource.ops.runner import QUEUE_TITLES_ALWAYS

    folder = tmp_path / "many"
    folder.mkdir()
    an_hour_ago = time.time() - 3600
    for n in range(8):
        make_tagged_audio(folder / f"{n}.mp3", 0.3, artist="Band", title=f"Song {n}")
        os.utime(folder / f"{n}.mp3", (an_hour_ago, an_hour_ago))
    with station_of(folder, tmp_path) as station:

        def titles() -> list[Any]:
            return [q["title"] for q in station.status()["queue"]]

        wait_for(lambda: len(titles()) == 8)
        first = [f"Band - Song {n}" for n in range(QUEUE_TITLES_ALWAYS)]
        wait_for(lambda: titles()[:QUEUE_TITLES_ALWAYS] == first)
        wait_for(lambda: not station._catalog.wanted and not station._tags_busy)
        assert titles()[QUEUE_TITLES_ALWAYS:] == [None] * (8 - QUEUE_TITLES_ALWAYS)
        station.library("")
        wait_for(lambda: titles() == [f"Band - Song {n}" for n in range(8)])


def test_up_next_in_loop_mode_is_the_loop_next_file(music: Path, tmp_path: Path) -> None:
    with station_of(music, tmp_path, idle="loop") as station:
        wait_for(lambda: len(station.status()["queue"]) == 3)
        got = []
        for _ in range(3):  # the queue drains: its files play first
            track = station.feed.cue(None).track
            assert track is not None
            got.append(track)
        assert [t.path.name for t in got] == ["a.mp3", "b.mp3", "c.mp3"]
        status = station.status()
        assert status["queue"] == [] and status["idle"] == "loop"
        wait_for(lambda: (station.status()["up_next"] or {}).get("title") == "Alpha - First")
        assert station.status()["up_next"]["source"] == "loop"
        assert station.status()["up_next"]["file"] == "a.mp3"
        for track in got:
            station.feed.release(track.handle)


def test_up_next_is_none_when_nothing_comes(music: Path, tmp_path: Path) -> None:
    with station_of(music, tmp_path, idle="stop") as station:
        wait_for(lambda: len(station.status()["queue"]) == 3)
        for _ in range(3):
            track = station.feed.cue(None).track
            assert track is not None
            station.feed.release(track.handle)
        status = station.status()
        assert status["up_next"] is None and status["idle"] == "stop"


def test_down_since_and_for_while_off_air(runner: StationRunner) -> None:
    connection = runner.status()["connection"]
    assert connection["down_since"] is None and connection["down_for"] is None  # not started
    runner.connection("connecting")
    runner.connection("reconnecting", "refused")
    runner.connection("connecting")
    runner.connection("reconnecting", "refused")
    connection = runner.status()["connection"]
    since = datetime.fromisoformat(connection["down_since"].replace("Z", "+00:00"))
    assert abs(since.timestamp() - time.time()) < 5
    assert connection["attempts"] == 2 and connection["error"] == "refused"
    assert 0 <= connection["down_for"] < 5
    time.sleep(0.3)
    later = runner.status()["connection"]
    assert later["down_since"] == connection["down_since"]  # the outage's start stays
    assert later["down_for"] >= connection["down_for"] + 0.2
    runner.connection("on air")
    connection = runner.status()["connection"]
    assert connection["down_since"] is None and connection["down_for"] is None


def test_history_lengths_survive_a_restart(tmp_path: Path) -> None:
    state = PlayState()
    state.history = [
        {"file": "a.mp3", "title": "A", "started": "2026-12-01T10:00:00Z", "gain_db": -2.5,
         "duration": 201.5},
        {"file": "b.mp3", "title": "B", "started": "2026-12-01T09:57:00Z", "gain_db": None},
    ]  # fmt: skip
    save_state(tmp_path / "state.json", state)
    loaded = load_state(tmp_path / "state.json").history
    assert loaded[0]["duration"] == 201.5 and loaded[0]["gain_db"] == -2.5
    assert "duration" not in loaded[1]
