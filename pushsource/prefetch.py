"""Getting the next file ready on a thread of its own, while the current one plays.

Getting a file ready may mean converting it to the station's format, which
takes seconds: it must never happen on the thread that paces frames.
"""

from __future__ import annotations

import logging
import queue
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
        self._ready: queue.Queue[Path | None] = queue.Queue(maxsize=1)  # None: the end
        self._waiting: list[Path] = []  # the source's queue, as last seen by the worker
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pushsource-prefetch", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop taking files; a waiting get() returns None. Safe in a signal handler."""
        self._stopping.set()

    def close(self) -> None:
        self.stop()
        self._thread.join(5)

    def get(self, timeout: float | None = None) -> Path | None:
        if self._done:
            return None
        try:
            path = self._ready.get(timeout=timeout) if timeout else self._ready.get_nowait()
        except queue.Empty:
            return None
        self._done = path is None
        return path

    def exhausted(self) -> bool:
        return self._done or self._stopping.is_set()

    def queued(self) -> list[Path]:
        with self._lock:
            waiting = list(self._waiting)
        return [path for path in list(self._ready.queue) if path is not None] + waiting

    def _run(self) -> None:
        next_housekeeping = 0.0
        while not self._stopping.is_set():
            if self._housekeeping is not None and time.monotonic() >= next_housekeeping:
                try:
                    self._housekeeping()
                except Exception:  # tidying the cache must never stop the music
                    log.exception("cache housekeeping failed")
                next_housekeeping = time.monotonic() + self._housekeeping_every
            path = self._source.get(0.2)
            with self._lock:
                self._waiting = self._source.queued()
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
        while not self._stopping.is_set():
            try:
                self._ready.put(path, timeout=0.2)
                return
            except queue.Full:  # the station has not taken the last one yet
                with self._lock:
                    self._waiting = self._source.queued()
