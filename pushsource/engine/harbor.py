"""The live input: DJs' encoders connect here, on the engine's loop, and their
frames go to their station's machine. One server per listen address; the
stations on it are told apart by mount. The protocol is
:mod:`pushsource.core.harbor`'s; this owns the sockets, the credentials check
(constant time; passwords never logged) and the frames' format check."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pushsource.core import harbor as proto
from pushsource.core.frames import END, NEED_DATA, Frame, FrameHeader, FrameParser
from pushsource.core.titles import clean_title
from pushsource.engine.loop import Engine
from pushsource.errors import ConfigError, FrameError

log = logging.getLogger("pushsource")

#: A connection must have sent its request head within this long.
HEAD_TIMEOUT: Final = 10.0
#: A DJ connection that sends nothing for this long (beyond the grace) is dropped.
STALL: Final = 30.0
#: Connections at once per address, DJs and title updates together.
MAX_CONNECTIONS: Final = 32
#: Wrong passwords from one address within WINDOW seconds before it is refused.
MAX_FAILURES: Final = 5
WINDOW: Final = 60.0
#: MP3 content types encoders send (or none at all).
MP3_TYPES: Final = frozenset({"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"})


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
    title: str | None = None  # a title sent before the DJ's audio connection
    since: float | None = None  # wall clock the DJ connected
    bytes_in: int = 0
    #: Told each DJ session's user as it begins (the station's history).
    on_session: Callable[[str], None] | None = None
    seconds: float = 0.0  # DJs connected, in total, before the one connected now
    #: Users a kick refused, until when (monotonic).
    banned: dict[str, float] = field(default_factory=dict)
    _since_mono: float = 0.0

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
        dj._close()
        self.step(self.machine.live_kick)  # the folder now: no grace after a kick
        return dj._user

    def takes(self) -> str:
        mode = "stereo" if self.channels == 2 else "mono"
        return f"MP3 (audio/mpeg) at {self.sample_rate} Hz {mode}"

    def check(self, user: str | None, password: str | None) -> str | None:
        """The user these credentials are right for, or None. Constant time in
        the password; every user is compared, so timing tells no user name."""
        if password is None:
            return None
        found = None
        given = password.encode()
        for name, secret in self.users.items():
            same = hmac.compare_digest(given, secret.encode())
            if same and (user is None or hmac.compare_digest(user.encode(), name.encode())):
                found = name
        return found


class Harbor:
    """One listen address and the stations' live inputs on it."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self._engine = engine
        self.host, self.port = host, port
        self.inputs: dict[str, LiveInput] = {}
        self._server: asyncio.Server | None = None
        self._failures: dict[str, deque[float]] = {}
        self.connections = 0
        #: A socket listening on the address already, handed over by a
        #: restart in place (ops.handover): start() serves on it.
        self.inherited: socket.socket | None = None

    def add(self, live: LiveInput) -> None:
        if live.mount in self.inputs:
            other = self.inputs[live.mount].station
            raise ConfigError(
                f"live mount {live.mount} on {self.host}:{self.port} is taken by station {other}"
            )
        self.inputs[live.mount] = live

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

    def refused_for(self, peer: str) -> bool:
        times = self._failures.get(peer)
        now = time.monotonic()
        while times and times[0] < now - WINDOW:
            times.popleft()
        return times is not None and len(times) >= MAX_FAILURES

    def failed(self, peer: str) -> None:
        self._failures.setdefault(peer, deque()).append(time.monotonic())
        if len(self._failures) > 10_000:  # a scan from many addresses: forget the oldest
            self._failures.pop(next(iter(self._failures)))

    def find(self, mount: str | None) -> LiveInput | None:
        if mount is None and len(self.inputs) == 1:  # SHOUTcast names no mount
            return next(iter(self.inputs.values()))
        return self.inputs.get(mount) if mount is not None else None


