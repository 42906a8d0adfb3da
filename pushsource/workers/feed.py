"""A station's blocking side, run on the worker pool: taking the next file
from the queue, converting it, opening it, reading its frames in chunks.

The engine calls a Feed from at most one worker at a time per lane: the cue
lane (queue, conversions, opening) and the read lane (frames of the playing
track), so a conversion of the next file never holds up the current one.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from pushsource.core.effects import Alt, Chunk, Cued, Join, Mix
from pushsource.core.frames import END, NEED_DATA, FrameParser, FrameRun, MPEGVersion, parse_header
from pushsource.core.gain import plan_of, silent_runs
from pushsource.core.outputs import ALT_CHUNK
from pushsource.core.splice import (
    MAX_BEGIN_MPEG1,
    MAX_BEGIN_MPEG2,
    main_data_begin,
    silence_side_info,
)
from pushsource.errors import CacheError, FrameError, TrackError
from pushsource.workers.crossfade import NoJoin, build_join, file_delays
from pushsource.workers.folder import QueueEdit
from pushsource.workers.quiet import quiet_runs, tail
from pushsource.workers.tracks import Track

if TYPE_CHECKING:
    from pushsource.workers.loudness import TrackGain

log = logging.getLogger("pushsource")


class TrackSource(Protocol):
    """Where the next file comes from (the watched folder, or a fixed list).
    Called from one worker at a time."""

    def get(self, timeout: float | None = None) -> Path | None: ...
    def queued(self) -> list[Path]: ...
    def exhausted(self) -> bool: ...
    def edit(self, edit: QueueEdit) -> None: ...
    def refresh(self) -> float | None: ...


class ListSource:
    """A fixed list of files, for ``--once``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._lock = threading.Lock()

    def edit(self, edit: QueueEdit) -> None:
        with self._lock:
            self._paths = _edited(self._paths, edit)

    def refresh(self) -> float | None:
        return None

    def get(self, timeout: float | None = None) -> Path | None:
        with self._lock:
            return self._paths.pop(0) if self._paths else None

    def queued(self) -> list[Path]:
        with self._lock:
            return list(self._paths)

    def exhausted(self) -> bool:
        with self._lock:
            return not self._paths


@dataclass(frozen=True)
class CueResult:
    track: Cued | None
    end: bool = False  # the source will never have another file
    resumed_one: bool = False  # the resume entry asked for is used up
    again: float | None = None  # look again in this many seconds (files settling), track or not
    #: Not cued: this file must be converted or measured first (Feed.prepare,
    #: on the convert executor), then the same cue asked again.
    prepare: Path | None = None


def read_alt(track: Track, seconds: float = ALT_CHUNK, *, skip: float = 0.0) -> Alt:
    """``seconds`` of an opened ``track``, for an output in another format,
    from about ``skip`` seconds in (a second early: the station's count of a
    resumed track may differ a little from the estimate); the rest is read as
    it plays (Feed.read on ``handle``)."""
    duration = track.first.header.duration
    skipped, left = 0, max(0, round((skip - 1.0) / duration))
    chunk = Chunk(b"", [], 0, False)
    while left > 0 and not chunk.last:
        chunk = read_chunk(track, min(left, 4096))
        skipped += len(chunk.ends)
        left -= len(chunk.ends)
    frames = max(1, round(seconds / duration))
    chunk = read_chunk(track, frames) if not chunk.last else Chunk(b"", [], 0, True)
    if chunk.last:
        track.close()
    return Alt(
        chunk.data,
        list(chunk.ends),
        track.first.header,
        handle=None if chunk.last else track,
        last=chunk.last,
        first=skipped,
    )


