"""The prefetch worker (pushsource.workers.prefetch): hands files on one at a time, and
sleeps in its source's get() or on the hand-over instead of polling."""

from __future__ import annotations

import threading
from pathlib import Path

from pushsource.workers.prefetch import Prefetch


class BlockingSource:
    """A TrackSource whose get() blocks until a file is put in or stop() is called;
    it records the timeouts it was asked to wait."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.files: list[Path] = []
        self.timeouts: list[float | None] = []
        self.stopped = False

    def put(self, path: Path) -> None:
        with self.cond:
            self.files.append(path)
            self.cond.notify_all()

    def get(self, timeout: float | None = None) -> Path | None:
        with self.cond:
            self.timeouts.append(timeout)
            self.cond.wait_for(lambda: self.files or self.stopped, timeout)
            return self.files.pop(0) if self.files else None

    def queued(self) -> list[Path]:
        with self.cond:
            return list(self.files)

    def exhausted(self) -> bool:
        return False

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def test_files_are_handed_on_in_order_and_the_worker_never_polls() -> None:
    source = BlockingSource()
    prepared: list[Path] = []
    prefetch = Prefetch(source, prepared.append).start()
    for name in ("a", "b", "c"):
        source.put(Path(name))
    got = [prefetch.get(10) for _ in range(3)]
    assert got == [Path("a"), Path("b"), Path("c")]
    assert prepared == got
    assert prefetch.get(0) is None  # nothing more yet, and no wait asked
    prefetch.close()  # wakes the worker asleep in the source's get()
    assert source.stopped and not prefetch._thread.is_alive()
    assert set(source.timeouts) == {None}  # it slept until a file came, every time


def test_stop_ends_the_hand_over() -> None:
    source = BlockingSource()
    prefetch = Prefetch(source, lambda path: path).start()
    for name in ("a", "b", "c"):
        source.put(Path(name))
    assert prefetch.get(10) == Path("a")
    assert prefetch.queued()[-1] == Path("c")  # what the state file lists as queued
    assert prefetch.get(10) == Path("b")
    assert prefetch.get(10) == Path("c")
    prefetch.stop()
    assert prefetch.get(1) is None and prefetch.exhausted()
    prefetch.close()
    assert not prefetch._thread.is_alive()


def test_housekeeping_bounds_the_wait() -> None:
    source = BlockingSource()
    runs = threading.Event()
    prefetch = Prefetch(
        source, lambda path: path, housekeeping=runs.set, housekeeping_every=600.0
    ).start()
    assert runs.wait(10)  # at start, then every 600 s: the source's get() waits that long
    source.put(Path("a"))
    assert prefetch.get(10) == Path("a")
    prefetch.close()
    assert all(t is not None and 0 < t <= 600.0 for t in source.timeouts)
