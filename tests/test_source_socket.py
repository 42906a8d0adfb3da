"""pushsource.engine.source.SourceSocket against small fake servers on
127.0.0.1, over plain TCP and TLS, with short timeouts.

(test_source_e2e.py does the same against a real icecast2.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.target import IcecastTarget
from pushsource.engine import source as source_module
from pushsource.engine.source import PROBE_EVERY, SourceSocket
from pushsource.errors import (
    AuthenticationError,
    ConnectionLostError,
    IcecastError,
    MountInUseError,
    WrongServerError,
)
from tests.support.aio import SECRET, Events, run
from tests.support.icecast import free_port
from tests.support.tls import Contexts, client_context, make_certificate, server_context

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

OK = b"HTTP/1.0 200 OK\r\n\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["tcp", "tls"])
def tls(request: pytest.FixtureRequest, pem: Path) -> Iterator[Contexts | None]:
    """Each test of this kind runs over plain TCP and over TLS."""
    yield (server_context(pem), client_context(pem)) if request.param == "tls" else None


class FakeServer:
    """An asyncio server on 127.0.0.1 running ``handler`` per connection,
    TLS if given a context; ``rcvbuf`` shrinks its receive buffers."""

    def __init__(
        self,
        handler: Handler,
        tls: Contexts | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.rcvbuf = rcvbuf
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went first
        finally:
            writer.transport.abort()

    async def __aenter__(self) -> FakeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(
            self._handle, sock=sock, ssl=self.tls[0] if self.tls else None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self.server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports finish

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def target(self, host: str = "127.0.0.1") -> IcecastTarget:
        return IcecastTarget(host, self.port, "/live", "source", SECRET, tls=self.tls is not None)

    def socket(self, events: Events, **kwargs: Any) -> SourceSocket:
        if self.tls is not None:
            kwargs.setdefault("ssl_context", self.tls[1])
        target = kwargs.pop("target", None) or self.target()
        return SourceSocket(asyncio.get_running_loop(), target, events, **kwargs)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, the way a killed or confused server does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def audio(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


# --- accepted ----------------------------------------------------------------------------


def test_accepted_then_the_body_arrives_byte_exact_and_close_drains_it(
    tls: Contexts | None,
) -> None:
    body = audio(300_000)
    got = bytearray()
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(OK + b"icecast may say more; nobody reads it")
        while chunk := await reader.read(65536):
            got.extend(chunk)
        writer.close()

    async def main() -> None:
        async with FakeServer(handler, tls) as server:
            events = Events()
            source = server.socket(events)
            started = asyncio.get_running_loop().time()
            source.open({"ice-name": "Test FM", "ice-public": "0"})
            await events.until(lambda: events.accepted_at is not None)
            assert events.accepted_at is not None
            assert events.accepted_at - started < 1.0
            assert source.address == "127.0.0.1"
            for i in range(0, len(body), 4096):
                source.send(body[i : i + 4096])
            source.close()
            deadline = time.monotonic() + 5
            while len(got) < len(body) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert events.errors == []

    run(main())
    assert bytes(got) == body
    head = heads[0].decode()
    assert head.startswith("PUT /live HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{head.split(':')[2].split()[0]}" in head
    assert "Authorization: Basic " + base64.b64encode(f"source:{SECRET}".encode()).decode() in head
    assert "Content-Type: audio/mpeg\r\n" in head and "ice-name: Test FM\r\n" in head


def test_a_pinned_address_is_used_and_the_host_header_keeps_the_name() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_head(reader))
        writer.write(OK)
        await reader.read()

    async def main() -> None:
        async with FakeServer(handler) as server:
            events = Events()
            target = server.target("radio.invalid")  # no DNS would find it
            source = server.socket(events, target=target, address="127.0.0.1")
            threads = threading.active_count()
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            source.close()
            # no resolver thread: the connection is the loop's alone
            assert threading.active_count() == threads

    run(main())
    assert b"\r\nHost: radio.invalid:" in heads[0]


def test_writable_follows_the_high_water_mark() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await release.wait()
        while await reader.read(65536):
            pass

    async def main() -> None:
        async with FakeServer(handler, rcvbuf=4096) as server:
            events = Events()
            source = server.socket(events, high_water=32 * 1024, timeout=3.0)
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            assert source.writable() and source.buffered == 0
            sent = 0
            while source.writable() and sent < 50_000_000:
                source.send(audio(8192))
                sent += 8192
                await asyncio.sleep(0)
            assert not source.writable() and source.buffered >= 32 * 1024
            release.set()
            async with asyncio.timeout(3):
                while not source.writable():
                    await asyncio.sleep(0.01)
            assert events.errors == []
            source.abort()

    run(main())


# --- refusals ----------------------------------------------------------------------------


def refusing(answer: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (
            b"HTTP/1.0 401 Authentication Required\r\n\r\nYou need to authenticate\r\n",
            AuthenticationError,
            "authentication failed for source user on /live",
        ),
        (
            b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nMountpoint in use\r\n",
            MountInUseError,
            "mountpoint /live is in use",
        ),
        (
            b"HTTP/1.0 403 Forbidden\r\n\r\nNo Content-type given\r\n",
            IcecastError,
            "Icecast refused the source on /live: No Content-type given",
        ),
        (b"", IcecastError, "127.0.0.1:{port} closed the connection before answering"),
        (
            b"SSH-2.0-OpenSSH_9.2\r\n",
            WrongServerError,
            "not an Icecast server: 127.0.0.1:{port} answered b'S",
        ),
    ],
)
def test_refusals_close_and_garbage_are_told_apart(
    tls: Contexts | None,
    answer: bytes,
    kind: type[IcecastError],
    message: str,
) -> None:
    async def main() -> None:
        async with FakeServer(refusing(answer), tls) as server:
            events = Events()
            source = server.socket(events)
            started = asyncio.get_running_loop().time()
            source.open({})
            error = await events.error()
            assert type(error) is kind
            assert str(error).startswith(message.format(port=server.port)), error
            assert asyncio.get_running_loop().time() - started < 1.0
            assert events.accepted_at is None
            source.close()  # after a failure: nothing more happens
            source.send(b"x")

    run(main())


def test_a_server_that_never_answers_times_out(
    tls: Contexts | None,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def main() -> None:
        async with FakeServer(handler, tls) as server:
            events = Events()
            source = server.socket(events, timeout=0.5)
            source.open({})
            error = await events.error()
            assert str(error) == f"127.0.0.1:{server.port} did not answer within 0.5 s"

    run(main())


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (b"HTTP/1.0 200 OK\r\n", IcecastError, "127.0.0.1:{port} did not finish its answer"),
        (
            b"HTTP/1.0 403 Forbidden\r\n\r\nMountpoint in use\r\n",
            MountInUseError,
            "mountpoint /live is in use",
        ),
    ],
)
def test_an_answer_that_stops_halfway_is_read_as_far_as_it_came(
    answer: bytes, kind: type[IcecastError], message: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(answer)
        await reader.read()  # and never closes

    async def main() -> None:
        async with FakeServer(handler) as server:
            events = Events()
            server.socket(events, timeout=0.5).open({})
            error = await events.error()
            assert type(error) is kind
            assert str(error).startswith(message.format(port=server.port)), error

    run(main())


def test_a_tls_server_with_an_untrusted_certificate(pem: Path) -> None:
    async def main() -> None:
        async with FakeServer(refusing(OK), (server_context(pem), client_context(pem))) as server:
            events = Events()
            source = server.socket(events, ssl_context=ssl.create_default_context())
            source.open({})
            error = await events.error()
            assert str(error).startswith(f"TLS with 127.0.0.1:{server.port} failed: ")
            assert "certificate" in str(error)

    run(main())


# --- cannot connect ----------------------------------------------------------------------


def test_nothing_listening() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        events = Events()
        target = IcecastTarget("127.0.0.1", port, "/live", password=SECRET)
        SourceSocket(asyncio.get_running_loop(), target, events).open({})
        error = await events.error()
        assert str(error) == f"cannot connect to 127.0.0.1:{port}: Connection refused"
        assert error.status is None

    run(main())


def test_a_name_that_does_not_resolve() -> None:
    async def main() -> None:
        events = Events()
        target = IcecastTarget("no-such-host.invalid", 8000, "/live", password=SECRET)
        source = SourceSocket(asyncio.get_running_loop(), target, events, timeout=3.0)
        source.open({})
        error = await events.error()
        assert str(error).startswith("cannot resolve no-such-host.invalid: "), error
        assert source.address is None

    run(main())


def test_a_connect_that_hangs_times_out() -> None:
    # A listener whose backlog is full and never accepts: later SYNs get no answer.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)

        async def main() -> float:
            events = Events()
            target = IcecastTarget("127.0.0.1", port, "/live", password=SECRET)
            SourceSocket(asyncio.get_running_loop(), target, events, timeout=0.5).open({})
            started = asyncio.get_running_loop().time()
            error = await events.error()
            assert str(error) == f"cannot connect to 127.0.0.1:{port}: no answer within 0.5 s"
            return asyncio.get_running_loop().time() - started

        try:
            assert run(main()) < 1.5
        finally:
            for filler in fillers:
                filler.close()


# --- lost after accepting ----------------------------------------------------------------


def test_a_reset_mid_body_says_after_how_many_bytes(
    tls: Contexts | None,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await reader.readexactly(50_000)
        reset(writer)

    async def main() -> None:
        async with FakeServer(handler, tls) as server:
            events = Events()
            source = server.socket(events)
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            for _ in range(200):
                if events.errors:
                    break
                source.send(audio(4096))
                await asyncio.sleep(0.005)
            error = await events.error()
            assert isinstance(error, ConnectionLostError)
            assert error.sent >= 50_000
            assert str(error) == (
                f"connection to 127.0.0.1:{server.port} lost after {error.sent} bytes: "
                "Connection reset by peer"
            )
            assert not source.writable()

    run(main())


def test_a_server_that_closes_after_accepting(
    tls: Contexts | None,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await reader.readexactly(10_000)
        writer.close()

    async def main() -> None:
        async with FakeServer(handler, tls) as server:
            events = Events()
            source = server.socket(events)
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            source.send(audio(10_000))
            error = await events.error()
            assert isinstance(error, ConnectionLostError)
            assert error.sent == 10_000
            assert str(error) in (
                f"connection to 127.0.0.1:{server.port} lost: "
                "closed by the server after 10000 bytes",
                # the close may come as a reset, if more was in flight
                f"connection to 127.0.0.1:{server.port} lost after 10000 bytes: "
                "Connection reset by peer",
            )

    run(main())


def test_a_server_that_stops_reading_is_dropped_within_the_timeout(
    tls: Contexts | None,
) -> None:
    timeout = 1.0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await asyncio.sleep(30)  # never reads again

    async def main() -> float:
        async with FakeServer(handler, tls, rcvbuf=4096) as server:
            events = Events()
            source = server.socket(events, timeout=timeout)
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            loop = asyncio.get_running_loop()
            # Send at a real-time-ish pace while the buffer takes it; note when
            # the last byte left our buffer.
            stuck_since = loop.time()
            while True:
                if source.writable():
                    source.send(audio(2048))
                queued = source.buffered
                await asyncio.sleep(0.01)
                if events.errors:
                    break
                if source.buffered == 0 or source.buffered < queued:
                    stuck_since = loop.time()
            error = events.errors[0]
            assert isinstance(error, ConnectionLostError)
            assert str(error).endswith("lost: Icecast stopped reading for 1 s")
            assert error.sent > 0
            return loop.time() - stuck_since

    stalled_for = run(main())
    assert timeout - 0.1 <= stalled_for <= timeout + 1.0


def test_close_gives_up_on_a_buffer_that_does_not_drain() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await asyncio.sleep(0.2)
        # wait for the EOF or reset that close() ends with; read nothing before
        await asyncio.sleep(1.0)
        try:
            while await reader.read(1 << 20):
                pass
        except ConnectionResetError:
            pass
        closed.set()

    async def main() -> None:
        async with FakeServer(handler, rcvbuf=4096) as server:
            events = Events()
            source = server.socket(events, timeout=0.5)
            source.open({})
            await events.until(lambda: events.accepted_at is not None)
            source.send(audio(2_000_000))
            assert source.buffered > 0
            started = asyncio.get_running_loop().time()
            source.close()
            async with asyncio.timeout(5):
                await closed.wait()
            assert asyncio.get_running_loop().time() - started < 3
            assert events.errors == []

    run(main())


def test_abort_while_connecting_or_streaming_tells_nothing() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)
        await reader.read()

    async def main() -> None:
        async with FakeServer(handler) as server:
            events = Events()
            early = server.socket(events)
            early.open({})
            early.abort()
            streaming = server.socket(events)
            streaming.open({})
            await events.until(lambda: events.accepted_at is not None)
            streaming.abort()
            streaming.send(b"ignored")
            await asyncio.sleep(0.2)
            assert events.errors == []

    run(main())


def test_send_before_accepted_is_a_programming_error() -> None:
    async def main() -> None:
        events = Events()
        source = SourceSocket(
            asyncio.get_running_loop(), IcecastTarget("127.0.0.1", 9, "/m", password="x"), events
        )
        with pytest.raises(RuntimeError, match="before accepted"):
            source.send(b"x")
        assert SECRET not in repr(source) and "x@" not in repr(source)

    run(main())


# --- memory ------------------------------------------------------------------------------


class Owner(Events):
    """Events whose owner keeps its socket, as the station driver's handler does."""

    sock: SourceSocket | None = None