def read_chunk(track: Track, frames: int) -> Chunk:
    """Up to ``frames`` frames of ``track`` from where it is, in one chunk of
    contiguous bytes (a skipped tag or junk between frames ends a chunk early).
    Does not raise: a read error ends the track (Track says so)."""
    parts: list[bytes] = []
    ends: list[int] = []
    start: int | None = None
    size = 0
    last = False
    while len(ends) < frames:
        run = track.next_run(frames - len(ends))
        if run is None:
            last = True
            break
        if start is None:
            start = run.offset
        elif run.offset != start + size:
            track.push_back(run)  # not contiguous: it starts the next chunk
            break
        data = run.data
        pos = 0
        while pos < len(data):
            header = parse_header(data, pos)
            assert header is not None, "a FrameRun holds whole frames only"
            pos += header.length
            ends.append(size + pos)
        parts.append(data)
        size += len(data)
    if start is None:
        start = track.position
    data = b"".join(parts)
    # The frames before, for near-silence at its start: if right before it.
    before = track.context if track.context_end == start else b""
    runs = quiet_runs(data, ends, silent_runs(data, ends), before)
    track.context, track.context_end = tail(data, ends), start + len(data)
    return Chunk(data, ends, start, last, runs)


#: Silence at the end of a chunk is read past this far, at most, to see
#: whether the track ends in it (trim): a longer silence inside a track goes
#: out as read, and only what is left of it at the end is trimmed.
TRIM_AHEAD: Final = 30.0


def _join(first: Chunk, then: Chunk) -> Chunk:
    """Two chunks of a track, ``then`` right after ``first`` in the file."""
    size = len(first.data)
    count = len(first.ends)
    runs = list(first.silent)
    for start, stop in then.silent:
        if runs and runs[-1][1] == count and start == 0:
            runs[-1] = (runs[-1][0], count + stop)
        else:
            runs.append((count + start, count + stop))
    ends = [*first.ends, *(size + end for end in then.ends)]
    return Chunk(first.data + then.data, ends, first.offset, then.last, tuple(runs))


def _from(chunk: Chunk, index: int, stop: int | None = None, *, last: bool) -> Chunk:
    """Frames ``index`` to ``stop - 1`` of ``chunk`` as a chunk of their own."""
    ends = chunk.ends[index:stop]
    if not ends:
        at = chunk.offset + (chunk.ends[index - 1] if index else 0)
        return Chunk(b"", [], at, last)
    cut = chunk.ends[index - 1] if index else 0
    data = chunk.data[cut : ends[-1]]
    ends = [end - cut for end in ends]
    end = len(chunk.ends) if stop is None else stop
    runs = tuple(
        (max(a, index) - index, min(b, end) - index)
        for a, b in chunk.silent
        if min(b, end) > max(a, index)
    )  # the chunk's own findings: a few frames alone decode less well
    return Chunk(data, ends, chunk.offset + cut, last, runs)


#: The most main data a frame may reach back for (main_data_begin's 9 bits).
RESERVOIR_MAX: Final = 511


def _reservoir_from(chunk: Chunk) -> int:
    """The first of the chunk's last frames whose main data could be reached
    back into by a frame after them."""
    ends, data = chunk.ends, chunk.data
    room = 0
    index = len(ends)
    while index > 0 and room < RESERVOIR_MAX:
        index -= 1
        at = ends[index - 1] if index else 0
        room += plan_of(data[at : at + 4]).room
    return index


