"""One source connection on the event loop: connect, TLS, the ``PUT`` head,
Icecast's answer, then the raw body, with a bounded buffer.

The protocol is :mod:`pushsource.core.source` (SHOUTcast v1's:
:mod:`pushsource.core.shoutcast`); this is their thin I/O layer.
TLS is done here with :class:`ssl.SSLObject` over memory BIOs, not with
asyncio's ``ssl=`` transports: then the answer is read from the same stream
over TLS as over plain TCP, and :attr:`SourceSocket.buffered` counts every
byte still in user space (asyncio's TLS transport hides up to 64 KiB of
encrypted bytes in a second buffer, which a stall check must see).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import errno
import logging
import os
import socket
import ssl
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol, cast

from pushsource.core.icy import IcyWriter
from pushsource.core.shoutcast import SETTLE, ShoutcastReader, opening
from pushsource.core.source import Accepted, Answer, AnswerReader, request_head
from pushsource.core.target import IcecastTarget, netloc
from pushsource.errors import ConnectionLostError, IcecastError

log = logging.getLogger("pushsource.source")

#: Our socket's send buffer: small, so a server that stops reading shows as
#: bytes left in our buffer (and trips the stall check) after about a second
#: of audio, not after the megabytes the kernel would otherwise take.
SEND_BUFFER: Final = 16 * 1024
#: How often, at most, a buffer that does not drain is looked at.
STALL_STEP: Final = 0.5
_READ: Final = 64 * 1024
#: Connections to one server being opened at once (connect, TLS, the answer), at
#: most. Icecast 2.4 listens with a backlog of 5: a thousand stations connecting
#: at once left many in SYN retransmission for seconds, past the connect timeout,
#: and the hung-server check's probe unanswered behind them, which cut them all.
OPENING_PER_SERVER: Final = 8
#: A server that could not be reached is tried this often by one of the
#: stations that push to it, at most; the others wait for its answer.
PROBE_EVERY: Final = 0.5
#: A station waiting for another's probe looks again this long after (jittered
#: by a fifth), in case the probing station went away.
WAIT_MAX: Final = 10.0


class _Server:
    """What the stations on one loop know of one server: at most
    OPENING_PER_SERVER connections being opened at once, and whether it could
    be reached at all. While it cannot, one station's attempt at a time (at
    most every PROBE_EVERY) finds out for all: 10,000 stations on a port that
    refuses made 10,000 connects a second, a core's worth, and as many lines;
    now they wait, quiet, until a probe gets through, then all go at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opening = asyncio.Semaphore(OPENING_PER_SERVER)
        self._loop = loop
        self._down = False
        self._probe_at = 0.0  # the next attempt while down, no sooner
        self._probing = False
        self._changed = asyncio.Event()

    async def turn(self) -> bool:
        """Wait while the server is down and it is not our turn to try it.
        Returns whether this attempt is the probe (say ``reached`` or
        ``unreached`` after it, or ``gave_up``)."""
        while self._down:
            now = self._loop.time()
            if not self._probing and now >= self._probe_at:
                self._probing = True
                return True
            changed = self._changed
            wait = WAIT_MAX * (0.8 + 0.4 * (id(asyncio.current_task()) % 97) / 97)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await changed.wait()
        return False

    def reached(self) -> None:
        """A connection got through: everyone waiting goes."""
        self._probing = False
        if self._down:
            self._down = False
            self._wake()

    def unreached(self) -> None:
        """An attempt could not reach the server."""
        self._probing = False
        self._down = True
        self._probe_at = self._loop.time() + PROBE_EVERY

    def gave_up(self) -> None:
        """The probe was called off (its station stopped): another may go."""
        if self._probing:
            self._probing = False
            self._probe_at = 0.0
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


_servers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], _Server]] = (
    weakref.WeakKeyDictionary()
)


