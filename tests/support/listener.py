"""A listener that records what an Icecast mount sends, ICY metadata split out.

Icecast answers a GET with ``Icy-MetaData: 1`` by an ``icy-metaint: N`` header;
then after every N audio bytes comes one length byte L and L*16 bytes of
metadata (``StreamTitle='...';`` padded with NULs), L == 0 meaning no change.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

_TITLE = re.compile(rb"StreamTitle='(.*?)';(?:StreamUrl='.*';)?\Z", re.DOTALL)


def parse_stream_title(block: bytes) -> str | None:
    """The StreamTitle of one metadata block, None if it has none.

    Titles may contain ``'`` and ``;``, so the title runs to the last ``';``
    (or to the one before a trailing StreamUrl). Undecodable bytes are
    replaced, so a mangled title shows up as different text, not as an error.
    """
    match = _TITLE.search(block.rstrip(b"\0"))
    if match is None:
        return None
    return match.group(1).decode("utf-8", errors="replace")


class IcyDemuxer:
    """Splits an ICY stream body into audio and metadata blocks; no I/O.

    feed() takes bytes as they come, in chunks of any size, and returns the
    audio bytes among them plus each complete non-empty metadata block with
    the audio byte offset at which it arrived.
    """

    def __init__(self, metaint: int | None) -> None:
        self.metaint = metaint
        self.audio_bytes = 0
        self._until_meta = metaint or 0
        self._meta_left: int | None = None  # bytes of the current block still due
        self._meta = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        if self.metaint is None:
            self.audio_bytes += len(data)
            return data, []
        audio = bytearray()
        blocks: list[tuple[int, bytes]] = []
        view = memoryview(data)
        while view:
            if self._meta_left is None and self._until_meta > 0:
                take = view[: self._until_meta]
                audio += take
                self._until_meta -= len(take)
                self.audio_bytes += len(take)
                view = view[len(take) :]
            elif self._meta_left is None:
                self._meta_left = view[0] * 16
                view = view[1:]
            else:
                take = view[: self._meta_left]
                self._meta += take
                self._meta_left -= len(take)
                view = view[len(take) :]
            if self._meta_left == 0:
                if self._meta:
                    blocks.append((self.audio_bytes, bytes(self._meta)))
                self._meta.clear()
                self._meta_left = None
                self._until_meta = self.metaint
        return bytes(audio), blocks


class Listener:
    """A thread listening to http(s)://HOST:PORT/MOUNT the way a player does.

    It retries while the mount does not exist yet (404) or the server refuses
    the connection, so it can be started before the source.
    """

    def __init__(
        self,
        port: int,
        mount: str,
        *,
        host: str = "127.0.0.1",
        connect_timeout: float = 15.0,
        metadata: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context``: listen over https, trusting what it trusts."""
        self.port = port
        self.ssl_context = ssl_context
        self.mount = mount
        self.host = host
        self.connect_timeout = connect_timeout
        self.metadata = metadata
        self.audio = bytearray()
        #: (time.monotonic() of a recv, audio bytes received up to then)
        self.arrivals: list[tuple[float, int]] = []
        #: (audio byte offset where the block arrived, its StreamTitle)
        self.titles: list[tuple[int, str]] = []
        #: Every non-empty metadata block as it came, NUL padding removed.
        self.blocks: list[bytes] = []
        self.headers: dict[str, str] = {}
        self.status: int | None = None
        self.connected = threading.Event()
        #: Set when the server ends the stream (EOF or reset).
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"listener {mount}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5.0)

    def wait_connected(self, timeout: float) -> None:
        self._wait(self.connected.is_set, timeout, "the stream to start")

    def wait_for_audio(self, nbytes: int, timeout: float) -> None:
        self._wait(lambda: len(self.audio) >= nbytes, timeout, f"{nbytes} audio bytes")

    def wait_for_title(self, title: str, timeout: float) -> int:
        """Wait until title arrives; returns the audio offset where it did."""
        self._wait(lambda: any(t == title for _, t in self.titles), timeout, f"title {title!r}")
        return next(offset for offset, t in self.titles if t == title)

    def wait_closed(self, timeout: float) -> None:
        self._wait(self.closed.is_set, timeout, "the server to close the stream")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                # Once the thread is over nothing more will come: fail now.
                over = self._thread.ident is not None and not self._thread.is_alive()
                left = deadline - time.monotonic()
                if left <= 0 or over or self.closed.is_set():
                    raise AssertionError(f"waited {timeout} s for {what}: {self._describe()}")
                self._changed.wait(min(left, 0.1))

    def _describe(self) -> str:
        return (
            f"{self.mount} status={self.status} audio={len(self.audio)} bytes "
            f"titles={self.titles} closed={self.closed.is_set()} error={self.error!r}"
        )

    def _run(self) -> None:
        try:
            demuxer = self._connect()
            if demuxer is not None:
                self._receive(demuxer)
        except BaseException as error:  # the thread must hand every failure to the test
            self.error = error
        finally:
            if self._sock is not None:
                self._sock.close()
            with self._changed:
                self._changed.notify_all()

    def _connect(self) -> IcyDemuxer | None:
        deadline = time.monotonic() + self.connect_timeout
        request = (
            f"GET {self.mount} HTTP/1.0\r\nHost: {self.host}:{self.port}\r\n"
            f"User-Agent: pushsource-tests\r\n"
            + ("Icy-MetaData: 1\r\n" if self.metadata else "")
            + "\r\n"
        ).encode("ascii")
        while not self._stopping.is_set():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(0.2)
            try:
                sock.connect((self.host, self.port))
                if self.ssl_context is not None:
                    sock.settimeout(5.0)  # the handshake, then short reads again
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
                    sock.settimeout(0.2)
                sock.sendall(request)
                head, rest = self._read_head(sock)
            except (ConnectionError, TimeoutError) as error:
                sock.close()
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no stream at {self.mount}: {error}") from error
                time.sleep(0.02)
                continue
            status, headers = _parse_head(head)
            if status == 404 and time.monotonic() < deadline:
                sock.close()
                time.sleep(0.02)
                continue
            if status != 200:
                sock.close()
                raise ConnectionError(f"GET {self.mount} answered {status}: {head!r}")
            self._sock = sock
            self.status = status
            self.headers = headers
            metaint = headers.get("icy-metaint")
            demuxer = IcyDemuxer(int(metaint) if metaint else None)
            with self._changed:
                self.connected.set()
                self._take(demuxer, rest)
            return demuxer
        return None

    def _read_head(self, sock: socket.socket) -> tuple[bytes, bytes]:
        data = b""
        deadline = time.monotonic() + 5.0
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if time.monotonic() > deadline or self._stopping.is_set():
                    raise
                continue
            if not chunk:
                raise ConnectionResetError(f"closed after {len(data)} header bytes")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _receive(self, demuxer: IcyDemuxer) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            with self._changed:
                if not chunk:
                    self.closed.set()
                    self._changed.notify_all()
                    return
                self._take(demuxer, chunk)

    def _take(self, demuxer: IcyDemuxer, chunk: bytes) -> None:
        # Called with self._changed held.
        if not chunk:
            return
        audio, blocks = demuxer.feed(chunk)
        self.audio += audio
        for offset, block in blocks:
            self.blocks.append(block.rstrip(b"\0"))
            title = parse_stream_title(block)
            if title is not None:
                self.titles.append((offset, title))
        self.arrivals.append((time.monotonic(), len(self.audio)))
        self._changed.notify_all()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError) as error:
        raise ConnectionError(f"not an HTTP status line: {lines[0]!r}") from error
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers
