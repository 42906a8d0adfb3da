"""The hung-server check, on the event loop: does Icecast still answer HTTP?

A frozen or hung Icecast may go on taking a source's bytes into kernel
buffers for a minute, but it answers no HTTP. One :class:`ServerWatch` per
server asks it every ``every`` seconds for ``/status-json.xsl``, however
many stations stream there, and only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from pushsource.core.target import USER_AGENT, IcecastTarget, netloc
from pushsource.engine.source import default_context, describe_error

log = logging.getLogger("pushsource.watch")

#: One probe in this many reads the whole status (for listeners); the others
#: stop at the status line, to keep the CPU low with many servers. At 1.5 s a
#: probe, listener counts are at most 6 s old.
FULL_EVERY: Final = 4
#: The most of a status page kept (1000 mounts make about 1 MB).
STATUS_LIMIT: Final = 8 * 1024 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] \d{3}[ \r\n]")


class ServerWatch:
    """Asks one Icecast server whether it still answers, for every watcher.

    A probe that fails is repeated at once; only two failures in a row call
    the watchers, so one lost probe cuts no station, and a frozen server is
    still told within ``every + 2 * timeout`` s (5.5 s with the defaults).
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
        self._request = (
            f"GET /status-json.xsl HTTP/1.0\r\nHost: {netloc(target.host, target.port)}\r\n"
            f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "replace")
        self._watchers: dict[object, Callable[[str], None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._probes = 0
        self._status: bytes | None = None
        self._parsed: tuple[bytes, dict[str, int]] | None = None

    def __repr__(self) -> str:
        return f"ServerWatch({netloc(self.target.host, self.target.port)}, {len(self._watchers)})"

    def watch(self, on_hang: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_hang(reason)`` once, on the loop, if the server stops
        answering. Returns the function that stops watching."""
        token = object()
        self._watchers[token] = on_hang
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"watch {self!r}")

        def unwatch() -> None:
            self._watchers.pop(token, None)
            if not self._watchers and self._task is not None:
                self._task.cancel()
                self._task = None
                # Nobody asks any more: the counts would only grow stale. The
                # next watch reads them at its first probe.
                self._status = None
                self._probes = 0

        return unwatch

    @property
    def status(self) -> bytes | None:
        """The body of the last whole status page read (JSON), if any."""
        return self._status

    def listeners(self, mount: str) -> int | None:
        """Listeners on ``mount`` at the last whole status read; None when
        not known (no status yet, no such mount, or a status we cannot read)."""
        body = self._status
        if body is None:
            return None
        if self._parsed is None or self._parsed[0] is not body:
            self._parsed = (body, _listeners_by_mount(body))
        return self._parsed[1].get(mount)

    async def _run(self) -> None:
        try:
            while self._watchers:
                await asyncio.sleep(self.every)
                problem = await self.probe()
                if problem is None:
                    continue
                log.info("%s did not answer (%s): asking again", self, problem)
                problem = await self.probe()
                if problem is not None and self._watchers:
                    self._hung(problem)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _hung(self, problem: str) -> None:
        hung = list(self._watchers.values())
        self._watchers.clear()
        for on_hang in hung:
            try:
                on_hang(problem)
            except Exception:  # one watcher's bug must not spare the others
                log.exception("a hang watcher of %s failed", self)

    async def probe(self) -> str | None:
        """Ask once: None if an HTTP status line came within the timeout,
        else why not. Every FULL_EVERY-th probe reads and keeps the whole
        status. Does not raise."""
        full = self._probes % FULL_EVERY == 0
        self._probes += 1
        writer: asyncio.StreamWriter | None = None
        target = self.target
        try:
            async with asyncio.timeout(self.timeout):
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
                writer.write(self._request)
                data = b""
                while (full or len(data) < 13) and len(data) <= STATUS_LIMIT:
                    chunk = await reader.read(65536 if full else 64)
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except (OSError, ssl.SSLError) as exc:
            return describe_error(exc)
        finally:
            if writer is not None:
                writer.transport.abort()
        if _STATUS_LINE.match(data) is None:
            return "no HTTP answer" if data else "closed without an answer"
        if full:
            self._status = data.partition(b"\r\n\r\n")[2]
        return None

    async def _resolve(self) -> str:
        host = self.target.host
        for family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                socket.inet_pton(family, host)
                return host
        infos = await self._loop.getaddrinfo(host, self.target.port, type=socket.SOCK_STREAM)
        self.address = str(infos[0][4][0])
        return self.address


def _listeners_by_mount(body: bytes) -> dict[str, int]:
    """{mount: listeners} from /status-json.xsl, whose ``source`` is an object
    for one mount, a list for several, absent for none. Does not raise."""
    try:
        stats = json.loads(body.decode("utf-8", "replace")).get("icestats", {})
    except (ValueError, AttributeError):
        return {}
    sources: Any = stats.get("source") if isinstance(stats, dict) else None
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
