"""SourceSocket and ServerWatch against a real icecast2, over plain TCP and
over TLS (``<ssl>1</ssl>`` with a self-signed certificate made at test time):
real MP3 frames made with sox and lame, heard byte-exact by a real listener."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pushsource.core.source import AnswerReader, Refused
from pushsource.core.target import IcecastTarget
from pushsource.engine.source import SourceSocket
from pushsource.engine.watch import ServerWatch
from pushsource.errors import AuthenticationError, IcecastError, MountInUseError
from tests.support.aio import Events, run
from tests.support.icecast import IcecastServer, temp_icecast
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.support.tls import client_context

pytestmark = pytest.mark.integration

PASSWORD = "hackme"  # icecast.xml's
NAME = "pushsource test · Sigur Rós · 東京 🎶"


@pytest.fixture(scope="module")
def server() -> Iterator[IcecastServer]:
    """An icecast2 listening plainly and with TLS."""
    with temp_icecast("tls", tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Four seconds of 128 kbps MP3: nothing but audio frames (lame -t)."""
    return make_clean_mp3(tmp_path_factory.mktemp("media") / "tone.mp3", 4.0)


@dataclass
class Way:
    """How to reach the server: plain or TLS."""

    tls: bool
    server: IcecastServer

    @property
    def port(self) -> int:
        return self.server.tls_port if self.tls else self.server.port

    @property
    def context(self) -> ssl.SSLContext | None:
        return client_context(self.server.certificate) if self.tls else None

    def target(self, mount: str, password: str = PASSWORD) -> IcecastTarget:
        return IcecastTarget("127.0.0.1", self.port, mount, "source", password, tls=self.tls)

    def socket(self, events: Events, mount: str, password: str = PASSWORD) -> SourceSocket:
        return SourceSocket(
            asyncio.get_running_loop(),
            self.target(mount, password),
            events,
            timeout=3.0,
            ssl_context=self.context,
        )


@pytest.fixture(params=["plain", "tls"])
def way(request: pytest.FixtureRequest, server: IcecastServer) -> Way:
    return Way(request.param == "tls", server)


def test_frames_reach_a_listener_byte_exact_with_no_stall(
    way: Way, unique_mount: str, frames: bytes
) -> None:
    listener = Listener(way.port, unique_mount, metadata=False, ssl_context=way.context)
    sent = frames * 2

    async def main() -> float:
        loop = asyncio.get_running_loop()
        events = Events()
        source = way.socket(events, unique_mount)
        opened = loop.time()
        source.open(
            {
                "ice-name": NAME,
                "ice-description": "two\r\nice-genre: injected",
                "ice-public": "0",
                "ice-bitrate": "128",
            }
        )
        await events.until(lambda: events.accepted_at is not None or bool(events.errors))
        assert events.errors == [] and events.accepted_at is not None
        took = events.accepted_at - opened
        assert source.address == "127.0.0.1"
        # The listener hears from the first byte when it is there before any.
        listener.start()
        await asyncio.to_thread(listener.wait_connected, 10)
        # Icecast relays in blocks and keeps a partial one until more comes:
        # the tone goes twice, and the first time must be heard whole.
        for i in range(0, len(sent), 4096):
            while not source.writable():
                await asyncio.sleep(0.01)
            source.send(sent[i : i + 4096])
            await asyncio.sleep(0.02)
        await asyncio.to_thread(listener.wait_for_audio, len(frames), 15)
        status = way.server.source(unique_mount)
        # UTF-8 headers arrive as sent; a CR LF in a value added no header.
        assert status is not None and status["server_name"] == NAME
        assert status["server_description"] == "two ice-genre: injected"
        assert status.get("genre") != "injected"  # Icecast's default stays
        source.close()
        await asyncio.sleep(0.2)
        assert events.errors == []
        return took

    try:
        took = run(main())
    finally:
        listener.stop()
    print(f"accepted {took * 1000:.0f} ms after open ({'TLS' if way.tls else 'plain'})")
    assert took < 0.5  # no 2 s wait for an answer to peek at, over TLS either
    heard = bytes(listener.audio)
    assert len(heard) >= len(frames)
    assert heard == sent[: len(heard)]


