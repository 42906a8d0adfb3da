"""The station's play state on disk, so a restart after a crash or kill -9 resumes.

What has played, what is queued and how far the current track got live in one small
JSON file per station, replaced atomically (write a temp file, fsync, rename, fsync the
directory), so after any crash the file holds either the old state or the new one.

The file (``"version": 1``; stamps are ``[size, mtime_ns]`` pairs to keep it small)::

    {"version": 1, "played": {"/music/a.mp3": [4171, 1700000000000000000]},
     "queue": ["/music/b.mp3"], "current": "/music/c.mp3", "current_offset": 41730,
     "current_stamp": [90112, 1700000000000000000],
     "history": [{"file": "c.mp3", "title": "Band - Song", "started": "2026-12-01T10:00:00Z",
                  "gain_db": null}]}

``history`` (what played, newest first, for the status page; at most HISTORY_CAP)
came later: a file without it loads with an empty history. So did ``listeners``
(a sample a minute for 7 days, see core/listeners.py: ``{"every": 60, "start":
minute, "samples": base64 of zlib of little-endian uint16}``, a few KB at most);
one that is missing or unreadable loads as an empty series, the rest of the state
kept.

Paths are str as ``os.fspath`` gives them; names that are not UTF-8 carry surrogate
escapes, which ``json`` writes as ``\\udcXX`` and reads back unchanged. Only paths,
stamps and offsets are ever stored or logged, and the titles of what played.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mmap
import os
import re
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushsource.core.listeners import ListenerSeries
from pushsource.errors import ConfigError, PushsourceError

logger = logging.getLogger("pushsource.state")

VERSION = 1

#: How many played files are remembered; the oldest are forgotten first.
PLAYED_CAP = 20_000
#: How many history entries are kept (newest first).
HISTORY_CAP = 50

# A save that keeps failing (full disk, read-only mount) is reported this often, not per try.
_WARN_EVERY = 60.0

_TMP_INFIX = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Leaves room for the hash and ".json" (and ".tmp-<pid>") under the usual 255-byte name limit.
_SLUG_MAX = 100


class StateError(PushsourceError):
    """The state file cannot be written, or state data is malformed.

    ``path`` is the state file, or None for data not (yet) tied to a file.
    """

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FileStamp:
    """One version of a file: a file copied again with new content plays again."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        """The stamp of ``path`` now, or None if it cannot be stat'ed. Does not raise."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            return None
        return cls(st.st_size, st.st_mtime_ns)


def _key(path: Path) -> str:
    return os.fspath(path.absolute())


