"""The HTTP server under the control API: strict framing and deadlines, caps
on connections, and requests answered only between the air's passes.

What it serves is its site's (:mod:`pushsource.ops.control`: the routes, the
token, the page); what is here holds for any route: a request line and
headers within a deadline, one unambiguous body length, a Host the site
answers to, a JSON error for whatever the standard library refuses, and
never a header in the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from pushsource.engine.loop import PASS_WAIT

log = logging.getLogger("pushsource.control")

#: A client that sends nothing for this long is dropped (slow or stalled clients).
DEFAULT_TIMEOUT: Final = 30.0
#: Connections served at once; more are turned away with 503.
DEFAULT_MAX_CONNECTIONS: Final = 64
#: Connections one client address may hold; its oldest idle one makes room for more.
DEFAULT_MAX_PER_CLIENT: Final = 16
#: A request line and headers must have arrived this long after the connection
#: (or the previous answer); a JSON body likewise. One byte a second cannot hold a slot.
DEFAULT_HEADER_DEADLINE: Final = 10.0

_BUSY_BODY: Final = b'{"error":"too many connections, try again"}'
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)
_DIGITS = re.compile(rb"[0-9]{1,19}")


def dumps(value: Any) -> bytes:
    # A file name that is not UTF-8 holds surrogate escapes: they go out as
    # \udcff, as the log shows them, and read back as the same name.
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


JSON: Final = "application/json; charset=utf-8"


def json_reply(status: int, value: Any, *headers: tuple[str, str]) -> Reply:
    return Reply(status, dumps(value), JSON, headers)


def error_reply(status: int, message: str, *headers: tuple[str, str]) -> Reply:
    return json_reply(status, {"error": message}, *headers)


class Site(Protocol):
    """What the server needs of what it serves."""

    name: str  # for log lines
    timeout: float  # a client that sends nothing for this long is dropped
    header_deadline: float  # a whole request (line and headers) within this long
    #: The engine's Engine.air_idle: requests are parsed and answered only
    #: between the air's passes (None: at once).
    air: threading.Event | None

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this site."""
        ...


@dataclass
class _Conn:
    client: str
    #: Since when it waits for a request (headers) or a JSON body; None while served.
    waiting: float | None


class HardenedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its site, caps its connections (in
    all and per client address), drops those that take too long to send a
    request, and can drop the ones still open when it closes.

    A new connection over a cap takes the place of the longest-waiting one that
    has not sent a whole request yet (idle keep-alive, or a slow client): slow
    clients then cannot keep a quick one out. Only when every slot is serving a
    request is the newcomer turned away with 503."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        site: Site,
        max_connections: int,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
        inherited: socket.socket | None = None,
    ) -> None:
        """``inherited``: a socket listening already (a restart in place,
        ops.handover), used instead of binding ``address``."""
        self.site = site
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._max_connections = max_connections
        self._max_per_client = max_per_client
        self._open: dict[socket.socket, _Conn] = {}
        self._lock = threading.Lock()
        super().__init__(address, handler, bind_and_activate=inherited is None)
        if inherited is not None:
            self.socket.close()
            self.socket = inherited
            inherited.setblocking(True)
            self.server_address = inherited.getsockname()
            host, port = self.server_address[:2]
            self.server_name, self.server_port = str(host), int(port)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        victim: socket.socket | None = None
        with self._lock:
            mine = [s for s, c in self._open.items() if c.client == client]
            if len(mine) >= self._max_per_client:
                victim = self._longest_waiting(mine)
                busy = victim is None
            elif len(self._open) >= self._max_connections:
                victim = self._longest_waiting(list(self._open))
                busy = victim is None
            else:
                busy = False
            if victim is not None:
                del self._open[victim]
            if not busy:
                self._open[request] = _Conn(client, time.monotonic())
        if victim is not None:
            log.debug("%s: dropped a waiting connection to make room", client)
            _drop(victim)
        if busy:
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _longest_waiting(self, socks: list[socket.socket]) -> socket.socket | None:
        waiting = [(c.waiting, s) for s in socks if (c := self._open[s]).waiting is not None]
        return min(waiting, key=lambda item: item[0])[1] if waiting else None

    def waiting(self, request: socket.socket, since: float | None) -> None:
        """The handler of ``request`` waits for a request or body (since when), or not."""
        with self._lock:
            conn = self._open.get(request)
            if conn is not None:
                conn.waiting = since

    def service_actions(self) -> None:
        # serve_forever calls this every poll: drop the clients past their deadline.
        super().service_actions()
        late = time.monotonic() - self.site.header_deadline
        with self._lock:
            expired = [
                s for s, c in self._open.items() if c.waiting is not None and c.waiting < late
            ]
        for sock in expired:
            log.debug("dropped a connection that sent no whole request in time")
            _drop(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets or stalls is no news; anything else is a bug to log.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("%s: connection lost: %s", client_address[0], error)
        else:
            log.error(
                "%s: request from %s failed", self.site.name, client_address[0], exc_info=True
            )

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            _drop(sock)


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class HardenedHandler(BaseHTTPRequestHandler):
    """Strict framing and deadlines for every request; a subclass answers in
    :meth:`serve` (every method goes there) and replies with :meth:`send_reply`."""

    server: HardenedServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "pushsource"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.site.timeout)

    # --- logging: debug only, and only the request line (never a header) ---------------

    def log_message(self, format: str, *args: Any) -> None:
        # Never the query string: a token put there by mistake must not reach the log.
        text = re.sub(r"\?[^\s'\"]*", "?...", format % args)
        log.debug("%s %s", self.address_string(), text)

    # --- deadlines and strict framing ---------------------------------------------------

    def handle_one_request(self) -> None:
        self.server.waiting(self.connection, time.monotonic())
        super().handle_one_request()
        if not self.close_connection:
            # Answered and kept alive: waiting for the next request from now,
            # not only once the loop comes round to read it.
            self.server.waiting(self.connection, time.monotonic())

    def parse_request(self) -> bool:
        air = self.server.site.air
        if air is not None:
            air.wait(PASS_WAIT)  # the request line is in: the rest is Python, after the pass
        self.refused = False
        if not super().parse_request() or self.refused:
            return False
        self.server.waiting(self.connection, None)
        refused = self.framing()
        if refused is not None:
            self.close_connection = True
            self.send_reply(refused, head=False)
            return False
        return True

    def framing(self) -> Reply | None:
        """Why the headers are refused whatever the request: a body length that
        can be read two ways (request smuggling), or a Host that is not ours."""
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(lengths[0].strip().encode())):
            return error_reply(400, "Content-Length must be one header of digits")
        if lengths and "Transfer-Encoding" in self.headers:
            return error_reply(400, "Content-Length and Transfer-Encoding together")
        if not self.server.site.host_allowed(self.headers.get("Host")):
            return error_reply(421, "this server does not answer to that Host name")
        return None

    def declared_length(self) -> int | None:
        """Bytes of request body still to read; None if not known (chunked or bad)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            length = int(raw)
        except ValueError:
            return None
        return length if length >= 0 else None

    # --- methods ----------------------------------------------------------------------

    def serve(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.serve("GET")

    def do_HEAD(self) -> None:
        self.serve("HEAD")

    def do_POST(self) -> None:
        self.serve("POST")

    def do_PUT(self) -> None:
        self.serve("PUT")

    def do_DELETE(self) -> None:
        self.serve("DELETE")

    def do_PATCH(self) -> None:
        self.serve("PATCH")

    def do_OPTIONS(self) -> None:
        self.serve("OPTIONS")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class's own errors (bad request line, headers too long...) as JSON.
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.send_reply(error_reply(code, message or phrase), head=self.command == "HEAD")

    def send_reply(self, reply: Reply, *, head: bool) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
        except OSError as error:
            log.debug("%s: could not answer: %s", self.address_string(), error)
            self.close_connection = True