def _server(loop: asyncio.AbstractEventLoop, target: IcecastTarget) -> _Server:
    servers = _servers.setdefault(loop, {})
    key = (target.host.casefold(), target.source_port)  # where it connects (SHOUTcast: +1)
    server = servers.get(key)
    if server is None:
        server = servers[key] = _Server(loop)
    return server


def _send_holding_the_lock() -> Callable[[int, bytes, int, int], int] | None:
    """libc's ``send``, called without giving up the interpreter lock.

    Python's own ``socket.send`` gives the lock up around the call. For the
    engine's non-blocking sends (a few KiB, microseconds) that is all cost:
    when a worker is busy in Python (a read's frame walk, a cue's tag parse)
    the engine's thread then waits up to a switch interval to get the lock
    back, at every send; hundreds of stations' sends in a row behind one busy
    worker stalled the engine for 100-150 ms. ``ctypes.PyDLL`` keeps the lock
    for the call."""
    if not hasattr(socket, "MSG_DONTWAIT"):
        return None
    try:
        send = ctypes.PyDLL(None).send
    except (OSError, AttributeError):  # no C library to load: Python's send
        return None
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    return cast(Callable[[int, bytes, int, int], int], send)


_SEND: Final = _send_holding_the_lock()
_SEND_FLAGS: Final = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


class SourceEvents(Protocol):
    """What a :class:`SourceSocket` tells its owner, on the loop."""

    def accepted(self) -> None:
        """Icecast answered 200: the body may go."""

    def failed(self, error: IcecastError) -> None:
        """Called exactly once when the connection fails; it is closed after."""


class _Deaf:
    """The events of a finished SourceSocket: it says nothing more."""

    def accepted(self) -> None:
        pass

    def failed(self, error: IcecastError) -> None:
        pass


_DEAF: Final = _Deaf()


class _State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"  # resolving, connecting, TLS handshake
    ANSWERING = "answering"  # the head is out, the answer not in yet
    STREAMING = "streaming"
    CLOSING = "closing"  # close(): the buffer drains
    DONE = "done"


