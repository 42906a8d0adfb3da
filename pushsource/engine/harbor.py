"""The live input: DJs' encoders connect here, on the engine's loop, and their
frames go to their station's machine. One server per listen address; the
stations on it are told apart by mount. The protocol is
:mod:`pushsource.core.harbor`'s; this owns the sockets, the credentials check
(constant time; passwords never logged) and the frames' format check.

It faces the internet, so no one may lock a DJ out: connections are capped
per address and in all, a newcomer over a cap taking the place of the oldest
one that has not logged in; wrong passwords are throttled per user and
address; refusals are logged a line a minute per address; a DJ keeps the slot
by sending frames (not bytes); and the body is read no faster than the
station's buffer takes the frames (back-pressure)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pushsource.core import harbor as proto
from pushsource.core import liveformat
from pushsource.core.frames import END, NEED_DATA, Frame, FrameHeader, FrameParser
from pushsource.core.titles import clean_title
from pushsource.engine.loop import Engine
from pushsource.errors import ConfigError, FrameError
from pushsource.workers.liveconvert import Intake, LiveConverter

log = logging.getLogger("pushsource")

#: A connection must have sent its request head within this long.
HEAD_TIMEOUT: Final = 10.0
#: A DJ who sends no whole frame for this long is dropped (junk bytes do not count).
STALL: Final = 30.0
#: How long the answer to a body that cannot go on air waits to be read
#: before the connection closes.
LINGER: Final = 2.0
#: Connections at once, in all and per address (DJs and title updates together).
#: Over a cap, the oldest connection that has not logged in is closed to make
#: room; only when all have logged in is the newcomer refused (503).
MAX_CONNECTIONS: Final = 64
MAX_PER_CLIENT: Final = 8
#: Wrong passwords for one user from one address within WINDOW seconds before
#: that user is refused from that address (another user there, or the same
#: user elsewhere, is not).
MAX_FAILURES: Final = 5
WINDOW: Final = 60.0
#: Refusals are logged once per address, then counted: the count a line each
#: LOG_EVERY seconds while they go on.
LOG_EVERY: Final = 60.0
#: A title sent with no DJ connected waits this long for its own user's audio
#: connection (an encoder sending its title first); then, or when another
#: user connects, it is dropped.
TITLE_WAIT: Final = 10.0
#: Bytes read from a DJ at a time: back-pressure holds at most this much
#: beyond the station's buffer (1 s at 128 kbit/s).
READ_SIZE: Final = 16384
#: While the station's buffer is full, how often it is looked at again.
DRAIN_POLL: Final = 0.05
#: MP3 content types encoders send (or none at all).
MP3_TYPES: Final = liveformat.MP3_TYPES


@dataclass
class LiveInput:
    """One station's live input: who may go live on ``mount``, and where their
    frames go (``step(event, *args)`` runs a machine event on the station)."""

    station: str  # its id, for log lines
    mount: str
    users: Mapping[str, str] = field(repr=False)
    sample_rate: int
    channels: int
    machine: Any  # the StationMachine: its live_* events
    step: Callable[..., None]
    dj: _DJ | None = None
    #: A title sent with no DJ connected: (its user, it, when, monotonic).
    early_title: tuple[str, str, float] | None = None
    since: float | None = None  # wall clock the DJ connected
    bytes_in: int = 0
    #: Told each DJ session's user as it begins (the station's history).
    on_session: Callable[[str], None] | None = None
    seconds: float = 0.0  # DJs connected, in total, before the one connected now
    #: Users a kick refused, until when (monotonic).
    banned: dict[str, float] = field(default_factory=dict)
    _since_mono: float = 0.0
    #: Other formats converted to the station's (libvlc), else refused (415).
    convert: bool = True
    bitrate: int = 128  # kbps, of the station's MP3: what conversion encodes to
    #: What the DJ connected now sends ("MP3 at 48000 Hz mono, converted").
    input_format: str | None = None

    def live_seconds(self) -> float:
        """Seconds DJs have been connected, the one connected now included."""
        now = time.monotonic() - self._since_mono if self.dj is not None else 0.0
        return self.seconds + now

    def kick(self, ban: float = 0.0) -> str | None:
        """Hang up on the DJ (the engine's thread); the user kicked, or None.
        ``ban``: seconds their user is refused after."""
        dj = self.dj
        if dj is None:  # gone, but maybe still on air in the grace: end that now
            gone = getattr(self.machine, "live", None)
            if gone is None or not gone.on_air:
                return None
            if ban > 0:
                self.banned[gone.user] = time.monotonic() + ban
            log.info("live: %s's grace on %s ended by the operator", gone.user, self.mount)
            self.step(self.machine.live_kick)
            return str(gone.user)
        if ban > 0:
            self.banned[dj._user] = time.monotonic() + ban
        until = f", refused for {ban / 60:.0f} min" if ban > 0 else ""
        log.info("live: %s kicked off %s by the operator%s", dj._user, self.mount, until)
        dj._queue.clear()  # frames read but not handed yet: not theirs to air now
        if dj._intake is not None:
            dj._intake.close()  # no more of a converted set after a kick
        dj._close()
        self.step(self.machine.live_kick)  # the folder now: no grace after a kick
        return dj._user

    def takes(self) -> str:
        mode = "stereo" if self.channels == 2 else "mono"
        return f"MP3 (audio/mpeg) at {self.sample_rate} Hz {mode}"

    def check(self, user: str | None, password: str | None) -> str | None:
        """The user these credentials are right for, or None (a user packed
        into the password, ``user:password``, too): see
        :func:`~pushsource.core.harbor.check_credentials` (constant time)."""
        return proto.check_credentials(self.users, user, password)

    def take_early_title(self, user: str) -> str | None:
        """The title sent before ``user``'s audio connection, if it was theirs
        and recent; any other is dropped with a line."""
        early, self.early_title = self.early_title, None
        if early is None:
            return None
        who, title, when = early
        if who != user:
            log.info(
                "live: dropped %s's title sent with no DJ on %s: %s connected",
                who,
                self.mount,
                user,
            )
            return None
        if time.monotonic() - when > TITLE_WAIT:  # (its timer is about to drop it)
            log.info(
                "live: dropped %s's title: no audio connection from them within %.0f s",
                who,
                TITLE_WAIT,
            )
            return None
        return title


class Harbor:
    """One listen address and the stations' live inputs on it."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self._engine = engine
        self.host, self.port = host, port
        self.inputs: dict[str, LiveInput] = {}
        self._server: asyncio.Server | None = None
        self._failures: dict[tuple[str, str], deque[float]] = {}
        #: Open connections, oldest first (the engine's thread only).
        self._open: dict[_DJ, None] = {}
        #: Per address: refusals not logged yet (the count said each LOG_EVERY).
        self._unsaid: dict[str, list[Any]] = {}

        #: A socket listening on the address already, handed over by a
        #: restart in place (ops.handover): start() serves on it.
        self.inherited: socket.socket | None = None

    @property
    def connections(self) -> int:
        return len(self._open)

    def add(self, live: LiveInput) -> None:
        if live.mount in self.inputs:
            other = self.inputs[live.mount].station
            raise ConfigError(
                f"live mount {live.mount} on {self.host}:{self.port} is taken by station {other}"
            )
        self.inputs[live.mount] = live

    def remove(self, live: LiveInput) -> None:
        """Take ``live`` off this harbor (the engine's thread), hanging up on a
        DJ still connected to it; the harbor's other stations go on."""
        if self.inputs.get(live.mount) is live:
            del self.inputs[live.mount]
        dj = live.dj
        if dj is not None:
            dj._queue.clear()  # the station is leaving: nothing more to hand it
            if dj._intake is not None:
                dj._intake.close()  # nor to convert for it
            dj._close()

    def start(self, *, announce: bool = True) -> None:
        """Listen (once; from any thread but the engine's). Raises ConfigError.
        ``announce``: log where (``pushsource check`` only tries the address)."""
        if self._server is not None:
            return
        loop = self._engine.loop

        inherited, self.inherited = self.inherited, None

        async def serve() -> asyncio.Server:
            if inherited is not None:
                return await loop.create_server(lambda: _DJ(self), sock=inherited)
            return await loop.create_server(lambda: _DJ(self), self.host, self.port)

        try:
            self._server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise ConfigError(f"cannot listen for DJs on {where}: {exc.strerror or exc}") from None
        if announce:
            log.info(
                "live input on %s:%d for %s", self.host, self.port, ", ".join(sorted(self.inputs))
            )

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port chosen, for port 0)."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def listening_socket(self) -> Any:
        """The socket it listens on (for a restart in place: its fileno()),
        once started; None before."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0]

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._engine.call(server.close)

    def admit(self, dj: _DJ) -> bool:
        """Make room for a new connection: over a cap (its address's, or all),
        the oldest connection that has not logged in is closed. False when
        every one has (the newcomer is refused)."""
        mine = [c for c in self._open if c._peer == dj._peer]
        crowd = mine if len(mine) >= MAX_PER_CLIENT else None
        if crowd is None and len(self._open) >= MAX_CONNECTIONS:
            crowd = list(self._open)
        if crowd is not None:
            victim = next((c for c in crowd if c._live is None), None)
            if victim is None:
                return False
            log.debug("live: %s: closed an idle connection to make room", victim._peer)
            self._open.pop(victim, None)
            victim._close()
        self._open[dj] = None
        return True

    def gone(self, dj: _DJ) -> None:
        self._open.pop(dj, None)

    def refused_for(self, user: str, peer: str) -> bool:
        """Too many wrong passwords for ``user`` from ``peer`` lately."""
        times = self._failures.get((user, peer))
        now = time.monotonic()
        while times and times[0] < now - WINDOW:
            times.popleft()
        return times is not None and len(times) >= MAX_FAILURES

    def failed(self, user: str, peer: str) -> None:
        self._failures.setdefault((user, peer), deque()).append(time.monotonic())
        if len(self._failures) > 10_000:
            # A scan from many addresses (or of many user names): forget the
            # oldest pair not throttled, so spraying names frees no throttled one.
            failures = self._failures
            key = next((k for k, t in failures.items() if len(t) < MAX_FAILURES), None)
            failures.pop(key if key is not None else next(iter(failures)))

    def refused(self, peer: str, why: str) -> None:
        """Log a refusal: the first from an address at once, the ones after
        it counted, the count a line every LOG_EVERY while they go on."""
        unsaid = self._unsaid.get(peer)
        if unsaid is not None:
            unsaid[0] += 1
            unsaid[1] = why
            return
        if len(self._unsaid) >= 10_000:  # a scan from many addresses: count them together
            peer = "other addresses"
            if peer in self._unsaid:
                self._unsaid[peer][0] += 1
                return
        log.warning("live: refused %s: %s", peer, why)
        self._unsaid[peer] = [0, why]
        asyncio.get_running_loop().call_later(LOG_EVERY, self._tally, peer)

    def _tally(self, peer: str) -> None:
        count, why = self._unsaid.get(peer, (0, ""))
        if not count:  # quiet for a whole LOG_EVERY: the next is said at once
            self._unsaid.pop(peer, None)
            return
        log.warning(
            "live: refused %d more from %s in the last %.0f s (the last: %s)",
            count,
            peer,
            LOG_EVERY,
            why,
        )
        self._unsaid[peer] = [0, why]
        asyncio.get_running_loop().call_later(LOG_EVERY, self._tally, peer)

    def find(self, mount: str | None) -> LiveInput | None:
        if mount is None and len(self.inputs) == 1:  # SHOUTcast names no mount
            return next(iter(self.inputs.values()))
        return self.inputs.get(mount) if mount is not None else None


class _DJ(asyncio.BufferedProtocol):
    """One connection to the harbor."""

    def __init__(self, harbor: Harbor) -> None:
        self._harbor = harbor
        self._conn = proto.HarborConnection()
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._live: LiveInput | None = None
        self._user = ""
        self._parser: FrameParser | None = None
        self._format: FrameHeader | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._opened = 0.0  # loop time
        self._last_frame = 0.0  # loop time a whole frame last came (or the login)
        self._continued = False  # answered 100 Continue (and no final answer yet)
        self._buffer = memoryview(bytearray(READ_SIZE))
        #: Frames read but not handed yet: the station's buffer was full.
        self._queue: deque[tuple[FrameHeader, list[bytes]]] = deque()
        self._paused = False
        self._drain: asyncio.TimerHandle | None = None
        self._lost = False  # the connection is gone; the end waits for the queue
        self._intake: Intake | None = None  # what the body is: passed, converted or refused

    # -- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        harbor = self._harbor
        if not harbor.admit(self):
            harbor.refused(self._peer, "too many connections")
            transport.write(proto.refusal(503, "too many connections"))
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._opened = self._last_frame = loop.time()
        self._timer = loop.call_later(1.0, self._watch)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reads of READ_SIZE at most: what back-pressure holds beyond the
        # station's buffer is bounded by it.
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._buffer[:nbytes]))

    def data_received(self, data: bytes) -> None:
        for event in self._conn.feed(data):
            if self._transport is None or self._transport.is_closing():
                return
            self._event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._harbor.gone(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._audio(b"")
        self._lost = True
        if not self._queue:
            self._finish()
        # else: the frames read go on air first (_flush finishes)

    def _finish(self) -> None:
        """The DJ's connection is over and what they sent is handed on."""
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        live, self._live = self._live, None
        if live is not None and live.dj is self:
            live.seconds += time.monotonic() - live._since_mono
            live.dj = None
            live.since = None
            log.info("live: %s disconnected from %s", self._user, live.mount)
            live.step(live.machine.live_end)

    # -- events

    def _event(self, event: proto.Event) -> None:
        match event:
            case proto.SourceRequest():
                self._source(event)
            case proto.Audio(data):
                self._audio(data)
            case proto.MetadataRequest():
                self._metadata(event)
            case proto.BodyEnd():
                self._audio(b"")
                if self._continued:  # the final answer a client that asked first waits for
                    self._write(proto.SOURCE_OK)
                self._close()
            case proto.BadRequest(status, reason):
                self._deny(status, reason, reason)

    def _source(self, request: proto.SourceRequest) -> None:
        harbor, shoutcast = self._harbor, request.method == "SHOUTCAST"
        live = harbor.find(request.mount)
        if live is None:
            what = "SHOUTcast login (no mount)" if shoutcast else f"mount {request.mount}"
            line = f"no live input on {request.mount or 'this address'}"
            self._deny(404, line, f"no live input for {what[:100]}")
            return
        user = self._login(live, request.user, request.password)
        if user is None:
            if shoutcast and not self._transport_closing():
                self._write(proto.SHOUTCAST_BAD)
                self._close()
            elif not self._transport_closing():
                self._refuse(401, "wrong user or password")
            return
        until = live.banned.get(user)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                minutes = math.ceil(left / 60)
                self._deny(
                    403,
                    f"{user} was kicked off {live.mount}: refused for {minutes} more min",
                    f"{user} kicked, refused for {minutes} more min",
                )
                return
            del live.banned[user]
        refused = liveformat.check_type(
            request.content_type, takes=live.takes(), convert=live.convert
        )
        if refused is not None:
            self._deny(refused.status, refused.line, f"{user}: {refused.line}")
            return
        if live.dj is not None:
            self._deny(
                403,
                f"a DJ is already live on {live.mount}",
                f"{user}: {live.dj._user} is live on {live.mount}",
            )
            return
        live.dj, live.since, live.bytes_in = self, time.time(), 0
        live._since_mono = time.monotonic()
        self._live, self._user = live, user
        self._parser = FrameParser()
        self._last_frame = asyncio.get_running_loop().time()
        self._intake = self._take_body(live)
        if shoutcast:
            self._write(proto.SHOUTCAST_OK)
        else:
            self._continued = request.expect_continue
            self._write(proto.CONTINUE if request.expect_continue else proto.SOURCE_OK)
        agent = request.headers.get("user-agent", "")[:60]
        log.info(
            "live: %s connected to %s from %s (%s%s)",
            user,
            live.mount,
            self._peer,
            request.method,
            f", {agent}" if agent else "",
        )
        title = live.take_early_title(user)
        live.step(live.machine.live_start, user, title)
        if live.on_session is not None:
            live.on_session(user)

    def _audio(self, data: bytes) -> None:
        """Bytes of the body (b"": it ended: the last frame, held back until
        the next one confirmed it, goes too)."""
        live, parser = self._live, self._parser
        if live is None or parser is None:
            return
        intake = self._intake
        if intake is not None and not intake.passing:  # still sniffing, or converting
            live.bytes_in += len(data)
            for chunk in intake.take(data):  # the first bytes were MP3 in our format
                live.bytes_in -= len(chunk)
                self._audio(chunk)
            return
        live.bytes_in += len(data)
        if not data:
            self._parser = None
        parser.feed(data)
        frames: list[bytes] = []
        header: FrameHeader | None = None
        while True:
            try:
                event = parser.next_event()
            except FrameError:
                break
            if event is NEED_DATA or event is END:
                break
            if isinstance(event, Frame):
                h = event.header
                if h.layer != 3 or (h.sample_rate, h.channels) != (
                    live.sample_rate,
                    live.channels,
                ):
                    mode = "stereo" if h.channels == 2 else "mono"
                    log.warning(
                        "live: %s sends %s at %d Hz %s; this station takes %s: hanging up",
                        self._user,
                        f"MPEG layer {h.layer}",
                        h.sample_rate,
                        mode,
                        live.takes(),
                    )
                    self._hand(live, header, frames)
                    self._parser = None  # nothing more of theirs goes on air
                    self._close()
                    return
                if header is not None and h.samples != header.samples:
                    self._hand(live, header, frames)
                    frames = []
                header = header if header is not None and frames else h
                frames.append(event.data)
            else:  # Skipped: tags, junk, a cut frame: never on air
                log.debug("live: %s: skipped %s", self._user, event)
        if parser.gave_up:
            log.warning("live: %s sends no audio (%s): hanging up", self._user, parser.gave_up)
            self._parser = None
            self._close()
        self._hand(live, header, frames)

    def _take_body(self, live: LiveInput) -> Intake:
        """The body's first bytes decide: pass through, convert, or refuse."""
        engine = self._harbor._engine

        def start(decision: liveformat.Convert) -> LiveConverter:
            live.input_format = f"{decision.what}, converted"
            log.info(
                "live: %s sends %s: converting it to %s", self._user, decision.what, live.takes()
            )
            converter = LiveConverter(
                live.sample_rate,
                live.channels,
                live.bitrate,
                hand=lambda header, frames: engine.call(self._converted, live, header, frames),
                failed=lambda line: engine.call(self._unconvertible, line),
                name=f"{live.station}-{self._user}",
            )
            converter.start()
            return converter

        live.input_format = None
        return Intake(
            sample_rate=live.sample_rate,
            channels=live.channels,
            takes=live.takes(),
            convert=live.convert,
            start=start,
            refuse=lambda decision: self._unconvertible(decision.line, decision.status),
        )

    def _converted(self, live: LiveInput, header: FrameHeader, frames: list[bytes]) -> None:
        """Frames out of the converter (the engine's thread): on the station's
        clock like the pass-through ones, unless another DJ is on by now."""
        intake = self._intake
        if intake is None or intake.converter is None or intake.converter.hung_up:
            return  # kicked or failed meanwhile: what was on its way stays off air
        if live.dj is self or live.dj is None:
            # Straight to the station, not through the back-pressure queue: the
            # converter's input is bounded (MAX_PENDING), and the station holds
            # a converted DJ's bursts (and drops beyond them) itself.
            self._last_frame = asyncio.get_running_loop().time()  # frames: they keep the slot
            live.step(live.machine.live_audio, header, frames, True)

    def _unconvertible(self, line: str, status: int = 415) -> None:
        """The body cannot go on air: the encoder hears why if no final answer
        went yet (100 Continue only), else the connection ends with a line here."""
        if self._intake is not None:
            self._intake.close()
        if self._transport is None or self._transport.is_closing():
            return
        log.warning("live: refused %s: %s", self._user, line)
        self._parser = None  # nothing more of theirs goes on air
        if not self._continued:
            self._close()
            return
        # The encoder is still sending: closing now, with its bytes unread, is
        # a reset that can beat the answer to it. Say it, stop sending, read
        # (and drop) what still comes for a moment, then close.
        self._write(proto.refusal(status, line))
        self._continued = False
        transport = self._transport
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER, self._close)

    def _hand(self, live: LiveInput, header: FrameHeader | None, frames: list[bytes]) -> None:
        """Frames for the station: in as far as its buffer has room, the rest
        queued, and the DJ not read until it drains (back-pressure)."""
        if frames and header is not None:
            self._queue.append((header, frames))
            self._flush()

    def _flush(self) -> None:
        self._drain = None
        live = self._live
        if live is None:
            self._queue.clear()
            return
        room_for = getattr(live.machine, "room_for_dj", None)
        while self._queue:
            header, frames = self._queue[0]
            room = len(frames) if room_for is None else min(len(frames), room_for())
            if room <= 0:
                break
            if room < len(frames):
                self._queue[0] = (header, frames[room:])
            else:
                self._queue.popleft()
            live.step(live.machine.live_audio, header, frames[:room])
            self._last_frame = asyncio.get_running_loop().time()
            if self._live is None:  # the station let go of them (kicked, stopped)
                self._queue.clear()
        transport = self._transport
        if self._queue:
            if not self._paused and transport is not None and not transport.is_closing():
                transport.pause_reading()
                self._paused = True
            self._drain = asyncio.get_running_loop().call_later(DRAIN_POLL, self._flush)
            return
        if self._paused:
            self._paused = False
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        if self._lost:
            self._finish()

    def _metadata(self, request: proto.MetadataRequest) -> None:
        live = self._harbor.find(request.mount)
        if live is None:
            line = f"no live input on {request.mount or 'this address'}"
            self._deny(404, line, f"title update: {line[:100]}")
            return
        user = self._login(live, request.user, request.password)
        if user is None:
            # (libshout asks without credentials first: not a failure)
            self._refuse(401, "wrong user or password")
            return
        if request.mode != "updinfo" or request.song is None:
            self._refuse(400, "only mode=updinfo with song= is supported")
            return
        dj = live.dj
        if dj is not None and dj._user != user:  # never on another user's set
            line = f"{dj._user} is live on {live.mount}, not {user}"
            log.info("live: dropped %s's title: %s", user, line)
            self._refuse(403, line)
            return
        title = clean_title(request.song)
        self._write(proto.METADATA_OK)
        self._close()
        if dj is not None:
            log.info("live: %s sets the title: %s", user, title)
            live.step(live.machine.live_title, title)
        else:  # their audio connection may be on its way: kept for it, a while
            log.info(
                "live: %s sets the title with no DJ connected (kept %.0f s for %s's set only): %s",
                user,
                TITLE_WAIT,
                user,
                title,
            )
            early = live.early_title = (user, title, time.monotonic())

            def expire() -> None:
                if live.early_title is early:
                    live.early_title = None
                    log.info(
                        "live: dropped %s's title: no audio connection from them within %.0f s",
                        user,
                        TITLE_WAIT,
                    )

            asyncio.get_running_loop().call_later(TITLE_WAIT, expire)

    # -- helpers

    def _login(self, live: LiveInput, user: str | None, password: str | None) -> str | None:
        """The user these credentials are right for; None, with the answer
        given when throttled (else the caller's to give). Wrong passwords are
        counted per user and address, so they cannot lock out another user at
        the address, nor the user elsewhere."""
        harbor = self._harbor
        claimed = proto.claimed_user(user, password)
        who = _shown(claimed) if claimed else "(no user)"
        if password is not None and harbor.refused_for(claimed, self._peer):
            self._deny(
                403,
                "too many wrong passwords; try again in a minute",
                f"too many wrong passwords for {who}",
            )
            return None
        found = live.check(user, password)
        if found is None and password is not None:
            harbor.failed(claimed, self._peer)
            harbor.refused(self._peer, f"wrong user or password for {who}")
        return found

    def _watch(self) -> None:
        """Slow headers, and DJs who stall (no whole frame), are let go."""
        loop = asyncio.get_running_loop()
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        if self._live is None and not self._conn.done and loop.time() - self._opened > HEAD_TIMEOUT:
            self._harbor.refused(self._peer, f"sent no request within {HEAD_TIMEOUT:.0f} s")
            self._close()
            return
        if self._queue:  # held by us (the station's buffer is full), not stalled
            self._last_frame = loop.time()
        if self._live is not None and loop.time() - self._last_frame > STALL:
            log.warning("live: %s sent no audio frame for %.0f s: hanging up", self._user, STALL)
            self._close()
            return
        self._timer = loop.call_later(1.0, self._watch)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, status: int, line: str) -> None:
        self._write(proto.refusal(status, line))
        self._close()

    def _deny(self, status: int, line: str, why: str) -> None:
        """Refuse with ``line`` for the client, ``why`` for the log (a line a
        minute per address: see Harbor.refused)."""
        self._harbor.refused(self._peer, why)
        self._refuse(status, line)

    def _transport_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _shown(name: str) -> str:
    """A user name a client sent, fit for a log line."""
    return "".join(ch if ch.isprintable() else "?" for ch in name[:60])
