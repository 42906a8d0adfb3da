"""The control server against clients that misbehave on purpose: resets, slow
clients by the dozen, foreign Host names (DNS rebinding), ambiguous framing and
JSON built to hurt the parser. None of it may print a traceback or lock anyone out."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushsource.ops.control import ControlServer
from tests.conftest import StartPushsource
from tests.support.icecast import free_port
from tests.test_control import TOKEN, FakeStation, call, raw_exchange, read_answer, serve

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow


@pytest.fixture
def rock(tmp_path: Path) -> FakeStation:
    folder = tmp_path / "rock"
    folder.mkdir()
    return FakeStation("rock", folder)


@pytest.fixture
def server(rock: FakeStation) -> Iterator[ControlServer]:
    with serve([rock], metrics=lambda: (b"pushsource_up 1\n", "text/plain")) as running:
        yield running


def _get(host: str) -> bytes:
    return f"GET /api/stations HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def test_a_reset_connection_prints_no_traceback(
    server: ControlServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pushsource")
    for partial in (
        b"GET /api/sta",
        b"POST /api/stations/rock/skip HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n{",
    ):
        sock = socket.create_connection(server.address, timeout=10)
        sock.sendall(partial)
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    time.sleep(0.5)
    assert call(server, "GET", "/api/stations")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err, err
    assert all(r.levelno <= logging.DEBUG for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


def test_eighty_slow_clients_do_not_lock_a_quick_one_out(server: ControlServer) -> None:
    slow = []
    try:
        for _ in range(80):
            sock = socket.create_connection(server.address, timeout=10)
            sock.sendall(b"GET /api/stations HTTP/1.1\r\nHo")  # and one byte a second, say
            slow.append(sock)
        time.sleep(0.3)
        for _ in range(5):
            assert raw_exchange(server, _get("127.0.0.1")).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in slow:
            sock.close()


def test_a_client_that_trickles_its_headers_is_dropped_at_the_deadline(rock: FakeStation) -> None:
    with serve([rock], header_deadline=0.5) as server:
        sock = socket.create_connection(server.address, timeout=10)
        request = _get("127.0.0.1")
        started = time.monotonic()
        closed = False
        for byte in request[:-4]:  # a byte every 0.1 s: the 30 s idle timeout never fires
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed and time.monotonic() - started < 5
        sock.close()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8700", "127.0.0.1.nip.io", "x"])
@pytest.mark.parametrize("path", ["/api/stations", "/metrics", "/"])
def test_a_foreign_host_name_is_refused(server: ControlServer, host: str, path: str) -> None:
    answer = raw_exchange(server, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 421 "), answer[:100]
    assert b"pushsource_up" not in answer and b"rock" not in answer


def test_own_names_are_served(rock: FakeStation) -> None:
    with serve([rock], allowed_hosts=["Radio.Example.org"]) as server:
        port = server.address[1]
        for host in (
            "127.0.0.1",
            f"127.0.0.1:{port}",
            "localhost",
            f"localhost:{port}",
            "[::1]:8700",
            "radio.example.org",
            f"RADIO.example.org.:{port}",
        ):
            assert raw_exchange(server, _get(host)).startswith(b"HTTP/1.1 200 "), host
        answer = raw_exchange(server, b"GET /api/stations HTTP/1.0\r\n\r\n")  # no Host at all
        assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "lengths",
    [["+2"], ["2_0"], ["0x2"], ["2", "2"], ["-1"], ["\uff12"], ["2 2"]],
)
def test_content_length_is_strict(server: ControlServer, lengths: list[str]) -> None:
    headers = "".join(f"Content-Length: {n}\r\n" for n in lengths)
    request = (
        f"POST /api/stations/rock/skip HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\n{headers}\r\n{{}}"
    ).encode()
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_length_and_chunked_together_is_refused(server: ControlServer) -> None:
    request = (
        f"POST /api/stations/rock/skip HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}"
        "\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"
    ).encode()
    assert raw_exchange(server, request).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"file": ' + b"[" * 60_000 + b"]" * 0 + b"}",
        b'{"file": "a.mp3", "index": ' + b"7" * 5001 + b"}",
        b'{"file": "a.mp3", "index": 1' + b"0" * 5000 + b".5}",
        b'{"file": "a.mp3", "index": NaN}',
        b'{"file": "a.mp3", "index": 1e999999}',
    ],
)
def test_hostile_json_is_400_without_a_traceback(
    server: ControlServer, rock: FakeStation, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, data = call(server, "POST", "/api/stations/rock/queue/move", body)
    assert status == 400, data
    assert "error" in json.loads(data)
    assert not any(r.exc_info for r in caplog.records)
    assert rock.calls == []


def test_ordinary_json_still_works(server: ControlServer, rock: FakeStation) -> None:
    status, _, _ = call(
        server, "POST", "/api/stations/rock/queue/move", {"file": "d.mp3", "index": 0}
    )
    assert status == 200 and rock.queue[0] == "d.mp3"
    assert (
        call(server, "POST", "/api/stations/rock/queue", b'{"file": "x\\"[[[[[[[[[[[[[[[[[[.mp3"}')[
            0
        ]
        == 200
    )


def test_a_token_in_the_query_string_is_not_logged(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "pushsource")
    call(server, "GET", f"/api/stations?token={TOKEN}", token=None)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(f"GET /?token={TOKEN} HTTP/9.9\r\n\r\n".encode())  # an error, logged too
        read_answer(sock, to_the_end=True)
    assert caplog.records
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_the_real_cli_prints_no_traceback_for_resets(
    start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    port = free_port()
    run = start_pushsource(
        "stream",
        music,
        "icecast://source:pw@127.0.0.1:1/m",
        "--control",
        f"127.0.0.1:{port}",
        "-q",
        "--log-format",
        "json",
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, run.describe()
            time.sleep(0.1)
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /api/stations HTTP/1.1\r\nHo")
        time.sleep(0.1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(1)
    run.terminate()
    assert "Traceback" not in run.stderr, run.describe()
    for line in run.stderr.splitlines():
        assert line.startswith("{"), line  # JSON lines only, nothing else
