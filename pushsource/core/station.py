"""A station as a step machine: fed events, it returns effects.

It knows no socket, thread, file or clock. The engine feeds it the time and
what happened (Icecast took the source, the connection failed, a track was
cued, frames were read, skip, stop) and carries out what it returns (connect,
send these bytes, wake me at t, set this title, read more frames, close).
Tests drive it the same way with a fake clock.

One connection is one long PUT. Frames go out on an absolute schedule kept by
:class:`~pushsource.core.pacer.Pacer`; each track's frames come in chunks read
ahead on the workers, and the next track is cued (opened, its first chunk
read) while the current one plays, so nothing on the pacing path waits for a
disk or a converter.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final

from pushsource.core.effects import (
    Chunk,
    Close,
    Connect,
    Cue,
    Cued,
    Effect,
    Ended,
    Finished,
    Join,
    Mix,
    Phase,
    Read,
    Release,
    Send,
    SetTitle,
    Span,
    Started,
    State,
    Wake,
)
from pushsource.core.frames import FrameHeader, silent_frame
from pushsource.core.gain import DB_PER_STEP, apply_gain
from pushsource.core.icy import IcyWriter
from pushsource.core.live import Interrupted, Live, LiveMixin
from pushsource.core.pacer import Pacer
from pushsource.core.silence import DeadAir
from pushsource.core.splice import Splicer
from pushsource.errors import AuthenticationError, IcecastError, ProtocolError, WrongServerError

log = logging.getLogger("pushsource")

#: Icecast 2.4.4 relays source data in blocks of this many bytes and drops the
#: last partial block when a source leaves: a clean close sends at least this
#: much silence after the last real frame.
ICECAST_BLOCK: Final = 1400
#: How long a station that never goes off the air waits for its first file
#: before it goes on air with silence.
FIRST_FILE_GRACE: Final = 1.0
#: Audio read ahead per chunk, and the least kept buffered beyond the lead:
#: a disk may stall this long before a station notices.
CHUNK_SECONDS: Final = 2.0
LOW_WATER: Final = 1.5
#: How long before a track ends the next one is cued (opened, first chunk read).
CUE_AHEAD: Final = 2.5
#: A track whose frames are late by this much gets silence in their place
#: (Icecast drops a source silent for 10 s, and its listeners with it).
STARVED: Final = 1.5
#: Batches remembered for a rewind after a drop (one entry per track in each):
#: more than a socket holds unsent (its high-water mark and the kernel's buffer).
BATCHES_KEPT: Final = 80
#: Crossfade: a skip fades the track out over this long (global_gain stepped
#: down frame by frame to SKIP_FADE_DB below), rather than cut it.
SKIP_FADE: Final = 0.5
SKIP_FADE_DB: Final = 40.0
#: Crossfade: what the join needs held of the outgoing track beyond the fade
#: (the decoder's preroll, the frames before the fade), and of the incoming
#: track's first chunk; the join is asked for that long before it is due.
JOIN_MARGIN: Final = 1.5
#: Back on air after a drop, how long the track that was playing may take to
#: reopen before silence fills in (Icecast drops a source silent for 10 s;
#: its listeners just reconnected and have the burst to come).
REOPEN_WAIT: Final = 1.5
#: A connection dropped sooner than this after Icecast took it counts as a
#: failed attempt: the backoff must not reset on a server that takes and drops.
SHORT_LIVED: Final = 2.0
#: A server that does not answer at all is tried again this often.
DOWN_RETRY: Final = 1.0
#: While a station keeps failing to connect, a warning this often at most (the
#: first failure and the way back always get theirs; each attempt is a debug
#: line): ten thousand stations against a server that is down must not print
#: ten thousand lines a second.
FAIL_LOG_EVERY: Final = 60.0
#: An upgrade in place (ops.handover): the most audio already in memory that
#: the old image hands the new one, to send while the new one starts.
HANDOVER_TAIL: Final = 3.0


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
    """Reconnecting: capped, jittered exponential backoff for a server that
    refuses; about once a second for one that does not answer."""

    first: float = 1.0  # the first delay is drawn from [first/2, first]
    cap: float = 30.0
    limit: int | None = None  # consecutive failed attempts before giving up; None: never

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt number ``attempt`` (1, 2, ...)."""
        base = min(self.cap, self.first * 2 ** (attempt - 1))
        return rng.uniform(base / 2, base)


@dataclass
class _Playing:
    track: Cued
    chunks: deque[Chunk] = field(default_factory=deque)
    index: int = 0  # next frame in chunks[0]
    start: int = 0  # its byte offset in chunks[0].data
    eof: bool = False  # the last chunk is in
    reading: bool = False
    announced: bool = False
    end: int = 0  # file offset past the last frame received
    starved: float = 0.0  # seconds of silence sent for want of frames
    seconds: float = 0.0  # of its audio sent (what came before a resume included)
    stop_at: int | None = None  # crossfade: its frames give way to a join here (file offset)
    join: Join | None = None  # crossfade: the join's frames go first, then its own
    join_sent: int = 0  # frames of the join sent
    join_from: tuple[Cued, float] | None = None  # the outgoing track, its seconds at the cut
    join_track: Cued | None = None  # the join for outputs in other formats (its alts)
    fading: int = 0  # skip with crossfade: frames still to send, fading out
    fade_total: int = 0

    def __post_init__(self) -> None:
        self.seconds = self.track.before
        chunk = self.track.chunk
        self.add(chunk)
        # Its frames are the playing track's now; the track keeps where they
        # began, not 4 s of audio for as long as it plays.
        self.track.chunk = Chunk(b"", (), chunk.offset, chunk.last)

    def add(self, chunk: Chunk) -> None:
        if chunk.ends:
            self.chunks.append(chunk)
            self.end = chunk.offset + chunk.ends[-1]
        elif not self.chunks:
            self.end = chunk.offset
        self.eof = chunk.last

    @property
    def position(self) -> int:
        """File offset of the next frame to send."""
        return self.chunks[0].offset + self.start if self.chunks else self.end

    def buffered(self) -> int:
        return sum(len(c.ends) for c in self.chunks) - self.index


