"""A station: tracks from a source, paced frame batches into one PUT, titles as tracks start."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from pushsource.core.frames import FrameHeader, parse_header, silent_frame
from pushsource.core.pacer import Pacer
from pushsource.errors import AuthenticationError, IcecastError, TrackError
from pushsource.workers.folder import QueueEdit
from pushsource.workers.icecast import IcecastTarget, SourceConnection, StationInfo, TitleUpdater
from pushsource.workers.state import PlayState, StateKeeper
from pushsource.workers.tracks import Track, skipped

if TYPE_CHECKING:
    from pushsource.workers.loudness import TrackGain

log = logging.getLogger("pushsource")

#: Icecast 2.4.4 relays source data in blocks of this many bytes and drops the
#: last partial block when a source leaves: a clean close sends at least this
#: much silence after the last real frame.
ICECAST_BLOCK: Final = 1400
#: How long a station that never goes off the air waits for its first file
#: before it goes on air with silence.
FIRST_FILE_GRACE: Final = 1.0


class TrackSource(Protocol):
    """Where the next file comes from (the watched folder, or a fixed list)."""

    def get(self, timeout: float | None = None) -> Path | None:
        """The next file to play, waiting up to ``timeout`` s; None if none came."""
        ...

    def queued(self) -> list[Path]:
        """The files that get() will return next, in order, as far as known."""
        ...

    def exhausted(self) -> bool:
        """Whether get() will never return a file again (a list played out)."""
        ...


class ListSource:
    """A fixed list of files, for ``--once``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._lock = threading.Lock()

    def edit(self, edit: QueueEdit) -> None:
        with self._lock:
            paths = [p for p in edit.front if p not in edit.remove]
            paths += [p for p in self._paths if p not in edit.remove and p not in paths]
            paths += [p for p in edit.enqueue if p not in paths]
            ordered = [p for p in edit.order if p in paths]
            self._paths = ordered + [p for p in paths if p not in ordered]

    def refresh(self) -> float | None:
        return None

    def get(self, timeout: float | None = None) -> Path | None:
        with self._lock:
            return self._paths.pop(0) if self._paths else None

    def queued(self) -> list[Path]:
        with self._lock:
            return list(self._paths)

    def exhausted(self) -> bool:
        return not self._paths


class Connection(Protocol):
    def stream(self, chunks: Iterator[bytes], headers: dict[str, str]) -> int: ...

    def accepted(self) -> bool | None:
        """Whether the server took the source; None: not known (yet)."""
        ...


class Titles(Protocol):
    def set(self, title: str) -> None: ...
    def close(self, timeout: float = 2.0) -> None: ...


class Events(Protocol):
    """What a station tells the world (status pages, metrics). Called on the
    station's thread; must be quick and must not raise."""

    def connection(self, state: str, error: str | None = None) -> None:
        """``state``: connecting, on air, idle, reconnecting, stopped or failed."""
        ...

    def track_started(self, track: Track) -> None: ...
    def track_ended(self, track: Track, *, skipped: bool) -> None: ...

    def file_skipped(self, exc: TrackError) -> None:
        """A file cannot be played (say so once)."""
        ...

    def sent(self, nbytes: int, frames: int, lead: float) -> None:
        """A batch went out; ``lead``: seconds of audio now sent ahead of real time."""
        ...


class NoEvents:
    def connection(self, state: str, error: str | None = None) -> None:
        pass

    def track_started(self, track: Track) -> None:
        pass

    def track_ended(self, track: Track, *, skipped: bool) -> None:
        pass

    def file_skipped(self, exc: TrackError) -> None:
        skipped(exc)

    def sent(self, nbytes: int, frames: int, lead: float) -> None:
        pass


class Idle(Enum):
    """What to do when the queue runs dry."""

    SILENCE = "silence"  # keep the mount alive with silent frames
    LOOP = "loop"  # replay the folder's library until new files arrive
    STOP = "stop"  # close the connection; reconnect when a file arrives


@dataclass(frozen=True)
class Pacing:
    lead: float = 0.5  # seconds of audio handed to Icecast ahead of real time, at most
    batch: float = 0.1  # seconds between wake-ups, at most


