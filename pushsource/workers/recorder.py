"""DJ sets recorded as they went on air (``record`` in ``[station.live]``).

The engine's thread knows which frames of each batch are a set's (the machine's
:attr:`~pushsource.core.live.LiveMixin.airing`); :class:`SetRecorder` hands
them, as they go out, to the one :class:`RecordWriter` thread of the process,
which writes one file per set: an ID3 tag (the DJ, their first title, the
start; the titles with their times added when the set ends) and then the
station-format frames, nothing else. The engine's thread only ever puts work on
a queue: a slow or full disk, or a path it cannot write, costs the recording
(one line saying why), never the air.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import re
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

log = logging.getLogger("pushsource")

#: What a record path may hold.
PLACEHOLDERS: Final = ("station", "user", "start")
#: ``{start}``: the set's first frame on air, UTC, with no ``:`` (a file name
#: on any file system): 2026-12-07T06-30-00Z.
START_FORMAT: Final = "%Y-%m-%dT%H-%M-%SZ"
#: Room left in the ID3 tag written when a set starts, for what its end adds
#: (the titles): mutagen then rewrites the tag in place, not the whole file.
TAG_PADDING: Final = 4096
#: A recording the disk is this many seconds of audio behind on is dropped.
BEHIND_SECONDS: Final = 60.0
#: The longest the writer waits for the air's pass to end before a job
#: (engine.loop's PASS_WAIT: workers may not import the engine).
PASS_WAIT: Final = 0.25
#: The longest a placeholder's value may make a path component (characters).
MAX_PART: Final = 100

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def safe_part(text: str) -> str:
    """``text`` as one path component: no separator, no control character,
    nothing a file system refuses, not ``.``/``..`` or hidden (leading dots
    go), at most MAX_PART characters; ``_`` if nothing is left. Does not raise."""
    out = _UNSAFE.sub("_", text).strip().lstrip(".").strip()
    return out[:MAX_PART] or "_"


def start_text(when: float) -> str:
    """A Unix time as ``{start}`` has it."""
    return time.strftime(START_FORMAT, time.gmtime(when))


class RecordTemplate:
    """A ``record`` path: ``{station}``, ``{user}`` and ``{start}`` filled in
    for each set (``{{`` and ``}}`` are plain braces). Raises ValueError, one
    line, for a template that cannot name a file: an unknown placeholder, a
    stray brace, a format spec, none at all."""

    def __init__(self, template: str) -> None:
        if not template.strip():
            raise ValueError("the record path is empty")
        if template.endswith("/"):
            raise ValueError(f"the record path {template!r} names a folder, not a file")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"the record path {template!r}: {exc}") from None
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                shown = "{" + name + "}" if name else "{}"
                raise ValueError(
                    f"unknown placeholder {shown} in the record path {template!r}: "
                    "use {station}, {user} or {start}"
                )
            if spec or conversion:
                raise ValueError(
                    f"the record path {template!r}: {{{name}}} takes no format or conversion"
                )
        self.template = template
        parts = template.split("/")
        fixed = next((n for n, part in enumerate(parts) if "{" in part), len(parts) - 1)
        fixed = min(fixed, len(parts) - 1)
        #: The folder every recording is under (the template's part with no placeholder).
        self.root = Path("/".join(parts[:fixed]) or ("/" if template.startswith("/") else "."))

    def __repr__(self) -> str:
        return f"RecordTemplate({self.template!r})"

    def render(self, station: str, user: str, start: float) -> Path:
        """The file of a set by ``user`` on ``station`` that began at ``start`` (Unix time)."""
        return Path(
            self.template.format(
                station=safe_part(station), user=safe_part(user), start=start_text(start)
            )
        )

    def name_of(self, path: Path) -> str:
        """How the control API names a recording: its path under :attr:`root`."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name


@dataclass(eq=False)
class Recording:
    """One set's file. The engine's thread sets the first fields and the
    counts it hands over; the writer's thread the rest (each field has one
    writer, so reading across threads needs no lock)."""

    station: str
    user: str
    live: object  # the machine's Live of the set (a new one is a new set)
    start: float  # Unix time of its first frame on air
    path: Path  # as the template made it (the writer may add -2 for a clash)
    frame_seconds: float
    titles: list[tuple[float, str]] = field(default_factory=list)  # (seconds in, title)
    queued: int = 0  # bytes handed to the writer
    frames: int = 0
    dropped: str | None = None  # why the engine's thread stopped handing over
    ended: bool = False
    # The writer's:
    written: int = 0  # bytes of frames in the file
    final: Path | None = None  # the file, once open
    error: str | None = None  # why it stopped (or never started)
    fd: int | None = None

    @property
    def seconds(self) -> float:
        return self.frames * self.frame_seconds

    def title(self, default: str) -> str:
        """The ID3 title: the DJ's first title, else ``default`` (``Live: alice``)."""
        return next((t for _, t in self.titles if t != default), default)


