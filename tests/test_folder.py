"""pushsource.workers.folder: Readiness in virtual time, the name rules, and FolderQueue on a real
folder with the real watchdog observer."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsource.errors import ConfigError
from pushsource.workers import folder
from pushsource.workers.folder import FolderQueue, Readiness, is_eligible, scan

# watchdog's inotify warns (from its own thread) when a new nested folder gets registered
# twice, by its creation event and by the walk of its parent; the second just replaces the first.
#: Real time: a real watchdog observer (make test-fast leaves it out).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Callback with id .* already exists:RuntimeWarning"),
    pytest.mark.slow,
]

SETTLE = 0.4
WAIT = 5.0  # generous upper bound for something that should happen; never a sleep


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


def write(path: Path, data: bytes = b"\xff\xfb" * 500, *, old: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        then = time.time() - 60
        os.utime(path, (then, then))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    music.mkdir()
    return music


@pytest.fixture
def started() -> Iterator[Callable[[Path], FolderQueue]]:
    queues: list[FolderQueue] = []

    def start(root: Path) -> FolderQueue:
        queue = FolderQueue(root, settle=SETTLE)
        queues.append(queue)
        queue.start()
        return queue

    yield start
    for queue in queues:
        queue.stop()


# -- Readiness, in virtual time


def sizes(table: dict[Path, tuple[int, float]]) -> Callable[[Path], tuple[int, float] | None]:
    return table.get


A, B, C = Path("/m/a.mp3"), Path("/m/b.mp3"), Path("/m/c.mp3")


def drain(readiness: Readiness) -> list[Path]:
    return list(iter(readiness.pop, None))


def test_complete_queues_in_order_once() -> None:
    r = Readiness(2.0)
    assert r.pop() is None
    assert r.complete(B) is True
    assert r.complete(A) is True
    assert r.complete(B) is False  # already queued: keeps its place
    assert len(r) == 2
    assert drain(r) == [B, A]
    assert len(r) == 0


def test_settles_after_unchanged_for_settle_time() -> None:
    r = Readiness(2.0)
    r.pending(A, 100, 5.0, now=10.0)
    assert r.next_deadline() == 12.0
    assert r.poll(11.9, sizes({A: (100, 5.0)})) == []
    assert len(r) == 0
    assert r.poll(12.0, sizes({A: (100, 5.0)})) == [A]
    assert r.next_deadline() is None
    assert r.pop() == A


def test_change_seen_by_poll_restarts_the_timer() -> None:
    r = Readiness(2.0)
    r.pending(A, 100, 5.0, now=0.0)
    assert r.poll(2.0, sizes({A: (200, 6.0)})) == []
    assert r.next_deadline() == 4.0
    assert r.poll(4.0, sizes({A: (200, 6.0)})) == [A]


def test_poll_only_stats_files_whose_timer_ran_out() -> None:
    r = Readiness(2.0)
    r.pending(A, 1, 1.0, now=0.0)
    r.pending(B, 1, 1.0, now=1.0)
    asked: list[Path] = []

    def stat(path: Path) -> tuple[int, float]:
        asked.append(path)
        return 1, 1.0

    assert r.poll(2.5, stat) == [A]
    assert asked == [A]
    assert r.next_deadline() == 3.0


def test_modification_sends_a_ready_file_back_to_pending_and_to_the_back() -> None:
    r = Readiness(2.0)
    r.complete(A)
    r.complete(B)
    r.pending(A, 50, 1.0, now=0.0)  # written to again before it played
    assert len(r) == 1
    assert r.settling() == 1
    r.complete(C)
    assert r.complete(A) is True  # closed again
    assert drain(r) == [B, C, A]


def test_repeated_writes_keep_a_file_pending() -> None:
    r = Readiness(2.0)
    for now in (0.0, 1.5, 3.0, 4.5):
        r.pending(A, int(now * 10), now, now=now)
        assert r.poll(now, sizes({A: (int(now * 10), now)})) == []
    assert r.next_deadline() == 6.5


def test_pending_file_that_vanished_is_dropped() -> None:
    r = Readiness(2.0)
    r.pending(A, 1, 1.0, now=0.0)
    assert r.poll(5.0, sizes({})) == []
    assert r.settling() == 0
    assert r.next_deadline() is None


def test_remove_and_remove_tree() -> None:
    r = Readiness(2.0)
    sub, sibling = Path("/m/sub/x.mp3"), Path("/m/subway.mp3")
    for path in (A, sub, sibling, Path("/m/sub/deep/y.mp3")):
        r.complete(path)
    r.pending(Path("/m/sub/z.mp3"), 1, 1.0, now=0.0)
    r.remove(A)
    r.remove(Path("/m/unknown.mp3"))  # no-op
    r.remove_tree(Path("/m/sub"))
    assert r.settling() == 0
    assert drain(r) == [sibling]


def test_found_is_ready_when_old_enough_else_pending() -> None:
    r = Readiness(2.0)
    assert r.found(A, 1, 1.0, now=0.0, age=60.0) is True
    assert r.found(B, 1, 1.0, now=0.0, age=0.5) is False
    assert r.next_deadline() == 2.0
    assert drain(r) == [A]


def test_settle_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Readiness(0)


OPS = st.lists(
    st.tuples(st.sampled_from(["pending", "complete", "remove", "pop", "poll"]), st.integers(0, 3))
)


@given(OPS)
def test_a_path_is_never_queued_twice(ops: list[tuple[str, int]]) -> None:
    paths = [Path(f"/m/{i}.mp3") for i in range(4)]
    r = Readiness(1.0)
    for now, (op, i) in enumerate(ops):
        if op == "pending":
            r.pending(paths[i], 1, 1.0, now=float(now))
        elif op == "complete":
            r.complete(paths[i])
        elif op == "remove":
            r.remove(paths[i])
        elif op == "pop":
            r.pop()
        else:
            r.poll(float(now), lambda _: (1, 1.0))
        assert len(r) + r.settling() <= len(paths)
    queued = drain(r)
    assert len(queued) == len(set(queued))


# -- the name rules


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("a.mp3", True),
        ("A.MP3", True),
        ("d/x.Mpga", True),
        ("x.mp2", True),
        ("x.mpa", True),
        (".a.mp3", False),
        (".d/a.mp3", False),
        ("d/.e/a.mp3", False),
        ("a.mp3.part", False),
        ("a.mp3.PART", False),
        ("a.mp3.crdownload", False),
        ("a.mp3.tmp", False),
        ("a.mp3~", False),
        ("a.flac", True),
        ("cover.jpg", False),
        ("notes.txt", False),
        ("mp3", False),
        ("", False),
    ],
)
def test_is_eligible(rel: str, expected: bool) -> None:
    assert is_eligible(PurePath(rel)) is expected


def test_is_eligible_with_other_extensions() -> None:
    assert is_eligible(PurePath("a.FLAC"), frozenset({".flac"}))
    assert not is_eligible(PurePath("a.mp3"), frozenset({".flac"}))


def make_tree(root: Path) -> list[str]:
    """A folder of old files; returns the eligible ones in the expected order."""
    names = ["b.mp3", "A.mp3", "a.mp3", "a/z.mp3", "B/a.mp3", "c.MP3", ".h.mp3", ".dir/x.mp3"]
    for name in [*names, "x.mp3.part", "notes.txt", "y.mp3~"]:
        write(root / name, old=True)
    return ["a/z.mp3", "A.mp3", "a.mp3", "B/a.mp3", "b.mp3", "c.MP3"]


def test_scan_in_name_order_case_insensitively(root: Path) -> None:
    expected = make_tree(root)
    os.mkfifo(root / "fifo.mp3")  # not a regular file: reading it would hang the station
    assert scan(root) == [root / name for name in expected]


def test_scan_and_queue_refuse_a_missing_folder_or_bad_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        scan(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a directory"):
        FolderQueue(write(tmp_path / "file.mp3")).start()
    with pytest.raises(ConfigError, match="'flac'"):
        FolderQueue(tmp_path, extensions=frozenset({"flac"}))


# -- FolderQueue on a real folder


def test_files_present_at_start_come_in_name_order_then_recent_ones(
    root: Path, started: Callable[[Path], FolderQueue]
) -> None:
    expected = make_tree(root)
    write(root / "0.mp3")  # written just now: may still be arriving, so it settles first
    queue = started(root)
    assert len(queue) == len(expected)
    got = [queue.get(timeout=WAIT) for _ in range(len(expected) + 1)]
    assert got == [root / name for name in [*expected, "0.mp3"]]


def test_file_written_in_pieces_comes_out_only_once_closed(
    root: Path, started: Callable[[Path], FolderQueue]
) -> None:
    queue = started(root)
    path, chunk, pieces = root / "slow.mp3", b"\xff\xfb" * 2000, 8

    def copy_slowly() -> None:
        with path.open("wb") as out:
            for i in range(pieces):
                if i:
                    time.sleep(SETTLE / 4)
                out.write(chunk)
                out.flush()

    writer = threading.Thread(target=copy_slowly)
    writer.start()
    try:
        got = queue.get(timeout=WAIT)
        assert got == path
        assert got.stat().st_size == pieces * len(chunk)
    finally:
        writer.join()
    assert queue.get(timeout=SETTLE * 2) is None


def test_closed_file_is_ready_without_waiting_to_settle(root: Path) -> None:
    with FolderQueue(root, settle=60.0) as queue:  # only the close event can queue it in time
        write(root / "dropped.mp3")
        assert queue.get(timeout=WAIT) == root / "dropped.mp3"


def test_queued_file_written_to_again_waits_for_its_close(root: Path) -> None:
    a, b = write(root / "a.mp3", old=True), write(root / "b.mp3", old=True)
    with FolderQueue(root, settle=60.0) as queue, a.open("ab") as out:
        out.write(b"more")
        out.flush()
        # Barrier, not a sleep: the only event so far is that write; once it reached the
        # consumer's queue, get() drains it before choosing.
        deadline = time.monotonic() + WAIT
        while queue._events.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.get(timeout=0) == b
        assert queue.get(timeout=SETTLE) is None
        out.close()
        assert queue.get(timeout=WAIT) == a


def test_partial_name_is_ignored_until_renamed(
    root: Path, started: Callable[[Path], FolderQueue]
) -> None:
    queue = started(root)
    part = write(root / "x.mp3.part")
    assert queue.get(timeout=SETTLE * 2) is None
    part.rename(root / "x.mp3")
    got = queue.get(timeout=WAIT)
    assert got == root / "x.mp3"
    got.read_bytes()  # the station reading it must not queue it again
    assert queue.get(timeout=SETTLE * 2) is None


def test_deleted_before_played_is_never_returned(
    root: Path, started: Callable[[Path], FolderQueue]
) -> None:
    for name in ("a.mp3", "b.mp3", "e.mp3", "sub/c.mp3", "sub/d.mp3"):
        write(root / name, old=True)
    queue = started(root)
    assert len(queue) == 5
    (root / "a.mp3").unlink()
    shutil.rmtree(root / "sub")
    assert queue.get(timeout=WAIT) == root / "b.mp3"
    (root / "e.mp3").rename(root / "e.mp3.tmp")  # renamed to an ignored name: gone too
    assert queue.get(timeout=SETTLE * 2) is None
    assert len(queue) == 0


def test_new_and_moved_in_folders_are_found(
    root: Path,
    tmp_path: Path,
    started: Callable[[Path], FolderQueue],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pushsource.folder")
    queue = started(root)
    write(root / "new" / "deeper" / "a.mp3")
    assert queue.get(timeout=WAIT) == root / "new" / "deeper" / "a.mp3"
    assert "queued music/new/deeper/a.mp3" in caplog.messages

    album = tmp_path / "outside" / "album"
    for name in ("02.mp3", "01.mp3", "cover.jpg"):
        write(album / name, old=True)
    album.rename(root / "album")  # a whole folder from outside the watched tree
    assert [queue.get(timeout=WAIT) for _ in range(2)] == [
        root / "album" / "01.mp3",
        root / "album" / "02.mp3",
    ]

    write(root / ".incoming" / "later" / "x.mp3", old=True)  # hidden: ignored...
    assert queue.get(timeout=SETTLE * 2) is None
    (root / ".incoming" / "later").rename(root / "later")  # ...until moved into view
    assert queue.get(timeout=WAIT) == root / "later" / "x.mp3"


def test_stop_wakes_a_blocked_get(root: Path) -> None:
    queue = FolderQueue(root, settle=SETTLE)
    queue.start()
    results: list[Path | None] = []
    waiter = threading.Thread(target=lambda: results.append(queue.get()))
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive()  # blocked, as nothing is there
    queue.stop()
    waiter.join(timeout=WAIT)
    assert not waiter.is_alive()
    assert results == [None]
    queue.stop()  # idempotent
    assert queue.get(timeout=0) is None


def test_falls_back_to_polling_when_events_are_unavailable(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_inotify() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(folder, "Observer", no_inotify)
    monkeypatch.setattr(folder, "_POLL_INTERVAL", 0.1)
    with FolderQueue(root, settle=SETTLE) as queue:
        assert "rescanning it every 0.1 s" in caplog.text
        write(root / "late.mp3")
        assert queue.get(timeout=WAIT) == root / "late.mp3"


def test_rescan_finds_files_again(root: Path, started: Callable[[Path], FolderQueue]) -> None:
    write(root / "a.mp3", old=True)
    queue = started(root)
    assert queue.get(timeout=5) == root / "a.mp3"
    assert queue.get(timeout=0.2) is None  # handed out: the queue forgot it
    queue.rescan()  # SIGHUP: what the watcher missed (or what played) is found again
    assert queue.get(timeout=5) == root / "a.mp3"


def test_queues_can_share_one_observer_and_stop_alone(tmp_path: Path) -> None:
    from watchdog.observers import Observer
    from watchdog.observers.api import BaseObserver

    observer = Observer()
    observer.start()
    roots = [tmp_path / name for name in ("one", "two", "three")]
    for root in roots:
        root.mkdir()
    queues = [FolderQueue(root, settle=60.0, observer=observer) for root in roots]
    # A second queue on the first folder shares its watch.
    twin = FolderQueue(roots[0], settle=60.0, observer=observer)
    before = {t for t in threading.enumerate() if t.is_alive()}
    try:
        for queue in [*queues, twin]:
            queue.start()
        for root, queue in zip(roots, queues, strict=True):
            write(root / "new.mp3")  # only the close event can queue it in time
            assert queue.get(timeout=WAIT) == root / "new.mp3"
        assert twin.get(timeout=WAIT) == roots[0] / "new.mp3"
        queues[1].stop()  # unschedules its own watch only
        twin.stop()  # the first folder is still watched for queues[0]
        assert observer.is_alive()
        for root in roots:
            write(root / "later.mp3")
        assert queues[0].get(timeout=WAIT) == roots[0] / "later.mp3"
        assert queues[2].get(timeout=WAIT) == roots[2] / "later.mp3"
        assert queues[1].get(timeout=0) is None
        # No observer (and observer thread) of their own: one emitter per folder watched.
        assert len(observer.emitters) == 2
        new = {t for t in threading.enumerate() if t.is_alive()} - before
        assert not any(isinstance(t, BaseObserver) for t in new)
    finally:
        for queue in queues:
            queue.stop()
        observer.stop()
        observer.join()
    assert not observer.emitters


def wait_for(what: Callable[[], bool], queue: FolderQueue) -> None:
    """Take in the folder's news until ``what`` holds (WAIT at most)."""
    deadline = time.monotonic() + WAIT
    while not what():
        assert time.monotonic() < deadline, "waited too long"
        queue.refresh()
        time.sleep(0.02)


