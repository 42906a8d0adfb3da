"""pushsource.engine.watch.ServerWatch against a fake status server on
127.0.0.1 (plain and TLS) that can be told to stop answering.

(test_source_e2e.py freezes a real icecast2 with SIGSTOP.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from pushsource.core.target import IcecastTarget
from pushsource.engine.watch import ALIVE_PATH, FULL_EVERY, ServerWatch
from tests.support.aio import SECRET, run
from tests.support.tls import Contexts, client_context, make_certificate, server_context

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["tcp", "tls"])
def tls(request: pytest.FixtureRequest, pem: Path) -> Iterator[Contexts | None]:
    yield (server_context(pem), client_context(pem)) if request.param == "tls" else None


def status_body(sources: Any) -> bytes:
    stats: dict[str, Any] = {"server_id": "Icecast 2.4.4"}
    if sources is not None:
        stats["source"] = sources
    return json.dumps({"icestats": stats}).encode()


def mount(path: str, listeners: int) -> dict[str, Any]:
    return {"listenurl": f"http://localhost:8000{path}", "listeners": listeners}


class StatusServer:
    """Answers GET /status-json.xsl like Icecast, until told to hang: then it
    accepts connections (the kernel does, for a frozen server) and says nothing."""

    def __init__(self, tls: Contexts | None = None) -> None:
        self.tls = tls
        self.hang = False
        self.hang_next = 0  # hang on this many connections, then answer again
        self.requests: list[bytes] = []
        #: loop time of each connection, and whether it was answered
        self.connections: list[tuple[float, bool]] = []
        self.body: Callable[[int], bytes] = lambda n: status_body(mount("/a", n))
        #: request -> the whole answer, status line and all, instead of body()
        self.route: Callable[[bytes], bytes] | None = None
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        now = asyncio.get_running_loop().time()
        silent = self.hang or self.hang_next > 0
        self.hang_next = max(0, self.hang_next - 1)
        self.connections.append((now, not silent))
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            if silent:
                await reader.read()
                return
            if self.route is not None:
                writer.write(self.route(self.requests[-1]))
            else:
                body = self.body(len(self.connections))
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the watch hangs up after the status line
        finally:
            writer.transport.abort()

    async def __aenter__(self) -> StatusServer:
        self.server = await asyncio.start_server(
            self.handle, "127.0.0.1", 0, ssl=self.tls[0] if self.tls else None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self.server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports finish

    def watch(self, **kwargs: Any) -> ServerWatch:
        assert self.server is not None
        port = int(self.server.sockets[0].getsockname()[1])
        target = IcecastTarget("127.0.0.1", port, "/any", password="x", tls=self.tls is not None)
        if self.tls is not None:
            kwargs.setdefault("ssl_context", self.tls[1])
        return ServerWatch(asyncio.get_running_loop(), target, **kwargs)


def test_a_server_that_answers_is_asked_every_interval_and_never_cut(
    tls: Contexts | None,
) -> None:
    async def main() -> None:
        async with StatusServer(tls) as server:
            watch = server.watch(every=0.1, timeout=0.5)
            hangs: list[str] = []
            unwatch = watch.watch(hangs.append)
            await asyncio.sleep(1.25)
            unwatch()
            assert hangs == []
            assert 8 <= len(server.connections) <= 13, server.connections
            assert server.requests[0].startswith(b"GET /status-json.xsl HTTP/1.0\r\nHost: ")
            # A request under way when the last watcher left may still land (a
            # TLS handshake on a loaded machine: 12 against 11 once in CI);
            # after two intervals, none comes any more.
            await asyncio.sleep(0.2)
            count = len(server.connections)
            await asyncio.sleep(0.3)
            assert len(server.connections) == count  # nobody watches: no probes

    run(main())


def test_a_hung_server_is_cut_after_two_failed_probes_in_a_row(tls: Contexts | None) -> None:
    every, timeout = 0.3, 0.4

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with StatusServer(tls) as server:
            watch = server.watch(every=every, timeout=timeout)
            hangs: list[tuple[float, str]] = []
            other: list[str] = []
            watch.watch(lambda why: hangs.append((loop.time(), why)))
            watch.watch(other.append)
            await asyncio.sleep(every + 0.1)
            assert server.connections and all(ok for _, ok in server.connections)
            frozen_at = loop.time()
            server.hang = True
            async with asyncio.timeout(5):
                while not hangs:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(every * 3)
            assert len(hangs) == 1 and other == [hangs[0][1]]  # each watcher told once
            assert hangs[0][1] == f"no answer within {timeout:g} s"
            assert hangs[0][0] - frozen_at <= every + 2 * timeout + 0.3
            silent = [at for at, ok in server.connections if not ok]
            assert len(silent) == 2, server.connections
            # the second probe right after the first failed, not an interval later
            assert silent[1] - silent[0] < timeout + every / 2
            assert len(server.connections) == len(silent) + sum(ok for _, ok in server.connections)

    run(main())


def test_one_failed_probe_cuts_nobody() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            watch = server.watch(every=0.1, timeout=0.2)
            hangs: list[str] = []
            unwatch = watch.watch(hangs.append)
            await asyncio.sleep(0.25)
            server.hang_next = 1
            await asyncio.sleep(1.0)
            unwatch()
            assert [ok for _, ok in server.connections].count(False) == 1
            assert hangs == []

    run(main())


def test_a_status_page_too_slow_to_make_is_no_hang_when_the_server_answers() -> None:
    """A busy Icecast with 1000 mounts took over the timeout to make its status
    page, twice in a row, while it still answered anything else at once: the
    probe after a failed one asks for a path with no page behind it."""

    async def main() -> None:
        async with StatusServer() as server:
            hangs: list[str] = []

            async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                request = await reader.readuntil(b"\r\n\r\n")
                server.requests.append(request)
                if request.startswith(b"GET /status-json.xsl "):
                    await asyncio.sleep(1.0)  # longer than the timeout
                writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
                with contextlib.suppress(OSError):
                    await writer.drain()
                writer.transport.abort()

            assert server.server is not None
            server.server.close()  # this one is slow to make its status page
            server.server = await asyncio.start_server(slow, "127.0.0.1", 0)
            watch = server.watch(every=0.1, timeout=0.2)
            unwatch = watch.watch(hangs.append)
            await asyncio.sleep(1.5)
            unwatch()
            assert hangs == []
            asked = [r.split(b" ")[1] for r in server.requests]
            assert b"/status-json.xsl" in asked and ALIVE_PATH.encode() in asked

    run(main())


def test_a_server_that_has_been_slow_to_answer_gets_more_time_before_it_is_cut() -> None:
    """A busy server answers every request late (Icecast makes each wait
    while it renders a big status page): once one probe is too late, the next
    waits PATIENCE times its slowest recent answer, and the server is not cut."""

    async def main() -> None:
        async with StatusServer() as server:
            hangs: list[str] = []
            status_asked = [0]

            async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                request = await reader.readuntil(b"\r\n\r\n")
                server.requests.append(request)
                if request.startswith(b"GET /status-json.xsl "):
                    status_asked[0] += 1
                    # 0.15 s each, but the third: later than the 0.2 s timeout.
                    await asyncio.sleep(0.35 if status_asked[0] == 3 else 0.15)
                else:
                    await asyncio.sleep(0.3)  # late for the timeout, in time for patience
                writer.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
                with contextlib.suppress(OSError):
                    await writer.drain()
                writer.transport.abort()

            assert server.server is not None
            server.server.close()
            server.server = await asyncio.start_server(busy, "127.0.0.1", 0)
            watch = server.watch(every=0.05, timeout=0.2)
            unwatch = watch.watch(hangs.append)
            async with asyncio.timeout(10):
                while status_asked[0] < 5:
                    await asyncio.sleep(0.01)
            unwatch()
            assert hangs == []
            assert sum(r.startswith(b"GET " + ALIVE_PATH.encode()) for r in server.requests) == 1

    run(main())


def test_a_server_that_hangs_on_every_path_is_still_cut() -> None:
    """The probe after a failed one is a cheaper question, not a pass: a
    server that answers nothing is cut after the two."""

    async def main() -> None:
        async with StatusServer() as server:
            server.hang = True
            watch = server.watch(every=0.1, timeout=0.2)
            hangs: list[str] = []
            watch.watch(hangs.append)
            async with asyncio.timeout(5):
                while not hangs:
                    await asyncio.sleep(0.01)
            asked = [r.split(b" ")[1] for r in server.requests]
            assert asked == [b"/status-json.xsl", ALIVE_PATH.encode()]

    run(main())


def test_nothing_listening_is_a_hang_too() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            watch = server.watch(every=0.1, timeout=0.5)
        assert server.server is not None
        await server.server.wait_closed()
        hangs: list[str] = []
        watch.watch(hangs.append)
        await asyncio.sleep(0.5)
        assert hangs == ["Connection refused"]

    run(main())


def test_a_watcher_that_raises_does_not_spare_the_others(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.hang = True
            watch = server.watch(every=0.05, timeout=0.1)
            told: list[str] = []

            def broken(why: str) -> None:
                raise RuntimeError("bug")

            watch.watch(broken)
            watch.watch(told.append)
            await asyncio.sleep(0.6)
            assert told == ["no answer within 0.1 s"]

    run(main())
    assert "a hang watcher of" in caplog.text


def test_listeners_come_from_every_full_probe() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            watch = server.watch(every=0.02, timeout=0.5)
            assert watch.listeners("/a") is None  # nothing read yet
            unwatch = watch.watch(lambda why: None)
            async with asyncio.timeout(5):
                while len(server.connections) < FULL_EVERY + 2:
                    await asyncio.sleep(0.005)
            # The server answers "listeners = number of this connection": the
            # whole status was read on the 1st and the (FULL_EVERY + 1)th.
            assert watch.listeners("/a") == FULL_EVERY + 1
            assert watch.listeners("/b") is None
            assert watch.status is not None and watch.status.startswith(b'{"icestats"')
            unwatch()
            # Nobody watches: no counts that would only grow stale.
            assert watch.listeners("/a") is None

    run(main())


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (None, {"/a": None}),
        (mount("/a", 3), {"/a": 3, "/b": None}),
        ([mount("/a", 3), mount("/b", 0)], {"/a": 3, "/b": 0}),
    ],
)
def test_listeners_of_one_several_or_no_mounts(
    sources: Any, expected: dict[str, int | None]
) -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.body = lambda n: status_body(sources)
            watch = server.watch()
            assert await watch.probe() is None
            assert {m: watch.listeners(m) for m in expected} == expected

    run(main())


def test_a_status_that_is_not_json_gives_no_listeners() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.body = lambda n: b'{"icestats": {"source": [{"title": "a "quote""}'
            watch = server.watch()
            assert await watch.probe() is None  # it answers: not hung
            assert watch.listeners("/a") is None

    run(main())


# --- listeners where the status page has none: /admin/stats with the source's login ---
#
# The answers below are what the real servers gave (tests/test_listeners_peers_e2e.py
# runs them): icecast-kh 404s /status-json.xsl and answers /admin/stats?mount= to
# the mount's source login with indented XML; for a mount it does not have it
# answers 200 with the server's totals and no <source>.

KH_404 = (
    b"HTTP/1.0 404 File Not Found\r\nContent-Type: text/html\r\n\r\nCould not provide XSLT file"
)


def kh_stats(mounts: dict[str, str]) -> bytes:
    """kh's /admin/stats answer: server totals (listeners 99, which no mount
    has) and a <source> per mount with its <listeners> text."""
    sources = "".join(
        f'  <source mount="{m}">\n    <listeners>{n}</listeners>\n    <max_listeners>unlimited'
        "</max_listeners>\n  </source>\n"
        for m, n in mounts.items()
    )
    body = (
        '<?xml version="1.0"?>\n<icestats>\n  <listeners>99</listeners>\n'
        f"  <server_id>Icecast 2.4.0-kh22</server_id>\n{sources}</icestats>\n"
    )
    return b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n" + body.encode()


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())


class Kh:
    """Routes a StatusServer like kh: no status page, per-mount stats to
    each mount's own source login; answers[mount] is the answer to give."""

    def __init__(self, logins: dict[str, str], answers: dict[str, bytes] | None = None) -> None:
        self.logins = logins  # mount -> source password
        self.answers = answers or {}
        self.asked: list[bytes] = []  # the /admin/stats requests

    def __call__(self, request: bytes) -> bytes:
        path = request.split(b" ", 2)[1].decode()
        if not path.startswith("/admin/stats"):
            return KH_404
        self.asked.append(request)
        mount = unquote(path.partition("mount=")[2])
        password = self.logins.get(mount)
        if password is None or basic("source", password) not in request:
            return b"HTTP/1.0 401 Authentication Required\r\n\r\n"
        return self.answers.get(mount, kh_stats({mount: "3"}))


