"""The hung-server check, on the event loop: does Icecast still answer HTTP?

A frozen or hung Icecast may go on taking a source's bytes into kernel
buffers for a minute, but it answers no HTTP. One :class:`ServerWatch` per
server asks it every ``every`` seconds for ``/status-json.xsl``, however
many stations stream there, and only while someone watches.

The same probes bring the listener counts: every FULL_EVERY-th reads the
whole status page. A mount the page does not list (icecast-kh has no
``/status-json.xsl``; a mount may be hidden) is asked for by
``/admin/stats?mount=`` with that mount's own source credentials, which
Icecast 2.4, 2.5 and kh accept for their own mount.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import ssl
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote, urlsplit

from pushsource.core.target import USER_AGENT, IcecastTarget, netloc
from pushsource.engine.source import default_context, describe_error, lookup

log = logging.getLogger("pushsource.watch")

#: One probe in this many reads the whole status (for listeners); the others
#: stop at the status line, to keep the CPU low with many servers. At 1.5 s a
#: probe, listener counts are at most 6 s old.
FULL_EVERY: Final = 4
#: The most of a status page kept (1000 mounts make about 1 MB).
STATUS_LIMIT: Final = 8 * 1024 * 1024
#: The most of one mount's /admin/stats read (kh's is about 2 KB).
STATS_LIMIT: Final = 256 * 1024
#: /admin/stats requests in flight at once, per server.
STATS_AT_ONCE: Final = 4
#: What a second probe after a failed one asks for: a path no server has.
ALIVE_PATH: Final = "/pushsource-probe"
#: The second probe waits this many times the slowest of the server's recent
#: answers (at least ``timeout``, at most PATIENCE_MAX s): a server that has
#: been answering slowly (Icecast makes every request wait while it renders
#: a status page, 1000 mounts long, for someone) is busy, not hung.
PATIENCE: Final = 3.0
PATIENCE_MAX: Final = 8.0
#: Recent answers whose time counts for that.
ANSWERS_KEPT: Final = 8
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r\n]")
_ICY_LINE = re.compile(rb"ICY \d{3}[ \r\n]")


class ServerWatch:
    """Asks one Icecast server whether it still answers, for every watcher.

    A probe that fails is repeated at once; only two failures in a row call
    the watchers, so one lost probe cuts no station, and a frozen server is
    still told within ``every + 2 * timeout`` s (5.5 s with the defaults).
    Any HTTP answer counts, a 404 too: a server without a status page
    (icecast-kh) is alive.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: IcecastTarget,
        *,
        every: float = 1.5,
        timeout: float = 2.0,
        address: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``target``: any mount of the server (its host, port and scheme count);
        ``address``: the IP to ask (the sources' one), else the host's first."""
        self.target = target
        self.address = address
        self.every = every
        self.timeout = timeout
        self._loop = loop
        self._ssl_context = ssl_context
        self._request = self._get("/status-json.xsl")
        self._alive = self._get(ALIVE_PATH)
        #: How long the server took to answer the last probes, in seconds.
        self._answered: deque[float] = deque(maxlen=ANSWERS_KEPT)
        self._watchers: dict[object, Callable[[str], None]] = {}
        #: Each watcher's mount and credentials, for /admin/stats.
        self._targets: dict[object, IcecastTarget] = {}
        self._task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._probes = 0
        #: (HTTP status, body) of the last whole status page read: one
        #: attribute, as the control thread reads it while the loop sets it.
        self._read: tuple[int, bytes] | None = None
        self._parsed: tuple[tuple[int, bytes], dict[str, int], str | None] | None = None
        #: {mount: listeners, or why not} from /admin/stats, for the watched
        #: mounts the last status page did not list.
        self._stats: dict[str, int | str] = {}

    def __repr__(self) -> str:
        return f"ServerWatch({netloc(self.target.host, self.target.port)}, {len(self._watchers)})"

    def _get(self, path: str, authorization: str = "") -> bytes:
        return (
            f"GET {path} HTTP/1.0\r\nHost: {netloc(self.target.host, self.target.port)}\r\n"
            f"User-Agent: {USER_AGENT}\r\n{authorization}Connection: close\r\n\r\n"
        ).encode("ascii", "replace")

    def watch(
        self, on_hang: Callable[[str], None], target: IcecastTarget | None = None
    ) -> Callable[[], None]:
        """Call ``on_hang(reason)`` once, on the loop, if the server stops
        answering. ``target``: the watcher's mount on this server, with its
        source credentials, to ask /admin/stats for its listeners when the
        status page does not list it. Returns the function that stops watching."""
        token = object()
        self._watchers[token] = on_hang
        if target is not None:
            self._targets[token] = target
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"watch {self!r}")

        def unwatch() -> None:
            self._watchers.pop(token, None)
            self._targets.pop(token, None)
            if not self._watchers and self._task is not None:
                self._task.cancel()
                self._task = None
                # Nobody asks any more: the counts would only grow stale. The
                # next watch reads them at its first probe.
                self._read = None
                self._stats = {}
                self._probes = 0
                self._stop_stats()

        return unwatch

    @property
    def status(self) -> bytes | None:
        """The body of the last whole status page read (JSON), if any."""
        read = self._read
        return None if read is None else read[1]

    def _page(self) -> tuple[dict[str, int], str | None]:
        """{mount: listeners} of the last status page, and why it gave none
        (None when it is a status); parsed once per page read."""
        read = self._read
        if read is None:
            return {}, "not read yet"
        parsed = self._parsed
        if parsed is None or parsed[0] is not read:
            code, body = read
            counts = _listeners_by_mount(body) if code == 200 else None
            problem = None
            if code == 404:
                problem = "the server has no status page"
            elif code != 200:
                problem = f"its status page answered {code}"
            elif counts is None:
                problem = "its status page is not JSON"
            self._parsed = parsed = (read, counts or {}, problem)
        return parsed[1], parsed[2]

    def listeners(self, mount: str) -> int | None:
        """Listeners on ``mount`` at the last whole status read (or, for a
        mount it did not list, its /admin/stats); None when not known."""
        count = self._page()[0].get(mount)
        if count is None:
            found = self._stats.get(mount)
            count = found if isinstance(found, int) else None
        return count

    def listeners_note(self, mount: str) -> str | None:
        """Why ``listeners(mount)`` is None, in a few words; None when it is not."""
        if self.listeners(mount) is not None:
            return None
        found = self._stats.get(mount)
        if isinstance(found, str):
            return found
        return self._page()[1] or "the server does not list this mount"

    async def _run(self) -> None:
        try:
            while self._watchers:
                await asyncio.sleep(self.every)
                full = self._probes % FULL_EVERY == 0
                problem = await self.probe()
                if problem is None:
                    if full and self._targets:
                        self._ask_stats()
                    continue
                patience = max(self.timeout, PATIENCE * max(self._answered, default=0.0))
                patience = min(patience, max(self.timeout, PATIENCE_MAX))
                log.info(
                    "%s did not answer (%s): asking again, waiting up to %.1f s",
                    self,
                    problem,
                    patience,
                )
                problem = await self.probe(alive=True, timeout=patience)
                if problem is not None and self._watchers:
                    self._hung(problem)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _hung(self, problem: str) -> None:
        hung = list(self._watchers.values())
        self._watchers.clear()
        self._targets.clear()
        self._stop_stats()
        for on_hang in hung:
            try:
                on_hang(problem)
            except Exception:  # one watcher's bug must not spare the others
                log.exception("a hang watcher of %s failed", self)

    def _ask_stats(self) -> None:
        # A round still going (a slow server) is left to finish: no pile-up.
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = self._loop.create_task(self.read_stats(), name=f"stats {self!r}")

    def _stop_stats(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._stats_task = None

    async def probe(self, *, alive: bool = False, timeout: float | None = None) -> str | None:
        """Ask once: None if an HTTP status line came within the timeout,
        else why not. Every FULL_EVERY-th probe reads and keeps the whole
        status. ``alive``: ask only whether it answers, for a path it has no
        file for (a 404 costs Icecast next to nothing, where it makes its
        status page afresh for every request: with 1000 mounts and other
        readers of it, a busy Icecast took over 2 s to, twice in a row, and
        every station on it was cut as if the server had hung). Does not
        raise."""
        full = not alive and self._probes % FULL_EVERY == 0
        if not alive:
            self._probes += 1
        request = self._alive if alive else self._request
        wait = self.timeout if timeout is None else timeout
        asked = self._loop.time()
        try:
            data = await self._exchange(request, whole=full, limit=STATUS_LIMIT, timeout=wait)
        except TimeoutError:
            return f"no answer within {wait:g} s"
        except (OSError, ssl.SSLError) as exc:
            return describe_error(exc)
        match = _STATUS_LINE.match(data)
        if match is None and _ICY_LINE.match(data):
            return None  # SHOUTcast DNAS v1 answers a player's GET with its stream: alive
        if match is None:
            return "no HTTP answer" if data else "closed without an answer"
        self._answered.append(self._loop.time() - asked)
        if full:
            self._read = (int(match.group(1)), data.partition(b"\r\n\r\n")[2])
        return None

    async def read_stats(self) -> None:
        """Ask /admin/stats, with each watched mount's own credentials, for
        the listeners of every watched mount the last status page did not
        list; a few requests at a time. Does not raise."""
        listed = self._page()[0]
        wanted: dict[str, IcecastTarget] = {}
        for target in self._targets.values():
            # A SHOUTcast DNAS has no /admin/stats: it would answer with its
            # stream, and count us as a listener.
            if target.mount not in listed and target.protocol == "icecast":
                wanted.setdefault(target.mount, target)
        gate = asyncio.Semaphore(STATS_AT_ONCE)

        async def one(target: IcecastTarget) -> int | str:
            async with gate:
                return await self._mount_stats(target)

        found = await asyncio.gather(*(one(target) for target in wanted.values()))
        self._stats = dict(zip(wanted, found, strict=True))

    async def _mount_stats(self, target: IcecastTarget) -> int | str:
        """The listeners /admin/stats?mount= gives, or why not (never the
        credentials: they go in the header only)."""
        credentials = f"{target.user}:{target.password}".encode()
        authorization = f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}\r\n"
        request = self._get(f"/admin/stats?mount={quote(target.mount, safe='/')}", authorization)
        _, page = self._page()
        why = f"{page or 'the status page does not list this mount'}; its /admin/stats"
        try:
            data = await self._exchange(request, whole=True, limit=STATS_LIMIT)
        except TimeoutError:
            return f"{why} gave no answer within {self.timeout:g} s"
        except (OSError, ssl.SSLError) as exc:
            return f"{why} failed: {describe_error(exc)}"
        match = _STATUS_LINE.match(data)
        code = int(match.group(1)) if match is not None else 0
        if code in (401, 403):
            return f"{why} refused the source's login ({code})"
        if code != 200:
            return f"{why} answered {code}" if code else f"{why} gave no HTTP answer"
        found = _listeners_in_stats(data.partition(b"\r\n\r\n")[2], target.mount)
        return found if isinstance(found, int) else f"{why} {found}"

    async def _exchange(
        self, request: bytes, *, whole: bool, limit: int, timeout: float | None = None
    ) -> bytes:
        """Send ``request`` on a connection of its own and read the answer:
        all of it (up to about ``limit`` bytes) when ``whole``, else at
        least its status line, within ``timeout`` (else the watch's).
        Raises TimeoutError, OSError."""
        target = self.target
        if not target.tls:
            return await self._exchange_tcp(request, whole=whole, limit=limit, timeout=timeout)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                address = self.address or await self._resolve()
                context = None
                if target.tls:
                    context = self._ssl_context or default_context()
                reader, writer = await asyncio.open_connection(
                    address,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                    ssl_handshake_timeout=self.timeout if context is not None else None,
                )
                writer.write(request)
                data = bytearray()
                while (whole or len(data) < 13) and len(data) <= limit:
                    chunk = await reader.read(65536 if whole else 64)
                    if not chunk:
                        break
                    data += chunk
                return bytes(data)
        finally:
            if writer is not None:
                writer.transport.abort()

    async def _exchange_tcp(
        self, request: bytes, *, whole: bool, limit: int, timeout: float | None
    ) -> bytes:
        """_exchange over plain TCP on a bare socket: no transport, protocol
        or stream objects, and half the loop iterations of open_connection (a
        lone station paid about 0.8 ms of the engine's CPU per probe, about
        2 s per hour). Raises TimeoutError, OSError."""
        loop = self._loop
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                address = self.address or await self._resolve()
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                await loop.sock_connect(sock, (address, self.target.port))
                await loop.sock_sendall(sock, request)
                data = bytearray()
                while (whole or len(data) < 13) and len(data) <= limit:
                    chunk = await loop.sock_recv(sock, 65536 if whole else 64)
                    if not chunk:
                        break
                    data += chunk
                return bytes(data)
        finally:
            if sock is not None:
                sock.close()

    async def _resolve(self) -> str:
        host = self.target.host
        for family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError, ValueError):  # ValueError: a NUL in it
                socket.inet_pton(family, host)
                return host
        self.address = await lookup(self._loop, host, self.target.port)
        return self.address


def _listeners_by_mount(body: bytes) -> dict[str, int] | None:
    """{mount: listeners} from /status-json.xsl, whose ``source`` is an object
    for one mount, a list for several, absent for none; None when the body is
    no such status. Does not raise."""
    try:
        stats = json.loads(body.decode("utf-8", "replace")).get("icestats")
    except (ValueError, AttributeError):
        return None
    if not isinstance(stats, dict):
        return None
    sources: Any = stats.get("source")
    if isinstance(sources, dict):
        sources = [sources]
    if not isinstance(sources, list):
        return {}
    found: dict[str, int] = {}
    for source in sources:
        if not isinstance(source, dict):
            continue
        # listenurl is http://<configured hostname>:<port><mount>
        mount = urlsplit(str(source.get("listenurl", ""))).path
        listeners = source.get("listeners")
        if mount and isinstance(listeners, int):
            found[mount] = listeners
    return found


_COUNT = re.compile(r"\s*([0-9]{1,9})\s*")


def _listeners_in_stats(body: bytes, mount: str) -> int | str:
    """The ``<listeners>`` of ``<source mount="...">`` in /admin/stats XML,
    or why there is none. Only the mount's own element counts: kh answers a
    mount it does not have with the server's totals. Does not raise."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return "is not Icecast's stats"  # Icecast declares none; no entity games
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "is not XML"
    for source in root.iter("source"):
        if source.get("mount") == mount:
            match = _COUNT.fullmatch(source.findtext("listeners") or "")
            return int(match.group(1)) if match else "has no listener count"
    return "does not list this mount"
