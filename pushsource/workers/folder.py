"""The watched music folder, as an ordered queue of complete audio files.

Files already in the folder play in name order; files dropped in later play in the
order they finished arriving. "Finished" means closed after writing (inotify's
IN_CLOSE_WRITE), renamed or moved into place, or, where no close event comes (other
platforms, files moved in from another file system), size and mtime unchanged for a
settle time.

``Readiness`` is the pure bookkeeping (times are passed in); ``FolderQueue`` is the
shell that walks the folder, runs watchdog's observer and feeds ``Readiness``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Self

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from pushsource.errors import ConfigError

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver, ObservedWatch

logger = logging.getLogger("pushsource.folder")


def Observer() -> BaseObserver:  # watchdog's name: tests replace it
    """watchdog's observer for this platform (inotify on Linux), imported when
    a folder is first watched, not at start-up: about 5-10 ms, and --once
    watches none."""
    from watchdog.observers import Observer as platform_observer

    return platform_observer()


#: What the station plays: MPEG audio as it is, the rest converted with libvlc.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp3", ".mp2", ".mpa", ".mpga"}
    | {".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wav", ".aif", ".aiff", ".wma"}
)

# Names browsers, download managers and editors use while a file is still being written.
_PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp", "~")

# How often the polling fallback rescans the folder, when inotify & co are unavailable.
_POLL_INTERVAL = 1.0
# How often a deleted music folder is looked for, to watch it again once it is back.
_LOOK_INTERVAL = 1.0

# Opened, closed-without-writing and attribute events are left out: the station reading
# a file, or `cp -p` setting its times, says nothing about whether it is complete.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
]

#: What the watchdog thread hands the consumer: (event type, src, dest or None, is_directory).
RawEvent = tuple[str, str, str | None, bool]


class QueueEdit(NamedTuple):
    """A change to the queue's order made by hand (the control API), applied by
    the consumer thread: ``front`` files go back to the front (in order),
    ``remove`` files leave the queue, ``enqueue`` files join at the end, then the
    ready files among ``order`` move to the front in that order."""

    order: tuple[Path, ...] = ()
    front: tuple[Path, ...] = ()
    remove: tuple[Path, ...] = ()
    enqueue: tuple[Path, ...] = ()


def is_eligible(rel: PurePath, extensions: frozenset[str] = AUDIO_EXTENSIONS) -> bool:
    """Whether a path relative to the music folder names a file we may queue.

    Looks at the name only (no I/O). Does not raise.
    """
    parts = rel.parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    name = parts[-1].casefold()
    if name.endswith(_PARTIAL_SUFFIXES):
        return False
    return any(name.endswith(ext.casefold()) for ext in extensions)


def inside(folder: Path, path: Path) -> Path | None:
    """``path`` with every symlink followed, if that lies inside ``folder`` (with
    its own links followed), else None. A missing path is judged by name. Does not raise."""
    try:
        root = folder.resolve()
        real = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL in the name
        return None
    return real if real != root and real.is_relative_to(root) else None


def playable(
    folder: Path, path: Path, extensions: frozenset[str] = AUDIO_EXTENSIONS
) -> Path | None:
    """``path`` resolved, if it is a regular file inside ``folder`` whose name, as
    given and as resolved, is an eligible (non-hidden, audio) name; else None. A
    link out of the folder and a missing file look the same. Does not raise."""
    real = inside(folder, path)
    if real is None:
        return None
    named: PurePath
    try:
        named = path.relative_to(folder)
    except ValueError:
        named = PurePath(path.name)
    if not is_eligible(named, extensions) or not is_eligible(
        real.relative_to(folder.resolve()), extensions
    ):
        return None
    st = _stat(real)
    return real if st is not None and stat.S_ISREG(st.st_mode) else None


def upload_name_ok(name: str) -> bool:
    """Whether ``name`` (already a plain, eligible name) shows as what it is: no
    control or format characters (U+202E turns "gpj.mp3" around), no
    surrogates (bytes that are not UTF-8). Does not raise."""
    return not any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in name
    )


def twin(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds another entry that reads as ``name``: the same in
    Unicode NFC (an "é" sent as e + accent beside a precomposed one). Does not raise."""
    wanted = unicodedata.normalize("NFC", name)
    try:
        with os.scandir(folder) as entries:
            return any(unicodedata.normalize("NFC", e.name) == wanted for e in entries)
    except OSError:
        return False