@dataclass
class PlayState:
    """What has played, what is queued, and where the current track was."""

    #: Absolute path -> stamp of files that finished or were skipped, oldest first.
    played: dict[str, FileStamp] = field(default_factory=dict)
    #: Absolute paths in play order, not including ``current``.
    queue: list[str] = field(default_factory=list)
    current: str | None = None
    #: Byte offset in ``current`` of the next frame not yet confirmed sent.
    current_offset: int = 0
    current_stamp: FileStamp | None = None
    #: What played, newest first: {"file", "title", "started", "gain_db"[, "skipped"]}.
    #: Replaced as a whole, never changed in place (a save may be reading it).
    history: list[dict[str, object]] = field(default_factory=list)
    #: Listeners, a sample a minute (added on the sampler's thread, read on any).
    listeners: ListenerSeries = field(default_factory=ListenerSeries, compare=False)
    #: Held while ``played`` changes; hold it to iterate ``played`` on another
    #: thread (the control API marks and forgets files beside the station).
    lock: threading.Lock = field(
        default_factory=threading.Lock, repr=False, compare=False, init=False
    )

    #: Counts changes to ``played``: the encoder re-encodes it only when it moved
    #: (a size-and-ends key missed a forget followed by a mark).
    played_version: int = field(default=0, repr=False, compare=False, init=False)

    def __post_init__(self) -> None:
        self._trim()

    def _trim(self) -> None:
        del self.history[HISTORY_CAP:]
        excess = len(self.played) - PLAYED_CAP
        if excess > 0:
            for old in list(self.played)[:excess]:
                del self.played[old]

    def was_played(self, path: Path) -> bool:
        """Whether this version of ``path`` has played: it is in ``played`` and its
        size and mtime are still the ones recorded. A missing file has not. Does not raise."""
        stored = self.played.get(_key(path))
        return stored is not None and FileStamp.of(path) == stored

    def mark_played(self, path: Path, stamp: FileStamp | None = None) -> None:
        """Record ``path`` as played (as the newest entry). Leaves ``queue`` and
        ``current`` alone.

        ``stamp`` defaults to the file's stamp now; pass the one taken when play
        started so a copy that replaced the file meanwhile still plays. A file that
        cannot be stat'ed is forgotten instead: there is no version of it to skip.
        """
        key = _key(path)
        if stamp is None:
            stamp = FileStamp.of(path)
        with self.lock:
            self.played_version += 1
            self.played.pop(key, None)  # re-inserted at the end: the cap drops the oldest
            if stamp is not None:
                self.played[key] = stamp
                self._trim()

    def forget(self, path: Path) -> None:
        """Let ``path`` play again (an operator queued it by hand)."""
        with self.lock:
            self.played_version += 1
            self.played.pop(_key(path), None)

    def snapshot(self) -> Snapshot:
        """Everything but ``played``, as it is now: taken on the thread that
        changes the state, encoded on another (a save then never pairs one
        track with another's offset)."""
        return Snapshot(
            tuple(self.queue),
            self.current,
            self.current_offset,
            self.current_stamp,
            self.history,
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, ``from_json``'s inverse."""
        return {
            "version": VERSION,
            "played": self.played_json(),
            "queue": list(self.queue),
            "current": self.current,
            "current_offset": self.current_offset,
            "current_stamp": _stamp_to_json(self.current_stamp),
            "history": list(self.history),
            "listeners": self.listeners.to_json(),
        }

    def played_json(self) -> dict[str, list[int]]:
        """``played`` as JSON-ready data, taken under the lock."""
        with self.lock:
            return {p: [s.size, s.mtime_ns] for p, s in self.played.items()}

    @classmethod
    def from_json(cls, data: object) -> PlayState:
        """The state ``data`` describes. Raises StateError if anything in it is
        missing, unknown, of the wrong type or inconsistent."""
        if not isinstance(data, dict):
            raise StateError(f"expected a JSON object, got {_kind(data)}")
        version = data.get("version")
        if type(version) is not int or version != VERSION:
            raise StateError(f"unknown version {_shown(version)}, expected {VERSION}")
        keys = {"version", "played", "queue", "current", "current_offset", "current_stamp"}
        later = {"history", "listeners"}
        if not keys <= data.keys() or data.keys() - keys - later:
            extra = sorted(map(str, data.keys() - keys - later))
            missing = sorted(keys - data.keys())
            raise StateError(f"unknown keys {extra}, missing keys {missing}")

        played_data = data["played"]
        if not isinstance(played_data, dict):
            raise StateError(f"played: expected an object, got {_kind(played_data)}")
        played = {
            _path_from_json(p, "played"): _stamp_from_json(s, f"played[{p}]")
            for p, s in played_data.items()
        }
        queue_data = data["queue"]
        if not isinstance(queue_data, list):
            raise StateError(f"queue: expected an array, got {_kind(queue_data)}")
        queue = [_path_from_json(p, "queue") for p in queue_data]

        current_data = data["current"]
        current = None if current_data is None else _path_from_json(current_data, "current")
        offset = data["current_offset"]
        if type(offset) is not int or offset < 0:
            raise StateError(f"current_offset: expected an int >= 0, got {_shown(offset)}")
        stamp_data = data["current_stamp"]
        stamp = None if stamp_data is None else _stamp_from_json(stamp_data, "current_stamp")
        if current is None and (offset != 0 or stamp is not None):
            raise StateError("current_offset and current_stamp given without current")
        history = _history_from_json(data.get("history", []))
        state = cls(played, queue, current, offset, stamp, history)
        if "listeners" in data:
            try:
                state.listeners = ListenerSeries.from_json(data["listeners"])
            except ValueError as exc:  # a week of counts is not worth the play state
                logger.warning("state: listeners over time unreadable, starting afresh: %s", exc)
        return state


@dataclass(frozen=True, slots=True)
class Snapshot:
    """PlayState's parts that change as a station plays, at one moment.
    ``history`` is shared, not copied: it is replaced as a whole, never changed."""

    queue: tuple[str, ...]
    current: str | None
    current_offset: int
    current_stamp: FileStamp | None
    history: list[dict[str, object]]


def _kind(value: object) -> str:
    return type(value).__name__


def _shown(value: object) -> str:
    # Only numbers are echoed: a file mistaken for the state file may hold anything.
    return repr(value) if value is None or isinstance(value, int | float) else _kind(value)


def _path_from_json(value: object, where: str) -> str:
    if not isinstance(value, str) or "\0" in value or not os.path.isabs(value):
        got = "a relative path" if isinstance(value, str) else _kind(value)
        raise StateError(f"{where}: expected an absolute path, got {got}")
    return value


_HISTORY_TEXT = ("file", "title", "started")
#: Listeners when the track began and when it ended (absent: not known yet).
_HISTORY_LISTENERS = ("listeners_start", "listeners_end")


def _history_from_json(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        raise StateError(f"history: expected an array, got {_kind(value)}")
    history: list[dict[str, object]] = []
    for n, entry in enumerate(value[:HISTORY_CAP]):
        where = f"history[{n}]"
        if not isinstance(entry, dict):
            raise StateError(f"{where}: expected an object, got {_kind(entry)}")
        if not all(isinstance(entry.get(key), str) for key in _HISTORY_TEXT):
            raise StateError(f"{where}: expected file, title and started as strings")
        gain = entry.get("gain_db")
        if gain is not None and (type(gain) not in (int, float)):
            raise StateError(f"{where}: gain_db: expected a number or null, got {_kind(gain)}")
        kept: dict[str, object] = {key: entry[key] for key in _HISTORY_TEXT}
        kept["gain_db"] = gain
        for key in _HISTORY_LISTENERS:  # later, optional: an unknown count is null
            count = entry.get(key)
            if type(count) is int and count >= 0:
                kept[key] = count
            elif key in entry:
                kept[key] = None
        # Its length (issue 23; absent from older files): shown beside its title.
        duration = entry.get("duration")
        if duration is not None and type(duration) in (int, float):
            kept["duration"] = duration
        if entry.get("skipped") is True:
            kept["skipped"] = True
        # A DJ's set (issue 22): whose it was, and its recording.
        for key in ("live", "recording", "recording_url"):
            if isinstance(entry.get(key), str):
                kept[key] = entry[key]
        history.append(kept)
    return history


def _stamp_to_json(stamp: FileStamp | None) -> list[int] | None:
    return None if stamp is None else [stamp.size, stamp.mtime_ns]


def _stamp_from_json(value: object, where: str) -> FileStamp:
    # type() rather than isinstance(): JSON true/false must not pass for 1/0.
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(n) is int for n in value)
        or value[0] < 0
    ):
        raise StateError(f"{where}: expected [size >= 0, mtime_ns], got {_kind(value)}")
    return FileStamp(value[0], value[1])