@pytest.mark.parametrize("shared", [False, True], ids=["own observer", "shared observer"])
def test_a_folder_deleted_and_made_again_is_watched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shared: bool
) -> None:
    """rm -rf music; mkdir music; cp ...: the files already there when it is
    back are queued as a rescan would, and files copied in later are seen by
    the new watch (a settle time of a minute: only their close event can
    queue them in time). One line when it goes, one when it is back."""
    from watchdog.observers import Observer

    root = tmp_path / "music"
    write(root / "before.mp3", old=True)
    observer = Observer() if shared else None
    if observer is not None:
        observer.start()
    queue = FolderQueue(root, settle=60.0, observer=observer)
    try:
        with caplog.at_level(logging.INFO, logger="pushsource.folder"):
            queue.start()
            assert queue.get(timeout=WAIT) == root / "before.mp3"
            shutil.rmtree(root)
            wait_for(lambda: "was deleted" in caplog.text, queue)
            write(root / "back.mp3", old=True)
            assert queue.get(timeout=WAIT) == root / "back.mp3"
            assert "is back" in caplog.text
            write(root / "later.mp3")
            assert queue.get(timeout=WAIT) == root / "later.mp3"
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 1 and "was deleted" in lines[0], lines
        back = [r.getMessage() for r in caplog.records if "is back" in r.getMessage()]
        assert len(back) == 1 and "1 files ready" in back[0], back
    finally:
        queue.stop()
        if observer is not None:
            observer.stop()
            observer.join()


def test_sighup_looks_for_a_deleted_folder_at_once(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rescan (SIGHUP) of a folder that was deleted looks for it at once
    (not at the next look, an hour away here) and tells the station to look
    at the queue (on_event): nothing else would, with no watch to say so."""
    monkeypatch.setattr(folder, "_LOOK_INTERVAL", 3600.0)
    pokes: list[None] = []
    with FolderQueue(root, settle=60.0) as queue:
        queue.on_event = lambda: pokes.append(None)
        shutil.rmtree(root)
        with caplog.at_level(logging.INFO, logger="pushsource.folder"):
            wait_for(lambda: "was deleted" in caplog.text, queue)
            write(root / "back.mp3", old=True)
            assert queue.refresh() is not None  # it will look again, if not told
            pokes.clear()
            queue.rescan()
            assert pokes
            assert queue.get(timeout=0) == root / "back.mp3"
            write(root / "later.mp3")  # watched again
            assert queue.get(timeout=WAIT) == root / "later.mp3"