def test_a_failed_attempt_is_freed_at_once_not_by_the_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten thousand stations retry about once a second each: an attempt kept in a
    # reference cycle lives until a full collection, and memory grows per attempt.
    monkeypatch.setattr(source_module, "PROBE_EVERY", 0.0)  # each attempt its own probe
    target = IcecastTarget("127.0.0.1", free_port(), "/live", password=SECRET)
    attempts = 20

    async def session() -> list[weakref.ref[SourceSocket]]:
        loop = asyncio.get_running_loop()
        kept = []
        for _ in range(attempts):
            owner = Owner()
            owner.sock = SourceSocket(loop, target, owner, timeout=2.0)
            owner.sock.open({})
            assert "cannot connect" in str(await owner.error())
            kept.append(weakref.ref(owner.sock))
            del owner
        await asyncio.sleep(0.05)  # the loop's callbacks of the last one are done
        return kept

    gc.disable()
    try:
        kept = run(session())
        alive = sum(ref() is not None for ref in kept)
    finally:
        gc.enable()
    assert alive == 0, f"{alive} of {attempts} failed attempts still in memory"


def test_stations_on_a_server_that_cannot_be_reached_wait_for_one_probe() -> None:
    """One attempt at a time finds out whether the server can be reached, at
    most every PROBE_EVERY; the other stations wait, without a connect (or a
    line) each, and all go as soon as an attempt gets through."""
    port = free_port()

    def target(n: int) -> IcecastTarget:
        return IcecastTarget("127.0.0.1", port, f"/m{n}", password=SECRET)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        await reader.read()  # until the source closes

    async def session() -> None:
        loop = asyncio.get_running_loop()
        first = Events()
        SourceSocket(loop, target(0), first, timeout=2.0).open({})
        assert "cannot connect" in str(await first.error())
        # Known unreachable now: 50 more stations ask within a probe's interval.
        waiting = [Events() for _ in range(50)]
        socks = [SourceSocket(loop, target(n + 1), e, timeout=2.0) for n, e in enumerate(waiting)]
        for sock in socks:
            sock.open({})
        await asyncio.sleep(2.5 * PROBE_EVERY)
        assert not any(e.errors for e in waiting)  # no attempt of their own, no line
        # The first station tries again (its backoff): the probe, for everyone.
        probe = Events()
        SourceSocket(loop, target(0), probe, timeout=2.0).open({})
        assert "cannot connect" in str(await probe.error())
        assert not any(e.errors or e.accepted_at for e in waiting)
        server = await asyncio.start_server(answer, "127.0.0.1", port)
        again = Events()
        retry = SourceSocket(loop, target(99), again, timeout=2.0)
        try:
            await asyncio.sleep(PROBE_EVERY)
            retry.open({})  # its next try gets through, and everyone waiting goes
            await again.until(lambda: again.accepted_at is not None, 5.0)
            for events in waiting:
                await events.until(lambda e=events: e.accepted_at is not None, 5.0)
        finally:
            for sock in (*socks, retry):
                sock.abort()
            server.close()
            await server.wait_closed()

    run(session())