class RecordingEvents(Protocol):
    """What the station hears of its recordings, on the engine's thread."""

    def recording_opened(self, rec: Recording) -> None: ...
    def recording_ended(self, rec: Recording) -> None: ...


class RecordWriter:
    """One thread for every recording of the process: jobs are closures run in
    order. :meth:`submit` never waits on the disk (any thread: the lock is
    held for a put); the thread starts with the first job, and :meth:`close`
    lets it end once it has done every job handed over (a later job starts
    it again)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        """``gate``: set while the air may be interrupted (the engine's
        air_idle): each job waits for it, a quarter second at most, as the
        pools' jobs do, so writing never takes the interpreter lock from a
        pass of the air."""
        self._gate = gate
        self._jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], object]) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pushsource-record", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs handed over (files closed and tagged), then stop."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._jobs.put(None)
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                with self._lock:  # no job can come between this look and the end
                    if self._jobs.empty():
                        self._thread = None
                        return
                continue
            if self._gate is not None:
                self._gate.wait(PASS_WAIT)
            try:
                job()
            except Exception:  # a bug must not stop every station's recordings
                log.exception("recording: a write failed")


class SetRecorder:
    """One station's recordings, on the engine's thread: :meth:`sent` with each
    batch that went out (``live``: the machine's ``airing``), :meth:`title` with
    each title set during a set, :meth:`check` after each step (the set may
    have ended with no batch), :meth:`close` when the station ends."""

    def __init__(
        self,
        template: RecordTemplate,
        station: str,
        writer: RecordWriter,
        *,
        frame_seconds: float,
        bytes_per_second: float,
        call: Callable[..., object],
        events: RecordingEvents | None = None,
        default_title: str = "Live: {user}",
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``call(fn, *args)`` runs ``fn`` on the engine's thread (from the
        writer's); ``default_title``: the title of a DJ who sends none."""
        self.template = template
        self._station = station
        self._writer = writer
        self._frame_seconds = frame_seconds
        self._behind = max(64 * 1024, int(bytes_per_second * BEHIND_SECONDS))
        self._call = call
        self._events = events
        self._default = default_title
        self._wall = wall
        self.current: Recording | None = None

    def sent(self, live: object, user: str | None, data: bytes, frames: int) -> None:
        """A batch went out: the set's (``live``, the DJ ``user``) or, with
        ``live`` None, not a set's (the folder's, closing silence)."""
        rec = self.current
        if live is None or user is None:
            if rec is not None:
                self._end(rec)
            return
        if rec is None or rec.live is not live or rec.user != user:
            if rec is not None:
                self._end(rec)
            rec = self._begin(live, user)
        if rec.dropped is not None or rec.error is not None:
            return
        if rec.queued - rec.written > self._behind:
            rec.dropped = "the disk is behind"
            log.warning(
                "recording %s's set dropped at %s: the disk is %.0f s behind on %s "
                "(the set goes on; the file keeps what was written)",
                rec.user,
                _clock(rec.seconds),
                (rec.queued - rec.written) / max(1.0, self._behind / BEHIND_SECONDS),
                rec.final or rec.path,
                extra=self._fields(rec, "recording_dropped"),
            )
            self._writer.submit(lambda: self._finish(rec))
            return
        rec.queued += len(data)
        rec.frames += frames
        self._writer.submit(lambda: self._write(rec, data))

    def title(self, live: object, title: str) -> None:
        """A title went on air during the set of ``live``."""
        rec = self.current
        if rec is not None and rec.live is live and (not rec.titles or rec.titles[-1][1] != title):
            rec.titles.append((rec.seconds, title))

    def check(self, live: object, user: str | None) -> None:
        """After a step: ``live`` the machine's DJ whose set is on (on air, or
        off air in an outage), None if none; the recording ends with the set."""
        rec = self.current
        if rec is not None and (live is not rec.live or user != rec.user):
            self._end(rec)

    def close(self) -> None:
        if self.current is not None:
            self._end(self.current)

    # -- the engine's thread

    def _begin(self, live: object, user: str) -> Recording:
        start = self._wall()
        path = self.template.render(self._station, user, start)
        rec = Recording(self._station, user, live, start, path, self._frame_seconds)
        self.current = rec
        title = self._default.replace("{user}", user)
        self._writer.submit(lambda: self._open(rec, title))
        return rec

    def _end(self, rec: Recording) -> None:
        self.current = None
        if rec.ended:
            return
        rec.ended = True
        if rec.dropped is None:
            titles = list(rec.titles)
            title = rec.title(self._default.replace("{user}", rec.user))
            self._writer.submit(lambda: self._finish(rec, titles, title))

    def _report(self, opened: bool, rec: Recording) -> None:
        events = self._events
        if events is not None:
            if opened:
                events.recording_opened(rec)
            else:
                events.recording_ended(rec)

    def _fields(self, rec: Recording, event: str, error: str | None = None) -> dict[str, object]:
        fields: dict[str, object] = {"station": self._station, "event": event}
        fields["file"] = str(rec.final or rec.path)
        if error is not None:
            fields["error"] = error
        return fields

    # -- the writer's thread

    def _open(self, rec: Recording, title: str) -> None:
        path = rec.path
        try:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # a file where the folder should be
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
                ) from None
            path = _create(path)
            rec.final = path
            _tag(path, rec, title, [], padding=TAG_PADDING)
            rec.fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            rec.error = reason
            where = exc.filename if isinstance(exc.filename, str) else path
            log.warning(
                "not recording %s's set: cannot write %s: %s (the set goes on)",
                rec.user,
                where,
                reason,
                extra=self._fields(rec, "recording_failed", reason),
            )
            if rec.final is not None:
                with contextlib.suppress(OSError):
                    os.unlink(rec.final)
                rec.final = None
            self._call(self._report, False, rec)
            return
        log.info("recording %s's set to %s", rec.user, path, extra=self._fields(rec, "recording"))
        self._call(self._report, True, rec)

    def _write(self, rec: Recording, data: bytes) -> None:
        fd = rec.fd
        if fd is None or rec.error is not None:
            rec.written += len(data)  # counted all the same: "behind" is of the disk
            return
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(fd, view[done:])
        except OSError as exc:
            reason = exc.strerror or str(exc)
            rec.error = reason
            # Whole frames only: what the last batch left half-written goes.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR) - done)
            log.warning(
                "recording %s's set stopped at %s: %s: %s (the set goes on; the file keeps "
                "what was written)",
                rec.user,
                _clock(rec.written / max(1, rec.queued) * rec.seconds),
                rec.final,
                reason,
                extra=self._fields(rec, "recording_failed", reason),
            )
            self._close_fd(rec)
        rec.written += len(data)

    def _finish(
        self, rec: Recording, titles: list[tuple[float, str]] | None = None, title: str = ""
    ) -> None:
        failed = rec.error is not None or rec.dropped is not None
        self._close_fd(rec)
        if rec.final is None:
            return
        if titles is not None and not failed:
            try:
                _tag(rec.final, rec, title, titles, padding=None)
            except OSError as exc:  # the frames are all there: only the tag is short
                log.warning("recording %s: could not finish its tag: %s", rec.final, exc)
            log.info(
                "recorded %s's set: %s (%s)",
                rec.user,
                rec.final,
                _clock(rec.seconds),
                extra=self._fields(rec, "recording_end"),
            )
        self._call(self._report, False, rec)

    @staticmethod
    def _close_fd(rec: Recording) -> None:
        fd, rec.fd = rec.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _create(path: Path) -> Path:
    """Create ``path`` anew, or ``name-2.mp3``... beside it if it exists
    (two sets in one second, a template without {start}). Raises OSError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for n in range(1, 1000):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.close(os.open(candidate, flags, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(17, "too many recordings of that name", str(path))


def _tag(
    path: Path,
    rec: Recording,
    title: str,
    titles: list[tuple[float, str]],
    *,
    padding: int | None,
) -> None:
    """The recording's ID3v2.4 tag: the DJ, the title, the start; the titles
    with their times in a comment. Raises OSError."""
    from mutagen import MutagenError, id3

    # mutagen leaves its tag constructors unannotated: Any.
    frames: Any = id3
    tag = frames.ID3()
    tag.add(frames.TIT2(encoding=3, text=title))
    tag.add(frames.TPE1(encoding=3, text=rec.user))
    tag.add(frames.TALB(encoding=3, text=rec.station))
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec.start))
    tag.add(frames.TDRC(encoding=3, text=started))
    if titles:
        lines = "\n".join(f"{_clock(at)} {text}" for at, text in titles)
        tag.add(frames.COMM(encoding=3, lang="eng", desc="titles", text=lines))
    try:
        if padding is not None:
            tag.save(path, padding=lambda _info: padding)
        else:  # in place, in the room left at the start, when it fits
            tag.save(path, padding=lambda info: info.padding if info.padding >= 0 else TAG_PADDING)
    except MutagenError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
        if cause is not None:
            raise cause from None
        raise OSError(0, str(exc), str(path)) from None


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
