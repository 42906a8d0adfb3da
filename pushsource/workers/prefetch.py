"""Getting the next file ready on a thread of its own, while the current one plays.

Getting a file ready may mean converting it to the station's format, which
takes seconds: it must never happen on the thread that paces frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pushsource.core.station import TrackSource
from pushsource.errors import TrackError
from pushsource.workers.folder import QueueEdit
from pushsource.workers.tracks import skipped

log = logging.getLogger("pushsource")


class EditableSource(TrackSource, Protocol):
    def edit(self, edit: QueueEdit) -> None:
        """Change the queue by hand; applied by the thread that calls get()."""
        ...

    def refresh(self) -> float | None:
        """Bring queued() up to date without handing anything out; returns
        when to look again (seconds), if the source cannot say by an event."""
        ...


class Prefetch:
    """A TrackSource that takes files from ``source`` and hands them on only
    once ``prepare`` has run on them, one file ahead of the station.

    ``prepare(path)`` raises TrackError for a file that cannot be played: it is
    skipped here, with one warning line. ``skip(path)`` says a file needs no
    playing (it played already). Only the worker thread calls the source's
    get() and refresh(). With ``finite`` (a fixed list), exhausted() says when
    the list is done. :meth:`edit` reorders the queue from any thread: files
    already taken from the source go back to it, so the order is the source's.
    """

    def __init__(
        self,
        source: EditableSource,
        prepare: Callable[[Path], object],
        *,
        skip: Callable[[Path], bool] = lambda path: False,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_every: float = 600.0,
        finite: bool = False,
        unplayable: Callable[[TrackError], object] = skipped,
        name: str = "pushsource-prefetch",
    ) -> None:
        self._unplayable = unplayable  # says why a file is skipped
        self._source = source
        self._prepare = prepare
        self._skip = skip
        self._housekeeping = housekeeping
        self._housekeeping_every = housekeeping_every
        self._finite = finite
        self._done = False
        # Re-entrant: stop() may run in a signal handler on a thread inside get().
        self._cond = threading.Condition(threading.RLock())
        # All below under _cond.
        self._ready: deque[Path | None] = deque()  # at most one; None: the end
        self._held: Path | None = None  # prepared by the worker, waiting for room
        self._held_generation = 0  # the edit count when it was taken
        self._waiting: list[Path] = []  # the source's queue, as last seen
        self._generation = 0  # edits so far
        self._order: tuple[Path, ...] = ()  # the last edit's order
        self._removed: set[Path] = set()  # taken out by hand while being prepared
        self._changed = False  # the source saw events since the worker last looked
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
        if self._thread.ident is not None:  # started
            self._thread.join(5)

    def poke(self) -> None:
        """The source has news (a file arrived): keep queued() current even
        while the worker waits to hand a file on. Any thread but a signal handler."""
        with self._cond:
            self._changed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Path | None:
        if self._done:
            return None
        with self._cond:
            if timeout:
                self._cond.wait_for(lambda: self._ready or self._stopping.is_set(), timeout)
            if not self._ready:
                return None
            path = self._ready.popleft()
            self._cond.notify_all()
        self._done = path is None
        return path

    def exhausted(self) -> bool:
        return self._done or self._stopping.is_set()

    def queued(self) -> list[Path]:
        with self._cond:
            ready = [path for path in self._ready if path is not None]
            held = []
            if self._held is not None and self._held_generation == self._generation:
                held = [self._held]  # (after an edit, it is going back: _waiting has it)
            return ready + held + [p for p in self._waiting if p not in ready and p not in held]

    def edit(
        self, order: Sequence[Path], *, remove: Sequence[Path] = (), enqueue: Sequence[Path] = ()
    ) -> None:
        """Make the queue ``order`` (what queued() said, edited), taking out
        ``remove`` and adding ``enqueue`` (which ``order`` should place)."""
        with self._cond:
            self._generation += 1
            front = [path for path in self._ready if path is not None]
            self._ready = deque(path for path in self._ready if path is None)
            self._removed.update(remove)
            self._removed.difference_update(enqueue)
            self._order = tuple(order)
            self._waiting = list(order)
            self._cond.notify_all()
        self._source.edit(QueueEdit(tuple(order), tuple(front), tuple(remove), tuple(enqueue)))

    def _run(self) -> None:
        # Sleeps in the source's get() until a file comes (or an edit, or
        # stop), waking only for the housekeeping; never polls.
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
            with self._cond:
                generation = self._generation
                self._changed = False
            path = self._source.get(wait)
            self._snapshot()
            if path is None and self._finite:
                self._hand_on(None, generation)
                return
            if path is None or self._skip(path):
                continue
            with self._cond:  # shown in queued() while it is being prepared
                self._held, self._held_generation = path, generation
            try:
                self._prepare(path)
            except TrackError as exc:
                with self._cond:
                    self._held = None
                self._unplayable(exc)
                continue
            self._hand_on(path, generation)

    def _snapshot(self) -> None:
        waiting = self._source.queued()
        with self._cond:
            self._waiting = waiting

    def _hand_on(self, path: Path | None, generation: int) -> None:
        """Put ``path`` in the ready slot once there is room; give it back to
        the source instead if the queue was edited since it was taken."""
        again: float | None = None  # when settling files may be ready
        with self._cond:
            while not self._stopping.is_set():
                if path is not None and path in self._removed:
                    self._removed.discard(path)
                    self._held = None
                    return
                if generation != self._generation:
                    self._held = None
                    if path is not None:
                        self._source.edit(QueueEdit(self._order, front=(path,)))
                    return
                if not self._ready:
                    self._ready.append(path)
                    self._held = None
                    self._cond.notify_all()
                    return
                if self._changed:  # files came while we wait: show them
                    self._changed = False
                    again = self._source.refresh()
                    self._snapshot()
                    continue
                if not self._cond.wait(again):
                    self._changed = True  # a settle time ran out: look again