def default_state_path(station_key: str) -> Path:
    """Where the state of the station ``station_key`` ("host:port/mount") lives:
    ``$XDG_STATE_HOME/pushsource/<slug>.json``, else ``~/.local/state/pushsource/...``.

    The slug is the key with characters other than ``[A-Za-z0-9._-]`` turned into
    ``_``, plus a hash of the key, so keys that differ only there still get their
    own files. Raises ConfigError if there is neither XDG_STATE_HOME nor a home.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if not os.path.isabs(base):
        try:
            base = os.fspath(Path.home() / ".local" / "state")
        except RuntimeError as exc:
            raise ConfigError(f"no home directory for the state file; use --state: {exc}") from exc
    return Path(base) / "pushsource" / f"{station_slug(station_key)}.json"


def station_slug(station_key: str) -> str:
    """A file name for the station ``station_key``: its safe characters, and a hash."""
    digest = hashlib.sha256(station_key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', station_key)[:_SLUG_MAX]}-{digest}"


def check_state_path(path: Path, folder: Path | None = None) -> None:
    """Refuse a state path that is a directory (or the music folder, or a file in
    it): a bad state file is moved aside and replaced, which must never happen
    to an operator's folder or music. Raises ConfigError."""
    if path.is_dir():
        raise ConfigError(
            f"state file {path} is a directory; give a file name, as in {path}/state.json"
        )
    if folder is not None:
        try:
            inside = path.resolve().is_relative_to(folder.resolve())
        except (OSError, RuntimeError):
            inside = False
        if inside:
            raise ConfigError(
                f"state file {path} is inside the music folder {folder}; put it elsewhere"
            )


