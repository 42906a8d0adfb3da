"""Outputs in another format: one station's timeline in an output's own frames.

The station's machine makes one stream of Sends in the station's format; each
Send says what it carries (:class:`~pushsource.core.station.Span`: so many
seconds of a track from a point in it, or of silence). An output in another
format (64 kbps mono, say) sends, for each Send, the frames of its own copy of
that track (:class:`~pushsource.core.station.Alt`, converted ahead on the
workers) that cover the same seconds, and its own silence for silence. Its
place in a track is taken from the span's time, not counted, so it cannot
drift: a track's first frame goes out in the same Send on every output, and an
output that rejoins after an outage starts at the station's current position.

Its cuts are mended like the station's (core.splice): frames of a copy that
do not go on from the last ones it sent (another track, a jump in the copy,
real frames after its silence) start after a cut, and those pointing back
past it into the bit reservoir are silenced.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from pushsource.core.effects import Alt, Cued, Span
from pushsource.core.frames import FrameHeader, parse_header, silent_frame
from pushsource.core.splice import Splicer, made_whole
from pushsource.core.station import ICECAST_BLOCK, SHORT_LIVED, Retry, retry_delay
from pushsource.errors import AuthenticationError, IcecastError, WrongServerError

log = logging.getLogger("pushsource")

#: An output's place in a track further than this many frames from where the
#: station is (a rewind after a broken connection, a resumed track) is moved.
_JUMP: Final = 2
#: Seconds of a copy kept read ahead of where its outputs are, at least, and
#: kept behind (for an output that rejoins with the audio still ahead).
READ_AHEAD: Final = 4.0
KEEP_BEHIND: Final = 2.0
#: Frames before an entry point looked at to make its first frame whole: the
#: reservoir (at most 511 bytes) lies in the slots of a few frames before it.
_BEFORE: Final = 8
#: Seconds of a copy read at once: at cue time (with the track), and after.
ALT_CHUNK: Final = 6.0
#: An output that keeps failing while the station plays on elsewhere: a line
#: for the first failure and each new reason, then one a minute at most.
OUTPUT_LOG_EVERY: Final = 60.0


class Loss(Enum):
    """What one output's lost connection means for its station."""

    STATION = "station"  # its only output: the station's machine hears it
    ALONE = "alone"  # others are on air: it reconnects on its own
    WAIT = "wait"  # the station is still connecting elsewhere: it is retried then
    OFF_AIR = "off air"  # none is on air: the station goes off air, on where it stopped


def loss(*, outputs: int, up: bool, others_on_air: bool, others_connected: bool) -> Loss:
    """What a lost output means, from where the station's other outputs are."""
    if outputs == 1:
        return Loss.STATION
    if up and others_on_air:
        return Loss.ALONE
    if not up and others_connected:
        return Loss.WAIT
    return Loss.OFF_AIR


@dataclass(eq=False)
class OutputLink:
    """One output's connection policy, sans-IO: its state as the status page
    shows it, its failures in a row for the backoff, and what it says. The
    engine's Output carries it out (sockets, timers)."""

    label: str  # for log lines: "/rock-64 (64 kbps)"
    #: "off", "connecting", "on air", "reconnecting" (its own backoff, or
    #: the station's), "failed" (refused for good: a wrong password).
    state: str = "off"
    error: str | None = None
    reconnects: int = 0  # outages: times it went off air while the station played
    attempts: int = 0  # failed attempts since it was last on air
    failures: int = 0  # in a row, for the backoff
    accepted_at: float | None = None
    last_error: IcecastError | None = None
    refused: bool = False  # a wrong password, not Icecast: never tried again
    was_on_air: bool = False  # Icecast took it once: a wrong server later is retried
    said: tuple[str, float] | None = None  # the last reconnect line logged: (why, when)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def dead(self) -> bool:
        return self.state == "failed"

    def set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.error = error if state in ("reconnecting", "failed") else None

    def accepted(self, now: float) -> bool:
        """Icecast took it; whether it had failed since it was last on air."""
        self.last_error = None
        self.accepted_at = now
        self.was_on_air = True
        came_back = self.attempts > 0
        self.attempts = 0
        self.set_state("on air")
        return came_back

    def lost(self, now: float, error: IcecastError) -> bool:
        """Its connection failed or dropped; whether it was on air. A
        connection dropped within SHORT_LIVED of being taken is one more failed
        attempt (a server that takes and drops must not reset the backoff)."""
        was_on_air = self.state == "on air"
        since = self.accepted_at
        if was_on_air and since is not None and now - since >= SHORT_LIVED:
            self.failures = 1
        else:
            self.failures += 1
        self.accepted_at = None
        wrong = isinstance(error, WrongServerError) and not self.was_on_air
        if isinstance(error, AuthenticationError) or wrong:
            self.refused = True
            self.set_state("failed", str(error))
        else:
            self.set_state("reconnecting", str(error))
            self.attempts += 1
        self.last_error = error
        return was_on_air

    def next_try(self, now: float, error: IcecastError, retry: Retry) -> float | None:
        """Seconds until it tries again on its own while the station plays on
        elsewhere; None: it does not (refused, or past ``retry.limit``)."""
        if self.dead:
            return None
        if retry.limit is not None and self.failures > retry.limit:
            self.set_state("failed", f"giving up after {self.failures} attempts: {error}")
            log.error("output %s: giving up: %s", self.label, self.error)
            return None
        delay = retry_delay(error, self.failures, retry, self.rng)
        said = self.said
        if said is None or said[0] != str(error) or now - said[1] >= OUTPUT_LOG_EVERY:
            self.said = (str(error), now)
            log.warning(
                "output %s: %s; reconnecting in %.1f s (attempt %d)",
                self.label,
                error,
                delay,
                self.failures,
                extra={"event": "output_off_air", "error": str(error)},
            )
        return delay


