"""Source URL parsing and the PUT's wire format, against a tiny raw-socket
server on loopback (the end-to-end behaviour with real Icecast is in
test_stream_e2e.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from pushsource.errors import AuthenticationError, ConfigError, IcecastError, MountInUseError
from pushsource.workers.icecast import (
    IcecastTarget,
    ServerMonitor,
    SourceConnection,
    StationInfo,
    parse_target,
)

SECRET = "pa:ss@word"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("icecast://source:pw@example.org:8001/live", ("example.org", 8001, "/live", "source")),
        ("icecast://pw-only:pw@127.0.0.1/m.mp3", ("127.0.0.1", 8000, "/m.mp3", "pw-only")),
        ("icecast://:pw@127.0.0.1/m", ("127.0.0.1", 8000, "/m", "source")),
        ("http://dj:pw@[::1]:9000/a/b", ("::1", 9000, "/a/b", "dj")),
    ],
)
def test_urls_parse_like_ffmpeg(url: str, expected: tuple[str, int, str, str]) -> None:
    target = parse_target(url)
    assert (target.host, target.port, target.mount, target.user) == expected
    assert target.password == "pw"


def test_password_sources_in_order() -> None:
    url = "icecast://source:inurl@h/m"
    assert parse_target(url, password="file").password == "file"
    assert parse_target(url, fallback_password="env").password == "inurl"
    assert parse_target("icecast://h/m", fallback_password="env").password == "env"
    assert parse_target("icecast://source:p%40ss@h/m").password == "p@ss"


@pytest.mark.parametrize(
    "url",
    [
        f"icecast://source:{SECRET}@h:80x/m",
        f"ftp://source:{SECRET}@h/m",
        f"icecast://source:{SECRET}@h",
        f"icecast://source:{SECRET}@h/",
        f"icecast://source:{SECRET}@/m",
        "icecast://source@h/m",
    ],
)
def test_bad_urls_say_why_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_target(url)
    message = str(caught.value)
    assert "\n" not in message
    assert "pa:ss" not in message and "ss@word" not in message


def test_repr_and_str_hide_the_password() -> None:
    target = parse_target("icecast://source:hunter2@127.0.0.1/m")
    for text in (repr(target), str(target), repr(SourceConnection(target))):
        assert "hunter2" not in text
    assert str(target) == "icecast://source@127.0.0.1:8000/m"


def test_station_info_headers() -> None:
    headers = StationInfo(name="Rádió", genre="jazz", public=True).headers(128, 44100, 2)
    # http.client sends str headers as Latin-1; Icecast wants the UTF-8 bytes.
    assert headers["ice-name"].encode("latin-1") == "Rádió".encode()
    assert headers["ice-genre"] == "jazz"
    assert headers["ice-public"] == "1"
    assert headers["ice-audio-info"] == "bitrate=128;samplerate=44100;channels=2"
    assert "ice-description" not in headers


# -- the wire ------------------------------------------------------------------


class RawServer:
    """Accepts one connection and runs ``handler(conn)`` on it, in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self.handler(conn)

    def close(self) -> None:
        self.thread.join(10)
        self.sock.close()


def read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def target_for(server: RawServer, password: str = SECRET) -> IcecastTarget:
    return IcecastTarget(host="127.0.0.1", port=server.port, mount="/m", password=password)


