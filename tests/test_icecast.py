"""Source URL parsing and the PUT's wire format, against a tiny raw-socket
server on loopback (the end-to-end behaviour with real Icecast is in
test_stream_e2e.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from pushsource.core.target import StationInfo, parse_target
from pushsource.errors import ConfigError

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
    for text in (repr(target), str(target)):
        assert "hunter2" not in text
    assert str(target) == "icecast://source@127.0.0.1:8000/m"


def test_station_info_headers() -> None:
    headers = StationInfo(name="Rádió", genre="jazz", public=True).headers(128, 44100, 2)
    assert headers["ice-name"] == "Rádió"
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
