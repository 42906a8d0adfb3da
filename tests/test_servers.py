"""The peer servers themselves (tests/support/servers.py): each kind starts,
says which it is, takes a source the way pushsource logs in, and a listener
hears that source's bytes, while the server's own figures count them."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest

from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.support.servers import PeerServer, server_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """2 s of 128 kbps MP3 frames (32600 bytes): less than the 64 KB burst
    of 2.4.4 and 2.5.0, which then send it all to a listener that comes later."""
    return make_clean_mp3(tmp_path_factory.mktemp("servers") / "tone.mp3", 2.0, freq=550)


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def put_source(server: PeerServer, mount: str) -> tuple[socket.socket, bytes]:
    """A source logged in on mount with an HTTP PUT, as pushsource does; the
    socket and the server's first answer."""
    token = base64.b64encode(f"source:{server.source_password}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(
        f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Basic {token}\r\nContent-Type: audio/mpeg\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    return sock, read_head(sock)


def test_the_server_reports_its_version(peer_server: PeerServer) -> None:
    expected = {"2.4.4": "Icecast 2.4.4", "2.5.0": "Icecast 2.5.0", "kh": "Icecast 2.4.0-kh22"}
    assert peer_server.version.startswith(expected[peer_server.kind]), peer_server.version
    assert peer_server.running


def test_a_source_is_heard_byte_exact_and_counted(
    peer_server: PeerServer, unique_mount: str, frames: bytes
) -> None:
    server = peer_server
    sock, answer = put_source(server, unique_mount)
    listener: Listener | None = None
    try:
        # kh says 100 Continue and at once 200 OK, without waiting for data.
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n") or (
            server.kind == "kh" and answer.startswith(b"HTTP/1.1 200")
        ), answer
        sock.sendall(frames)
        server.wait_for_mount(unique_mount)
        assert unique_mount in server.mounts()
        assert server.listeners(unique_mount) == 0
        listener = Listener(server.port, unique_mount, metadata=False).start()
        listener.wait_connected(10)
        # The servers keep back the end of what came until more comes.
        sock.sendall(frames)
        listener.wait_for_audio(len(frames), 10)
        sent = frames * 2
        start = sent.find(bytes(listener.audio))
        assert start >= 0, "the listener heard other bytes than the source sent"
        # 2.4.4 and 2.5.0 burst all of it (under their 64 KB); kh 1 s (16300
        # bytes) back from the newest, from a frame's start.
        assert start == (16300 if server.kind == "kh" else 0)
        server.wait_for_listeners(unique_mount, 1, timeout=5)
        listener.stop()
        listener = None
        # A server sees a listener gone when it next writes to it.
        sock.sendall(frames)
        server.wait_for_listeners(unique_mount, 0, timeout=5)
    except BaseException:
        print(server.error_log()[-3000:])
        raise
    finally:
        if listener is not None:
            listener.stop()
        sock.close()
    deadline = time.monotonic() + 5
    while unique_mount in server.mounts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unique_mount not in server.mounts()


def test_the_shoutcast_port_of_2_4_4_takes_a_v1_source(frames: bytes) -> None:
    with PeerServer("2.4.4", shoutcast=True, source_password="sc-pw") as server:
        with socket.create_connection(("127.0.0.1", server.shoutcast_port), timeout=5) as wrong:
            wrong.sendall(b"not-it\r\n")
            assert wrong.recv(100) == b""  # closed, no OK2
        with socket.create_connection(("127.0.0.1", server.shoutcast_port), timeout=5) as sock:
            sock.sendall(b"sc-pw\r\n")
            assert read_head(sock) == b"OK2\r\nicy-caps:11\r\n\r\n"
            sock.sendall(b"content-type: audio/mpeg\r\nicy-name: v1\r\n\r\n" + frames)
            server.wait_for_mount("/shout")


def test_a_restart_keeps_the_port(peer_server: PeerServer) -> None:
    with PeerServer(peer_server.kind) as server:
        port = server.port
        sock, _ = put_source(server, "/before")
        sock.close()
        server.restart()
        assert server.port == port and server.running
        assert server.mounts() == []
        server.kill()
        assert not server.running


def test_without_the_sources_a_built_server_is_skipped_outside_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PUSHSOURCE_SHARED_SERVERS", str(tmp_path / "none"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Icecast kh to test with"):
        server_binary("kh")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Icecast kh to test with"):
        server_binary("kh")
