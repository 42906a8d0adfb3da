"""Getting the next file ready on a thread of its own, while the current one plays.

Getting a file ready may mean converting it to the station's format, which
takes seconds: it must never happen on the thread that paces frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pushsource.errors import TrackError
from pushsource.station import TrackSource
from pushsource.tracks import skipped

log = logging.getLogger("pushsource")


class Prefetch:
    """A TrackSource that takes files from ``source`` and hands them on only
    once ``prepare`` has run on them, one file ahead of the station.

    ``prepare(path)`` raises TrackError for a file that cannot be played: it is
    skipped here, with one warning line. ``skip(path)`` says a file needs no
    playing (it played already). Only the worker thread touches ``source``.
    With ``finite`` (a fixed list), exhausted() says when the list is done.
    """

    def __init__(
        self,
        source: TrackSource,
        prepare: Callable[[Path], object],
        *,
        skip: Callable[[Path], bool] = lambda path: False,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_every: float = 600.0,
        finite: bool = False,
    ) -> None:
        self._source = source
        self._prepare = prepare
        self._skip = skip
        self._housekeeping = housekeeping
        self._housekeeping_every = housekeeping_every
        self._finite = finite
        self._done = False
        # One file handed on at a time; None: the end. The lock is re-entrant
        # because stop() may run in a signal handler on a thread inside get().
        self._cond = threading.Condition(threading.RLock())
        self._slot: list[Path | None] = []
        self._waiting: list[Path] = []  # the source's queue, as last seen by the worker
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pushsource-prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop taking files; a waiting get() returns None. Safe in a signal handler."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop, and stop the source too if it can be (a FolderQueue): the
        worker may be asleep in its get(), and nothing else takes files from it."""
        self.stop()
        stop = getattr(self._source, "stop", None)
        if callable(stop):
            stop()
        self._thread.join(5)

    def get(self, timeout: float | None = None) -> Path | None:
        if self._done:
            return None
        with self._cond:
            if timeout:
                self._cond.wait_for(lambda: self._slot or self._stopping.is_set(), timeout)
            if not self._slot:
                return None
            path = self._slot.pop()
            self._cond.notify_all()
        self._done = path is None
        return path

    def exhausted(self) -> bool:
        return self._done or self._stopping.is_set()

    def queued(self) -> list[Path]:
        with self._cond:
            return [path for path in self._slot if path is not None] + self._waiting

    def _run(self) -> None:
        # Sleeps in the source's get() until a file comes (or stop), waking
        # only for the housekeeping; never polls.
        next_housekeeping = 0.0
        while not self._stopping.is_set():
            wait: float | None = None
            if self._housekeeping is not None:
                if time.monotonic() >= next_housekeeping:
                    try:
                        self._housekeeping()
                    except Exception:  # tidying the cache must never stop the music
                        log.exception("cache housekeeping failed")
                    next_housekeeping = time.monotonic() + self._housekeeping_every
                wait = max(0.0, next_housekeeping - time.monotonic())
            path = self._source.get(wait)
            waiting = self._source.queued()
            with self._cond:
                self._waiting = waiting
            if path is None and self._finite:
                self._hand_on(None)
                return
            if path is None or self._skip(path):
                continue
            try:
                self._prepare(path)
            except TrackError as exc:
                skipped(exc)
                continue
            self._hand_on(path)

    def _hand_on(self, path: Path | None) -> None:
        with self._cond:  # until the station took the last one
            self._cond.wait_for(lambda: not self._slot or self._stopping.is_set())
            if not self._stopping.is_set():
                self._slot.append(path)
                self._cond.notify_all()