@dataclass(frozen=True)
class Tail:
    """Where a station on air is, for an upgrade in place (ops.handover): the
    frames that go out next (whole, as they would go out), the time the first
    of them is due, what the connection carried before them, and where the
    track goes on after them (None: silence, no track)."""

    due: float  # monotonic time the first frame of ``data`` is due
    data: bytes
    ends: tuple[int, ...]  # frame i of data ends at ends[i]
    duration: float  # seconds per frame
    lead: float  # how far ahead of real time frames go
    sent: int  # audio bytes sent on this connection before data
    wire: int  # and on the wire (ICY blocks counted)
    resume: tuple[str, int, float] | None  # (file, offset after data, its seconds before that)


@dataclass(frozen=True)
class Carried:
    """The old image's connection, carried on (ops.handover): the next frame
    is due at ``due``; ``sent``/``wire`` bytes went before it, ``title`` was
    the title in force; ``at``: the file and offset it goes on at."""

    due: float
    sent: int
    wire: int
    title: str | None
    at: tuple[Path, int] | None


class StationMachine(LiveMixin):
    """One station's logic. Every method takes ``now`` (monotonic seconds) and
    returns the effects to carry out, in order."""

    def __init__(
        self,
        *,
        silence: FrameHeader,
        headers: dict[str, str],
        name: str = "",
        once: bool = False,
        idle: Idle = Idle.SILENCE,
        pacing: Pacing = Pacing(),
        retry: Retry = Retry(),
        resume: Sequence[tuple[Path, int]] = (),
        rng: random.Random | None = None,
        grace: float = 5.0,
        interrupted: Interrupted = Interrupted.RESUME,
        live_title: str = "Live: {user}",
        metaint: int | None = None,
        crossfade: float = 0.0,
        silence_alarm: float = 0.0,
        listen_url: str = "",
        mount: str = "",
    ) -> None:
        """``metaint``: titles travel inside the stream, in ICY blocks every
        so many bytes (the station's own output), which the pacing counts.
        ``silence_alarm``: a warning once this many seconds of digital silence
        have gone out (0: none; the run is counted all the same).
        ``listen_url``: where listeners hear it (no credentials), said when it
        goes on air; ``mount``: for the log's structured fields."""
        self._format = silence  # the station's format: silence, and the ice-* headers
        self._silence = silent_frame(silence)
        self._headers = headers
        self._name = name
        self._once = once
        self._idle = idle
        self._pacing = pacing
        self._retry = retry
        self._rng = rng or random.Random()
        self._resume: list[tuple[Path, int]] = list(resume)
        self.phase = Phase.WAITING
        self._pacer: Pacer | None = None
        self._playing: _Playing | None = None
        self._next: Cued | None = None
        self._cueing = False  # a Cue is out
        self._dry = False  # the last Cue found nothing: wait for news
        self._exhausted = False  # a fixed list played out
        self._idling = False  # on air with silence for want of a file
        self._stopping = False
        self._skipping = False
        self._failures = 0
        self._failed_since: float | None = None  # off air since (a warning said so)
        self._said_at = 0.0  # the last warning of this outage
        self._unsaid = 0  # failed attempts since it
        self._accepted_at: float | None = None
        self._grace_until: float | None = None
        self._wait_until: float | None = None  # idle stop: the audio sent lasts till then
        self._reopen_until: float | None = None  # back on air: the track's reopen awaited
        self._closing_left = 0  # silence frames still to send before hanging up
        self._last: FrameHeader = silence  # format of the last frame sent
        self._sent = 0  # bytes sent on this connection
        self._metaint = metaint
        self._meter: IcyWriter | None = None  # where the wire is, with ICY blocks
        # (stream offset past the batch, a track in it, file offset of its first
        # frame in the batch, seconds of the track before that frame), one per
        # track a batch holds: where to go on after a drop, for the bytes the
        # kernel may not have taken. Flat tuples: at a thousand stations these
        # are most of the objects the collector walks.
        self._batches: deque[tuple[int, Cued, int, float]] = deque()
        # (path, offset) to go on at -> seconds of the track before it, from _rewind.
        self._resumed_at: dict[tuple[Path, int], float] = {}
        self.played: list[Path] = []  # files started (not resumed), in order
        self.last_started: Path | None = None
        self._grace = grace  # live: seconds a DJ may go quiet or away
        self._interrupted = interrupted
        self._live_default = live_title  # for a DJ who sends no title; {user} is their name
        self._live: Live | None = None
        self._crossfade = crossfade  # seconds the tracks sound together at a join; 0 off
        self._mixing: tuple[Cued, Cued] | None = None  # the last pair a join was asked for
        self._join: tuple[Cued, Join] | None = None  # the join into the cued track, made
        #: The run of silence going out (pushsource.core.silence).
        self.dead_air = DeadAir(silence_alarm)
        # Splice-clean cuts: what the last frames sent go on from, as (origin,
        # where after them): (the playing Cued, the file offset past them), (the
        # Live DJ, their frames taken), or None (silence, a new connection).
        # Frames that do not go on from it exactly start after a cut, and the
        # splicer mends those that point back past it (core.splice).
        self._splicer = Splicer()
        self._origin: object = None
        self._origin_at = 0
        self._listen_url = listen_url
        self._mount = mount
        self._on_air_before = False  # "on air ... again": it had been
        self._said_empty = False  # "queue empty" said, and no track since
        self._carried: Carried | None = None  # the next accepted() carries a connection on

    # -- what the world may ask ----------------------------------------------

    @property
    def station_format(self) -> FrameHeader:
        """The station's format (its silence's frames)."""
        return self._format

    @property
    def crossfade(self) -> float:
        """Seconds the tracks sound together at a join; 0: off."""
        return self._crossfade

    def cue_frames(self, least: int) -> int:
        """Frames to read with a track when it is cued: at least ``least``, and
        with crossfade what its join needs."""
        if not self._crossfade:
            return least
        return max(least, math.ceil((self._crossfade + JOIN_MARGIN) / self._format.duration))

    @property
    def playing(self) -> Cued | None:
        return self._playing.track if self._playing is not None else None

    def position(self) -> tuple[Path, int] | None:
        """The playing file and the offset of its next frame not yet sent."""
        p = self._playing
        return (p.track.path, p.position) if p is not None else None

    def elapsed(self) -> float | None:
        """Seconds of the playing track's audio sent so far: it stands still
        while nothing goes out (off air, frames late)."""
        p = self._playing
        return p.seconds if p is not None else None

    @property
    def cued_track(self) -> Cued | None:
        """The track cued to play next (opened, not started), if any."""
        return self._next

    def cued_path(self) -> Path | None:
        """The file cued to play next (opened, not started), if any."""
        return self._next.path if self._next is not None else None

    def pending(self) -> list[tuple[Path, int]]:
        """Files to go on with after a break, before anything new."""
        out = list(self._resume)
        if self._next is not None:
            out.append((self._next.path, self._next.chunk.offset if self._next.resumed else 0))
        return out

    # -- an upgrade in place (ops.handover) --------------------------------------

    def hand_over(self) -> Tail | None:
        """The old image: where this station is, if it can be carried on (on
        air with a track's frames in memory, or with silence; not while a DJ
        is connected, a skip or a crossfade is under way, or it stops).
        Changes nothing."""
        if self.phase is not Phase.ON_AIR or self._pacer is None or self._stopping:
            return None
        if self._skipping or self._live is not None:
            return None
        p = self._playing
        pacer = self._pacer
        wire = self._meter.wire if self._meter is not None else self._sent
        if p is None:
            if not self._idling:
                return None
            frame, header = self._silence, self._format
            count = math.ceil(HANDOVER_TAIL / header.duration)
            ends = tuple(len(frame) * (i + 1) for i in range(count))
            return Tail(
                pacer.due(),
                frame * count,
                ends,
                header.duration,
                pacer.lead,
                self._sent,
                wire,
                None,
            )
        if not p.announced or p.join is not None or p.fading or not p.chunks:
            return None
        header = p.track.header
        most = int(HANDOVER_TAIL / header.duration)
        parts: list[bytes] = []
        out_ends: list[int] = []
        size, after = 0, p.position
        index, start = p.index, p.start
        for chunk in p.chunks:
            for end in chunk.ends[index:]:
                if len(out_ends) >= most or (
                    p.stop_at is not None and chunk.offset + end > p.stop_at
                ):
                    break
                parts.append(chunk.data[start:end])
                size += end - start
                out_ends.append(size)
                start, after = end, chunk.offset + end
            else:
                index = start = 0
                continue
            break
        if not out_ends:
            return None
        seconds = p.seconds + len(out_ends) * header.duration
        return Tail(
            pacer.due(),
            b"".join(parts),
            tuple(out_ends),
            header.duration,
            pacer.lead,
            self._sent,
            wire,
            (str(p.track.path), after, seconds),
        )

    def go_on_at(self, resume: tuple[Path, int, float] | None) -> None:
        """The new image, before start(): go on at ``resume`` (the file, the
        offset of its next frame, seconds of it before), or with what comes."""
        self._resume = []
        if resume is not None:
            path, offset, seconds = resume
            self._resume = [(path, offset)]
            self._resumed_at[(path, offset)] = seconds

    def carry_on(self, carried: Carried | None) -> None:
        """The next accepted() is the old image's connection, carried on: the
        clock, the byte counts and the title go on (no cut, no new burst)."""
        self._carried = carried

    # -- events ----------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if not self._needs_file_first():
            self._grace_until = now + FIRST_FILE_GRACE
            out.append(Wake(self._grace_until))
        self._cue(out)
        return out

    def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        phase = self.phase
        if phase is Phase.WAITING:
            if self._grace_until is not None and now >= self._grace_until:
                self._grace_until = None
                if self._playing is None and not self._stopping:
                    self._connect(out)  # on air with silence (or the first file)
        elif phase is Phase.BACKOFF:
            if self._wait_until is not None and now >= self._wait_until:
                self._wait_until = None
                if self._playing is not None or not self._needs_file_first():
                    self._connect(out)
                else:
                    self.phase = Phase.WAITING
                    self._cue(out)
        elif phase in (Phase.ON_AIR, Phase.CLOSING):
            self._pump(now, out)
        return out

    def accepted(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self.phase is not Phase.CONNECTING:
            return out
        self.phase = Phase.ON_AIR
        self._accepted_at = now
        where = self._listen_url or "the server"
        if self._failed_since is not None:
            # A warning, as the failures were: -q shows the outage ended.
            off = now - self._failed_since
            log.warning(
                "on air at %s%s after %.0f s off air (%d failed attempt%s)",
                where,
                " again" if self._on_air_before else "",
                off,
                self._failures,
                "" if self._failures == 1 else "s",
                extra=self._fields("on_air", url=self._listen_url, off_air=round(off, 1)),
            )
            self._failed_since = None
        else:
            log.info("on air at %s", where, extra=self._fields("on_air", url=self._listen_url))
        self._on_air_before = True
        carried, self._carried = self._carried, None
        start = now if carried is None else carried.due
        self._pacer = Pacer(start, lead=self._pacing.lead, batch=self._pacing.batch)
        self._sent = 0 if carried is None else carried.sent
        self._origin = None  # a new connection: its listeners have no byte before it
        self._meter = IcyWriter(self._metaint) if self._metaint else None
        if carried is not None:
            if self._meter is not None:
                self._meter.go_on(carried.sent, carried.wire, carried.title)
            p = self._playing
            if p is not None and (p.track.path, p.position) == carried.at:
                # The old image sent the frames before these: no cut to mend.
                self._origin, self._origin_at = p.track, p.position
        self._batches.clear()
        out.append(State("on air"))
        if self._playing is None and not self._stopping:
            if self._cueing and self._resume:
                # The track that was playing is reopening (since the drop):
                # its frames, not silence, go first.
                self._reopen_until = now + REOPEN_WAIT
            else:
                self._idle_start(out)
        self._pump(now, out)
        return out

    def failed(self, now: float, error: IcecastError, unsent: int = 0) -> list[Effect]:
        """The connection failed (``unsent``: bytes sent that the kernel never took)."""
        out: list[Effect] = []
        if self.phase not in (Phase.CONNECTING, Phase.ON_AIR, Phase.CLOSING, Phase.HANGING_UP):
            return out
        on_air = self.phase is not Phase.CONNECTING
        self.dead_air.end("off air")
        self._rewind(unsent, out)
        self._pacer = None
        self._reopen_until = None
        if self._resume and not self._stopping:
            self._cue(out)  # reopened during the backoff: on air again with its frames
        if isinstance(error, AuthenticationError):
            return self._finish(out, error)
        if isinstance(error, WrongServerError) and not self._on_air_before:
            # The URL names the wrong server: a config error. Once Icecast took
            # the source here, it is something in the way for a while: retried.
            return self._finish(out, error)
        if on_air and self._accepted_at is not None and now - self._accepted_at >= SHORT_LIVED:
            self._failures = 1  # it was up: start the count again
        else:
            self._failures += 1
        self._accepted_at = None
        limit = self._retry.limit
        if limit is not None and self._failures > limit:
            message = f"giving up after {self._failures} attempts: {error}"
            return self._finish(out, IcecastError(message, error.status))
        if self._stopping:
            return self._finish(out)
        delay = retry_delay(error, self._failures, self._retry, self._rng)
        self.phase = Phase.BACKOFF
        self._wait_until = now + delay
        out.append(State("reconnecting", str(error)))
        self._say_failed(now, error, delay)
        out.append(Wake(self._wait_until))
        return out

    def _say_failed(self, now: float, error: IcecastError, delay: float) -> None:
        """The first failure of an outage, then a line a minute at most."""
        line = "%s; reconnecting in %.1f s (attempt %d)"
        if self._failed_since is None:
            self._failed_since = self._said_at = now
            self._unsaid = 0
            log.warning(
                line, error, delay, self._failures, extra=self._fields("off_air", error=str(error))
            )
        elif now - self._said_at >= FAIL_LOG_EVERY:
            log.warning(
                "%s; still failing: %d attempts in the last %.0f s; reconnecting in %.1f s "
                "(attempt %d)",
                error,
                self._unsaid + 1,
                now - self._said_at,
                delay,
                self._failures,
                extra=self._fields("still_off_air", error=str(error)),
            )
            self._said_at = now
            self._unsaid = 0
        else:  # each attempt only with --verbose: 300 stations, 300 lines a second
            self._unsaid += 1
            log.debug(line, error, delay, self._failures)

    def _fields(self, event: str, track: Cued | None = None, **more: object) -> dict[str, object]:
        """A log line's structured fields (for --log-format json): the event,
        the mount, the track's title and file when it is about one."""
        fields: dict[str, object] = {"event": event}
        if self._mount:
            fields["mount"] = self._mount
        if track is not None:
            fields["title"] = track.title
            fields["file"] = track.path.name
        fields.update(more)
        return fields

    def closed(self, now: float) -> list[Effect]:
        """The clean close asked for by Close is done."""
        out: list[Effect] = []
        if self.phase is not Phase.HANGING_UP:
            return out
        self._pacer = None
        self._accepted_at = None
        self._failures = 0
        self.dead_air.end("off air")
        if self._stopping or (self._once and self._exhausted and self._playing is None):
            return self._finish(out)
        self.phase = Phase.WAITING
        out.append(State("idle"))
        log.info("queue empty: closed the stream, waiting for files")
        if self._playing is not None:
            self._connect(out)
        else:
            self._cue(out)
        return out

    def cued(
        self, now: float, track: Cued | None, *, end: bool = False, resumed_one: bool = False
    ) -> list[Effect]:
        """The answer to Cue: a track, or None (nothing now; ``end``: never again).
        ``resumed_one``: the resume entry asked for was used up (played or found done)."""
        out: list[Effect] = []
        self._cueing = False
        if resumed_one and self._resume:
            self._resume.pop(0)
        if self.phase is Phase.DONE or self._stopping:
            if track is not None:
                out.append(Release(track.handle))
            return out
        if track is None:
            self._exhausted = end
            if self._resume:  # that resume entry was done: on to the next
                self._cue(out)
                return out
            self._dry = True
            if self.phase is Phase.WAITING and self._playing is None and self._needs_file_first():
                if self._once and end:
                    return self._finish(out)
            elif self.phase in (Phase.ON_AIR, Phase.CLOSING):
                self._pump(now, out)
            return out
        self._dry = False
        if track.resumed:
            known = self._resumed_at.pop((track.path, track.chunk.offset), None)
            if known is not None:  # our own count beats the workers' estimate
                track.before = known
        if self._playing is None:
            self._playing = _Playing(track)
            if self.phase is Phase.WAITING:
                self._grace_until = None
                self._connect(out)
            elif self.phase in (Phase.ON_AIR, Phase.CLOSING):
                self._idling = False
                self._pump(now, out)
        else:
            self._next = track
            self._want_join(out)
        return out

    def joined(
        self, now: float, out_track: Cued, in_track: Cued, join: Join | None
    ) -> list[Effect]:
        """The answer to Mix: the join, or None (no crossfade there; the
        workers said why)."""
        p = self._playing
        if join is None or p is None or p.track is not out_track or self._next is not in_track:
            return []
        if p.fading or p.position > join.cut_at:
            log.info("crossfade: the join into %s came too late", in_track.title)
            return []
        p.stop_at = join.cut_at
        self._join = (in_track, join)
        log.debug("crossfade: %.1f s into %s", join.seconds, in_track.title)
        return []

    def news(self, now: float, queued: bool = True) -> list[Effect]:
        """The source may have a file now (one arrived, the queue was edited);
        ``queued``: it has files queued."""
        out: list[Effect] = []
        nxt = self._next
        if queued and nxt is not None and nxt.looped and not self._cueing:
            # A new file goes before the library's next.
            self._next = None
            self._drop_join()
            out.append(Release(nxt.handle))
            self._dry = True
        if self._dry and not self._cueing and self.phase is not Phase.DONE:
            self._dry = False
            if self._wanting():
                self._cue(out)
        return out

    def uncue(self, now: float) -> list[Effect]:
        """Give back the cued track (the queue was edited): it was not played.
        The engine puts it back in the source; a new Cue follows."""
        out: list[Effect] = []
        nxt, self._next = self._next, None
        self._drop_join()
        if nxt is not None:
            out.append(Release(nxt.handle))
        self._dry = False
        if self._wanting() and not self._cueing:
            self._cue(out)
        return out

    def read(self, now: float, handle: object, chunk: Chunk) -> list[Effect]:
        out: list[Effect] = []
        p = self._playing
        if p is None or p.track.handle is not handle:
            return out  # a track skipped or rewound meanwhile
        p.reading = False
        p.add(chunk)
        self._want_join(out)
        if self.phase in (Phase.ON_AIR, Phase.CLOSING):
            self._pump(now, out)
        return out

    def skip(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self._playing is not None:
            self._skipping = True
            if self.phase in (Phase.ON_AIR, Phase.CLOSING):
                self._pump(now, out)
        return out

    def stop(self, now: float) -> list[Effect]:
        """Finish the audio in flight, close cleanly with silence, then Finished."""
        out: list[Effect] = []
        if self._stopping or self.phase is Phase.DONE:
            return out
        self._stopping = True
        if self.phase in (Phase.ON_AIR, Phase.CLOSING):
            self._begin_close(out)
            self._pump(now, out)
        elif self.phase is not Phase.HANGING_UP:
            return self._finish(out)
        return out

    # -- on air ----------------------------------------------------------------

    def _pump(self, now: float, out: list[Effect]) -> None:
        """Send what is due, ask for what will be needed, say when to wake."""
        pacer = self._pacer
        assert pacer is not None
        if self.phase is Phase.ON_AIR and self._live is not None and self._live.on_air:
            self._pump_live(now, out)
            return
        p = self._playing
        if (
            p is not None
            and p.announced
            and p.chunks
            and p.join is None
            and not p.fading
            and not self._skipping
            and self.phase is Phase.ON_AIR
            and self._pump_run(now, pacer, p, out)
        ):
            return
        parts: list[bytes] = []
        spans: list[Span] = []
        frames = 0
        batch: list[tuple[Cued, int, float]] = []
        started: list[Cued] = []
        titles: list[tuple[int, str]] = []
        if self._skipping:
            self._skipping = False
            p = self._playing
            if p is not None and self.phase is Phase.ON_AIR and not p.fading:
                if self._crossfade and p.announced and p.join is None and p.chunks:
                    # Fade out quickly rather than cut (crossfade's way).
                    log.info(
                        "skipping %s (fading out)",
                        p.track.title,
                        extra=self._fields("skip", p.track),
                    )
                    p.fading = p.fade_total = max(1, round(SKIP_FADE / p.track.header.duration))
                    p.stop_at = None
                    self._drop_join()
                else:
                    log.info("skipping %s", p.track.title, extra=self._fields("skip", p.track))
                    self._end_track(out, skipped=True)
        while self.phase is Phase.CLOSING and self._closing_left > 0:
            last = self._last
            if self._stopping:  # on stop, no need to keep to the lead
                count = self._closing_left
            elif pacer.may_send(now):
                due = pacer.frames_due(now, last.samples, last.sample_rate)
                count = min(self._closing_left, due)
            else:
                break
            self._silence_out(pacer, last, count, parts, spans)
            frames += count
            self._closing_left -= count
        while self.phase is Phase.ON_AIR and pacer.may_send(now):
            p = self._playing
            if p is None:
                if not self._idling:
                    break
                header = self._format
                count = pacer.frames_due(now, header.samples, header.sample_rate)
                if self.dead_air.since is not None:
                    self.dead_air.end("the queue is empty (idle silence is not counted)")
                self._silence_out(pacer, header, count, parts, spans)
                frames += count
                self._last = header
                continue
            if p.join is not None:
                frames += self._join_frames(now, pacer, p, parts, spans, batch, started, titles)
                continue
            if p.stop_at is not None and p.position >= p.stop_at:
                self._end_track(out, skipped=False)  # the join takes over
                continue
            if not p.chunks:
                if p.eof:
                    self._end_track(out, skipped=p.fade_total > 0)
                    continue
                if pacer.ahead(now) < -STARVED:
                    # The disk is late: silence rather than lose the mount.
                    header = p.track.header
                    count = pacer.frames_due(now, header.samples, header.sample_rate)
                    self.dead_air.quiet(pacer.due())
                    self._silence_out(pacer, header, count, parts, spans)
                    frames += count
                    if not p.starved:
                        log.warning("%s: frames are late; sending silence", p.track.path)
                    p.starved += count * header.duration
                    continue
                break
            chunk = p.chunks[0]
            header = p.track.header
            count = min(
                len(chunk.ends) - p.index,
                pacer.frames_due(now, header.samples, header.sample_rate),
            )
            if p.stop_at is not None:
                count = min(
                    count, bisect.bisect_right(chunk.ends, p.stop_at - chunk.offset) - p.index
                )
            if p.fading:
                count = min(count, p.fading)
            end = chunk.ends[p.index + count - 1]
            if not batch or batch[-1][0] is not p.track:
                batch.append((p.track, chunk.offset + p.start, p.seconds))
            if not p.announced:
                p.announced = True
                started.append(p.track)
                titles.append((sum(map(len, parts)), p.track.title))
            at = chunk.offset + p.start
            if p.fading:  # a skip's fade-out: the same frames, turned down
                data = _faded(chunk, p.index, count, p.fade_total - p.fading, p.fade_total)
                p.fading -= count
            else:
                data = chunk.data[p.start : end]
            parts.append(self._spliced(p.track, at, chunk.offset + end, data))
            spans.append(Span(p.track, p.seconds, count * header.duration))
            frames += count
            if chunk.silent:
                self._heard(pacer.due(), chunk.silent, p.index, count, header.duration)
            elif self.dead_air.since is not None:
                self.dead_air.sound(pacer.due())
            pacer.add(count * header.samples, header.sample_rate)
            p.seconds += count * header.duration
            self._last = header
            p.index += count
            p.start = end
            if p.index == len(chunk.ends):
                p.chunks.popleft()
                p.index = p.start = 0
            if p.fade_total and not p.fading:
                self._end_track(out, skipped=True)  # faded out: the rest is skipped
        if parts:
            data = b"".join(parts)
            self._sent_out(len(data), titles)
            batches, sent = self._batches, self._sent
            for track, offset, seconds in batch:
                batches.append((sent, track, offset, seconds))
            while len(batches) > BATCHES_KEPT:
                batches.popleft()
            out.append(Send(data, frames, pacer.due() - now, tuple(spans), tuple(titles)))
        for track in started:
            self._announce(track, out)
        self._ask(now, out)
        self._next_step(now, out)

    def _pump_run(self, now: float, pacer: Pacer, p: _Playing, out: list[Effect]) -> bool:
        """The batch of almost every wake-up, in one step: frames due from the
        playing track's first chunk, no track starting or ending. The same
        effects and state as the general pump (_pump, which calls it first)
        makes for it; False, with nothing done, for any other case."""
        header = p.track.header
        count = pacer.frames_due(now, header.samples, header.sample_rate)
        chunk = p.chunks[0]
        index, ends = p.index, chunk.ends
        if count <= 0 or index + count > len(ends):
            return False
        start, end = p.start, ends[index + count - 1]
        if p.stop_at is not None and chunk.offset + end > p.stop_at:
            return False
        data = chunk.data[start:end]
        # Splice-clean: all this costs when the frames go on from the last ones.
        at = chunk.offset + start
        if p.track is not self._origin or at != self._origin_at:
            self._splicer.cut()
            self._origin = p.track
        self._origin_at = chunk.offset + end
        if self._splicer.open:
            data = self._splicer.repair(data)
        seconds = p.seconds
        duration = count * header.duration
        runs = chunk.silent
        if runs:
            self._heard(pacer.due(), runs, index, count, header.duration)
        elif self.dead_air.since is not None:
            self.dead_air.sound(pacer.due())
        pacer.add(count * header.samples, header.sample_rate)
        p.seconds = seconds + duration
        self._last = header
        if index + count == len(ends):
            p.chunks.popleft()
            p.index = p.start = 0
        else:
            p.index, p.start = index + count, end
        self._sent_out(len(data), ())
        batches = self._batches
        batches.append((self._sent, p.track, chunk.offset + start, seconds))
        if len(batches) > BATCHES_KEPT:
            batches.popleft()
        out.append(Send(data, count, pacer.due() - now, (Span(p.track, seconds, duration),)))
        self._ask(now, out)
        self._next_step(now, out)
        return True

    # -- crossfade ---------------------------------------------------------------

    def _want_join(self, out: list[Effect]) -> None:
        """Ask the workers for the join into the cued track, once the playing
        one's frames are all in (its end is known)."""
        p, nxt = self._playing, self._next
        fade = self._crossfade
        if (
            not fade
            or p is None
            or nxt is None
            or not p.eof
            or p.stop_at is not None
            or p.fading
            or nxt.resumed
            or (self._live is not None and self._live.on_air)
        ):
            return
        asked = self._mixing
        if asked is not None and asked[0] is p.track and asked[1] is nxt:
            return  # asked already (and answered, or on its way)
        for track in (p.track, nxt):
            if track.duration is not None and track.duration < 3 * fade:
                log.info("no crossfade at %s: shorter than three fades", track.title)
                self._mixing = (p.track, nxt)  # answered: not again for these
                return
        duration = p.track.header.duration
        held = _held(p)
        want = math.ceil((fade + JOIN_MARGIN) / duration)
        if len(held) * duration < fade + 1.0:
            return  # too near its end already: this change of track is a cut
        first = nxt.chunk
        incoming = _frames(first, 0, 0)
        self._mixing = (p.track, nxt)
        out.append(Mix(p.track, nxt, tuple(held[-want:]), tuple(incoming), fade))

    def _drop_join(self) -> None:
        """The cued track is not the next any more: the playing one plays to its end."""
        self._join = None
        p = self._playing
        if p is not None:
            p.stop_at = None

    def _join_frames(
        self,
        now: float,
        pacer: Pacer,
        p: _Playing,
        parts: list[bytes],
        spans: list[Span],
        batch: list[tuple[Cued, int, float]],
        started: list[Cued],
        titles: list[tuple[int, str]],
    ) -> int:
        """The join's frames that are due (it is ``p.join``); how many."""
        join = p.join
        assert join is not None
        header = p.track.header
        done = p.join_sent
        count = min(
            len(join.ends) - done, pacer.frames_due(now, header.samples, header.sample_rate)
        )
        start = join.ends[done - 1] if done else 0
        end = join.ends[done + count - 1]
        if not batch or batch[-1][0] is not p.track:  # lost in a drop: it starts again
            batch.append((p.track, p.track.chunk.offset, p.track.before))
        mid = join.title_at
        before = max(0, min(count, mid - done))  # frames of the join before its midpoint
        if p.join_track is not None:  # other formats have the join in theirs
            spans.append(Span(p.join_track, done * header.duration, count * header.duration))
        else:  # they go on with the outgoing track, then the incoming one, at the midpoint
            if before and p.join_from is not None:
                track, at = p.join_from
                spans.append(Span(track, at + done * header.duration, before * header.duration))
            if count > before:
                at = (done + before - mid) * header.duration + join.seconds / 2
                spans.append(Span(p.track, at, (count - before) * header.duration))
        if not p.announced and done + count > mid:
            p.announced = True
            started.append(p.track)
            title_byte = (join.ends[mid - 1] if mid else 0) - start
            titles.append((sum(map(len, parts)) + max(0, title_byte), p.track.title))
        # The join goes on from the outgoing track's frames before it, and the
        # incoming track's frames go on from it: its seams carry what their
        # reservoirs need (workers/crossfade.py). Anything else is a cut.
        if done:
            goes_on = self._origin is join and self._origin_at == done
        else:
            outgoing = p.join_from[0] if p.join_from is not None else None
            goes_on = self._origin is outgoing and self._origin_at == join.cut_at
        if not goes_on:
            self._splicer.cut()
        data = join.data[start:end]
        parts.append(self._splicer.repair(data) if self._splicer.open else data)
        self._origin, self._origin_at = join, done + count
        if done + count == len(join.ends):
            self._origin, self._origin_at = p.track, join.resume_at
        if self.dead_air.since is not None:  # a join has sound in it: both tracks do
            self.dead_air.sound(pacer.due())
        pacer.add(count * header.samples, header.sample_rate)
        p.seconds += count * header.duration
        self._last = header
        p.join_sent = done + count
        if p.join_sent == len(join.ends):
            p.join = None
            p.seconds = p.track.before + join.skip * header.duration
        return count

    def _heard(
        self, due: float, runs: tuple[tuple[int, int], ...], index: int, count: int, frame: float
    ) -> None:
        """Frames ``index`` to ``index + count - 1`` of a chunk with these
        silent runs go out from ``due``: the run of silence goes on, starts,
        or ends (a run that ends and starts again within them: both)."""
        air = self.dead_air
        last = index + count - 1
        sound_at = due  # when the sound in them begins, if any
        for start, stop in runs:
            if start > last:
                break
            if start <= index < stop:
                sound_at = due + (stop - index) * frame
            if start <= last < stop:  # they end in silence
                if start > index:  # sound before it
                    air.sound(sound_at)
                    air.quiet(due + (start - index) * frame)
                else:
                    air.quiet(due)
                return
        air.sound(sound_at)

    def _on_air_now(self) -> str:
        """What is going out, for a line: the track, or a DJ."""
        live = self._live
        if live is not None and live.on_air:
            return f"live: {live.user}"
        p = self._playing
        if p is None:
            return "no track"
        return f"track: {p.track.title} [{p.track.path.name}]"

    def _silence_out(
        self, pacer: Pacer, header: FrameHeader, count: int, parts: list[bytes], spans: list[Span]
    ) -> None:
        """``count`` silent frames like ``header`` into the batch (closing, idle,
        late frames, a late DJ): a span of no track, and a cut for the splicer."""
        frame = self._silence if header is self._format else silent_frame(header)
        parts.append(frame * count)
        self._origin = None
        spans.append(Span(None, 0.0, count * header.duration))
        pacer.add(count * header.samples, header.sample_rate)

    def _spliced(self, origin: object, at: int, after: int, data: bytes) -> bytes:
        """``data``, frames of ``origin`` from ``at`` (up to ``after``), as they
        go out: a cut before them if the last frames sent were not of
        ``origin`` up to ``at``, and mended where they point back past a cut."""
        splicer = self._splicer
        if origin is not self._origin or at != self._origin_at:
            splicer.cut()
            self._origin = origin
        self._origin_at = after
        return splicer.repair(data) if splicer.open else data

    def _ask(self, now: float, out: list[Effect]) -> None:
        """Read ahead for the playing track; cue the next one in time."""
        p = self._playing
        if p is not None and not p.eof and not p.reading:
            header = p.track.header
            # With crossfade its end is read this much earlier: the join is
            # made from frames held, before they are due.
            early = self._crossfade + JOIN_MARGIN + CUE_AHEAD if self._crossfade else 0.0
            if p.buffered() * header.duration < LOW_WATER + self._pacing.lead + early:
                p.reading = True
                out.append(Read(p.track.handle, max(1, round(CHUNK_SECONDS / header.duration))))
        # The next file is opened this long before it is needed, not earlier:
        # a queued file deleted or edited meanwhile must still count.
        early = self._crossfade + JOIN_MARGIN if self._crossfade else 0.0
        ending = p is None or (
            p.eof
            and p.buffered() * p.track.header.duration <= self._pacing.lead + CUE_AHEAD + early
        )
        wanted = ending and self._next is None and self._wanting()
        if wanted and not self._cueing and not self._dry:
            self._cue(out)

    def _next_step(self, now: float, out: list[Effect]) -> None:
        """After a pump: close when done, or say when to wake."""
        pacer = self._pacer
        assert pacer is not None
        if self.dead_air.since is not None:
            self.dead_air.check(now, self._on_air_now())
        if self.phase is Phase.CLOSING:
            if self._closing_left > 0:
                out.append(Wake(pacer.wake_at()))
                return
            # Let listeners hear the end before hanging up.
            if pacer.due() > now and not self._stopping:
                out.append(Wake(pacer.due()))
                return
            self.phase = Phase.HANGING_UP
            out.append(Close())
            return
        p = self._playing
        if p is None and not self._idling:
            reopen = self._reopen_until
            if reopen is not None:
                if self._cueing and now < reopen:
                    out.append(Wake(reopen))  # or sooner: the cue's answer pumps
                    return
                self._reopen_until = None
                if self._cueing:  # slow to reopen: silence meanwhile, not "queue empty"
                    self._idling = True
                    self._pump(now, out)
                    return
            if self._stopping or (self._once and self._exhausted and not self._resume):
                self._begin_close(out)
                self._pump(now, out)
                return
            until = pacer.due() - self._pacing.batch
            if not self._dry and not self._cueing:
                self._cue(out)
            if (self._cueing or self._once or self._idle is Idle.STOP) and now < until:
                out.append(Wake(until))  # a file may still come while the audio sent lasts
                return
            if self._once:
                # The list's next file is on its way (its answer pumps): a look
                # a batch from now, not a wake-up in the past on every tick.
                out.append(Wake(max(pacer.wake_at(), now + self._pacing.batch)))
                return
            if self._idle is Idle.STOP:
                self._begin_close(out)
            else:
                self._idle_start(out)
            self._pump(now, out)
            return
        if p is not None and not p.chunks and not p.eof:
            # Waiting for frames: look again when they would be late.
            # (The read's answer pumps at once; this is for a read that is late.)
            out.append(Wake(pacer.due() + STARVED + 1e-6))
            return
        wire = self._meter.wire if self._meter is not None else self._sent
        out.append(Wake(_wake_at(pacer, wire, self._last)))

    def _sent_out(self, size: int, titles: Sequence[tuple[int, str]]) -> None:
        """``size`` bytes went out, with the titles marked in them."""
        self._sent += size
        meter = self._meter
        if meter is not None:
            for at, title in titles:
                meter.title(title, at)
            meter.advance(size)

    def _title_now(self, out: list[Effect], title: str) -> None:
        out.append(SetTitle(title))
        if self._meter is not None:
            self._meter.title(title)

    def _idle_start(self, out: list[Effect]) -> None:
        if self._once or self._idle is Idle.STOP or self._idling:
            return
        self._idling = True
        if not self._said_empty:  # once per empty spell: not again after a reconnect
            self._said_empty = True
            log.info(
                "queue empty: sending silence until a file arrives", extra=self._fields("idle")
            )
        self._title_now(out, self._name)

    def _begin_close(self, out: list[Effect]) -> None:
        if self.phase is not Phase.ON_AIR:
            return
        self._idling = False
        self.phase = Phase.CLOSING
        self._closing_left = math.ceil(ICECAST_BLOCK / len(silent_frame(self._last))) + 1

    def _end_track(self, out: list[Effect], *, skipped: bool) -> None:
        p = self._playing
        assert p is not None
        out.append(Release(p.track.handle))
        if p.announced or skipped:
            out.append(Ended(p.track, skipped))
            if not skipped:  # a debug line: the next "playing" says as much
                log.debug("%s ended", p.track.title, extra=self._fields("track_end", p.track))
        self._playing = None
        nxt, self._next = self._next, None
        join, self._join = self._join, None
        if nxt is not None:
            self._playing = _Playing(nxt)
            self._idling = False
            if join is not None and join[0] is nxt and p.stop_at is not None and not skipped:
                _start_join(self._playing, join[1], p)
        elif self._wanting() and not self._cueing:
            self._cue(out)

    def _announce(self, track: Cued, out: list[Effect]) -> None:
        self._said_empty = False
        if track.resumed:
            log.info(
                "resuming %s at about %s",
                track.title,
                clock_time(track.before),
                extra=self._fields("track_resumed", track),
            )
        else:
            log.info(
                "playing %s (%s, %d kbps, %d Hz%s) [%s]",
                track.title,
                clock_time(track.duration),
                track.bitrate,
                track.header.sample_rate,
                f", {track.gain_note}" if track.gain_note else "",
                track.path.name,
                extra=self._fields("track_start", track),
            )
            self.played.append(track.path)
            if len(self.played) > 1000:
                del self.played[:500]
        # Resumed ones too (after a restart): the idle loop must not play it again at once.
        self.last_started = track.path
        self._title_now(out, track.title)
        out.append(Started(track))

    # -- connections -----------------------------------------------------------

    def _connect(self, out: list[Effect]) -> None:
        self.phase = Phase.CONNECTING
        self._idling = False
        out.append(State("connecting"))
        out.append(Connect(dict(self._headers)))

    def _rewind(self, unsent: int, out: list[Effect]) -> None:
        """After a broken connection: go on from the first frame the kernel may
        not have taken, in the same track."""
        confirmed = self._sent - unsent
        resume: list[tuple[Path, int]] = []
        seen: list[Cued] = []
        for end, track, offset, seconds in self._batches:
            if end <= confirmed or any(t is track for t in seen):
                continue
            if seen:  # a track that started in lost audio starts again (from the top)
                offset, seconds = track.chunk.offset, track.before
                if not track.resumed:
                    offset, seconds = 0, 0.0
            seen.append(track)
            resume.append(self._resume_entry(track, offset, seconds))
        p = self._playing
        if p is not None:
            if all(t is not p.track for t in seen):
                resume.append(self._resume_entry(p.track, p.position, p.seconds))
            out.append(Release(p.track.handle))
        nxt = self._next
        if nxt is not None:
            resume.append(self._resume_entry(nxt, nxt.chunk.offset, nxt.before))
            out.append(Release(nxt.handle))
        self._playing = self._next = None
        self._join = None
        self._idling = False
        self._batches.clear()
        self._sent = 0
        self._resume = resume + self._resume
        self._dry = False

    def _resume_entry(self, track: Cued, offset: int, seconds: float) -> tuple[Path, int]:
        """Where to go on with ``track``, noting how much of it lies before
        (for its elapsed time once it is back)."""
        at = _reopen_at(track, offset)
        if at:
            if len(self._resumed_at) > 100:  # entries for files that never came back
                self._resumed_at.clear()
            self._resumed_at[(track.path, at)] = seconds
        return (track.path, at)

    # -- helpers ---------------------------------------------------------------

    def _needs_file_first(self) -> bool:
        return self._once or self._idle is Idle.STOP

    def _wanting(self) -> bool:
        return not self._stopping and not (self._once and self._exhausted and not self._resume)

    def _cue(self, out: list[Effect]) -> None:
        if self._cueing or not self._wanting():
            return
        self._cueing = True
        out.append(Cue(self._resume[0] if self._resume else None))

    def _finish(self, out: list[Effect], error: IcecastError | None = None) -> list[Effect]:
        for track in (self._playing.track if self._playing else None, self._next):
            if track is not None:
                out.append(Release(track.handle))
        self.phase = Phase.DONE
        self.dead_air.end("the station stopped")
        if error is not None:
            out.append(State("failed", str(error)))
        else:
            out.append(State("stopped"))
        out.append(Finished(error))
        return out


def _frames(chunk: Chunk, index: int, start: int) -> list[tuple[int, bytes]]:
    """The frames of ``chunk`` from frame ``index`` (at byte ``start``) on."""
    out = []
    data, offset = chunk.data, chunk.offset
    for end in chunk.ends[index:]:
        out.append((offset + start, data[start:end]))
        start = end
    return out


def _held(p: _Playing) -> list[tuple[int, bytes]]:
    """The playing track's frames held and not sent, (file offset, frame)."""
    out: list[tuple[int, bytes]] = []
    for n, chunk in enumerate(p.chunks):
        out.extend(_frames(chunk, p.index, p.start) if n == 0 else _frames(chunk, 0, 0))
    return out


def _start_join(p: _Playing, join: Join, out: _Playing) -> None:
    """The track ``p`` starts with the join from ``out``: the join's frames,
    then its own from join.resume_at."""
    while p.chunks and p.chunks[0].offset + p.chunks[0].ends[-1] <= join.resume_at:
        p.chunks.popleft()
    if not p.chunks:
        return  # not held (it cannot be: the join was made from them): from its top
    chunk = p.chunks[0]
    index = bisect.bisect_right(chunk.ends, join.resume_at - chunk.offset)
    start = chunk.ends[index - 1] if index else 0
    if chunk.offset + start != join.resume_at:
        return
    p.index, p.start = index, start
    p.join = join
    p.join_from = (out.track, out.seconds)
    track = p.track
    if track.alts and set(track.alts) <= set(join.alts):
        p.join_track = Cued(
            None, track.path, track.title, join.seconds, track.bitrate, track.header,
            Chunk(b"", (), 0, True), alts=join.alts,
        )  # fmt: skip


def _faded(chunk: Chunk, index: int, count: int, done: int, total: int) -> bytes:
    """Frames ``index`` to ``index + count - 1`` of ``chunk``, turned down
    step by step: frame ``done`` of ``total`` of a fade-out (lossless
    global_gain steps, to SKIP_FADE_DB down at the end)."""
    steps = SKIP_FADE_DB / DB_PER_STEP
    parts = []
    ends, data = chunk.ends, chunk.data
    for n in range(count):
        i = index + n
        start = ends[i - 1] if i else 0
        down = -round(steps * (done + n + 1) / total)
        parts.append(apply_gain(data[start : ends[i]], down))
    return b"".join(parts)


def retry_delay(error: IcecastError, failures: int, retry: Retry, rng: random.Random) -> float:
    """Seconds before the next attempt after ``failures`` failed ones in a row."""
    if error.status is None and not isinstance(error, ProtocolError):
        # Nobody answers (down, restarting): look again soon, so the station
        # is back within about a second of the server; backoff is for refusals.
        return rng.uniform(DOWN_RETRY * 0.8, DOWN_RETRY)
    return retry.delay(failures, rng)


def _reopen_at(track: Cued, offset: int) -> int:
    """Where to reopen a track to go on at ``offset``: from the top (tags and
    all, as a fresh start) if none of it was sent."""
    return 0 if offset <= track.chunk.offset and not track.resumed else offset


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


def clock_time(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