class SourceSocket:
    """One ``PUT`` to one mount. Calls ``events.accepted()`` once Icecast takes
    the source, and ``events.failed(error)`` once on any failure; after
    :meth:`close` or :meth:`abort` it calls neither. Both come from loop
    callbacks, never from inside a call to this object's methods."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: IcecastTarget,
        events: SourceEvents,
        *,
        address: str | None = None,
        timeout: float = 5.0,
        high_water: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        metaint: int | None = None,
    ) -> None:
        """``metaint``: titles go inside the stream, in ICY blocks every so
        many audio bytes (see :meth:`title`); not for SHOUTcast v1, whose
        sources cannot carry them."""
        self.target = target
        #: The IP connected to (or to connect to): title updates must come
        #: from the same one, for Icecast to take them with source credentials.
        self.address = address
        self._loop = loop
        self._events = events
        self._timeout = timeout
        self._high_water = high_water
        self._ssl_context = ssl_context
        self._where = netloc(target.host, target.source_port)
        self._state = _State.NEW
        self._reader: AnswerReader | ShoutcastReader = AnswerReader(target)
        self._head = b""
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._fd = -1  # the socket's, for _SEND; -1: through the transport
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._timer: asyncio.TimerHandle | None = None
        self._written = 0  # bytes handed to the transport after the answer
        self._preamble = 0  # of which the protocol's own (SHOUTcast's icy-* lines)
        self._settling = False  # SHOUTcast: the icy-* lines are out, the body waits
        self._stall_mark = 0
        self._stall_since = 0.0
        self._opening: asyncio.Semaphore | None = None  # held from connect to answer
        self._metaint = metaint if target.protocol == "icecast" else None
        self._adopting = False  # adopt(): a connection on air already, no handshake
        # audio_in() is asked only about bytes still unsent: at most the high-
        # water mark plus the kernel's buffer (twice SO_SNDBUF), with room to spare.
        remember = (high_water + 4 * SEND_BUFFER) // metaint + 64 if metaint else 0
        self._icy = IcyWriter(self._metaint, remember=remember) if self._metaint else None

    def __repr__(self) -> str:
        return f"SourceSocket({self.target}, address={self.address!r}, {self._state.value})"

    # --- the interface ---------------------------------------------------------------

    def open(self, headers: Mapping[str, str]) -> None:
        """Start connecting; returns at once. ``headers``: the ``ice-*`` ones."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"{self!r}: open() twice")
        if self.target.protocol == "shoutcast":
            self._head = opening(self.target)
            self._reader = ShoutcastReader(self.target, headers)
        else:
            self._head = request_head(self.target, headers, metaint=self._metaint)
        self._state = _State.CONNECTING
        self._task = self._loop.create_task(self._connect(), name=f"connect {self.target.mount}")

    def adopt(
        self,
        sock: socket.socket,
        *,
        phase: int = 0,
        title: str | None = None,
        titles: Sequence[tuple[int, str]] = (),
    ) -> None:
        """Instead of :meth:`open`: go on with a connection another process
        opened and Icecast took (an upgrade in place, ops.handover), at its
        next byte: no request, no answer, ``accepted()`` as soon as it is
        ours. ``phase``: audio bytes since its last ICY block; ``title``: the
        last title in a block; ``titles``: those waiting for their byte, as
        (audio bytes from now, title). Plain TCP only."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"{self!r}: adopt() after open()")
        with contextlib.suppress(OSError):
            self.address = str(sock.getpeername()[0])
        if self._icy is not None:
            # As if ``phase`` bytes had gone on this connection with no block:
            # the next block comes where the other process's would have.
            self._icy.go_on(phase, phase, title)
            self._written = phase
            for at, text in titles:
                self._icy.title(text, at)
        self._adopting = True
        self._state = _State.CONNECTING
        self._task = self._loop.create_task(self._adopt(sock), name=f"adopt {self.target.mount}")

    async def _adopt(self, sock: socket.socket) -> None:
        try:
            _prepare(sock, self._timeout)
            await self._loop.create_connection(lambda: _Wire(self), sock=sock)
        except OSError as exc:
            sock.close()
            self._fail(IcecastError(f"cannot go on with {self._where}: {describe_error(exc)}"))

    def hand_over(self) -> tuple[int, int, str | None, list[tuple[int, str]]] | None:
        """For an upgrade in place: (the socket's descriptor, audio bytes since
        the last ICY block, the last title in a block, titles waiting), or
        None when it cannot be handed over (TLS, not streaming, bytes still
        queued in user space). Changes nothing."""
        transport = self._transport
        if self._state is not _State.STREAMING or self._settling or transport is None:
            return None
        if self._tls is not None or self.buffered:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        icy = self._icy
        if icy is None:
            return sock.fileno(), 0, None, []
        return sock.fileno(), icy.audio % icy.interval, icy.last_title, icy.pending()

    def send(self, data: bytes) -> None:
        """Queue body bytes; only after ``accepted()``. After a failure or a
        close it does nothing (the failure was told already)."""
        if self._state in (_State.CLOSING, _State.DONE):
            return
        if self._state is not _State.STREAMING or self._settling:
            raise RuntimeError(f"{self!r}: send() before accepted()")
        if self._icy is not None:
            data = self._icy.wrap(data)
        self._written += len(data)
        self._write(data)
        if self._timer is None and self.buffered:
            self._stall_mark, self._stall_since = self._taken(), self._loop.time()
            self._timer = self._loop.call_later(self._stall_step(), self._check_stall)

    @property
    def buffered(self) -> int:
        """Bytes queued that the kernel has not taken yet."""
        transport = self._transport
        if transport is None or self._state is _State.DONE:
            return 0
        if self._tls is None:  # the TLS BIO is never written: no call into OpenSSL per send
            return transport.get_write_buffer_size()
        return transport.get_write_buffer_size() + self._outgoing.pending

    def writable(self) -> bool:
        """Whether more may be queued: the buffer is below its high-water mark."""
        return (
            self._state is _State.STREAMING
            and not self._settling
            and self.buffered < self._high_water
        )

    @property
    def sent(self) -> int:
        """Audio bytes the kernel has taken (over TLS: about, in plain bytes)."""
        taken = max(0, self._written - self.buffered - self._preamble)
        return taken if self._icy is None else self._icy.audio_in(taken)

    @property
    def unsent(self) -> int:
        """Audio bytes given to :meth:`send` that the kernel has not taken:
        where to go on from on the next connection."""
        if self._icy is None:
            return min(self.buffered, self._written - self._preamble)
        return self._icy.audio - self.sent

    @property
    def titles_inside(self) -> bool:
        """Whether titles go inside the stream (:meth:`title`)."""
        return self._icy is not None

    def title(self, title: str, at: int = 0) -> None:
        """The title from byte ``at`` of the next :meth:`send`'s audio on (in
        the first ICY block at or after it). Only with ``metaint``."""
        if self._icy is None:
            raise RuntimeError(f"{self!r}: title() without metaint")
        self._icy.title(title, at)

    def close(self) -> None:
        """Close cleanly: what is buffered drains (for at most ``timeout`` s),
        then the connection closes. No ``failed()`` after."""
        if self._state is not _State.STREAMING:
            self.abort()
            return
        self._state = _State.CLOSING
        self._cancel_timer()
        # Over TLS no close_notify: Icecast 2.4.4 takes SSL_read's 0 after one
        # for "no data yet", never drops the source, and keeps the mount (and
        # its listeners) up for good, a restarted station refused as "in use".
        # A bare FIN after the last bytes fails its next read at once.
        assert self._transport is not None
        transport = self._transport
        transport.close()
        if self.buffered:
            self._timer = self._loop.call_later(self._timeout, transport.abort)

    def abort(self) -> None:
        """Drop the connection at once. No ``failed()`` after."""
        self._finish()

    # --- connecting ------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                address = self.address or await self._resolve()
        except (OSError, TimeoutError) as exc:
            why = f"no answer within {self._timeout:g} s" if isinstance(exc, TimeoutError) else ""
            host = self.target.host
            shown = host if host.isprintable() else ascii(host)  # a NUL stays on its line
            self._fail(IcecastError(f"cannot resolve {shown}: {why or describe_error(exc)}"))
            return
        self.address = address
        server = _server(self._loop, self.target)
        probe = await server.turn()  # not timed: another's probe is not the server's fault
        try:
            await server.opening.acquire()
        except BaseException:
            if probe:
                server.gave_up()
            raise
        self._opening = server.opening
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if probe:
                server.gave_up()
            self._fail(IcecastError(f"cannot connect to {self._where}: {describe_error(exc)}"))
            return
        try:
            _prepare(sock, self._timeout)
            async with asyncio.timeout(self._timeout):
                await self._loop.sock_connect(sock, (address, self.target.source_port))
        except TimeoutError:
            sock.close()
            server.unreached()
            self._fail(
                IcecastError(
                    f"cannot connect to {self._where}: no answer within {self._timeout:g} s"
                )
            )
            return
        except OSError as exc:
            sock.close()
            server.unreached()
            self._fail(IcecastError(f"cannot connect to {self._where}: {describe_error(exc)}"))
            return
        except BaseException:
            sock.close()
            if probe:
                server.gave_up()
            self._opened()
            raise
        server.reached()
        try:
            await self._loop.create_connection(lambda: _Wire(self), sock=sock)
        except OSError as exc:
            sock.close()
            self._fail(IcecastError(f"cannot connect to {self._where}: {describe_error(exc)}"))
        except BaseException:
            sock.close()
            self._opened()
            raise

    async def _resolve(self) -> str:
        host = self.target.host
        for family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, ValueError):  # ValueError: a NUL in it
                socket.inet_pton(family, host)
                return host  # an address: no lookup (and no resolver thread)
        return await lookup(self._loop, host, self.target.port)

    def _made(self, transport: asyncio.Transport) -> None:
        if self._state is not _State.CONNECTING:
            transport.abort()  # aborted while connecting
            return
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None and _SEND is not None else -1
        if self._adopting:
            self._state = _State.STREAMING
            self._events.accepted()
            return
        self._state = _State.ANSWERING
        self._timer = self._loop.call_later(self._timeout, self._no_answer)
        if self.target.tls:
            context = self._ssl_context or default_context()
            try:
                self._tls = context.wrap_bio(
                    self._incoming, self._outgoing, server_hostname=self.target.host
                )
            except (ssl.SSLError, ValueError) as exc:
                self._fail(IcecastError(f"TLS with {self._where} failed: {describe_error(exc)}"))
                return
            self._handshake()
        else:
            transport.write(self._head)

    def _handshake(self) -> bool:
        """Go on with the TLS handshake; True once it is done (and the head sent)."""
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._fail(IcecastError(f"TLS with {self._where} failed: {_tls_why(exc)}"))
            return False
        self._write(self._head)
        self._head = b""
        return True

    # --- what the server sends -------------------------------------------------------

    def _received(self, data: bytes) -> None:
        if self._tls is None:
            self._plain(data)
            return
        self._incoming.write(data)
        if self._head and not self._handshake():
            return
        chunks: list[bytes] = []
        ended = False
        while True:
            try:
                chunk = self._tls.read(_READ)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                ended = True
                break
            except ssl.SSLError as exc:
                self._lost(IcecastError(f"TLS with {self._where} failed: {_tls_why(exc)}"))
                return
            if not chunk:
                ended = True
                break
            chunks.append(chunk)
        self._flush()  # reading may have queued a reply (a key update)
        if chunks:
            self._plain(b"".join(chunks))
        if ended:
            self._ended()

    def _plain(self, data: bytes) -> None:
        if self._state is _State.ANSWERING:
            answer = self._reader.feed(data)
            if answer is not None:
                self._answered(answer)
        elif self._state is _State.STREAMING:
            # After a 100 the final answer comes while the body goes: a
            # refusal ends the source; a 200, or anything after one, is not ours.
            error = self._reader.later(data)
            if error is not None:
                self._fail(error)

    def _answered(self, answer: Answer) -> None:
        self._cancel_timer()
        self._opened()
        if isinstance(answer, Accepted):
            refusal = self._reader.later(b"")  # a 100 and a refusal in one read
            if refusal is not None:
                self._fail(refusal)
                return
            log.debug("%s took the source (%d)", self.target, answer.status)
            self._state = _State.STREAMING
            if answer.then:
                self._preamble = self._written = len(answer.then)
                self._write(answer.then)
            if self.target.protocol == "shoutcast":
                # Icecast 2.4 drops the audio it reads along with the icy-*
                # lines: let it read them alone first. A refusal it sends
                # then (mount in use) fails the source before it is on air.
                self._settling = True
                self._timer = self._loop.call_later(SETTLE, self._settled)
                return
            self._events.accepted()
        else:
            self._fail(answer.error)

    def _settled(self) -> None:
        self._timer = None
        if self._state is _State.STREAMING and self._settling:
            self._settling = False
            self._events.accepted()

    def _no_answer(self) -> None:
        self._timer = None
        if self._state is not _State.ANSWERING:
            return
        answer = self._reader.eof() if self._reader.started else None
        if answer is not None and (isinstance(answer, Accepted) or answer.error.status):
            self._answered(answer)  # a refusal whose close does not come: what we have
        elif answer is not None:
            self._fail(
                IcecastError(f"{self._where} did not finish its answer within {self._timeout:g} s")
            )
        elif self._tls is not None and self._head:
            self._fail(
                IcecastError(
                    f"TLS handshake with {self._where} not done within {self._timeout:g} s"
                )
            )
        else:
            self._fail(IcecastError(f"{self._where} did not answer within {self._timeout:g} s"))

    def _ended(self) -> None:
        """The server closed its side."""
        if self._state is _State.ANSWERING:
            self._answered(self._reader.eof())
        elif self._state is _State.STREAMING:
            refusal = self._reader.ended()
            if refusal is not None:
                self._fail(refusal)
                return
            self._fail(
                ConnectionLostError(
                    f"connection to {self._where} lost: closed by the server "
                    f"after {self.sent} bytes",
                    self.sent,
                )
            )

    def _lost(self, error: IcecastError | None, exc: BaseException | None = None) -> None:
        """The transport is gone (``error``: say this, else tell from ``exc``)."""
        if self._state is _State.DONE:
            return
        if self._state is _State.CLOSING:
            self._finish()
            return
        if error is None and exc is None:
            self._ended()
        elif error is None and self._state is _State.STREAMING and _timed_out(exc):
            # TCP_USER_TIMEOUT: nothing we sent was acknowledged for `timeout`
            # s (a zero window counts): the same stall the check below tells.
            error = self._stalled()
        elif error is None and self._state is _State.STREAMING:
            sent = self.sent
            error = ConnectionLostError(
                f"connection to {self._where} lost after {sent} bytes: {describe_error(exc)}", sent
            )
        elif error is None:
            error = IcecastError(
                f"connection to {self._where} lost before an answer: {describe_error(exc)}"
            )
        if error is not None:
            self._fail(error)
        self._finish()

    # --- sending ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if self._tls is None:
            fd = self._fd
            # (A closing transport may have closed the descriptor: never that.)
            if fd >= 0 and not transport.get_write_buffer_size() and not transport.is_closing():
                # Nothing queued before it: straight to the kernel, as the
                # transport would, keeping the lock; what it does not take
                # (full, or an error, which the transport then meets) goes on
                # through the transport.
                sent = _SEND(fd, data, len(data), _SEND_FLAGS) if _SEND is not None else -1
                if sent == len(data):
                    return
                if sent > 0:
                    data = data[sent:]
            transport.write(data)
            return
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:
            # From the loop, not from inside send(): the owner is never re-entered.
            error = IcecastError(f"TLS with {self._where} failed: {_tls_why(exc)}")
            self._loop.call_soon(self._lost, error)
            return
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending and self._transport is not None:
            self._transport.write(self._outgoing.read())

    def _taken(self) -> int:
        return self._written - self.buffered

    def _stall_step(self) -> float:
        return min(STALL_STEP, self._timeout / 5)

    def _check_stall(self) -> None:
        """A buffer that makes no progress for ``timeout`` s drops the connection."""
        self._timer = None
        if self._state is not _State.STREAMING or not self.buffered:
            return
        now, taken = self._loop.time(), self._taken()
        if taken != self._stall_mark:
            self._stall_mark, self._stall_since = taken, now
        elif now - self._stall_since >= self._timeout - 1e-3:
            self._fail(self._stalled())
            return
        wait = min(self._stall_step(), self._stall_since + self._timeout - now)
        self._timer = self._loop.call_later(max(wait, 0.0), self._check_stall)

    def _stalled(self) -> ConnectionLostError:
        return ConnectionLostError(
            f"connection to {self._where} lost: Icecast stopped reading for {self._timeout:g} s",
            self.sent,
        )

    # --- ending ----------------------------------------------------------------------

    def _fail(self, error: IcecastError) -> None:
        if self._state is _State.DONE:
            return
        events = self._events
        self._finish()
        log.debug("%s failed: %s", self.target, error)
        events.failed(error)

    def _finish(self) -> None:
        self._state = _State.DONE
        # Let go of the owner: its handler holds this socket, and the cycle kept
        # every failed attempt (and its buffers) alive until a full collection,
        # which at ten thousand stations comes seldom: memory grew per attempt.
        self._events = _DEAF
        self._cancel_timer()
        self._opened()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        if self._transport is not None:
            self._transport.abort()

    def _opened(self) -> None:
        """Done opening, one way or another: the next connection may go."""
        gate, self._opening = self._opening, None
        if gate is not None:
            gate.release()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Wire(asyncio.Protocol):
    """asyncio's side of a SourceSocket."""

    def __init__(self, owner: SourceSocket) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._owner._made(transport)

    def data_received(self, data: bytes) -> None:
        self._owner._received(data)

    def eof_received(self) -> bool:
        self._owner._ended()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(None, exc)