def stats_watch(server: StatusServer) -> ServerWatch:
    """A watch that probes only when told (its loop's first probe is a minute off)."""
    return server.watch(every=60.0)


def target(server: StatusServer, path: str, password: str) -> IcecastTarget:
    assert server.server is not None
    port = int(server.server.sockets[0].getsockname()[1])
    return IcecastTarget("127.0.0.1", port, path, password=password, tls=server.tls is not None)


async def probe_and_stats(watch: ServerWatch) -> None:
    assert await watch.probe() is None
    await watch.read_stats()


def test_without_a_status_page_counts_come_from_admin_stats_with_each_mounts_login(
    tls: Contexts | None,
) -> None:
    async def main() -> None:
        async with StatusServer(tls) as server:
            kh = Kh(
                {"/a": SECRET, "/b c": "other-pw"},
                {"/a": kh_stats({"/a": "2"}), "/b c": kh_stats({"/b c": " 0\n"})},
            )
            server.route = kh
            watch = stats_watch(server)
            unwatch_a = watch.watch(lambda why: None, target(server, "/a", SECRET))
            unwatch_b = watch.watch(lambda why: None, target(server, "/b c", "other-pw"))
            await probe_and_stats(watch)
            assert (watch.listeners("/a"), watch.listeners("/b c")) == (2, 0)
            assert watch.listeners_note("/a") is None
            assert [r.split(b"\r\n")[0] for r in kh.asked] == [
                b"GET /admin/stats?mount=/a HTTP/1.0",
                b"GET /admin/stats?mount=/b%20c HTTP/1.0",
            ]
            assert basic("source", "other-pw") in kh.asked[1]
            # A mount nobody watches any more is not asked for.
            unwatch_b()
            kh.asked.clear()
            await probe_and_stats(watch)
            assert len(kh.asked) == 1 and watch.listeners("/b c") is None
            unwatch_a()

    run(main())