def trim_start(track: Track, chunk: Chunk, frames: int) -> Chunk:
    """``chunk``, the first of ``track``, without the digital silence the track
    starts with (chunks of ``frames`` frames are read past it as needed): from
    its first frame with sound, less the silent frames right before it that
    hold that frame's bit reservoir (its main_data_begin reaches back into
    them), made to reach back no further themselves. A track silent
    all through keeps its last chunk. Sets ``track.trimmed_start``."""
    duration = track.first.header.duration
    dropped = 0
    while True:
        runs = chunk.silent
        quiet = runs[0][1] if runs and runs[0][0] == 0 else 0
        if quiet < len(chunk.ends) or chunk.last:
            break
        more = read_chunk(track, frames)
        if more.offset == chunk.offset + len(chunk.data):
            # Its last frames may hold the reservoir of the sound to come.
            keep = _reservoir_from(chunk)
            dropped += keep
            chunk = _join(_from(chunk, keep, last=False), more)
        else:
            dropped += len(chunk.ends)
            chunk = more
    if quiet >= len(chunk.ends):  # silent all through: its last chunk plays
        track.trimmed_start = dropped * duration
        return chunk
    # Frame ``quiet`` has sound: keep the silent frames its main data needs.
    ends, data = chunk.ends, chunk.data
    need = main_data_begin(data, ends[quiet - 1] if quiet else 0) or 0
    keep = quiet
    while need > 0 and keep > 0:
        keep -= 1
        at = ends[keep - 1] if keep else 0
        need -= plan_of(data[at : at + 4]).room
    track.trimmed_start = (dropped + keep) * duration
    if keep == 0:
        return chunk
    kept = _from(chunk, keep, last=chunk.last)
    # The silent frames kept go out as digital silence (near-silence read
    # main data: it is made silence) reaching back no further than the first
    # of them, as a decoder joining here has nothing before; each points at
    # all the bytes before it, which decoders then keep (core.splice).
    parts, held, start = [], 0, 0
    for end in kept.ends[: quiet - keep]:
        frame = bytearray(kept.data[start:end])
        header = parse_header(frame)
        if header is not None and header.layer == 3:
            most = MAX_BEGIN_MPEG1 if header.version is MPEGVersion.MPEG1 else MAX_BEGIN_MPEG2
            silence_side_info(frame, 0, min(held, most))
        parts.append(bytes(frame))
        held += plan_of(bytes(frame[:4])).room
        start = end
    return Chunk(
        b"".join(parts) + kept.data[start:], kept.ends, kept.offset, kept.last, kept.silent
    )


def trim_end(track: Track, chunk: Chunk) -> Chunk:
    """``chunk``, the last of ``track``, without the digital silence it ends
    with, but for one frame (the last sound's overlap tail). Sets
    ``track.trimmed_end`` and says how much was trimmed, if any."""
    runs = chunk.silent
    count = len(chunk.ends)
    if runs and runs[-1][1] == count:
        # One silent frame stays: the last sound's tail, and a track silent
        # all through still has a frame to start (and be marked played) with.
        stop = runs[-1][0] + 1
        if stop < count:
            track.trimmed_end += (count - stop) * track.first.header.duration
            chunk = _from(chunk, 0, stop, last=True)
    if track.trimmed_start or track.trimmed_end:
        log.info(
            "%s: trimmed %.1f s of silence at the start, %.1f s at the end",
            track.info.title,
            track.trimmed_start,
            track.trimmed_end,
        )
    return chunk


def read_trimmed(track: Track, frames: int) -> Chunk:
    """read_chunk() for a track whose end silence is trimmed: a chunk that
    ends in silence is read past (TRIM_AHEAD at most) to see whether the
    track ends in it."""
    held = track.held
    if isinstance(held, Chunk):
        track.held = None
        return trim_end(track, held) if held.last else held
    chunk = read_chunk(track, frames)
    limit = TRIM_AHEAD / track.first.header.duration
    while not chunk.last:
        runs = chunk.silent
        count = len(chunk.ends)
        if not runs or runs[-1][1] != count or count - runs[-1][0] >= limit:
            return chunk  # it ends with sound (or a long silence: it goes out)
        more = read_chunk(track, frames)
        if more.ends and more.offset != chunk.offset + len(chunk.data):
            track.held = more  # not contiguous (a tag between): it comes next
            return chunk
        chunk = _join(chunk, more)
    return trim_end(track, chunk)