def _prepare(sock: socket.socket, timeout: float) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: give up on unacknowledged data
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000))


_context: ssl.SSLContext | None = None


def default_context() -> ssl.SSLContext:
    """The system's trust store, loaded once for every station."""
    global _context
    if _context is None:
        _context = ssl.create_default_context()
    return _context


async def lookup(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """The first address of ``host``. getaddrinfo's refusal of a name it cannot
    encode (UnicodeError for "a..b", ValueError for a NUL) becomes the OSError
    of any failed lookup: a failure that is told and retried, not a task that
    dies unseen. Raises OSError."""
    if "\x00" in host:  # getaddrinfo would cut the name there, and look up the rest
        raise OSError("not a host name")
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:  # UnicodeError is one
        raise OSError("not a host name") from None
    if not infos:
        raise OSError(f"no address for {host}")
    return str(infos[0][4][0])


def _timed_out(exc: BaseException | None) -> bool:
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT
    )


def describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)  # asyncio's texts quote the address
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _tls_why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return describe_error(exc)


def check_source(target: IcecastTarget, *, timeout: float = 5.0) -> None:
    """Log in as the source with the handshake a station uses, send no audio,
    and leave (``pushsource check``). Raises AuthenticationError,
    MountInUseError (the credentials were right: servers check them first) or
    IcecastError. Blocks: runs its own event loop."""
    error = check_sources([(target, timeout)])[0]
    if error is not None:
        raise error


