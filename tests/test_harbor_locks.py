"""A harbor no one can lock (issue 22, item 5), on a real engine loop and
real sockets with a recording station: idle sockets, wrong passwords, junk
bytes, early titles and a reconnecting kicked encoder cannot keep the DJ
with the right password off the air, and refusals cost a log line a minute."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushsource.engine import harbor as harbor_mod
from pushsource.engine.harbor import Harbor, LiveInput
from pushsource.engine.loop import Engine
from tests.support.media import make_clean_mp3
from tests.synth import make_frames
from tests.test_harbor_server import Recorder

pytestmark = pytest.mark.integration

USERS = {"alice": "s3cret-pw", "bob": "b0b-pw"}


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def source(user: str, password: str, mount: str = "/live") -> bytes:
    return (
        f"SOURCE {mount} HTTP/1.0\r\nAuthorization: Basic {basic(user, password)}\r\n\r\n".encode()
    )


def title_request(user: str, password: str, song: str) -> bytes:
    return (
        f"GET /admin/metadata?mode=updinfo&mount=/live&song={song} HTTP/1.0\r\n"
        f"Authorization: Basic {basic(user, password)}\r\n\r\n"
    ).encode()


@pytest.fixture
def harbor() -> Iterator[tuple[Harbor, Recorder]]:
    engine = Engine().start()
    recorder = Recorder()
    harbor = Harbor(engine, "127.0.0.1", 0)
    harbor.add(
        LiveInput(
            station="rock",
            mount="/live",
            users=USERS,
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


def connect(harbor: Harbor, source_ip: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(harbor.address, timeout=5, source_address=(source_ip, 0))


def ask(harbor: Harbor, request: bytes, source_ip: str = "127.0.0.1") -> bytes:
    with connect(harbor, source_ip) as sock:
        sock.sendall(request)
        out = b""
        try:
            while chunk := sock.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def starts(recorder: Recorder) -> list[tuple[object, ...]]:
    return [args for name, args in recorder.events if name == "live_start"]


def test_idle_sockets_from_one_address_cannot_keep_the_dj_out(
    harbor: tuple[Harbor, Recorder],
) -> None:
    """Today: 32 idle sockets and the DJ gets 503. Now the newcomer takes
    the place of the oldest connection that has not logged in, and the
    attacker reopening them cannot refuse the DJ either."""
    server, recorder = harbor
    idle = [connect(server) for _ in range(40)]
    try:
        for attempt in range(3):
            with connect(server) as dj:
                dj.sendall(source("alice", "s3cret-pw"))
                assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n", f"attempt {attempt}"
                dj.sendall(b"".join(make_frames(5, seed=40 + attempt)))
                recorder.wait("live_audio")
            recorder.wait("live_end")
            recorder.events.clear()
            # The attacker opens them again (the ones evicted were closed).
            idle += [connect(server) for _ in range(40)]
        # The oldest idle ones were let go to make room; the harbor holds a few.
        closed = 0
        for sock in idle:
            sock.settimeout(0.01)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                closed += sock.recv(1) == b""
        assert closed >= len(idle) - harbor_mod.MAX_PER_CLIENT
        assert server.connections <= harbor_mod.MAX_PER_CLIENT
    finally:
        for sock in idle:
            sock.close()


def test_wrong_passwords_throttle_their_user_and_address_only(
    harbor: tuple[Harbor, Recorder],
) -> None:
    """Today five wrong passwords from an address lock out every DJ there.
    Now the throttle is per user and address: bob at the same address, and
    alice at another, still get in with the right password."""
    server, recorder = harbor
    for i in range(8):  # five wrong, then throttled
        answer = ask(server, source("alice", "guess"))
        assert answer.startswith(b"HTTP/1.0 401" if i < 5 else b"HTTP/1.0 403"), i
    for i in range(8):  # SHOUTcast v1 guesses: no user
        answer = ask(server, b"guess\r\n")
        assert answer == b"invalid password\r\n" if i < 5 else answer.startswith(b"HTTP/1.0 403")
    # alice from this address is throttled...
    answer = ask(server, source("alice", "s3cret-pw"))
    assert answer.startswith(b"HTTP/1.0 403") and b"too many wrong passwords" in answer
    # ... bob at the same address (the same NAT) is not,
    with connect(server) as dj:
        dj.sendall(source("bob", "b0b-pw"))
        assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        recorder.wait("live_start")
    recorder.wait("live_end")
    # ... nor alice from another address.
    recorder.events.clear()
    with connect(server, "127.0.0.2") as dj:
        dj.sendall(source("alice", "s3cret-pw"))
        assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        recorder.wait("live_start")
    assert [args[0] for args in starts(recorder)] == ["alice"]


def test_refusals_are_logged_a_line_a_minute_per_address_with_a_count(
    harbor: tuple[Harbor, Recorder],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, _ = harbor
    monkeypatch.setattr(harbor_mod, "LOG_EVERY", 1.0)
    caplog.set_level(logging.INFO, logger="pushsource")
    started = time.monotonic()
    for i in range(300):
        ask(server, source("mallory", f"guess{i}"))
    for _ in range(20):
        ask(server, b"GET /nothing HTTP/1.0\r\n\r\n", "127.0.0.2")
    time.sleep(1.5)  # the minute (here a second) is over: the count is said
    seconds = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for peer, total in (("127.0.0.1", 300), ("127.0.0.2", 20)):
        mine = [line for line in lines if peer in line]
        # One line at once, then a count a "minute" (of which there were few).
        assert 2 <= len(mine) <= 2 + seconds, mine
        counted = sum(int(m) for line in mine for m in re.findall(r"refused (\d+) more", line))
        assert 1 + counted == total, mine
    assert "guess" not in caplog.text  # never a password


def test_a_dj_who_sends_junk_instead_of_frames_loses_the_slot(
    harbor: tuple[Harbor, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today one byte every 20 s holds the slot for ever: the stall rule
    counted any byte. Now it counts from the last whole frame."""
    server, recorder = harbor
    monkeypatch.setattr(harbor_mod, "STALL", 1.0)
    frames = make_frames(40, seed=41)
    with connect(server) as dj:
        dj.sendall(source("alice", "s3cret-pw"))
        assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        # Frames a little at a time, each in well under the stall: kept.
        for i in range(8):
            dj.sendall(frames[i])
            time.sleep(0.3)
        # Then a junk byte every 0.25 s: hung up about a second after the last frame.
        started = time.monotonic()
        hung_up = None
        for _ in range(16):
            try:
                dj.sendall(b"\x00")
            except OSError:
                hung_up = time.monotonic() - started
                break
            time.sleep(0.25)
        if hung_up is None:
            dj.settimeout(1.0)
            with contextlib.suppress(ConnectionResetError):
                assert dj.recv(100) == b"", "still connected after 4 s of junk"
    recorder.wait("live_end", 3)
    assert recorder.audio() == b"".join(frames[:8])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_a_kicked_encoder_that_reconnects_at_once_stays_off_for_the_ban(
    harbor: tuple[Harbor, Recorder], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, recorder = harbor
    live = server.inputs["/live"]
    tone = tmp_path / "tone.mp3"
    make_clean_mp3(tone, 20.0, freq=440)
    host, port = server.address
    url = f"icecast://alice:s3cret-pw@{host}:{port}/live"
    ffmpeg = f"ffmpeg -v quiet -re -i {tone} -c copy -content_type audio/mpeg -f mp3 {url}"
    # An encoder that reconnects at once, for ever (as BUTT or a loop does).
    loop = subprocess.Popen(["bash", "-c", f"while :; do {ffmpeg}; sleep 0.05; done"])
    try:
        recorder.wait("live_audio", 10)
        assert server._engine.run(lambda: live.kick(60.0)) == "alice"
        time.sleep(3)
        assert len(starts(recorder)) == 1  # it tried again (and again) and was refused
        assert "kicked, refused for 1 more min" in caplog.text
    finally:
        loop.kill()
        loop.wait(5)


def test_a_title_with_no_dj_never_goes_to_another_users_set(
    harbor: tuple[Harbor, Recorder],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Today alice's title, sent while no DJ was on, went on air with bob's set."""
    server, recorder = harbor
    caplog.set_level(logging.INFO, logger="pushsource")
    assert ask(server, title_request("alice", "s3cret-pw", "Alice+Tune")).startswith(
        b"HTTP/1.0 200"
    )
    with connect(server) as dj:
        dj.sendall(source("bob", "b0b-pw"))
        assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        recorder.wait("live_start")
        # While bob is live, alice's titles are not his either.
        answer = ask(server, title_request("alice", "s3cret-pw", "Alice+Again"))
        assert answer.startswith(b"HTTP/1.0 403") and b"bob is live" in answer
    recorder.wait("live_end")
    assert starts(recorder) == [("bob", None)]
    assert not any(name == "live_title" for name, _ in recorder.events)
    assert "dropped alice's title" in caplog.text
    # alice's own title, too late for her set (the wait is 10 s; here 0.3 s), is dropped.
    monkeypatch.setattr(harbor_mod, "TITLE_WAIT", 0.3)
    recorder.events.clear()
    assert ask(server, title_request("alice", "s3cret-pw", "Alice+Late")).startswith(
        b"HTTP/1.0 200"
    )
    time.sleep(0.6)
    assert "dropped alice's title: no audio connection from them within 0 s" in caplog.text
    with connect(server) as dj:
        dj.sendall(source("alice", "s3cret-pw"))
        assert dj.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        recorder.wait("live_start")
    assert starts(recorder) == [("alice", None)]


@pytest.mark.parametrize(
    "login",
    [
        b"alice:s3cret-pw\r\n",  # SHOUTcast v1: user:password in the password line
        b"alice,s3cret-pw\r\n",
        source("source", "alice:s3cret-pw"),  # an Icecast client with only a password
    ],
)
def test_a_user_packed_into_the_password_is_accepted(
    harbor: tuple[Harbor, Recorder], login: bytes
) -> None:
    server, recorder = harbor
    frames = make_frames(10, seed=42)
    with connect(server) as dj:
        dj.sendall(login)
        answer = dj.recv(100)
        assert answer in (b"OK2\r\nicy-caps:11\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n")
        if answer.startswith(b"OK2"):
            dj.sendall(b"icy-name:Alice\r\n\r\n")
        dj.sendall(b"".join(frames))
        time.sleep(0.2)
    recorder.wait("live_end")
    assert starts(recorder) == [("alice", None)]
    assert recorder.audio() == b"".join(frames)
    # A wrong packed password is still wrong.
    assert ask(server, b"alice:nope\r\n") == b"invalid password\r\n"


LIQUIDSOAP_V1 = """
settings.init.allow_root.set(true)
settings.log.stdout.set(true)
settings.log.file.set(false)
s = mksafe(sine(660.))
output.shoutcast(%mp3(bitrate=128, samplerate=44100, stereo=true),
                 host="127.0.0.1", port={port}, password="alice:s3cret-pw", s)
"""


@pytest.mark.skipif(shutil.which("liquidsoap") is None, reason="liquidsoap is not installed")
def test_liquidsoap_as_a_shoutcast_v1_encoder_with_user_and_password_packed(
    harbor: tuple[Harbor, Recorder], tmp_path: Path
) -> None:
    """Liquidsoap's output.shoutcast: the SHOUTcast v1 login (the password
    line, on the port after the one given), with ``alice:password`` in it."""
    server, recorder = harbor
    script = tmp_path / "v1.liq"
    script.write_text(LIQUIDSOAP_V1.format(port=server.address[1] - 1))
    script.chmod(0o600)
    dj = subprocess.Popen(
        ["liquidsoap", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        recorder.wait("live_audio", 15)
        time.sleep(1)
    finally:
        dj.terminate()
        dj.wait(10)
    recorder.wait("live_end")
    assert starts(recorder) == [("alice", None)]
    assert len(recorder.audio()) > 8000  # its frames, at the station's format


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_ffmpeg_goes_live_while_an_attacker_keeps_reopening_idle_sockets(
    harbor: tuple[Harbor, Recorder], tmp_path: Path
) -> None:
    server, recorder = harbor
    tone = tmp_path / "tone.mp3"
    make_clean_mp3(tone, 2.0, freq=440)
    host, port = server.address
    url = f"icecast://alice:s3cret-pw@{host}:{port}/live"
    idle: list[socket.socket] = []
    stop = threading.Event()

    def attack() -> None:  # 40 idle sockets, opened again and again
        while not stop.is_set():
            for sock in idle[:-40]:
                sock.close()
            del idle[:-40]
            idle.extend(connect(server) for _ in range(40))
            stop.wait(0.2)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            ffmpeg = ["ffmpeg", "-v", "error", "-re", "-i", str(tone), "-c", "copy"]
            ffmpeg += ["-content_type", "audio/mpeg", "-f", "mp3", url]
            assert subprocess.run(ffmpeg, timeout=20).returncode == 0
            recorder.wait("live_end")
            assert [n for n, _ in recorder.events].count("live_audio") > 0
            recorder.events.clear()
    finally:
        stop.set()
        attacker.join(5)
        for sock in idle:
            sock.close()


def test_spraying_user_names_frees_no_throttled_pair(harbor: tuple[Harbor, Recorder]) -> None:
    """The failures kept are bounded; what is forgotten first is a pair with
    few failures, not one being throttled (names sprayed to reset it)."""
    server, _ = harbor

    def spray() -> None:
        for _ in range(5):
            server.failed("alice", "127.0.0.1")
        for i in range(10_050):
            server.failed(f"name{i}", "127.0.0.1")

    server._engine.run(spray)
    assert server._engine.run(lambda: server.refused_for("alice", "127.0.0.1"))
    assert len(server._failures) <= 10_001