def load_state(path: Path) -> PlayState:
    """The state saved at ``path``; an empty one if there is none.

    A file that cannot be read or parsed is moved aside to ``<name>.corrupt`` (so
    nothing is lost, and the next save does not trip over it), with one warning.
    Leftover temp files of saves killed mid-way are removed. Does not raise.
    """
    _remove_stale_temps(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return PlayState()
    except IsADirectoryError:  # check_state_path refuses these; never move a folder aside
        logger.warning("state file %s is a directory; not using it", path)
        return PlayState()
    except OSError as exc:
        reason = f"cannot read it ({exc.strerror or exc})"
    else:
        try:
            return PlayState.from_json(json.loads(raw))
        except StateError as exc:
            reason = exc.reason
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            reason = f"not JSON ({exc})" if raw.strip() else "empty file"
    logger.warning("state file %s is unusable, starting afresh: %s%s", path, reason, _aside(path))
    return PlayState()


def _aside(path: Path) -> str:
    """Move a bad state file to a free ``<name>.corrupt[.N]``; say where, for the log."""
    if path.is_dir():
        return "; left it in place: it is a directory"
    for n in range(1000):
        target = path.with_name(path.name + ".corrupt" + (f".{n}" if n else ""))
        if target.exists() or target.is_symlink():
            continue
        try:
            os.rename(path, target)
        except OSError as exc:
            return f"; could not move it aside: {exc.strerror or exc}"
        return f"; moved it to {target.name}"
    return "; left it in place: too many .corrupt files"


def _remove_stale_temps(path: Path) -> None:
    prefix = path.name + _TMP_INFIX
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            pid = entry.name.removeprefix(prefix)
            if pid != entry.name and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


class _Encoder:
    """Encodes states to the file's bytes, keeping the encoded ``played`` part
    while it stays the same: it may hold 20,000 entries, and only the position
    in the current track changes between most saves."""

    def __init__(self) -> None:
        self._played: tuple[object, str] | None = None
        self._listeners: tuple[object, str] | None = None

    def encode(self, state: PlayState, snap: Snapshot) -> bytes:
        key = (id(state), state.played_version)
        if self._played is None or self._played[0] != key:
            text = json.dumps(state.played_json(), separators=(",", ":"))
            self._played = (key, text)
        rest = json.dumps(
            {
                "queue": list(snap.queue),
                "current": snap.current,
                "current_offset": snap.current_offset,
                "current_stamp": _stamp_to_json(snap.current_stamp),
                "history": snap.history,
            },
            separators=(",", ":"),
        )
        # The listeners change once a minute at most; a save may come every second.
        series = state.listeners
        key = (id(series), series.version)
        if self._listeners is None or self._listeners[0] != key:
            text = json.dumps(series.to_json(), separators=(",", ":"))
            self._listeners = (key, text)
        text = (
            f'{{"version":{VERSION},"played":{self._played[1]},{rest[1:-1]},'
            f'"listeners":{self._listeners[1]}}}'
        )
        return text.encode("ascii")


def save_state(path: Path, state: PlayState, data: bytes | None = None) -> None:
    """Replace the state file at ``path`` atomically and durably.

    Creates missing directories (mode 0700); the file gets mode 0600. Raises
    StateError on any OSError; a failed save leaves the old file and no temp file.
    """
    if data is None:  # else: state, encoded already
        data = json.dumps(state.to_json(), separators=(",", ":")).encode("ascii")
    tmp = path.with_name(f"{path.name}{_TMP_INFIX}{os.getpid()}")
    try:
        _make_dirs(path.parent)
        # O_NOFOLLOW: never write through a symlink planted under the temp name.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover temp file may have had another mode
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
                f.flush()
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"cannot save state: {exc.strerror or exc}", path) from exc
    try:
        _fsync_dir(path.parent)
    except OSError as exc:
        raise StateError(f"saved, but not durably: {exc.strerror or exc}", path) from exc