def check_sources(
    logins: Sequence[tuple[IcecastTarget, float]],
) -> list[IcecastError | None]:
    """:func:`check_source` for each (target, timeout) at once; what each
    raised, or None. The logins to one server are all held until every one
    of them has been answered, then left together: the server counts them at
    once, as when ``run`` starts, so a source limit (Icecast's
    ``<limits><sources>``) refuses the ones over it now, not every start."""
    results: list[IcecastError | None] = [None] * len(logins)
    servers: dict[tuple[str, int], list[int]] = {}
    for n, (target, _timeout) in enumerate(logins):
        servers.setdefault((target.host.casefold(), target.source_port), []).append(n)

    class Told:
        def __init__(self) -> None:
            self.done = asyncio.Event()
            self.error: IcecastError | None = None

        def accepted(self) -> None:
            self.done.set()

        def failed(self, error: IcecastError) -> None:
            self.error = error
            self.done.set()

    async def one(n: int, held: list[SourceSocket], queued: int) -> None:
        target, timeout = logins[n]
        told = Told()
        sock = SourceSocket(asyncio.get_running_loop(), target, told, timeout=timeout)
        held.append(sock)
        sock.open({"ice-public": "0"})
        # The socket's own timers bound each step; this only guards them,
        # with room for the logins opened before this one (OPENING_PER_SERVER).
        try:
            async with asyncio.timeout((3 + queued // OPENING_PER_SERVER) * timeout + 1):
                await told.done.wait()
        except TimeoutError:
            results[n] = IcecastError(f"{netloc(target.host, target.port)} did not answer")
            return
        results[n] = told.error

    async def server(numbers: list[int]) -> None:
        held: list[SourceSocket] = []
        try:
            await asyncio.gather(*(one(n, held, k) for k, n in enumerate(numbers)))
        finally:
            for sock in held:
                sock.abort()

    async def run() -> None:
        await asyncio.gather(*(server(numbers) for numbers in servers.values()))

    asyncio.run(run())
    return results
