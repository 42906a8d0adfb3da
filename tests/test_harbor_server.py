"""The live input's server on a real engine loop and real sockets, with a
recording station in place of the machine: what reaches the station is
whole frames of the right format, byte-exact, and nothing else."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pushsource.core.frames import FrameHeader
from pushsource.engine.harbor import Harbor, LiveInput
from pushsource.engine.loop import Engine
from tests.synth import Spec, id3v2, make_frames

AUTH = base64.b64encode(b"alice:s3cret-pw").decode()


class Recorder:
    """Stands in for the StationMachine: records the live_* events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.changed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("live_"):
            raise AttributeError(name)

        def event(*args: Any) -> None:
            with self.changed:
                self.events.append((name, args))
                self.changed.notify_all()

        return event

    def wait(self, name: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not any(n == name for n, _ in self.events):
                left = deadline - time.monotonic()
                assert left > 0, f"no {name}: {[n for n, _ in self.events]}"
                self.changed.wait(left)

    def audio(self) -> bytes:
        return b"".join(b"".join(args[1]) for n, args in self.events if n == "live_audio")


@pytest.fixture
def harbor() -> Iterator[tuple[Harbor, Recorder]]:
    engine = Engine().start()
    recorder = Recorder()
    harbor = Harbor(engine, "127.0.0.1", 0)
    harbor.add(
        LiveInput(
            station="rock",
            mount="/live",
            users={"alice": "s3cret-pw"},
            sample_rate=44100,
            channels=2,
            machine=recorder,
            step=lambda event, *args: event(*args),
        )
    )
    harbor.start()
    yield harbor, recorder
    harbor.close()
    engine.stop()


def connect(harbor: Harbor) -> socket.socket:
    return socket.create_connection(harbor.address, timeout=5)


def test_frames_pass_byte_exact_and_tags_and_junk_do_not(harbor: tuple[Harbor, Recorder]) -> None:
    server, recorder = harbor
    frames = make_frames(60, seed=31)
    body = id3v2(bytes(300)) + b"".join(frames[:30]) + b"junk!" * 20 + b"".join(frames[30:])
    with connect(server) as sock:
        sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        for at in range(0, len(body), 333):  # in pieces that cut frames
            sock.sendall(body[at : at + 333])
            time.sleep(0.002)
    recorder.wait("live_end")
    names = [n for n, _ in recorder.events]
    assert names[0] == "live_start" and names[-1] == "live_end"
    assert recorder.audio() == b"".join(frames)
    for name, args in recorder.events:
        if name == "live_audio":
            assert isinstance(args[0], FrameHeader)


def test_another_sample_rate_is_hung_up_on_and_never_reaches_the_station(
    harbor: tuple[Harbor, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    server, recorder = harbor
    server.inputs["/live"].convert = False  # else converted: tests/test_live_convert*.py
    frames = make_frames(30, Spec(rate_index=1), seed=32)  # 48 kHz
    with connect(server) as sock:
        sock.sendall(f"PUT /live HTTP/1.1\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.0 200 OK")
        sock.sendall(b"".join(frames))
        assert sock.recv(100) == b""  # hung up
    recorder.wait("live_end")
    assert recorder.audio() == b""
    assert "this station takes MP3 (audio/mpeg) at 44100 Hz stereo" in caplog.text
    assert "s3cret-pw" not in caplog.text


def test_a_title_before_the_audio_connection_comes_with_live_start(
    harbor: tuple[Harbor, Recorder],
) -> None:
    server, recorder = harbor
    with connect(server) as sock:
        sock.sendall(
            b"GET /admin/metadata?mode=updinfo&mount=/live&song=Early+Bird HTTP/1.0\r\n"
            + f"Authorization: Basic {AUTH}\r\n\r\n".encode()
        )
        assert sock.recv(200).startswith(b"HTTP/1.0 200 OK")
    with connect(server) as sock:
        sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        sock.recv(100)
        recorder.wait("live_start")
    assert recorder.events[0] == ("live_start", ("alice", "Early Bird"))


def test_shoutcast_v1_login(harbor: tuple[Harbor, Recorder]) -> None:
    server, recorder = harbor
    frames = make_frames(10, seed=33)
    with connect(server) as sock:
        sock.sendall(b"wrong\r\n")
        assert sock.recv(100) == b"invalid password\r\n"
    with connect(server) as sock:
        sock.sendall(b"s3cret-pw\r\n")
        assert sock.recv(100) == b"OK2\r\nicy-caps:11\r\n\r\n"
        sock.sendall(b"icy-name:Alice\r\nicy-br:128\r\n\r\n" + b"".join(frames))
        time.sleep(0.2)
    recorder.wait("live_end")
    assert recorder.audio() == b"".join(frames)


def test_a_kick_tells_the_station_at_once_and_a_ban_refuses_the_user_until_it_ends(
    harbor: tuple[Harbor, Recorder],
) -> None:
    server, recorder = harbor
    live = server.inputs["/live"]
    with connect(server) as sock:
        sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        recorder.wait("live_start")
        assert server._engine.run(lambda: live.kick(60.0)) == "alice"
        recorder.wait("live_kick")  # the folder takes back now, not after the grace
        assert sock.recv(100) == b""  # hung up
    with connect(server) as sock:  # within the ban: refused, saying why
        sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        reply = sock.recv(300)
        assert reply.startswith(b"HTTP/1.0 403")
        assert b"alice was kicked off /live: refused for 1 more min" in reply
    live.banned["alice"] = time.monotonic() - 1  # the ban ran out: welcome back
    with connect(server) as sock:
        sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