class Feed:
    """The queue and the files of one station, for the workers."""

    def __init__(
        self,
        source: TrackSource,
        *,
        resolve: Callable[[Path], Path],
        prepare: Callable[[Path], object],
        was_played: Callable[[Path], bool],
        mark_played: Callable[[Path], None],
        unplayable: Callable[[TrackError], object],
        library: Callable[[], Sequence[Path]] | None = None,
        shuffle: bool = False,
        rng: random.Random | None = None,
        gain: Callable[[Path], TrackGain | None] = lambda path: None,
        alternates: Sequence[tuple[str, str, Callable[[Path], Path]]] = (),
        ready: Callable[[Path], bool] = lambda path: True,
        trim: bool = False,
    ) -> None:
        """``ready(path)``: whether ``prepare`` (and each alternate's) would
        answer at once, with nothing to convert or measure; a cue of a file
        that is not hands it back (CueResult.prepare) instead of converting."""
        # Outputs in other formats: (format key, what to call it in a line,
        # prepare: the MP3 in that format for a file, converted if need be).
        self._alternates = alternates
        self._trim = trim  # drop the digital silence at each end of a track
        self._gain = gain  # the level change to play a file with (loudness)
        self._source = source
        self._resolve = resolve
        self._prepare = prepare
        self._was_played = was_played
        self._mark_played = mark_played
        self._unplayable = unplayable
        self._library = library  # idle loop: replay these when the queue is dry
        self._shuffle = shuffle
        self._rng = rng or random.Random()
        self._loop: list[Path] = []
        #: The loop's next file as of the cue lane's last look (the status reads it).
        self._loop_next: Path | None = None
        self._queued: list[Path] = []
        self._lock = threading.Lock()  # around _queued, read by the control API
        self._prepared: Path | None = None
        self._ready = ready
        # Files whose preparing failed (said once): skipped when reached.
        self._unready: set[Path] = set()
        # Files prepared without their copy for some outputs (by format key),
        # whose cache could not be written: played without it.
        self._uncopied: dict[Path, set[str]] = {}
        # The outputs without copies (by format key), said once till they have one again.
        self._silent: set[str] = set()

    # -- the cue lane

    def cue(
        self, resume: tuple[Path, int] | None, *, last: Path | None = None, chunk: int = 1
    ) -> CueResult:
        """The next playable track, opened and its first ``chunk`` frames read:
        ``resume`` first if given; then the queue (skipping what played and
        files that cannot be played, one line each); then, with an idle loop,
        the library (``last``, the file that just started, not again at once)."""
        if resume is not None:
            path, offset = resume
            if self._failed_before(path):
                return CueResult(None, resumed_one=True)
            if not self._prepared_for(path):
                return CueResult(None, prepare=path)
            try:
                track = self._open(path, offset, chunk)
            except TrackError as exc:
                if offset:
                    # Going on after a break, with every frame sent already
                    # (only trailing tags, if anything, are left): it is done.
                    log.debug("%s: nothing left to play at byte %d", path, offset)
                    self._mark_played(path)
                else:
                    self._unplayable(exc)
                return CueResult(None, resumed_one=True)
            # Playing now: not still to come (after a restart the folder queue
            # lists it too). As get() would have taken it.
            self.edit(QueueEdit(remove=(path,)))
            return CueResult(track, resumed_one=True, again=self._source.refresh())
        while True:
            got = self._source.get(0)
            if got is None:
                break
            if self._was_played(got):
                log.debug("%s played already", got)
                continue
            if self._failed_before(got):
                continue
            if not self._prepared_for(got):  # back where it was, for after its conversion
                self._source.edit(QueueEdit(front=(got,)))
                self._snapshot()
                # Shown first meanwhile (a folder applies the edit at its next get).
                with self._lock:
                    self._queued = [got, *(path for path in self._queued if path != got)]
                return CueResult(None, prepare=got)
            try:
                track = self._open(got, 0, chunk)
            except TrackError as exc:
                self._unplayable(exc)
                continue
            # Files still settling are looked at again when they may be ready,
            # not only at the next cue (a track later): the queue shows them.
            again = self._source.refresh()
            self._snapshot()
            self._look_ahead(got)
            return CueResult(track, again=again)
        self._snapshot()
        end = self._source.exhausted()
        if self._library is not None and not end:
            looped = self._from_library(last, chunk)
            if isinstance(looped, Path):
                return CueResult(None, prepare=looped)
            if looped is not None:
                self._look_ahead(looped.path)
                return CueResult(looped, again=self._source.refresh())
        return CueResult(None, end=end, again=None if end else self._source.refresh())

    # -- the convert lane

    def prepare(self, path: Path) -> None:
        """Convert (or measure) ``path`` for its cue, which asked for it."""
        self._prepared = path
        try:
            ok = self._prepare_one(path)
        except Exception as exc:  # a bug costs this file, not the station's cues
            log.error("preparing %s failed: %r", path, exc)
            ok = False
        if not ok:
            self._unready.add(path)

    def prepare_next(self) -> None:
        """Convert the first queued file ahead of its turn (seconds, maybe),
        as of the cue lane's last look at the queue."""
        with self._lock:
            upcoming = self._queued[0] if self._queued else None
        if upcoming is None or upcoming == self._prepared or self._was_played(upcoming):
            return
        self._prepared = upcoming
        self._prepare_one(upcoming)  # a failure is said now; skipped again, silently, at its turn

    def _failed_before(self, path: Path) -> bool:
        """Whether preparing ``path`` failed (its line was said then); its
        next turn after this one tries again."""
        if path in self._unready:
            self._unready.discard(path)
            return True
        return False

    def _prepare_one(self, path: Path) -> bool:
        try:
            self._prepare(path)
            for key, label, prepare in self._alternates:
                try:
                    self._for_output(path, label, prepare)
                except CacheError as exc:
                    self._no_copy(path, key, label, exc)
                else:
                    self._copied(path, key, label)
        except TrackError as exc:
            self._unplayable(exc)
            return False
        return True

    def _prepared_for(self, path: Path) -> bool:
        """Whether a cue may open ``path`` now: every copy ready, or the
        convert lane tried and some could not be stored (played without)."""
        with self._lock:
            if path in self._uncopied:
                return True
        return self._ready(path)

    def _no_copy(self, path: Path, key: str, label: str, exc: CacheError) -> None:
        """An output cannot have its copy of ``path``: the disk under its cache
        is full or read-only. It costs that output (silence), not the station."""
        with self._lock:
            self._uncopied.setdefault(path, set()).add(key)
            if len(self._uncopied) > 1000:  # only the next few files matter
                self._uncopied.pop(next(iter(self._uncopied)))
        self._silence(key, label, exc)

    def _silence(self, key: str, label: str, exc: CacheError) -> None:
        with self._lock:
            first = key not in self._silent
            self._silent.add(key)
        if first:
            log.warning(
                "the %s output is silent from %s on: %s (the station plays on; "
                "its conversion is tried again for each file)",
                label,
                exc.path,
                exc.reason,
            )

    def _copied(self, path: Path, key: str, label: str) -> None:
        with self._lock:
            back = key in self._silent
            self._silent.discard(key)
        if back:
            log.info("the %s output has its copies again, from %s on", label, path)

    def refresh(self) -> float | None:
        """Take in the folder's news; when to look again (files settling)."""
        again = self._source.refresh()
        self._snapshot()
        return again

    def edit(self, edit: QueueEdit) -> None:
        self._source.edit(edit)
        with self._lock:  # shown at once, applied at the next get()
            self._queued = _edited(self._queued, edit)

    def queued(self) -> list[Path]:
        """The files the queue will hand out next, as of the last look. Any thread."""
        with self._lock:
            return list(self._queued)

    def queue_length(self) -> int:
        """How many files queued() lists, without copying them (/metrics). Any thread."""
        with self._lock:
            return len(self._queued)

    def release(self, track: object) -> None:
        if isinstance(track, Track):
            track.close()
            for companion in track.companions:
                companion.close()

    # -- the read lane

    def read(self, track: object, frames: int) -> Chunk:
        """The next frames of a playing track, or of its copy in another format
        (which may have been released meanwhile: then none)."""
        assert isinstance(track, Track)
        if track.trim:
            if track.closed and track.held is None:
                return Chunk(b"", [], track.position, True)
            return read_trimmed(track, frames)
        if track.closed:
            return Chunk(b"", [], track.position, True)
        return read_chunk(track, frames)

    # --

    def mix(self, mix: Mix, bitrate: int) -> Join | None:
        """The crossfade join ``mix`` asks for (None: not here; one line says
        why). On the workers: it decodes and encodes a few seconds of audio."""
        out_track, in_track = mix.out_track.handle, mix.in_track.handle
        out_delays = file_delays(out_track.play) if isinstance(out_track, Track) else None
        in_delays = file_delays(in_track.play) if isinstance(in_track, Track) else None
        made = build_join(
            mix.outgoing,
            mix.incoming,
            mix.fade,
            bitrate=bitrate,
            out_padding=out_delays[1] if out_delays is not None else None,
            # Trimmed at its start, its frames begin mid-file: no encoder delay there.
            in_delay=0 if mix.in_track.before else in_delays[0] if in_delays else None,
            alts=[(key, alt.header) for key, alt in mix.in_track.alts.items()],
        )
        if isinstance(made, NoJoin):
            log.info("no crossfade into %s: %s", mix.in_track.title, made.reason)
            return None
        return made

    def _snapshot(self) -> None:
        # What already played is skipped when reached: it is not shown as
        # coming (after a restart the folder queue holds every file again).
        # was_played stats only the files it has a record of.
        queued = [path for path in self._source.queued() if not self._was_played(path)]
        with self._lock:
            self._queued = queued

    def _open(self, path: Path, offset: int, chunk: int) -> Cued:
        """Raises TrackError."""
        self._prepare(path)
        gain = self._gain(path)
        track = Track(path, play=self._resolve(path), gain=gain).open(offset)
        first = read_chunk(track, chunk)
        if self._trim:
            # Not from a resume point: only the file's own start is trimmed.
            track.trim = True
            if not track.resumed:
                first = trim_start(track, first, chunk)
            if first.last:
                first = trim_end(track, first)
        header = track.first.header
        # Bitrate and length are the played file's (a converted copy's: what goes on air).
        bitrate = track.info.bitrate or header.bitrate
        # Elapsed time is the place in the file: a trimmed start is skipped.
        before = track.trimmed_start
        if track.resumed:  # an estimate from the bytes; exact for CBR
            before = max(0, first.offset - audio_start(track.play)) / (bitrate * 125)
        alts: dict[str, Alt] = {}
        with self._lock:
            uncopied = self._uncopied.pop(path, set())
        try:
            for key, label, prepare in self._alternates:
                if key in uncopied:
                    continue  # that output plays silence for it
                try:
                    alts[key] = self._alt(path, label, prepare, gain, before)
                except CacheError as exc:
                    self._silence(key, label, exc)
                else:
                    self._copied(path, key, label)
        except TrackError:
            track.close()  # one output cannot get it: none of them plays it
            for alt in alts.values():
                self.release(alt.handle)
            raise
        # Its copies are read as it plays and closed with it.
        track.companions = [alt.handle for alt in alts.values() if isinstance(alt.handle, Track)]
        return Cued(
            handle=track,
            path=path,
            title=track.info.title,
            duration=track.info.duration,
            bitrate=bitrate,
            header=header,
            chunk=first,
            resumed=track.resumed,
            stamp=track.stamp,
            gain_db=track.gain_db,
            gain_note=gain.describe() if gain is not None else "",
            before=before,
            alts=alts,
        )

    def _alt(
        self,
        path: Path,
        label: str,
        prepare: Callable[[Path], Path],
        gain: TrackGain | None,
        before: float,
    ) -> Alt:
        """``path`` for an output in another format, with the station's gain
        (the same steps, after conversion), from about ``before`` seconds in
        (a resumed track). Raises TrackError."""
        play = self._for_output(path, label, prepare)
        try:
            return read_alt(Track(path, play=play, gain=gain).open(), skip=before)
        except TrackError as exc:
            raise TrackError(path, f"{exc.reason} (for the {label} output)") from None

    @staticmethod
    def _for_output(path: Path, label: str, prepare: Callable[[Path], Path]) -> Path:
        """``prepare(path)``, its TrackError saying which output. Raises TrackError."""
        try:
            return prepare(path)
        except CacheError:
            raise  # not the file's fault: the caller says so, with the output's name
        except TrackError as exc:
            raise TrackError(path, f"{exc.reason} (for the {label} output)") from None

    def _from_library(self, last: Path | None, chunk: int) -> Cued | Path | None:
        """The next track of the loop, opened; or a file of it to prepare first."""
        assert self._library is not None
        for refilled in (False, True):  # a second pass after refilling an exhausted cycle
            while self._loop:
                if self._loop[0] == last and not refilled:
                    # It just played (from the queue, maybe, or resumed): not
                    # again at once; later in the cycle, or in the next one.
                    again = self._loop.pop(0)
                    if not self._loop:
                        break  # the cycle's last: the refill puts it at the end
                    self._loop.append(again)
                path = self._loop.pop(0)
                if self._failed_before(path):
                    continue
                if not self._prepared_for(path):
                    self._loop.insert(0, path)
                    return path
                try:
                    track = self._open(path, 0, chunk)
                    track.looped = True
                    return track
                except TrackError as exc:
                    self._unplayable(exc)
            self._refill(last)
            if not self._loop:
                return None
        return None

    def _refill(self, last: Path | None) -> None:
        """A new cycle of the loop: the library, shuffled if asked."""
        assert self._library is not None
        self._loop = list(self._library())
        if self._shuffle:
            self._rng.shuffle(self._loop)
        if len(self._loop) > 1 and self._loop[0] == last:
            # The track that just played does not come again at once.
            self._loop.append(self._loop.pop(0))

    # -- up next (issue 23): what the loop plays after the queue, known ahead

    def _look_ahead(self, cued: Path) -> None:
        """On the cue lane, after ``cued`` was cued: note the loop's next file
        (what _from_library will take, with ``cued`` as its ``last``). With
        the cycle used up and the queue dry, the next cycle is made now rather
        than at the next cue (one walk of the folder either way, a track
        earlier), so its first file is known while ``cued`` plays."""
        if self._library is None:
            return
        with self._lock:
            dry = not self._queued
        if not self._loop and dry:
            self._refill(cued)
        loop = self._loop
        upcoming = loop[1] if len(loop) > 1 and loop[0] == cued else loop[0] if loop else None
        with self._lock:
            self._loop_next = upcoming

    def loop_next(self) -> Path | None:
        """The file the idle loop plays next once the queue is dry (None: no
        loop, or not known yet). Any thread; no I/O."""
        with self._lock:
            return self._loop_next