def test_a_404_status_page_is_no_hang() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.route = lambda request: KH_404
            watch = server.watch(every=0.05, timeout=0.5)
            hangs: list[str] = []
            unwatch = watch.watch(hangs.append)
            await asyncio.sleep(0.6)
            unwatch()
            assert hangs == [] and len(server.connections) >= 5
            # No login given: nothing to ask /admin/stats with.
            assert all(r.startswith(b"GET /status-json.xsl ") for r in server.requests)

    run(main())


def test_a_shoutcast_dnas_that_answers_with_its_stream_is_no_hang() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            # DNAS v1 answers a GET that is not a browser's with ICY and its audio.
            server.route = lambda request: b"ICY 200 OK\r\nicy-name: x\r\n\r\n" + bytes(900)
            watch = server.watch(every=0.05, timeout=0.5)
            hangs: list[str] = []
            unwatch = watch.watch(hangs.append)
            await asyncio.sleep(0.6)
            unwatch()
            assert hangs == [] and len(server.connections) >= 5
            assert watch.listeners("/") is None

    run(main())


def test_a_status_page_that_lists_the_mount_asks_nothing_more() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.body = lambda n: status_body(mount("/a", 4))
            watch = stats_watch(server)
            watch.watch(lambda why: None, target(server, "/a", "pw"))
            await probe_and_stats(watch)
            assert watch.listeners("/a") == 4
            assert len(server.requests) == 1  # the status page only

    run(main())