def _make_dirs(directory: Path) -> None:
    # Unlike os.makedirs, every directory we create gets 0700, not only the last.
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a directory; the rename is as durable as they get.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class StateKeeper:
    """Saves the state when it changed, at most every ``interval`` seconds, plus at
    once on demand. Saving never raises: the audio must go on. Not thread-safe."""

    def __init__(
        self,
        path: Path,
        state: PlayState,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        positions: PositionFile | None = None,
    ) -> None:
        self.path = path
        self.state = state
        #: Where the playing file is after every batch (kept through a kill -9).
        self.positions = positions
        self.interval = interval
        self._clock = clock
        self._dirty = False
        self._last_try: float | None = None
        self._warned: tuple[str, float] | None = None  # last warning and when
        self._encoder = _Encoder()
        self._saved: bytes | None = None  # what the file holds, as we last wrote it

    @property
    def dirty(self) -> bool:
        """Whether there are changes not saved yet."""
        return self._dirty

    def changed(self) -> None:
        """Note that ``state`` changed; a later ``maybe_save`` or ``save_now`` saves it."""
        self._dirty = True

    def due(self) -> bool:
        """Whether maybe_save() would save now (if dirty)."""
        return self._last_try is None or self._clock() - self._last_try >= self.interval

    def maybe_save(self) -> None:
        """Save if dirty and ``interval`` has passed since the last try. Does not raise."""
        if self._dirty and self.due():
            self._save()

    def save_now(self, snap: Snapshot | None = None) -> None:
        """Save if dirty, however recent the last save (track change, shutdown).
        ``snap``: the state as its owner's thread saw it (taken now if None,
        for a caller on that thread). Does not raise."""
        if self._dirty:
            self._save(snap)

    def _save(self, snap: Snapshot | None = None) -> None:
        # A failed try counts too: a full disk is not hammered on every call.
        now = self._last_try = self._clock()
        data = self._encoder.encode(self.state, snap or self.state.snapshot())
        if data == self._saved:  # nothing new (idle, or the same place): no write, no fsync
            self._dirty = False
            return
        try:
            save_state(self.path, self.state, data)
        except StateError as exc:
            message = str(exc)
            if self._warned and self._warned[0] == message and now - self._warned[1] < _WARN_EVERY:
                logger.debug("%s (again)", message)
            else:
                self._warned = (message, now)
                logger.warning("%s; playing on, will retry", message)
            return
        self._dirty = False
        self._saved = data
        if self._warned is not None:
            logger.info("state saved to %s again", self.path)
            self._warned = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write, fsync, rename: a reader sees the old file or the whole new one."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


# --- the position between saves --------------------------------------------------------

_POS_MAGIC = b"PSPOS1\0\0"
_POS_SIZE = 4096
_POS_WORD = 8  # the offset word: one aligned 8-byte store, so a kill never tears it
_POS_SLOTS = (64, 64 + 2016)  # two track records, written in turn
_POS_HEAD = struct.Struct("<QQqII")  # generation, size, mtime_ns, path length, crc32
_POS_PATH_MAX = 2016 - _POS_HEAD.size
_GEN_BITS = 24  # the offset word holds the low bits of its record's generation
_OFFSET_MAX = (1 << (64 - _GEN_BITS)) - 1


@dataclass(frozen=True, slots=True)
class Position:
    """Where a station was in which file, as a PositionFile last knew it."""

    path: str
    stamp: FileStamp
    offset: int


