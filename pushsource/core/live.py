"""A DJ on the harbor, as the station machine sees them: the frames they send
take over the air on the station's clock, silence fills in when they are late,
and the folder takes back when they leave or go quiet.

:class:`LiveMixin` is the part of :class:`~pushsource.core.station.StationMachine`
that does it; it shares the machine's state (declared below, set by the
machine), so the DJ's frames go through the same pacer, splicer and titles as
the folder's.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final

from pushsource.core.effects import Cued, Effect, Phase, Send, Span, Wake
from pushsource.core.frames import FrameHeader

if TYPE_CHECKING:
    from pushsource.core.pacer import Pacer
    from pushsource.core.silence import DeadAir
    from pushsource.core.station import Pacing, _Playing

log = logging.getLogger("pushsource")

#: Live: a DJ's frames beyond what the lead takes wait here, at most this long
#: (a DJ clock running fast: the oldest is dropped), and silence goes in when
#: the audio handed to Icecast runs this short of real time (one running slow,
#: or a DJ gone quiet).
LIVE_SLACK: Final = 0.5
LIVE_LOW: Final = 0.25
DROP_LOG_EVERY: Final = 10.0
#: Converted audio comes in bursts (libvlc's demuxers read Ogg and AAC in
#: blocks of kilobytes: half a second at 128 kbps, seconds at low bitrates):
#: a converted DJ takes over with their second burst (the first says nothing
#: of how far apart they come), their frames are held a burst longer, they
#: go quiet only a burst after the grace, and after a gap they go on air
#: again once a burst's worth is in. The largest burst seen counts (its
#: audio, or the time since the last one), up to this.
LIVE_BURST_MAX: Final = 4.0
#: Titles waiting for the DJ's frames at most (the latest kept: a DJ sending
#: titles and no audio must not grow them), and a title's length at most
#: (characters; the harbor's clean_title already cuts to about this).
MAX_TITLES: Final = 16
MAX_TITLE: Final = 3000


class Interrupted(Enum):
    """What the folder does with the track a DJ cut, when it takes back."""

    RESUME = "resume"
    SKIP = "skip"


@dataclass
class Live:
    """A DJ: connected (``user``), and on air once their first frames came."""

    user: str
    connected: bool = True
    on_air: bool = False
    title: str | None = None
    header: FrameHeader | None = None  # their frames' (all the same samples and rate)
    frames: deque[bytes] = field(default_factory=deque)
    last_audio: float = 0.0
    cut: Cued | None = None  # the folder track it cut
    dropped: int = 0  # frames dropped to hold the buffer
    inserted: int = 0  # silent frames sent for want of theirs
    gap: bool = False  # inserting silence now (logged once per gap)
    # Titles waiting for their point in the audio: (index of the DJ frame they go
    # with, title); None is "whatever is in force" (a new DJ's first frame).
    titles: deque[tuple[int, str | None]] = field(default_factory=lambda: deque([(0, None)]))
    received: int = 0  # DJ frames in so far
    taken: int = 0  # DJ frames out of ``frames`` (sent or dropped)
    titled_at: float | None = -1.0  # the connection (its accepted time) its title was set on
    drop_logged: float = -math.inf  # when a drop was last logged
    burst: float = 0.0  # converted: the most seconds of audio that came at once
    bursts: int = 0  # converted: batches that came


#: Phases in which the DJ's frames go on air soon: room_for_dj is bounded.
_FILLING: Final = frozenset({Phase.WAITING, Phase.CONNECTING, Phase.ON_AIR})


def _add_title(live: Live, title: str) -> None:
    """A title for the DJ's next frame: one already waiting for that frame is
    replaced (listeners would see it for no time), and at most MAX_TITLES wait."""
    title = title[:MAX_TITLE]
    if len(live.titles) > 1 and live.titles[-1][0] == live.received:
        live.titles[-1] = (live.received, title)
    else:
        live.titles.append((live.received, title))
    while len(live.titles) > MAX_TITLES:
        live.titles.popleft()


class LiveMixin:
    """The machine's live input (its state is the machine's: see StationMachine)."""

    phase: Phase
    _pacer: Pacer | None
    _playing: _Playing | None
    _pacing: Pacing
    _format: FrameHeader
    _last: FrameHeader
    _accepted_at: float | None
    _grace_until: float | None
    _idling: bool
    _said_empty: bool
    _stopping: bool
    _grace: float
    _interrupted: Interrupted
    _live_default: str
    _live: Live | None
    dead_air: DeadAir

    if TYPE_CHECKING:  # the machine's own, which these call

        def _pump(self, now: float, out: list[Effect]) -> None: ...
        def _connect(self, out: list[Effect]) -> None: ...
        def _end_track(self, out: list[Effect], *, skipped: bool) -> None: ...
        def _title_now(self, out: list[Effect], title: str) -> None: ...
        def _sent_out(self, size: int, titles: Sequence[tuple[int, str]]) -> None: ...
        def _spliced(self, origin: object, at: int, after: int, data: bytes) -> bytes: ...
        def _silence_out(
            self,
            pacer: Pacer,
            header: FrameHeader,
            count: int,
            parts: list[bytes],
            spans: list[Span],
        ) -> None: ...

    @property
    def live(self) -> Live | None:
        """The DJ connected or on air, if any (read only)."""
        return self._live

    @property
    def airing(self) -> Live | None:
        """The DJ whose set the machine's batches carry now (their frames, and
        the silence that fills in for them): on air, and the connection too;
        None while the folder's audio (or a closing silence) goes out."""
        live = self._live
        return live if live is not None and live.on_air and self.phase is Phase.ON_AIR else None

    def live_start(self, now: float, user: str, title: str | None = None) -> list[Effect]:
        """A DJ connected; they take over with their first frames. One back
        within the grace goes on where they left."""
        live = self._live
        if live is None:
            live = self._live = Live(user)
        elif user != live.user:  # another DJ within the grace: their name, not the last one's
            # The last one's titles after their last frame go with no audio: gone.
            live.titles = deque(t for t in live.titles if t[0] < live.received)
            live.titles.append((live.received, None))
            live.title = None
        live.user, live.connected = user, True
        if title is not None:
            _add_title(live, title)
        return []

    def live_title(self, now: float, title: str) -> list[Effect]:
        """The DJ sent a title: it goes with their next frame to come in, and
        listeners get it when that frame goes on air (not with folder audio
        still ending, not before the DJ's first frame)."""
        live = self._live
        if live is not None:
            _add_title(live, title)
        return []

    def room_for_dj(self) -> int:
        """How many more DJ frames the buffer takes before :meth:`_hold` drops
        (the harbor stops reading the DJ at 0). Large with no DJ, and while the
        air is down (backing off, stopping): then ``_hold`` keeps their newest
        frames, as for a live DJ it should, rather than their encoder's
        buffers filling with audio that would air late."""
        live = self._live
        if live is None or self._stopping or self.phase not in _FILLING:
            return 1 << 30
        return max(0, self._live_keep(live) - len(live.frames))

    def live_audio(
        self, now: float, header: FrameHeader, frames: Sequence[bytes], converted: bool = False
    ) -> list[Effect]:
        """Whole frames from the DJ, all like ``header`` (the station's rate and
        channels). ``converted``: they come out of a converter, in bursts."""
        out: list[Effect] = []
        live = self._live
        if live is None or not frames or self._stopping or self.phase is Phase.DONE:
            return out
        if converted:
            apart = now - live.last_audio if live.bursts else 0.0
            took = max(live.burst, len(frames) * header.duration, apart)
            live.burst = min(LIVE_BURST_MAX, took)
            live.bursts += 1
        live.header = header
        live.frames.extend(frames)
        live.received += len(frames)
        live.last_audio = now
        if converted and live.bursts < 2 and not live.on_air:
            self._hold(now, live)
            return out
        if not live.on_air:
            live.on_air = True
            p = self._playing
            live.cut = p.track if p is not None and p.announced else None
            cut = f", cutting {live.cut.title}" if live.cut is not None else ""
            log.info("live: %s takes over%s", live.user, cut)
            self._idling = False
            self._said_empty = False  # the queue is still empty after them: say so again
        if self.phase is Phase.ON_AIR:
            self._pump(now, out)
        elif self.phase is Phase.WAITING:
            self._grace_until = None
            self._connect(out)
        self._hold(now, live)
        return out

    def live_end(self, now: float) -> list[Effect]:
        """The DJ left: the folder takes back after the grace, unless they return."""
        live = self._live
        if live is not None:
            live.connected = False
            if not live.on_air:
                self._live = None
        return []

    def live_kick(self, now: float) -> list[Effect]:
        """The operator hung up on the DJ: the folder takes back now, not after
        the grace (listeners must not hear the grace's silence after a kick)."""
        out: list[Effect] = []
        live = self._live
        if live is None:
            return out
        live.connected = False
        live.frames.clear()
        if live.on_air and self.phase is Phase.ON_AIR and self._pacer is not None:
            self._hand_back(now, out, why="was kicked")
        else:  # not on air yet (or off air): nothing to take back
            self._live = None
        return out

    def _live_low(self) -> float:
        return min(LIVE_LOW, self._pacing.lead / 2)

    def _pump_live(self, now: float, out: list[Effect]) -> None:
        """On air with a DJ: their frames on our clock, silence when they are late."""
        live, pacer = self._live, self._pacer
        assert live is not None and pacer is not None
        if live.titled_at not in (-1.0, self._accepted_at):  # a new connection: set it again
            live.titled_at = self._accepted_at
            self._title_now(out, self._live_title(live))
        quiet = self._grace + (live.burst if live.connected else 0.0)
        header = live.header
        waiting = live.frames and header is not None and not self._refilling(live, header)
        if not waiting and now - live.last_audio >= quiet:
            self._hand_back(now, out)
            return
        low = self._live_low()
        parts: list[bytes] = []
        spans: list[Span] = []
        frames = 0
        while pacer.may_send(now):
            header = live.header
            if live.frames and header is not None and not self._refilling(live, header):
                due = pacer.frames_due(now, header.samples, header.sample_rate)
                count = min(len(live.frames), due)
                taken = live.taken
                data = b"".join([live.frames.popleft() for _ in range(count)])
                parts.append(self._spliced(live, taken, taken + count, data))
                spans.append(Span(None, 0.0, count * header.duration, live=True))
                if self.dead_air.since is not None:
                    self.dead_air.sound(pacer.due())
                live.taken += count
                frames += count
                pacer.add(count * header.samples, header.sample_rate)
                self._last = header
                live.gap = False
                continue
            ahead = pacer.ahead(now)
            if ahead >= low:
                break
            # Nothing from the DJ and Icecast about to run short: silence.
            silence = self._format
            count = max(1, math.ceil((low - ahead) / silence.duration))
            self.dead_air.quiet(pacer.due())
            self._silence_out(pacer, silence, count, parts, spans)
            frames += count
            self._last = silence
            live.inserted += count
            if not live.gap:
                live.gap = True
                log.info(
                    "live: %s's audio is late: sending silence (%d frames inserted so far)",
                    live.user,
                    live.inserted,
                )
        self._hold(now, live)
        if parts:
            data = b"".join(parts)
            self._sent_out(len(data), ())
            out.append(Send(data, frames, pacer.due() - now, tuple(spans)))
            self._live_titles(live, out)
        if self.dead_air.since is not None:
            self.dead_air.check(now, f"live: {live.user}")
        grace_end = live.last_audio + quiet + 1e-6
        header = live.header
        if live.frames and header is not None and not self._refilling(live, header):
            out.append(Wake(pacer.wake_at()))  # no grace while their frames wait
        else:
            out.append(Wake(min(max(pacer.due() - low + 1e-6, now), grace_end)))

    def _refilling(self, live: Live, header: FrameHeader) -> bool:
        """A converted DJ after a gap: wait for a burst's worth, or the gap
        would come back with each burst."""
        return live.gap and live.connected and len(live.frames) * header.duration < live.burst

    def _live_title(self, live: Live) -> str:
        return live.title or self._live_default.replace("{user}", live.user)

    def _live_titles(self, live: Live, out: list[Effect]) -> None:
        """After a Send of the DJ's frames: the titles that go with them, the
        last one only if several (listeners would see the others for no time)."""
        due = False
        while live.titles and live.titles[0][0] < live.taken:
            _, title = live.titles.popleft()
            if title is not None:
                live.title = title
            due = True
        if due:
            live.titled_at = self._accepted_at
            self._title_now(out, self._live_title(live))

    def _hold(self, now: float, live: Live) -> None:
        """Keep the DJ's frames waiting here bounded: drop the oldest beyond it."""
        if live.header is None:
            return
        extra = len(live.frames) - self._live_keep(live)
        if extra > 0:
            for _ in range(extra):
                live.frames.popleft()
            live.taken += extra  # titles on dropped frames go with the next one sent
            live.dropped += extra
            # One line per DROP_LOG_EVERY at most: a DJ sending far too fast
            # (a file pushed as fast as the network goes) drops on every read.
            if now - live.drop_logged >= DROP_LOG_EVERY:
                live.drop_logged = now
                log.info(
                    "live: dropped %d of %s's frames to hold the buffer (%d dropped so far)",
                    extra,
                    live.user,
                    live.dropped,
                )

    def _live_keep(self, live: Live) -> int:
        """The DJ frames the buffer holds at most (once their first is in, as
        ``_hold`` sees it: on air)."""
        header = live.header or self._format
        bound = LIVE_SLACK + 2 * live.burst  # a converted DJ takes over with two bursts in
        if self.phase is not Phase.ON_AIR:
            bound += self._pacing.lead  # not on air: all the lead is still to fill
        return max(1, int(bound / header.duration))

    def _hand_back(self, now: float, out: list[Effect], why: str | None = None) -> None:
        live = self._live
        assert live is not None
        why = why or ("went quiet" if live.connected else "left")
        log.info(
            "live: %s %s; the folder takes back (%d frames dropped, %d silent frames inserted)",
            live.user,
            why,
            live.dropped,
            live.inserted,
        )
        # Still connected: their next frames take over again, under the title in
        # force and any sent since (all for their next frame: nothing is waiting).
        if live.connected:
            back = self._live = Live(live.user, title=live.title)
            back.titles.extend((0, t) for _, t in live.titles if t is not None)
        else:
            self._live = None
        self._idling = False
        p = self._playing
        if p is not None and p.track is live.cut:
            if self._interrupted is Interrupted.SKIP:
                log.info("skipping %s (cut by the DJ)", p.track.title)
                self._end_track(out, skipped=True)
            else:
                log.info("resuming %s", p.track.title)
                self._title_now(out, p.track.title)
        self._pump(now, out)