class Reframer:
    """The frames one output in another format sends for the station's Sends."""

    def __init__(self, key: str, header: FrameHeader) -> None:
        self.key = key  # which Alt of a track is this output's
        self._header = header  # the output's format: its silence
        self._silence = silent_frame(header)
        self._track: Cued | None = None
        self._alt: Alt | None = None  # the track's copy in this format
        self._index = 0  # next frame of the track's Alt
        self.late = 0  # frames sent as silence because their copy was not read yet
        self._debt = 0.0  # seconds of silence owed, less than one frame
        # What its last frames sent go on from: (the copy, the index past
        # them), None after silence; anything else starts after a cut.
        self._splicer = Splicer()
        self._origin: Alt | None = None
        self._origin_at = 0

    def cut(self) -> None:
        """What it sends next follows nothing (a new connection)."""
        self._origin = None

    def frames(self, spans: Sequence[Span]) -> tuple[bytes, int]:
        """The output's bytes for one Send, and how many frames they are."""
        parts: list[bytes] = []
        count = 0
        for span in spans:
            alt = span.track.alts.get(self.key) if span.track is not None else None
            if alt is None or span.track is None:
                count += self._quiet(span.seconds, parts)
                continue
            duration = alt.header.duration
            if span.track is not self._track or abs(self._index * duration - span.at) > (
                _JUMP * duration
            ):
                self._track = span.track
                self._alt = alt
                self._index = max(0, round(span.at / duration))
            end = span.at + span.seconds
            stop = max(self._index, round(end / duration))
            if alt.last:
                stop = min(stop, alt.loaded)
            self._index = max(self._index, alt.first)  # forgotten already: on from there
            take = min(stop, alt.loaded)
            if take > self._index:
                data = alt.between(self._index, take)
                if alt is not self._origin or self._index != self._origin_at:
                    data = self._entered(alt, self._index, data)
                    self._origin = alt
                self._origin_at = take
                if self._splicer.open:
                    data = self._splicer.repair(data)
                parts.append(data)
                count += take - self._index
                self._index = take
            if stop > self._index:  # not read yet (the disk is late): silence, on time
                self.late += stop - self._index
                count += self._quiet((stop - self._index) * duration, parts)
                self._index = stop
            if alt.last and end > alt.loaded * duration:  # its copy is shorter: silence
                count += self._quiet(end - max(span.at, alt.loaded * duration), parts)
            # Keep a little behind: another output in this format may rejoin
            # with the audio still ahead of real time.
            alt.trim(self._index - round(KEEP_BEHIND / duration))
        return b"".join(parts), count

    def _entered(self, alt: Alt, index: int, data: bytes) -> bytes:
        """``data``, frames of ``alt`` from ``index``, sent after a cut: its
        first frame made whole from the frames before it still in the window
        (a join left for the next track's copy, a rejoin), else a cut the
        splicer mends (a frame or two of silence)."""
        start = max(alt.window_start, index - _BEFORE)
        first = parse_header(data)
        if first is not None and start < index:
            before = [alt.between(i, i + 1) for i in range(start, index)]
            whole = made_whole(data[: first.length], before)
            if whole is not None:
                self._splicer.open = False  # nothing after it points past it
                return whole + data[first.length :]
        self._splicer.cut()
        return data

    @property
    def frame_seconds(self) -> float:
        """How long one of the output's frames lasts."""
        return self._header.duration

    def wanted(self) -> Alt | None:
        """The copy to read more of now (on the workers), if any: the one
        playing, once less than READ_AHEAD seconds of it are in."""
        alt = self._alt
        if alt is None or alt.last or alt.reading or alt.handle is None:
            return None
        if (alt.loaded - self._index) * alt.header.duration >= READ_AHEAD:
            return None
        return alt

    def closing(self) -> bytes:
        """Silence to send before a clean close: Icecast drops the last partial
        block, which must not be the end of the audio."""
        return self._silence * (math.ceil(ICECAST_BLOCK / len(self._silence)) + 1)

    def _quiet(self, seconds: float, parts: list[bytes]) -> int:
        self._debt += seconds
        count = int(self._debt / self._header.duration + 1e-9)
        if count > 0:
            self._debt -= count * self._header.duration
            parts.append(self._silence * count)
            self._origin = None
        return max(0, count)


def format_key(sample_rate: int, channels: int, bitrate: int) -> str:
    """The key of an output format, for Cued.alts and the cache: "64k-22050-1"."""
    return f"{bitrate}k-{sample_rate}-{channels}"