class _DJ(asyncio.Protocol):
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
        self._last_data = 0.0
        self._counted = False
        self._continued = False  # answered 100 Continue (and no final answer yet)

    # -- asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        harbor = self._harbor
        if harbor.connections >= MAX_CONNECTIONS:
            log.warning("live: refused %s: too many connections", self._peer)
            transport.write(proto.refusal(503, "too many connections"))
            transport.close()
            return
        harbor.connections += 1
        self._counted = True
        loop = asyncio.get_running_loop()
        self._last_data = loop.time()
        self._timer = loop.call_later(HEAD_TIMEOUT, self._watch)

    def data_received(self, data: bytes) -> None:
        self._last_data = asyncio.get_running_loop().time()
        for event in self._conn.feed(data):
            if self._transport is None or self._transport.is_closing():
                return
            self._event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._harbor.connections -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._audio(b"")
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
                log.warning("live: refused %s: %s", self._peer, reason)
                self._refuse(status, reason)

    def _source(self, request: proto.SourceRequest) -> None:
        harbor, shoutcast = self._harbor, request.method == "SHOUTCAST"
        live = harbor.find(request.mount)
        if live is None:
            what = "SHOUTcast login (no mount)" if shoutcast else f"mount {request.mount}"
            log.warning("live: refused %s: no live input for %s", self._peer, what)
            self._refuse(404, f"no live input on {request.mount or 'this address'}")
            return
        if harbor.refused_for(self._peer):
            log.warning("live: refused %s: too many wrong passwords", self._peer)
            self._refuse(403, "too many wrong passwords; try again in a minute")
            return
        user = live.check(request.user, request.password)
        if user is None:
            if request.password is not None:
                harbor.failed(self._peer)
                name = request.user or "(SHOUTcast)"
                log.warning("live: refused %s from %s: wrong user or password", name, self._peer)
            if shoutcast:
                self._write(proto.SHOUTCAST_BAD)
                self._close()
            else:
                self._refuse(401, "wrong user or password")
            return
        until = live.banned.get(user)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                minutes = math.ceil(left / 60)
                log.warning("live: refused %s: kicked, refused for %d more min", user, minutes)
                self._refuse(
                    403, f"{user} was kicked off {live.mount}: refused for {minutes} more min"
                )
                return
            del live.banned[user]
        kind = request.content_type
        if kind is not None and kind not in MP3_TYPES:
            line = f"this station takes {live.takes()}, not {kind[:60]}"
            log.warning("live: refused %s: %s", user, line)
            self._refuse(415, line)
            return
        if live.dj is not None:
            log.warning("live: refused %s: %s is live on %s", user, live.dj._user, live.mount)
            self._refuse(403, f"a DJ is already live on {live.mount}")
            return
        live.dj, live.since, live.bytes_in = self, time.time(), 0
        live._since_mono = time.monotonic()
        self._live, self._user = live, user
        self._parser = FrameParser()
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
        title, live.title = live.title, None
        live.step(live.machine.live_start, user, title)
        if live.on_session is not None:
            live.on_session(user)

    def _audio(self, data: bytes) -> None:
        """Bytes of the body (b"": it ended: the last frame, held back until
        the next one confirmed it, goes too)."""
        live, parser = self._live, self._parser
        if live is None or parser is None:
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

    def _hand(self, live: LiveInput, header: FrameHeader | None, frames: list[bytes]) -> None:
        if frames and header is not None:
            live.step(live.machine.live_audio, header, frames)

    def _metadata(self, request: proto.MetadataRequest) -> None:
        harbor = self._harbor
        live = harbor.find(request.mount)
        if live is None:
            self._refuse(404, f"no live input on {request.mount or 'this address'}")
            return
        if harbor.refused_for(self._peer):
            self._refuse(403, "too many wrong passwords; try again in a minute")
            return
        user = live.check(request.user, request.password)
        if user is None:
            if request.password is not None:  # libshout asks without first: not a failure
                harbor.failed(self._peer)
                log.warning(
                    "live: title update refused for %s from %s: wrong user or password",
                    request.user or "(SHOUTcast)",
                    self._peer,
                )
            self._refuse(401, "wrong user or password")
            return
        if request.mode != "updinfo" or request.song is None:
            self._refuse(400, "only mode=updinfo with song= is supported")
            return
        title = clean_title(request.song)
        self._write(proto.METADATA_OK)
        self._close()
        log.info("live: %s sets the title: %s", user, title)
        if live.dj is not None:
            live.step(live.machine.live_title, title)
        else:
            live.title = title  # the DJ's audio connection is on its way

    # -- helpers

    def _watch(self) -> None:
        """Slow headers, and DJs who stall, are let go."""
        loop = asyncio.get_running_loop()
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        if self._live is None and not self._conn.done:
            log.warning("live: %s sent no request within %.0f s", self._peer, HEAD_TIMEOUT)
            self._close()
            return
        if self._live is not None and loop.time() - self._last_data > STALL:
            log.warning("live: %s sent nothing for %.0f s: hanging up", self._user, STALL)
            self._close()
            return
        self._timer = loop.call_later(1.0, self._watch)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, status: int, line: str) -> None:
        self._write(proto.refusal(status, line))
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