def test_body_goes_raw_with_a_length_not_chunked() -> None:
    seen: dict[str, bytes] = {}

    def icecast_like(conn: socket.socket) -> None:
        head, body = read_head(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")  # Icecast answers before reading the body
        while len(body) < 3000:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        seen["head"], seen["body"] = head, body

    server = RawServer(icecast_like)
    chunks = [bytes([i]) * 1000 for i in range(3)]
    sent = SourceConnection(target_for(server)).stream(iter(chunks), {"ice-name": "X"})
    server.close()
    head = seen["head"].decode("latin-1").lower()
    assert seen["body"] == b"".join(chunks)  # byte for byte: no chunk-size lines
    assert sent == 3000
    assert head.startswith("put /m http/1.1")
    assert "transfer-encoding" not in head
    assert "content-length: " in head
    assert "content-type: audio/mpeg" in head
    assert "ice-name: x" in head
    assert "authorization: basic " in head


def answer_then_close(response: bytes) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(response)

    return handler


def slow_body() -> Iterator[bytes]:
    for _ in range(50):  # enough sends for the peer's reset to show
        yield b"\xff" * 4096
        threading.Event().wait(0.01)


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (
            b"HTTP/1.0 401 Authentication Required\r\n\r\nYou need to authenticate\r\n",
            AuthenticationError,
            "authentication failed for source user on /m",
        ),
        (
            b"HTTP/1.0 403 Forbidden\r\n\r\nMountpoint in use",
            MountInUseError,
            "mountpoint /m is in use",
        ),
        (
            b"HTTP/1.0 403 Forbidden\r\n\r\nContent-type not supported",
            IcecastError,
            "Icecast refused the source on /m: Content-type not supported",
        ),
    ],
)
def test_refusals_become_errors(response: bytes, error: type[IcecastError], message: str) -> None:
    server = RawServer(answer_then_close(response))
    with pytest.raises(error) as caught:
        SourceConnection(target_for(server)).stream(slow_body(), {})
    server.close()
    assert str(caught.value) == message
    assert SECRET not in repr(caught.value)


def test_a_drop_mid_stream_is_not_taken_for_success() -> None:
    def drop(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        conn.recv(10000)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = RawServer(drop)
    with pytest.raises(IcecastError, match="lost"):
        SourceConnection(target_for(server)).stream(slow_body(), {})
    server.close()


def test_nothing_listening_says_cannot_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = IcecastTarget(host="127.0.0.1", port=port, mount="/m", password=SECRET)
    with pytest.raises(
        IcecastError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused$"
    ):
        SourceConnection(target).stream(iter([b"x"]), {})


# -- the server monitor -----------------------------------------------------------


class StatusServer:
    """Answers each request with a status line (or, once frozen, with nothing),
    counting the requests; as many connections as come, one thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.frozen = threading.Event()
        self.asked = threading.Condition()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            head, _ = read_head(conn)
            with self.asked:
                self.requests.append(head)
                self.asked.notify_all()
            if self.frozen.is_set():
                self._held.append(conn)  # a hung Icecast: connected, never answers
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}")

    def wait_for(self, count: int) -> None:
        with self.asked:
            assert self.asked.wait_for(lambda: len(self.requests) >= count, 10)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "pushsource-watchdog"]


def test_one_monitor_asks_once_per_round_for_all_its_watchers() -> None:
    server = StatusServer()
    target = IcecastTarget(host="127.0.0.1", port=server.port, mount="/a", password=SECRET)
    monitor = ServerMonitor(target, timeout=2, every=0.01)
    hung: list[str] = []
    before = len(watchdog_threads())
    unwatch = [monitor.watch(hung.append) for _ in range(5)]
    server.wait_for(10)
    assert len(watchdog_threads()) == before + 1  # one thread for five stations
    head = server.requests[0].decode()
    assert head.startswith("GET /status-json.xsl HTTP/1.0")
    assert f"Host: 127.0.0.1:{server.port}" in head and SECRET not in head
    for stop in unwatch:
        stop()
    monitor.join(5)
    assert len(watchdog_threads()) == before  # nobody watches: no thread
    assert hung == []
    server.close()


def test_a_server_that_stops_answering_is_reported_to_every_watcher() -> None:
    server = StatusServer()
    target = IcecastTarget(host="127.0.0.1", port=server.port, mount="/a", password=SECRET)
    monitor = ServerMonitor(target, timeout=0.3, every=0.01)
    hung: dict[str, str] = {}
    done = threading.Event()

    def watcher(name: str) -> Callable[[str], None]:
        def on_hang(reason: str) -> None:
            hung[name] = reason
            if len(hung) == 2:
                done.set()

        return on_hang

    monitor.watch(watcher("a"))
    monitor.watch(watcher("b"))
    server.wait_for(2)
    server.frozen.set()
    assert done.wait(10)
    assert hung == {"a": "no answer within 0.3 s", "b": "no answer within 0.3 s"}
    monitor.join(5)
    assert monitor.probe() == "no answer within 0.3 s"  # still frozen
    server.close()
    assert monitor.probe() is not None  # and now gone: refused