@dataclass(frozen=True)
class Retry:
    """Reconnecting: capped, jittered exponential backoff."""

    first: float = 1.0  # the first delay is drawn from [first/2, first]
    cap: float = 30.0
    limit: int | None = None  # consecutive failed attempts before giving up; None: never

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt number ``attempt`` (1, 2, ...)."""
        base = min(self.cap, self.first * 2 ** (attempt - 1))
        return rng.uniform(base / 2, base)


class Station:
    """Streams the files of ``source`` to ``target`` until the source runs out
    (``once``) or :meth:`stop` is called.

    Without ``once``, the connection stays up while files keep coming; when the
    queue runs dry it closes cleanly and a new connection opens when the next
    file is ready. A connection that fails is retried with backoff, and the
    stream goes on from the first frame not yet sent, in the same track.
    """

    def __init__(
        self,
        target: IcecastTarget,
        source: TrackSource,
        info: StationInfo,
        *,
        once: bool = False,
        pacing: Pacing = Pacing(),
        retry: Retry = Retry(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        connect: Callable[[IcecastTarget], Connection] = SourceConnection,
        titles: Callable[[Connection], Titles] | None = None,
        rng: random.Random | None = None,
        keeper: StateKeeper | None = None,
        resume: Sequence[tuple[Path, int]] = (),
        idle: Idle = Idle.SILENCE,
        silence: FrameHeader | None = None,
        library: Callable[[], Sequence[Path]] = list,
        shuffle: bool = False,
        resolve: Callable[[Path], Path] = lambda path: path,
        gain: Callable[[Path], TrackGain | None] = lambda path: None,
        events: Events | None = None,
    ) -> None:
        self.target = target
        self._source = source
        self._info = info
        self._once = once
        self._pacing = pacing
        self._retry = retry
        self._clock = clock
        self._stopping = threading.Event()
        self._skipping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._connect = connect
        self._titles = titles if titles is not None else _title_updater
        self._rng = rng or random.Random()
        # Where to go on after a broken connection: (file, byte offset), played
        # before anything new from the source.
        self._resume: list[tuple[Path, int]] = list(resume)
        # What has played, persisted by the keeper (if any) for restarts.
        self._keeper = keeper
        self._state = keeper.state if keeper is not None else PlayState()
        self._current: Track | None = None
        self._in_flight: list[tuple[Track, int]] = []  # tracks in the unconfirmed batch
        self._accepted = False  # Icecast took the current connection
        self._refused = False  # ...or it did not
        self._idle = idle
        self._silence = silence  # format of idle silence; default: the last frame's
        self._library = library
        self._shuffle = shuffle
        self._resolve = resolve  # the MP3 to play for a file (a converted copy, maybe)
        self._gain = gain  # the level change to play it with (after resolve)
        self._loop: list[Path] = []
        self._loop_last: Path | None = None
        self._events = events if events is not None else NoEvents()
        self.played: list[Path] = []

    def stop(self) -> None:
        """Finish the batch in flight, close the stream cleanly, return from run()."""
        self._stopping.set()

    def skip(self) -> None:
        """End the current track at the next batch and go on with the next."""
        self._skipping.set()

    def run(self) -> None:
        """Stream until done. Raises AuthenticationError at once; IcecastError
        once ``retry.limit`` attempts in a row have failed."""
        try:
            self._run()
        except IcecastError as exc:
            self._events.connection("failed", str(exc))
            raise
        else:
            self._events.connection("stopped")
        finally:
            self._save(at_once=True)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._once or self._idle is Idle.STOP or self._silence is None:
                first = self._next_track(wait=True)
                if first is None:
                    return
            else:  # never off the air: with nothing to play, silence (or the library)
                first = self._next_track(wait=False, until=self._clock() + FIRST_FILE_GRACE)
                if first is None and self._idle is Idle.LOOP:
                    first = self._from_library()
            try:
                self._stream(first)
            except AuthenticationError:
                self._rewind()
                raise
            except IcecastError as exc:
                self._rewind()
                failures = 1 if self._accepted else failures + 1
                if self._retry.limit is not None and failures > self._retry.limit:
                    raise IcecastError(f"giving up after {failures} attempts: {exc}") from exc
                delay = self._retry.delay(failures, self._rng)
                self._events.connection("reconnecting", str(exc))
                log.warning("%s; reconnecting in %.1f s (attempt %d)", exc, delay, failures)
                self._sleep(delay)
                continue
            failures = 0
            if self._once and self._source.exhausted() and not self._resume:
                return
            if not self._stopping.is_set():
                self._events.connection("idle")
                log.info("queue empty: closed the stream, waiting for files")

    def _stream(self, first: Track | None) -> None:
        """One connection, from ``first`` (None: idle from the start) until the
        queue runs dry or we stop."""
        self._accepted = self._refused = False
        self._current = first  # from here on, a failure rewinds to it
        connection = self._connect(self.target)
        if self._silence is not None:  # the station's format
            header = self._silence
            bitrate = header.bitrate
        else:
            assert first is not None, "a station without a format waits for a file"
            header = first.first.header
            bitrate = first.info.bitrate or header.bitrate
        headers = self._info.headers(bitrate, header.sample_rate, header.channels)
        titles = self._titles(connection)
        body = self._body(first, titles, connection)
        try:
            log.info("connecting to %s", self.target)
            self._events.connection("connecting")
            connection.stream(body, headers)
            if self._refused:  # and no refusal status to say why
                raise IcecastError(f"{self.target} closed the connection before accepting it")
        finally:
            body.close()
            titles.close()

    def _rewind(self) -> None:
        """After a broken connection: go on from the first unconfirmed frame."""
        resume = [(track.path, _reopen_at(track, offset)) for track, offset in self._in_flight]
        current = self._current
        if current is not None and all(track is not current for track, _ in self._in_flight):
            resume.append((current.path, _reopen_at(current, current.position)))
        for track, _ in self._in_flight:
            track.close()
        if current is not None:
            current.close()
        self._in_flight, self._current = [], None
        self._resume = resume + self._resume

    # -- tracks -----------------------------------------------------------

    def _next_track(self, *, wait: bool, until: float | None = None) -> Track | None:
        """Open the next playable file, skipping bad ones with one warning each.

        ``wait``: block until a file comes (or stop); else give up at ``until``
        (a clock time) or at once.
        """
        while not self._stopping.is_set():
            offset = 0
            if self._resume:
                path, offset = self._resume.pop(0)
            else:
                if wait:
                    timeout: float | None = 0.5  # wake to notice stop()
                else:
                    timeout = 0.0 if until is None else max(0.0, until - self._clock())
                got = self._source.get(timeout)
                if got is None:
                    if wait and not (self._once and self._source.exhausted()):
                        continue
                    return None
                path = got
                if self._state.was_played(path):
                    log.debug("%s played already", path)
                    continue
            try:
                return self._open(path, offset)
            except TrackError as exc:
                if offset:
                    # Going on after a break, with every frame sent already
                    # (only trailing tags, if anything, are left): it is done.
                    log.debug("%s: nothing left to play at byte %d", path, offset)
                    self._state.mark_played(path)
                    continue
                self._events.file_skipped(exc)
        return None

    def _open(self, path: Path, offset: int = 0) -> Track:
        """Raises TrackError."""
        return Track(path, play=self._resolve(path), gain=self._gain(path)).open(offset)

    def _following(self) -> Track | None:
        """The track after this one: the queue first, then (idle loop) the library."""
        track = self._next_track(wait=False)
        if track is None and self._idle is Idle.LOOP and not self._stopping.is_set():
            track = self._from_library()
        return track

    def _from_library(self) -> Track | None:
        """The next file of the folder's library, replayed while nothing new
        comes; shuffled without an immediate repeat if asked."""
        for _ in range(2):  # a second pass after refilling an exhausted cycle
            while self._loop:
                path = self._loop.pop(0)
                try:
                    track = self._open(path)
                except TrackError as exc:
                    self._events.file_skipped(exc)
                    continue
                return track
            self._loop = list(self._library())
            if self._shuffle:
                self._rng.shuffle(self._loop)
                if len(self._loop) > 1 and self._loop[0] == self._loop_last:
                    self._loop.append(self._loop.pop(0))
            if not self._loop:
                return None
        return None

    def _announce_all(self, tracks: list[Track], titles: Titles) -> None:
        for track in tracks:
            self._announce(track, titles)
        tracks.clear()

    def _announce(self, track: Track, titles: Titles) -> None:
        header = track.first.header
        bitrate = track.info.bitrate or header.bitrate
        if track.resumed:
            seconds = track.first.offset / (bitrate * 125)
            log.info("resuming %s at about %s", track.info.title, _clock_time(seconds))
        else:
            log.info(
                "playing %s (%s, %d kbps, %d Hz%s) [%s]",
                track.info.title,
                _clock_time(track.info.duration),
                bitrate,
                header.sample_rate,
                "" if track.gain is None else f", {track.gain.describe()}",
                track.path.name,
            )
            self.played.append(track.path)
            self._loop_last = track.path  # a shuffled loop must not repeat it next
        titles.set(track.info.title)
        self._events.track_started(track)
        state = self._state
        state.current, state.current_stamp = str(track.path), track.stamp
        state.current_offset = track.first.offset
        self._save(at_once=True)

    def _finished(self, track: Track, *, skipped: bool = False) -> None:
        """A track played to its end, or was skipped: never again (this version)."""
        self._events.track_ended(track, skipped=skipped)
        self._state.mark_played(track.path, track.stamp)
        state = self._state
        if state.current == str(track.path):
            state.current, state.current_offset, state.current_stamp = None, 0, None
        self._save(at_once=True)

    def _save(self, *, at_once: bool = False) -> None:
        """Hand the state to the keeper: at once on track changes, else when due."""
        keeper = self._keeper
        if keeper is None or not (at_once or keeper.due()):
            return
        state = self._state
        current = self._current
        if current is not None and state.current == str(current.path):
            state.current_offset = current.position
        queue = [path for path, _ in self._resume] + self._source.queued()
        state.queue = [str(path) for path in queue if str(path) != state.current]
        keeper.changed()
        if at_once:
            keeper.save_now()
        else:
            keeper.maybe_save()

    # -- the body of the PUT ----------------------------------------------

    def _body(
        self, first: Track | None, titles: Titles, connection: Connection
    ) -> Generator[bytes, None, None]:
        """Frame batches, each handed over when its audio is due within the lead.

        A batch counts as sent when the connection asks for the next one; if
        it never does, ``_in_flight`` says where the unsent audio began.
        """
        pacer = Pacer(self._clock(), lead=self._pacing.lead, batch=self._pacing.batch)
        current: Track | None = first
        self._current = current
        # Tracks whose first frame is in a batch not yet announced.
        starting = [first] if first is not None else []
        last = first.first.header if first is not None else self._silence
        assert last is not None
        idle_silence = silent_frame(self._silence or last)
        idle_header = parse_header(idle_silence)
        assert idle_header is not None
        idling = False  # sending silence for want of a file
        handed = 0  # batches handed to the connection
        body = 0  # bytes handed to the connection
        while True:
            now = self._clock()
            out = bytearray()
            frames = 0
            batch: list[tuple[Track, int]] = []
            if self._skipping.is_set() and current is not None:
                self._skipping.clear()
                log.info("skipping %s", current.info.title)
                current.close()
                self._finished(current, skipped=True)
                current = self._current = self._following()
                if current is not None:
                    starting.append(current)
            if current is None and idling:
                current = self._current = self._following()
                if current is not None:
                    idling = False
                    starting.append(current)
            while pacer.may_send(now):
                if current is None:
                    if not idling:
                        break
                    # Silence keeps listeners and the mount alive.
                    count = pacer.frames_due(now, idle_header.samples, idle_header.sample_rate)
                    out += idle_silence * count
                    frames += count
                    pacer.add(count * idle_header.samples, idle_header.sample_rate)
                    continue
                # All frames of a track have its first frame's samples and rate.
                header = current.first.header
                run = current.next_run(pacer.frames_due(now, header.samples, header.sample_rate))
                if run is None:
                    self._finished(current)
                    current = self._current = self._following()
                    if current is not None:
                        starting.append(current)
                    continue
                if not batch or batch[-1][0] is not current:
                    batch.append((current, run.offset))
                out += run.data
                frames += run.count
                pacer.add(run.samples, run.header.sample_rate)
                last = run.last
            if out:
                # Nothing counts as sent before Icecast has taken the source.
                if self._accepted or not self._in_flight:
                    self._in_flight = batch
                else:  # keep where each track's unconfirmed audio began
                    known = {id(track) for track, _ in self._in_flight}
                    self._in_flight += [(t, o) for t, o in batch if id(t) not in known]
                yield bytes(out)
                handed += 1
                body += len(out)
                if not self._accepted:
                    verdict = self._await_acceptance(connection, handed)
                    if verdict is False:
                        self._refused = True
                        return  # requests reads Icecast's answer, and raises on it
                    self._accepted = verdict is True
                    if self._accepted:
                        self._events.connection("on air")
                if self._accepted:
                    self._in_flight = []
                    self._events.sent(len(out), frames, pacer.due() - self._clock())
                    self._save()
            if self._accepted:
                self._announce_all(starting, titles)
            if self._stopping.is_set():
                break
            if current is None and not idling:
                if self._once and self._source.exhausted():
                    break
                if self._idle is Idle.STOP and not self._once:
                    # Wait for a file while the audio sent lasts, then close.
                    current = self._current = self._next_track(
                        wait=False, until=pacer.due() - self._pacing.batch
                    )
                    if current is None:
                        break
                    starting.append(current)
                    continue
                idling = True
                log.info("queue empty: sending silence until a file arrives")
                titles.set(self._info.name or "")
                continue
            self._sleep_until(_wake_at(pacer, body, last))
        if current is not None:
            current.close()
        self._current = None
        # Close cleanly: enough silence that Icecast relays the last real frame.
        silence = silent_frame(last)
        remaining = math.ceil(ICECAST_BLOCK / len(silence)) + 1
        while remaining:
            hurry = self._stopping.is_set()  # on stop, no need to keep to the lead
            count = 0
            while count < remaining and (hurry or pacer.may_send(self._clock())):
                pacer.add(last.samples, last.sample_rate)
                count += 1
            if count:
                yield silence * count
                remaining -= count
            self._announce_all(starting, titles)
            if remaining:
                self._sleep_until(pacer.wake_at())
        self._sleep_until(pacer.due())  # let listeners hear the end before we hang up

    def _await_acceptance(self, connection: Connection, handed: int) -> bool | None:
        """Icecast answers a source at once; wait for that answer a little
        (sending no more) rather than count refused audio as sent."""
        deadline = self._clock() + 2.0
        while (verdict := connection.accepted()) is None and self._clock() < deadline:
            self._sleep(0.005)
        if verdict is None and handed >= 2:
            # No answer to see (TLS): a refusal shows as a failed send by now.
            return True
        return verdict

    def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay > 0:
            self._sleep(delay)


def _wake_at(pacer: Pacer, sent: int, like: FrameHeader) -> float:
    """When to wake for the next batch, ``sent`` bytes into the body, with
    frames like ``like`` to come: when the frame that completes the last of
    Icecast's relay blocks that fit in a batch may go, so listeners get each
    block as soon as its audio may go rather than up to a batch later; at the
    batch's end if a block is longer than a batch (low bitrates)."""
    latest = pacer.wake_at()
    # Whole blocks per batch: 1 at the default 0.1 s and 128 kbps (87.5 ms each).
    blocks = int(pacer.batch * like.length / (ICECAST_BLOCK * like.duration))
    if blocks < 1:
        return latest
    frames = (blocks * ICECAST_BLOCK - sent % ICECAST_BLOCK - 1) // like.length
    at = pacer.due() - pacer.lead + frames * like.duration
    return min(at + 1e-6, latest)  # not a rounding error short of the frame's time


def _reopen_at(track: Track, offset: int) -> int:
    """Where to reopen a track to go on at ``offset``: from the top (tags and
    all, as a fresh start) if none of it was sent."""
    return 0 if offset <= track.first.offset and not track.resumed else offset


def _title_updater(connection: Connection) -> Titles:
    assert isinstance(connection, SourceConnection)
    return TitleUpdater(connection)


def _clock_time(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