def audio_start(path: Path) -> int:
    """The offset of the first frame of ``path`` (past its tags); 0 if it
    cannot be found. Does not raise."""
    parser = FrameParser()
    try:
        with path.open("rb") as file:
            while True:
                event = parser.next_run(1)
                if isinstance(event, FrameRun):
                    return event.offset
                if event is NEED_DATA:
                    parser.feed(file.read(1 << 16))
                elif event is END:
                    return 0
    except (OSError, FrameError):
        return 0


def _edited(queued: list[Path], edit: QueueEdit) -> list[Path]:
    """``queued`` after ``edit``, as the folder queue applies it: ``front``
    first (less ``remove``), then the rest of ``queued`` (less both), then the
    ``enqueue`` files not there yet, then the ``order`` files present moved to
    the front. Duplicates within one list stay, as they always did. O(n) with
    sets: this runs on the engine's thread, and a move hands the whole queue
    in as ``order`` (list membership made a 3,000-file move take seconds)."""
    removed = set(edit.remove)
    paths = [p for p in edit.front if p not in removed]
    fronted = set(paths)
    paths += [p for p in queued if p not in removed and p not in fronted]
    present = set(paths)
    paths += [p for p in edit.enqueue if p not in present]
    present.update(edit.enqueue)
    ordered = [p for p in edit.order if p in present]
    first = set(ordered)
    return ordered + [p for p in paths if p not in first]
