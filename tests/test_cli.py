"""The command line's own checks, run in-process (no server needed)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushsource.ops.cli import main

SECRET = "Kx3-pass-file-9Q"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() sets up logging for a process; put the test process's back."""
    root, ours = logging.getLogger(), logging.getLogger("pushsource")
    handlers, levels = root.handlers[:], (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


def test_a_password_file_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    url = "icecast://source@127.0.0.1:9/m"
    assert main(["stream", str(tmp_path), url, "--password-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert "readable by others (mode 644)" in err and "chmod 600" in err
    assert SECRET not in err


def test_an_insecure_password_file_can_be_accepted(tmp_path: Path) -> None:
    from pushsource.ops.cli import read_password_file

    secret = tmp_path / "password"
    secret.write_text(SECRET + "\nsecond line is ignored\n")
    secret.chmod(0o640)
    assert read_password_file(secret, insecure=True) == SECRET
    secret.chmod(0o600)
    assert read_password_file(secret) == SECRET


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samplerate", "44000"], "no 44000 Hz sample rate"),
        (["--bitrate", "8"], "no 8 kbps bitrate"),
        (["--max-retries", "-1"], "--max-retries must be 0 or more"),
    ],
)
def test_bad_station_settings_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    env_before = dict(os.environ)
    url = "icecast://source:pw@127.0.0.1:9/m"
    assert main(["stream", str(tmp_path), url, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert dict(os.environ) == env_before


@pytest.mark.parametrize(
    ("value", "message"),
    [("-50", "must be between -40 and -5 LUFS: -50"), ("quiet", "not a loudness in LUFS")],
)
def test_loudness_is_checked_by_the_parser(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    from pushsource.ops.cli import build_parser, stream_settings

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["stream", "music", "icecast://h/m", "--loudness", value])
    assert caught.value.code == 2
    assert f"argument --loudness: {message}" in capsys.readouterr().err
    args = build_parser().parse_args(["stream", "music", "icecast://h/m", "--loudness", "-18"])
    assert stream_settings(args).loudness == -18.0
    default = build_parser().parse_args(["stream", "music", "icecast://h/m"])
    assert stream_settings(default).loudness is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "must be between 0 (off) and 3600 seconds: -1"),
        ("3601", "must be between 0 (off) and 3600 seconds: 3601"),
        ("nan", "must be between 0 (off) and 3600 seconds: nan"),
        ("soon", "not a number of seconds: 'soon'"),
    ],
)
def test_silence_alarm_is_checked_by_the_parser(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    from pushsource.ops.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["stream", "music", "icecast://h/m", "--silence-alarm", value])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument --silence-alarm: {message}")


def test_silence_alarm_and_trim_silence_reach_the_settings() -> None:
    from pushsource.ops.cli import build_parser, stream_settings

    base = ["stream", "music", "icecast://h/m"]
    args = build_parser().parse_args([*base, "--silence-alarm", "5", "--trim-silence"])
    settings = stream_settings(args)
    assert (settings.silence_alarm, settings.trim_silence) == (5.0, True)
    off = stream_settings(build_parser().parse_args([*base, "--silence-alarm", "0"]))
    assert off.silence_alarm == 0.0
    default = stream_settings(build_parser().parse_args(base))
    assert (default.silence_alarm, default.trim_silence) == (30.0, False)


def test_fresh_forgets_the_state_file_a_station_would_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushsource.ops.cli import _forget_state
    from pushsource.ops.settings import StationSettings
    from pushsource.workers.state import default_state_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    settings = StationSettings(folder=tmp_path, url="icecast://source:pw@127.0.0.1:8123/fresh")
    default = default_state_path("127.0.0.1:8123/fresh")  # as the runner names it
    default.parent.mkdir(parents=True)
    default.write_text("{}", "utf-8")
    other = tmp_path / "other.json"
    other.write_text("{}", "utf-8")
    _forget_state(settings)
    assert not default.exists() and other.exists()
    _forget_state(settings)  # nothing to forget: fine
    _forget_state(StationSettings(folder=tmp_path, url=settings.url, state=other))
    assert not other.exists()


NGINX_404 = (
    b"HTTP/1.1 404 Not Found\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 61\r\nConnection: close\r\n\r\n"
    b"<html><head><title>404 Not Found</title></head><body></body>"
)


@pytest.mark.parametrize(
    ("answer", "status", "last"),
    [
        # Down or restarting: retried (here until --max-retries 0 gives up).
        (b"", 1, "giving up after 1 attempts: 127.0.0.1:{port} closed the connection before"),
        # Not Icecast at all: a config error at once, whatever --max-retries says.
        (b"SSH-2.0-OpenSSH_9.2\r\n", 2, "not an Icecast server: 127.0.0.1:{port} answered b'SSH-"),
        (
            NGINX_404,
            2,
            "not an Icecast server: 127.0.0.1:{port} (nginx/1.22.1) answered 404 Not Found "
            "to the source on /m",
        ),
    ],
)
def test_a_server_that_is_not_icecast_gets_one_plain_line(
    tmp_path: Path, answer: bytes, status: int, last: str
) -> None:
    import socket
    import threading

    from pushsource.ops.trial import make_tone_mp3
    from tests.conftest import run_pushsource

    make_tone_mp3(tmp_path / "a.mp3", 1.0)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)  # the request head
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        retries = ["--max-retries", "0"] if status == 1 else []
        done = run_pushsource(
            "stream", "--once", *retries, tmp_path,
            f"icecast://source:pw-not-icecast@127.0.0.1:{port}/m", timeout=30,
        )  # fmt: skip
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        server.close()
        thread.join(5)
    assert done.returncode == status, done
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("pushsource: error: " + last.format(port=port)), done.stderr
    assert sum("not an Icecast" in line or "closed the" in line for line in lines) == 1, lines
    assert "pw-not-icecast" not in done.stderr
    assert "RemoteDisconnected" not in done.stderr and "Connection aborted" not in done.stderr