def test_a_broken_status_page_falls_back_to_admin_stats() -> None:
    # Icecast 2.4.4 writes a title's '"' into its JSON as is.
    broken = b'{"icestats": {"source": [{"title": "a "quote"", "listeners": 1}]}}'

    async def main() -> None:
        async with StatusServer() as server:
            kh = Kh({"/a": "pw"})
            server.route = lambda request: (
                kh(request)
                if request.startswith(b"GET /admin/")
                else b"HTTP/1.0 200 OK\r\n\r\n" + broken
            )
            watch = stats_watch(server)
            watch.watch(lambda why: None, target(server, "/a", "pw"))
            await probe_and_stats(watch)
            assert watch.listeners("/a") == 3

    run(main())


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        (None, "refused the source's login (401)"),  # a wrong password
        (b"HTTP/1.0 400 Bad Request\r\n\r\nSource does not exist", "answered 400"),
        (kh_stats({}), "does not list this mount"),  # kh's totals: not its 99
        (kh_stats({"/other": "5"}), "does not list this mount"),
        (kh_stats({"/a": "many"}), "has no listener count"),
        (kh_stats({"/a": "-1"}), "has no listener count"),
        (kh_stats({"/a": "9" * 40}), "has no listener count"),
        (b"HTTP/1.0 200 OK\r\n\r\n<icestats><source mount='/a'>", "is not XML"),
        (b"HTTP/1.0 200 OK\r\n\r\n\x00\xff junk", "is not XML"),
        (
            b'HTTP/1.0 200 OK\r\n\r\n<!DOCTYPE x [<!ENTITY a "1">]><icestats>'
            b'<source mount="/a"><listeners>&a;</listeners></source></icestats>',
            "is not Icecast's stats",
        ),
        (b"SOURCE OK\r\n\r\n", "gave no HTTP answer"),
    ],
)
def test_what_admin_stats_cannot_give_is_said(answer: bytes | None, note: str) -> None:
    async def main() -> None:
        async with StatusServer() as server:
            answers = {} if answer is None else {"/a": answer}
            server.route = Kh({"/a": "right"}, answers)
            watch = stats_watch(server)
            password = SECRET if answer is None else "right"
            watch.watch(lambda why: None, target(server, "/a", password))
            await probe_and_stats(watch)
            assert watch.listeners("/a") is None
            expected = f"the server has no status page; its /admin/stats {note}"
            assert watch.listeners_note("/a") == expected
            assert SECRET not in expected

    run(main())