def test_a_wrong_password_is_an_authentication_error(way: Way, unique_mount: str) -> None:
    async def main() -> IcecastError:
        events = Events()
        way.socket(events, unique_mount, password="not-the-password").open({})
        return await events.error()

    error = run(main())
    assert type(error) is AuthenticationError and error.status == 401
    assert str(error) == f"authentication failed for source user on {unique_mount}"
    assert "not-the-password" not in str(error)


def test_a_second_source_on_the_mount_is_told_it_is_in_use(
    way: Way, unique_mount: str, frames: bytes
) -> None:
    async def main() -> IcecastError:
        first_events, second_events = Events(), Events()
        first = way.socket(first_events, unique_mount)
        first.open({})
        await first_events.until(lambda: first_events.accepted_at is not None)
        first.send(frames[:8192])
        second = way.socket(second_events, unique_mount)
        second.open({})
        error = await second_events.error()
        first.close()
        assert first_events.errors == []
        return error

    error = run(main())
    assert type(error) is MountInUseError and error.status == 403
    assert str(error) == f"mountpoint {unique_mount} is in use"


def test_a_source_that_sends_no_content_type_is_not_ours_but_is_told_clearly(
    way: Way, unique_mount: str
) -> None:
    """The refusal text of a real 403 that is not "in use" comes through
    (a raw PUT without Content-Type, which SourceSocket never sends)."""

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            way.port,
            ssl=way.context,
            server_hostname="127.0.0.1" if way.tls else None,
        )
        writer.write(
            f"PUT {unique_mount} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Authorization: Basic c291cmNlOmhhY2ttZQ==\r\n\r\n".encode()
        )
        answer = await reader.read(4096)
        writer.close()
        return answer

    reader = AnswerReader(way.target(unique_mount))
    answer = reader.feed(run(main())) or reader.eof()
    assert isinstance(answer, Refused) and answer.error.status == 403
    assert type(answer.error) is IcecastError
    assert str(answer.error).startswith(f"Icecast refused the source on {unique_mount}: ")


@pytest.fixture
def own_server() -> Iterator[IcecastServer]:
    """An icecast2 of this test's own, to freeze."""
    with temp_icecast("frozen", tls=True) as server:
        yield server


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_frozen_icecast_is_noticed_within_6_s(
    own_server: IcecastServer, unique_mount: str, frames: bytes, tls: bool
) -> None:
    way = Way(tls, own_server)
    process = own_server._process
    assert process is not None

    async def main() -> float:
        loop = asyncio.get_running_loop()
        events = Events()
        source = way.socket(events, unique_mount)
        source.open({})
        await events.until(lambda: events.accepted_at is not None)
        source.send(frames[:32768])
        watch = ServerWatch(
            loop, way.target(unique_mount), address=source.address, ssl_context=way.context
        )
        hangs: list[tuple[float, str]] = []
        unwatch = watch.watch(lambda why: hangs.append((loop.time(), why)))
        await asyncio.sleep(2.0)  # a few probes that are answered
        assert hangs == []
        assert watch.listeners(unique_mount) == 0  # the mount is listed, nobody listens
        process.send_signal(signal.SIGSTOP)
        frozen_at = loop.time()
        try:
            async with asyncio.timeout(10):
                while not hangs:
                    await asyncio.sleep(0.05)
        finally:
            process.send_signal(signal.SIGCONT)
        unwatch()
        source.abort()
        assert hangs[0][1] == "no answer within 2 s"
        return hangs[0][0] - frozen_at

    noticed = run(main(), timeout=30)
    print(f"frozen icecast2 noticed after {noticed:.1f} s ({'TLS' if tls else 'plain'})")
    assert noticed < 6.0
