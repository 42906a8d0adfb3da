"""A loopback TCP proxy between pushsource and icecast2, with a hand on the wire.

``TcpProxy(upstream_port)`` listens on 127.0.0.1 and relays every connection to
127.0.0.1:upstream_port, one thread per connection (bounded), until it is
closed or its ``lifetime`` runs out. The controls act on the connections open
at the time of the call; connections accepted later are relayed normally:

- ``stall()``: stop reading from the client (the source). Its socket stays
  open and nothing is closed, whatever the server does meanwhile: to the
  client this is a server that hangs, its receive window filling up.
- ``resume()``: read from stalled clients again.
- ``cut()``: reset both sides (SO_LINGER 0, so the peers see RST, not FIN).

``record=True`` keeps every byte each client sent (``Relayed.sent``): what a
real encoder put on the wire, to compare with what listeners got.

``rcvbuf`` sets SO_RCVBUF on the accepted (client-side) sockets, which is how
much a stalled server's kernel takes in before the client's sends block.
"""

from __future__ import annotations

import contextlib
import fcntl
import selectors
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
_CHUNK = 65536
_TICK = 0.02  # how often connection threads look at the controls


@dataclass
class Relayed:
    """One relayed connection: what went through, and how it ended."""

    number: int
    accepted_at: float  # time.monotonic()
    up: int = 0  # bytes client -> server
    down: int = 0  # bytes server -> client
    ended_at: float | None = None
    how: str = ""  # "client closed", "server closed", "cut", "proxy closed", or an error
    request: str = ""  # the first line the client sent ("PUT /mount HTTP/1.1")
    stalled: bool = False
    cut: bool = False
    sent: bytearray = field(default_factory=bytearray, repr=False)  # with record=True
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _client: socket.socket | None = field(default=None, repr=False)

    def unread(self) -> int:
        """Bytes the client sent that sit unread in the proxy's receive buffer
        (what a stalled server's kernel has taken in); 0 once closed."""
        client = self._client
        if client is None or self.ended_at is not None:
            return 0
        try:
            buf = fcntl.ioctl(client.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return int(struct.unpack("i", buf)[0])


class TcpProxy:
    """See the module docstring. Use as a context manager; close() joins every thread."""

    def __init__(
        self,
        upstream_port: int,
        *,
        rcvbuf: int | None = None,
        max_connections: int = 32,
        lifetime: float = 300.0,
        record: bool = False,
    ) -> None:
        self.upstream = (HOST, upstream_port)
        self.record = record
        self.rcvbuf = rcvbuf
        self.max_connections = max_connections
        self._deadline = time.monotonic() + lifetime
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Every connection accepted, in order.
        self.connections: list[Relayed] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # inherited by accepted sockets; must precede listen()
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self._listener.settimeout(_TICK * 5)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="proxy accept", daemon=True)

    # -- controls ---------------------------------------------------------------

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def stall(self) -> None:
        """Stop reading from the clients of the open connections."""
        with self._lock:
            for conn in self._open():
                conn.stalled = True

    def resume(self) -> None:
        with self._lock:
            for conn in self.connections:
                conn.stalled = False

    def cut(self, timeout: float = 5.0) -> int:
        """Reset the open connections (RST both ways); returns how many."""
        with self._lock:
            victims = self._open()
            for conn in victims:
                conn.cut = True
        for conn in victims:
            if not conn._done.wait(timeout):
                raise AssertionError(f"proxy connection {conn.number} did not close on cut")
        return len(victims)

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.connections)

    def requests(self, method: str = "PUT") -> list[Relayed]:
        """The connections whose first line is a ``method`` request, in order."""
        with self._lock:
            return [conn for conn in self.connections if conn.request.startswith(method + " ")]

    @property
    def forwarded(self) -> int:
        """Bytes relayed client -> server, all connections together."""
        with self._lock:
            return sum(conn.up for conn in self.connections)

    def wait_accepted(self, count: int, timeout: float) -> float:
        """Wait until ``count`` connections were accepted; returns when the last
        of them was (time.monotonic()). Raises AssertionError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.connections) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"proxy accepted {len(self.connections)} connections, not {count}, "
                        f"in {timeout} s: {self.connections}"
                    )
                self._changed.wait(min(left, 0.1))
            return self.connections[count - 1].accepted_at

    def close(self) -> None:
        """Close every connection and join every thread."""
        self._closing.set()
        if self._acceptor.ident is not None:
            self._acceptor.join(10)
        for thread in list(self._threads):
            thread.join(10)
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the threads --------------------------------------------------------------

    def _open(self) -> list[Relayed]:
        return [conn for conn in self.connections if conn.ended_at is None]

    def _over(self) -> bool:
        return self._closing.is_set() or time.monotonic() > self._deadline

    def _accept(self) -> None:
        while not self._over():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                if len(self._open()) >= self.max_connections:
                    _reset(client)
                    continue
                conn = Relayed(len(self.connections) + 1, time.monotonic(), _client=client)
                self.connections.append(conn)
                self._changed.notify_all()
            thread = threading.Thread(
                target=self._relay, args=(conn, client), name=f"proxy {conn.number}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        self._closing.set()  # the lifetime ran out: the connections end too

    def _relay(self, conn: Relayed, client: socket.socket) -> None:
        server: socket.socket | None = None
        how = "proxy closed"
        try:
            server = socket.create_connection(self.upstream, timeout=5)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(5)  # a sendall that blocks this long is an error
            how = self._pump(conn, client, server)
        except OSError as error:
            how = f"error: {error!r}"
        finally:
            if conn.cut:
                _reset(client)
                if server is not None:
                    _reset(server)
            else:
                client.close()
                if server is not None:
                    server.close()
            with self._changed:
                conn.how = how
                conn.ended_at = time.monotonic()
                self._changed.notify_all()
            conn._done.set()

    def _pump(self, conn: Relayed, client: socket.socket, server: socket.socket) -> str:
        server_open = True
        with selectors.DefaultSelector() as selector:
            while True:
                if conn.cut:
                    return "cut"
                if self._over():
                    return "proxy closed"
                watch = [server] if server_open else []
                if not conn.stalled:
                    watch.append(client)
                _watch(selector, watch)
                if not watch:
                    time.sleep(_TICK)
                    continue
                for key, _ in selector.select(_TICK):
                    sock = key.fileobj
                    if sock is client:
                        data = _recv(client)
                        if not data:
                            return "client closed"
                        server.sendall(data)
                        with self._lock:
                            if not conn.up:
                                conn.request = data.split(b"\r\n", 1)[0].decode("latin-1")
                            conn.up += len(data)
                            if self.record:
                                conn.sent += data
                    else:
                        data = _recv(server)
                        if not data:
                            # A hung server (stalled) says nothing to its client.
                            if conn.stalled:
                                server_open = False
                                break
                            return "server closed"
                        client.sendall(data)
                        with self._lock:
                            conn.down += len(data)


def _watch(selector: selectors.BaseSelector, socks: list[socket.socket]) -> None:
    registered = {key.fileobj for key in selector.get_map().values()}
    for sock in registered - set(socks):
        selector.unregister(sock)
    for sock in socks:
        if sock not in registered:
            selector.register(sock, selectors.EVENT_READ)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_CHUNK)
    except ConnectionResetError:
        return b""


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