def test_the_notes_before_and_without_stats() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.body = lambda n: status_body(mount("/a", 1))
            watch = stats_watch(server)
            assert watch.listeners_note("/a") == "not read yet"
            assert await watch.probe() is None
            assert watch.listeners_note("/a") is None
            assert watch.listeners_note("/b") == "the server does not list this mount"
            server.route = lambda request: b"HTTP/1.0 503 Busy\r\n\r\n"
            for _ in range(FULL_EVERY):
                assert await watch.probe() is None
            assert watch.listeners_note("/a") == "its status page answered 503"

    run(main())


def test_a_stats_request_that_hangs_costs_one_timeout_and_no_hang() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            server.route = Kh({"/a": "pw"})
            watch = server.watch(every=60.0, timeout=0.3)
            watch.watch(lambda why: None, target(server, "/a", "pw"))
            assert await watch.probe() is None
            server.hang_next = 1  # the /admin/stats connection
            started = asyncio.get_running_loop().time()
            await watch.read_stats()
            assert asyncio.get_running_loop().time() - started < 1.0
            assert watch.listeners_note("/a") == (
                "the server has no status page; its /admin/stats gave no answer within 0.3 s"
            )

    run(main())


def test_a_shoutcast_source_is_never_asked_for_admin_stats() -> None:
    async def main() -> None:
        async with StatusServer() as server:
            kh = Kh({"/": "pw"})
            server.route = kh
            watch = stats_watch(server)
            shout = IcecastTarget(
                "127.0.0.1",
                target(server, "/", "pw").port,
                "/",
                password="pw",
                protocol="shoutcast",
            )
            watch.watch(lambda why: None, shout)
            await probe_and_stats(watch)
            assert kh.asked == []
            assert watch.listeners_note("/") == "the server has no status page"

    run(main())