class PositionFile:
    """The playing file and the offset after every batch, in a small memory-mapped
    file beside the state file: the kernel keeps a mapped page through a crash of
    the process (``kill -9``), so a restart repeats at most the batch that was
    going out, without a write or an fsync per batch. (Power loss is the state
    file's business: it is fsync'd on its own schedule.)

    A file starts with a record (generation, stamp, path) in one of two slots,
    written in turn with a checksum, so a record half-written when the process
    died is told apart and the other one used; after every batch one aligned
    8-byte word holds the offset and its record's generation. Only the owner's
    thread calls ``track`` and ``at``."""

    def __init__(self, path: Path, mm: mmap.mmap, generation: int) -> None:
        self.path = path
        self._mm = mm
        self._gen = generation

    @classmethod
    def open(cls, path: Path) -> PositionFile | None:
        """The position file at ``path``, made if need be; None (and a debug line)
        where it cannot be: the state file alone then says where to go on."""
        try:
            _make_dirs(path.parent)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                if os.fstat(fd).st_size != _POS_SIZE:
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, _POS_SIZE)
                mm = mmap.mmap(fd, _POS_SIZE)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            logger.debug("no position file at %s: %s", path, exc)
            return None
        if mm[: len(_POS_MAGIC)] != _POS_MAGIC:
            mm[:] = bytes(_POS_SIZE)
            mm[: len(_POS_MAGIC)] = _POS_MAGIC
        records = [r for r in map(lambda at: _read_record(mm, at), _POS_SLOTS) if r]
        return cls(path, mm, max((r[0] for r in records), default=0))

    def track(self, path: str | None, stamp: FileStamp | None, offset: int = 0) -> None:
        """A file starts playing at ``offset`` (None: nothing plays)."""
        name = b""
        if path is not None and stamp is not None:
            name = os.fsencode(path)
            if len(name) > _POS_PATH_MAX:
                name = b""  # too long to keep here: the state file has it
        size, mtime = (stamp.size, stamp.mtime_ns) if name and stamp is not None else (0, 0)
        self._gen += 1
        slot = _POS_SLOTS[self._gen % 2]
        head = _POS_HEAD.pack(self._gen, size, mtime, len(name), 0)
        crc = zlib.crc32(head[:-4] + name)
        self._mm[slot : slot + _POS_HEAD.size + len(name)] = (
            _POS_HEAD.pack(self._gen, size, mtime, len(name), crc) + name
        )
        self.at(offset)

    def at(self, offset: int) -> None:
        """The playing file's next frame to send is at ``offset``."""
        if 0 <= offset <= _OFFSET_MAX:
            word = (self._gen & ((1 << _GEN_BITS) - 1)) << (64 - _GEN_BITS) | offset
            struct.pack_into("<Q", self._mm, _POS_WORD, word)

    def read(self) -> Position | None:
        """What the file says: the newest whole record, with its offset."""
        records = [r for r in map(lambda at: _read_record(self._mm, at), _POS_SLOTS) if r]
        if not records:
            return None
        gen, size, mtime, name = max(records)
        (word,) = struct.unpack_from("<Q", self._mm, _POS_WORD)
        if not name or word >> (64 - _GEN_BITS) != gen & ((1 << _GEN_BITS) - 1):
            return None
        return Position(os.fsdecode(name), FileStamp(size, mtime), word & _OFFSET_MAX)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()


def _read_record(mm: mmap.mmap, at: int) -> tuple[int, int, int, bytes] | None:
    gen, size, mtime, length, crc = _POS_HEAD.unpack_from(mm, at)
    if gen == 0 or length > _POS_PATH_MAX:
        return None
    name = bytes(mm[at + _POS_HEAD.size : at + _POS_HEAD.size + length])
    head = _POS_HEAD.pack(gen, size, mtime, length, 0)
    if zlib.crc32(head[:-4] + name) != crc:
        return None
    return gen, size, mtime, name


def go_on_from(state: PlayState, where: Position | None) -> bool:
    """Bring ``state`` up to ``where`` (a PositionFile's, newer than any save):
    the offset in the current file, or a file that started after the last save
    (the one before it then has played). Whether it changed anything."""
    if where is None:
        return False
    if where.path == state.current:
        if where.stamp != state.current_stamp or where.offset == state.current_offset:
            return False
        state.current_offset = where.offset
        return True
    if where.path not in state.queue:
        return False  # it ended and was saved as played since
    if state.current is not None:
        state.mark_played(Path(state.current), state.current_stamp)
    state.queue.remove(where.path)
    state.current, state.current_stamp, state.current_offset = where.path, where.stamp, where.offset
    return True


def position_path(state: Path) -> Path:
    """The position file of the state file ``state``."""
    return state.with_name(state.name + ".pos")