def scan(root: Path, extensions: frozenset[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """The eligible regular files under root, in name order.

    Raises ConfigError if root is not a directory or an extension lacks its dot.
    """
    _check_extensions(extensions)
    if not root.is_dir():
        raise ConfigError(f"music folder {root} is not a directory")
    return [path for path, _ in _walk(root, root, extensions)]


def _check_extensions(extensions: frozenset[str]) -> None:
    for ext in extensions:
        if not ext.startswith(".") or len(ext) < 2:
            raise ConfigError(f"audio extension {ext!r} must be a dot and a name, like '.mp3'")


def _name_key(rel: PurePath) -> tuple[tuple[str, ...], str]:
    # Per component, so "a/z.mp3" sorts with the other "a" entries rather than by "/".
    return tuple(part.casefold() for part in rel.parts), rel.as_posix()


def _stat(path: Path) -> os.stat_result | None:
    """Stat path, or None when it is gone or unreadable. Does not raise."""
    try:
        return path.stat()
    except (OSError, ValueError):
        return None


def _size_mtime(path: Path) -> tuple[int, float] | None:
    st = _stat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime


def _walk(
    root: Path, top: Path, extensions: frozenset[str], links: list[Path] | None = None
) -> list[tuple[Path, os.stat_result]]:
    """Eligible regular files under top (itself under root), with their stat, in name
    order. Links are left out: one out of the folder must not reach the air, and
    one inside it is another name of a file taken already. A file with several
    hard links is taken once, under its first name."""
    found: list[tuple[Path, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        if links is not None:  # os.walk lists links to folders here, and does not enter them
            links.extend(p for name in dirnames if (p := Path(dirpath, name)).is_symlink())
        for name in filenames:
            path = Path(dirpath, name)
            if not is_eligible(path.relative_to(root), extensions):
                continue
            if path.is_symlink():
                if links is not None:
                    links.append(path)
                continue
            st = _stat(path)
            if st is not None and stat.S_ISREG(st.st_mode):
                found.append((path, st))
    found.sort(key=lambda item: _name_key(item[0].relative_to(root)))
    seen: set[tuple[int, int]] = set()
    unique = []
    for path, st in found:
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            unique.append((path, st))
    return unique


class _Settling(NamedTuple):
    size: int
    mtime: float
    since: float


class Readiness:
    """Which files are complete, in the order they became so. Pure: no I/O, no clock.

    A path is either unknown, pending (settling) or ready, never two of these, and
    never twice in the ready queue.
    """

    def __init__(self, settle: float) -> None:
        if not settle > 0:
            raise ConfigError(f"settle time must be positive, not {settle!r}")
        self._settle = settle
        self._ready: OrderedDict[Path, None] = OrderedDict()
        # Kept in order of `since`: a path is re-inserted whenever its timer restarts.
        self._pending: dict[Path, _Settling] = {}

    def pending(self, path: Path, size: int, mtime: float, now: float) -> None:
        """Path was created or written to: (re)start its settle timer, unqueue it if queued."""
        self._ready.pop(path, None)
        self._pending.pop(path, None)
        self._pending[path] = _Settling(size, mtime, now)

    def complete(self, path: Path) -> bool:
        """Path was closed after writing or moved into place: queue it now.

        Returns whether it was newly queued (False if it already was, in its old place).
        """
        self._pending.pop(path, None)
        if path in self._ready:
            return False
        self._ready[path] = None
        return True

    def found(self, path: Path, size: int, mtime: float, *, now: float, age: float) -> bool:
        """Path was found by walking a folder, last modified `age` seconds ago.

        Queued at once if it has been still for the settle time, else pending like a
        new file. Returns whether it was newly queued.
        """
        if age >= self._settle:
            return self.complete(path)
        self.pending(path, size, mtime, now)
        return False

    def remove(self, path: Path) -> bool:
        """Path was deleted or moved away: forget it. Returns whether it was queued."""
        self._pending.pop(path, None)
        return self._ready.pop(path, 0) is None

    def remove_tree(self, directory: Path) -> None:
        """A directory was deleted or moved away: forget everything under it."""
        for table in (self._ready, self._pending):
            for path in [p for p in table if p.is_relative_to(directory)]:
                del table[path]

    def poll(self, now: float, stat: Callable[[Path], tuple[int, float] | None]) -> list[Path]:
        """Queue the pending files whose (size, mtime) stayed the same for the settle time.

        stat returns a path's (size, mtime), or None if it is gone; it is only called
        for files whose timer ran out. Returns the newly queued paths, in order.
        """
        queued: list[Path] = []
        for path, settling in list(self._pending.items()):
            if now < settling.since + self._settle:
                continue
            current = stat(path)
            del self._pending[path]
            if current is None:
                continue
            if current != (settling.size, settling.mtime):
                # Changed without telling us (no event, or one still on its way): start again.
                self._pending[path] = _Settling(current[0], current[1], now)
            elif self.complete(path):
                queued.append(path)
        return queued

    def prefer(self, order: Sequence[Path]) -> None:
        """Move the ready files among ``order`` to the front, in that order (the
        queue as it was saved before a restart)."""
        for path in reversed(order):
            if path in self._ready:
                self._ready.move_to_end(path, last=False)

    def put_front(self, path: Path) -> None:
        """Queue ``path`` first (a file handed out that must wait after all)."""
        self._pending.pop(path, None)
        self._ready[path] = None
        self._ready.move_to_end(path, last=False)

    def apply(self, edit: QueueEdit) -> None:
        for path in reversed(edit.front):
            self.put_front(path)
        for path in edit.remove:
            self.remove(path)
        for path in edit.enqueue:
            self.complete(path)
        self.prefer(edit.order)

    def ready(self) -> list[Path]:
        """The ready files, in the order pop() will return them."""
        return list(self._ready)

    def pop(self) -> Path | None:
        """The next ready file, in the order they became ready, or None."""
        if not self._ready:
            return None
        return self._ready.popitem(last=False)[0]

    def next_deadline(self) -> float | None:
        """The earliest time poll() could queue a pending file, or None if none is pending."""
        since = min((s.since for s in self._pending.values()), default=None)
        return None if since is None else since + self._settle

    def settling(self) -> int:
        """How many files are pending."""
        return len(self._pending)

    def __len__(self) -> int:
        """How many files are ready."""
        return len(self._ready)


class _Forwarder(FileSystemEventHandler):
    """Runs on watchdog's thread. Only queues the event: an exception here would kill
    the observer, and file I/O here would race the writer. The consumer does the rest."""

    def __init__(
        self,
        events: queue.SimpleQueue[RawEvent | QueueEdit | None],
        poke: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__()
        self._events = events
        self._poke = poke  # tells the consumer, if it waits elsewhere

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            # Synthetic events describe the contents of a new or moved folder, which the
            # consumer walks itself; replaying them would push found files back to pending.
            if event.is_synthetic:
                return
            dest = os.fsdecode(event.dest_path) if event.dest_path else None
            self._events.put(
                (event.event_type, os.fsdecode(event.src_path), dest, event.is_directory)
            )
            self._poke()
        except Exception:
            logger.exception("dropped a file system event: %r", event)


# Queues on one shared observer that watch the same folder share one watch.
_sharing = threading.Lock()
_sharers: dict[tuple[int, ObservedWatch], int] = {}


def _share(observer: BaseObserver, handler: _Forwarder, root: Path) -> ObservedWatch:
    """Schedule a watch of root on a shared observer (starting it if its owner
    has not yet). Raises OSError."""
    with _sharing:
        watch = observer.schedule(handler, str(root), recursive=True, event_filter=_EVENT_FILTER)
        key = (id(observer), watch)
        _sharers[key] = _sharers.get(key, 0) + 1
        if not observer.is_alive() and observer.ident is None:
            observer.start()
    return watch


def _unshare(observer: BaseObserver, handler: _Forwarder, watch: ObservedWatch) -> None:
    """Take our handler off a shared watch; the last one out unschedules it."""
    with _sharing:
        key = (id(observer), watch)
        _sharers[key] -= 1
        with contextlib.suppress(KeyError, ValueError):
            if _sharers[key]:
                observer.remove_handler_for_watch(handler, watch)
            else:
                del _sharers[key]
                observer.unschedule(watch)


class FolderQueue:
    """The complete audio files of a folder, oldest arrival first, as they come.

    get() and len() belong to one consumer (the station's cue lane, one job at
    a time); edit(), rescan() and stop() may be called from any thread (stop()
    from a signal handler too).
    """

    def __init__(
        self,
        root: Path,
        *,
        settle: float = 2.0,
        extensions: frozenset[str] = AUDIO_EXTENSIONS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        observer: BaseObserver | None = None,
    ) -> None:
        """Raises ConfigError for a settle time <= 0 or an extension without its dot.

        ``observer``: a watchdog observer to share with other queues (inotify
        allows 128 instances per user by default, and each runs a thread); the
        queue only schedules its watch on it, and stop() unschedules only that.
        Its owner starts and stops it. Default: an observer of the queue's own.
        """
        _check_extensions(extensions)
        # Resolved: watching a symlink (not followed) would miss everything behind it.
        self.root = root.resolve()
        self._extensions = frozenset(ext.casefold() for ext in extensions)
        self._readiness = Readiness(settle)
        self._clock = clock
        self._wall_clock = wall_clock
        # SimpleQueue: put() is safe even from a signal handler that interrupted get().
        self._events: queue.SimpleQueue[RawEvent | QueueEdit | None] = queue.SimpleQueue()
        self._shared = observer
        self._observer: BaseObserver | None = None
        self._watch: ObservedWatch | None = None  # ours, on the shared observer
        #: Called on watchdog's thread after each event (Prefetch.poke).
        self.on_event: Callable[[], object] = lambda: None
        self._handler = _Forwarder(self._events, lambda: self.on_event())
        self._started = False
        self._stopped = threading.Event()
        self._stop_once = threading.Lock()
        # While the folder is gone (deleted): when to look for it again.
        self._look_at: float | None = None

    def start(self, order: Sequence[Path] = ()) -> None:
        """Start watching, then queue the files already there: those in
        ``order`` first, in that order, then the rest in name order.

        Raises ConfigError if root is not a directory or cannot be watched at all.
        """
        if self._started:
            raise RuntimeError("a FolderQueue can only be started once")
        self._started = True
        if not self.root.is_dir():
            raise ConfigError(f"music folder {self.root} is not a directory")
        # Watch first, so a file arriving during the walk is seen by one or the other.
        self._observer = self._start_observer()
        if self._stopped.is_set():  # stop() ran on another thread while we were starting
            self._halt_observer()
            return
        ready = self._walk_in(self.root, log=False)
        self._readiness.prefer(order)
        logger.info(
            "watching %s: %d files ready, %d still arriving",
            self.root,
            ready,
            self._readiness.settling(),
        )

    def stop(self) -> None:
        """Stop watching and wake a get() that is waiting. Idempotent."""
        self._stopped.set()
        self._events.put(None)
        if self._stop_once.acquire(blocking=False):
            self._halt_observer()

    def get(self, timeout: float | None = None) -> Path | None:
        """The next complete file, waiting up to timeout seconds (None: for ever).

        Returns None on timeout or once stop() was called. Does not raise on files
        that vanish or cannot be read: those are simply not (or no longer) queued.
        """
        if not self._started:
            raise RuntimeError("call start() before get()")
        deadline = None if timeout is None else self._clock() + timeout
        while not self._stopped.is_set():
            self._drain()
            if self._stopped.is_set():
                break
            now = self._clock()
            self._look_for_root(now)
            for settled in self._readiness.poll(now, _size_mtime):
                self._log_queued(settled)
            path = self._pop_present()
            if path is not None:
                return path
            if deadline is not None and now >= deadline:
                return None
            self._wait(self._wait_time(now, deadline))
        return None

    def refresh(self) -> float | None:
        """Take in the events that came since the last get(), without waiting or
        handing anything out, so queued() is current. Returns the seconds until
        a settling file may be ready or a deleted folder is looked for again
        (None: neither). Consumer thread only."""
        if not self._started or self._stopped.is_set():
            return None
        self._drain()
        now = self._clock()
        self._look_for_root(now)
        for settled in self._readiness.poll(now, _size_mtime):
            self._log_queued(settled)
        return self._wait_time(now, None)

    def queued(self) -> list[Path]:
        """The files ready to play, in order (events not yet taken in aside)."""
        return self._readiness.ready()

    def exhausted(self) -> bool:
        """A folder never runs out: more files may come."""
        return False

    def edit(self, edit: QueueEdit) -> None:
        """Change the queue by hand; takes effect at the next get(). Any thread."""
        self._events.put(edit)

    def rescan(self) -> None:
        """Walk the folder again for files watchdog missed, or look for it now
        if it was deleted (SIGHUP). Safe to call from a signal handler: the walk
        happens in get() or refresh(), which on_event calls for."""
        self._events.put(("rescan", str(self.root), None, True))
        self.on_event()

    def __len__(self) -> int:
        """Files ready now, as of the last get()."""
        return len(self._readiness)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- watching

    def _start_observer(self) -> BaseObserver:
        try:
            if self._shared is not None:
                self._watch = _share(self._shared, self._handler, self.root)
                return self._shared
            return self._schedule(Observer())
        except OSError as exc:
            # Out of inotify watches or descriptors, or a file system without events.
            logger.warning(
                "cannot watch %s for events (%s); rescanning it every %.1f s instead",
                self.root,
                exc,
                _POLL_INTERVAL,
            )
        from watchdog.observers.polling import PollingObserver

        try:
            return self._schedule(PollingObserver(timeout=_POLL_INTERVAL))
        except OSError as exc:
            raise ConfigError(f"cannot watch music folder {self.root}: {exc}") from exc

    def _halt_observer(self) -> None:
        observer, self._observer = self._observer, None
        watch, self._watch = self._watch, None
        if observer is not None and watch is not None:
            _unshare(observer, self._handler, watch)
        elif observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join()

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        try:
            observer.schedule(
                self._handler, str(self.root), recursive=True, event_filter=_EVENT_FILTER
            )
            observer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                observer.stop()
            raise
        return observer

    # -- consuming events

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._take(event)

    def _take(self, event: RawEvent | QueueEdit | None) -> None:
        if isinstance(event, QueueEdit):
            self._readiness.apply(event)
        elif event is not None:
            self._handle(*event)

    def _wait(self, timeout: float | None) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        self._take(event)

    def _wait_time(self, now: float, deadline: float | None) -> float | None:
        candidates = [] if deadline is None else [deadline - now]
        settle_due = self._readiness.next_deadline()
        if settle_due is not None:
            candidates.append(settle_due - now)
        if self._look_at is not None:
            candidates.append(self._look_at - now)
        return max(0.0, min(candidates)) if candidates else None

    def _handle(self, kind: str, src: str, dest: str | None, is_directory: bool) -> None:
        path = Path(src)
        if kind == "moved":
            self._gone(path, is_directory)
            if dest is not None:
                self._arrived(Path(dest), is_directory)
        elif kind == "deleted":
            self._gone(path, is_directory)
        elif kind == "rescan" and self._look_at is not None:
            self._look_at = self._clock()  # the folder is gone: look for it now
        elif is_directory:
            if kind in ("created", "rescan"):
                self._walk_in(path)
        elif kind in ("created", "modified"):
            self._written(path, log_ignored=kind == "created")
        elif kind == "closed":
            self._arrived(path, is_directory=False)

    def _written(self, path: Path, *, log_ignored: bool) -> None:
        if not self._eligible(path, log_ignored=log_ignored):
            return
        current = _size_mtime(path)
        if current is None:
            self._readiness.remove(path)
        else:
            self._readiness.pending(path, *current, now=self._clock())

    def _arrived(self, path: Path, is_directory: bool) -> None:
        if is_directory:
            self._walk_in(path)
        elif self._eligible(path, log_ignored=True) and self._readiness.complete(path):
            self._log_queued(path)

    def _gone(self, path: Path, is_directory: bool) -> None:
        if not is_directory:
            if self._readiness.remove(path):
                logger.warning("dropped %s from the queue: the file is gone", path)
            return
        self._readiness.remove_tree(path)
        if path == self.root and self._look_at is None:
            # Its watch ended with it: a folder made again under the same name
            # is another one, to watch anew once it is there.
            logger.warning(
                "music folder %s was deleted; looking for it every %.0f s (or on SIGHUP)",
                path,
                _LOOK_INTERVAL,
            )
            self._look_at = self._clock() + _LOOK_INTERVAL
            self._guarded(self._halt_observer)

    def _look_for_root(self, now: float) -> None:
        """While the folder is gone: once it is back, watch it again and take in
        what it holds, as a rescan would."""
        if self._look_at is None or now < self._look_at:
            return
        self._look_at = now + _LOOK_INTERVAL
        if not self.root.is_dir():
            return
        try:
            watching = self._guarded(self._watch_again)
        except ConfigError as exc:
            logger.warning("%s; looking again in %.0f s", exc, _LOOK_INTERVAL)
            return
        if not watching:  # stopping
            return
        self._look_at = None
        ready = self._walk_in(self.root, log=False)
        logger.info(
            "music folder %s is back; watching it again: %d files ready, %d still arriving",
            self.root,
            ready,
            self._readiness.settling(),
        )

    def _watch_again(self) -> None:
        self._observer = self._start_observer()

    def _guarded(self, change: Callable[[], object]) -> bool:
        """Run ``change`` (of the watch) unless stop() ran. stop() never waits
        for this (it may run in a signal handler): one that came meanwhile found
        the lock taken and left the halt to us. Returns whether it ran."""
        if not self._stop_once.acquire(blocking=False):
            return False
        try:
            change()
        finally:
            self._stop_once.release()
            if self._stopped.is_set() and self._stop_once.acquire(blocking=False):
                self._halt_observer()  # the lock stays taken, as stop() keeps it
        return True

    def _walk_in(self, top: Path, *, log: bool = True) -> int:
        """Take in the files under a folder that appeared (or at start); returns how many
        were queued at once."""
        now, wall = self._clock(), self._wall_clock()
        queued = 0
        links: list[Path] = []
        for path, st in _walk(self.root, top, self._extensions, links):
            if self._readiness.found(
                path, st.st_size, st.st_mtime, now=now, age=wall - st.st_mtime
            ):
                queued += 1
                if log:
                    self._log_queued(path)
        if links:  # else a folder of links to a library elsewhere plays nothing, silently
            logger.warning(
                "left out %d symbolic links under %s (%s%s): only files in the folder play",
                len(links),
                top,
                links[0].relative_to(self.root).as_posix(),
                ", ..." if len(links) > 1 else "",
            )
        return queued

    def _pop_present(self) -> Path | None:
        # A deletion can still be on its way from watchdog: check before handing out.
        while (path := self._readiness.pop()) is not None:
            # Replaced by a link, or under a folder replaced by one, since it was queued.
            if path.is_symlink() or inside(self.root, path) is None:
                logger.warning("dropped %s from the queue: not a file of the folder", path)
                continue
            if _size_mtime(path) is not None:
                return path
            logger.warning("dropped %s from the queue: the file is gone", path)
        return None

    def _eligible(self, path: Path, *, log_ignored: bool) -> bool:
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        if is_eligible(rel, self._extensions):
            return not path.is_symlink()  # see _walk
        if log_ignored:
            logger.debug("ignoring %s", rel)
        return False

    def _log_queued(self, path: Path) -> None:
        rel = path.relative_to(self.root)
        logger.info("queued %s", (PurePath(self.root.name) / rel).as_posix())
