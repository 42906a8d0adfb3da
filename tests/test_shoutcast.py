"""SHOUTcast v1 outputs without a real server: ``shoutcast://`` URLs, the
sans-IO protocol (pushsource.core.shoutcast) fed whole, byte by byte and
split at every position, the admin.cgi title request, and SourceSocket
against a small fake server. (test_shoutcast_e2e.py runs against Icecast.)"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from pushsource.core.shoutcast import (
    ADMIN_USER_AGENT,
    LINE_LIMIT,
    SETTLE,
    ShoutcastReader,
    admin_params,
    icy_lines,
    opening,
)
from pushsource.core.source import Accepted, Answer, Refused
from pushsource.core.target import IcecastTarget, parse_target, redact
from pushsource.engine.source import SourceSocket
from pushsource.errors import (
    AuthenticationError,
    ConfigError,
    IcecastError,
    MountInUseError,
    ProtocolError,
    WrongServerError,
)
from pushsource.ops.config import load_config
from pushsource.ops.settings import parse_output_option, resolve_output_target, resolve_target
from pushsource.workers.icecast import send_title
from tests.support.aio import Events, run

SECRET = "S3cr:et@pw/é#x"
ENCODED = "S3cr%3Aet%40pw%2F%C3%A9%23x"
TARGET = parse_target(f"shoutcast://{ENCODED}@radio.example:8010")
V2 = parse_target(f"shoutcast://{ENCODED}@radio.example:8010/2")
HEADERS = {
    "ice-public": "0",
    "ice-bitrate": "128",
    "ice-audio-info": "bitrate=128;samplerate=44100;channels=2",
    "ice-name": "Sigur Rós\r\nicy-pub:1 · 東京",
    "ice-description": "not a SHOUTcast v1 header",
    "ice-genre": "Post-rock",
    "ice-url": "https://radio.example/",
}
#: What Icecast 2.4.4 and DNAS 1.9 answer a right password (measured on Icecast).
OK = b"OK2\r\nicy-caps:11\r\n\r\n"
IN_USE = (
    b"HTTP/1.0 403 Forbidden\r\nServer: Icecast 2.4.4\r\nConnection: Close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nMountpoint in use"
)


def hidden(text: str) -> bool:
    return SECRET not in text and ENCODED not in text and "S3cr" not in text


# --- the URL ----------------------------------------------------------------------------


def test_a_shoutcast_url_and_its_defaults() -> None:
    target = parse_target("shoutcast://pw@example.org")
    assert (target.protocol, target.host, target.port, target.source_port) == (
        "shoutcast",
        "example.org",
        8000,
        8001,
    )
    assert (target.mount, target.sid, target.password, target.tls) == ("/", None, "pw", False)
    assert str(target) == "shoutcast://example.org:8000"
    # [user:]password: a user is allowed and means nothing (DNAS has none).
    assert parse_target("shoutcast://dj:pw@example.org:9000/").password == "pw"
    assert parse_target("shoutcast://pw@[::1]:9000").source_port == 9001
    assert str(parse_target("shoutcast://pw@[::1]:9000")) == "shoutcast://[::1]:9000"
    # An Icecast <shoutcast-mount>: the path names it, for listeners and logs.
    live = parse_target("shoutcast://pw@example.org/live")
    assert (live.mount, live.sid, str(live)) == ("/live", None, "shoutcast://example.org:8000/live")


def test_a_numeric_path_is_a_dnas_v2_stream_id() -> None:
    assert (V2.sid, V2.mount, V2.password) == (2, "/stream/2/", SECRET)
    assert str(V2) == "shoutcast://radio.example:8010/2"
    assert opening(V2) == f"{SECRET}:#2\r\n".encode()
    assert opening(TARGET) == f"{SECRET}\r\n".encode()


def test_password_sources_in_order() -> None:
    url = "shoutcast://inurl@h"
    assert parse_target(url, password="file").password == "file"
    assert parse_target(url, fallback_password="env").password == "inurl"
    assert parse_target("shoutcast://h:8000/1", fallback_password="env").password == "env"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"shoutcast://{ENCODED}@h/0", "stream ids count from 1"),
        (f"shoutcast://{ENCODED}@h:65535", "65535 + 1 is no port"),
        (f"shoutcast://{ENCODED}@h:80x", "the port is not a number"),
        (f"shoutcast://{ENCODED}@h/1?x=1", "no ?query"),
        (f"shoutcast://{ENCODED}@h/a b", "white space"),
        (f"shoutcast://{ENCODED}@/1", "no host"),
        (f"shoutcast://{SECRET}@h", 'write "/", "?" and "#" in the password as %2F'),
        ("shoutcast://S3cr#et@h", 'write "/", "?" and "#" in the password as %2F'),
        (f"shoutcasts://{ENCODED}@h", "SHOUTcast v1 sources have no TLS"),
        ("shoutcast://h", "no source password"),
        ("shoutcast://bad%0Aline@h", "cannot hold a line break"),
    ],
)
def test_bad_urls_say_why_without_the_password(url: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_target(url)
    message = str(caught.value)
    assert why in message and "\n" not in message
    assert hidden(message), message


def test_the_password_is_in_no_str_repr_or_redacted_text() -> None:
    for target in (TARGET, V2):
        assert hidden(str(target)) and hidden(repr(target))
    assert redact(f"shoutcast://{SECRET}@h:8000/1 and more") == "shoutcast://***@h:8000/1 and more"
    assert redact(f"shoutcast://dj:{ENCODED}@h") == "shoutcast://***@h"
    assert redact(f"shoutcasts://{ENCODED}@h") == "shoutcasts://***@h"
    assert redact(f"GET /admin.cgi?mode=updinfo&pass={ENCODED}&song=x") == (
        "GET /admin.cgi?mode=updinfo&pass=***&song=x"
    )


# --- what goes where: the config, --output, the password of an output -------------------


def test_shoutcast_urls_in_a_config_and_in_output(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    path = tmp_path / "stations.toml"
    path.write_text(
        """
[[station]]
folder = "music"
url = "icecast://source:hackme@127.0.0.1:8000/live"

[[station.output]]
url = "shoutcast://127.0.0.1:8000"

[[station.output]]
url = "shoutcast://other@radio.example:8010/2"

[[station]]
folder = "music"
url = "shoutcast://third@radio.example:8010/3"
""",
        "utf-8",
    )
    config = load_config(path, {})
    first, second = config.stations
    here, there = (resolve_output_target(first, o, {}) for o in first.outputs)
    # On the station's own server: its password, as for an icecast:// output.
    assert (here.protocol, here.mount, here.password) == ("shoutcast", "/", "hackme")
    assert (there.sid, there.password) == (2, "other")
    assert resolve_target(second, {}).mount == "/stream/3/"
    assert second.id == "stream-3"
    option = parse_output_option("shoutcast://pw@127.0.0.1:8000/2 bitrate=64")
    assert option.url == "shoutcast://pw@127.0.0.1:8000/2" and option.bitrate == 64


def test_two_outputs_to_one_shoutcast_stream_are_refused(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    path = tmp_path / "stations.toml"
    path.write_text(
        f"""
[[station]]
folder = "music"
url = "shoutcast://{ENCODED}@127.0.0.1:8000/1"

[[station]]
folder = "music"
id = "again"
url = "shoutcast://{ENCODED}@127.0.0.1:8000/1/"
""",
        "utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert "127.0.0.1:8000/stream/1/ is already station 1's" in str(caught.value)
    assert hidden(str(caught.value))


# --- the icy-* lines --------------------------------------------------------------------


def test_icy_lines_map_the_station_headers_and_end_with_an_empty_line() -> None:
    lines = icy_lines(HEADERS)
    assert lines.endswith(b"\r\n\r\n")
    assert lines[:-4].decode("utf-8").split("\r\n") == [
        "icy-pub:0",
        "icy-br:128",
        # No value can start a line of its own.
        "icy-name:Sigur Rós icy-pub:1 · 東京",
        "icy-genre:Post-rock",
        "icy-url:https://radio.example/",
        "content-type:audio/mpeg",
    ]
    assert icy_lines({}) == b"content-type:audio/mpeg\r\n\r\n"


# --- the answer -------------------------------------------------------------------------

Key = tuple[str, str, str, bytes] | None


def key(answer: Answer | None) -> Key:
    if answer is None:
        return None
    if isinstance(answer, Accepted):
        return ("accepted", "", "", answer.then)
    error = answer.error
    assert hidden(str(error)), error
    return ("refused", type(error).__name__, str(error).partition(" answered b")[0], b"")


def read_in_pieces(pieces: list[bytes], *, close: bool) -> Answer | None:
    """Feed pieces; the answer must come exactly once."""
    reader = ShoutcastReader(TARGET, HEADERS)
    answers = [a for piece in pieces if (a := reader.feed(piece)) is not None]
    assert len(answers) <= 1, answers
    if not answers and close:
        answers.append(reader.eof())
    elif answers:
        assert key(reader.eof()) == key(answers[0])
    return answers[0] if answers else None


def every_split(data: bytes, *, close: bool = True) -> Answer | None:
    """The answer, the same for data whole, byte by byte and split in two
    at every position."""
    whole = read_in_pieces([data], close=close)
    assert key(read_in_pieces([data[i : i + 1] for i in range(len(data))], close=close)) == key(
        whole
    )
    for cut in range(len(data) + 1):
        assert key(read_in_pieces([data[:cut], data[cut:]], close=close)) == key(whole), cut
    return whole


def error_of(answer: Answer | None) -> IcecastError:
    assert isinstance(answer, Refused), answer
    return answer.error


@pytest.mark.parametrize("answer", [OK, b"OK2\r\n", b"OK2\n", b"ok2\r\nicy-caps:11\n\n"])
def test_ok2_is_accepted_on_its_line_and_the_icy_lines_go_next(answer: bytes) -> None:
    assert every_split(answer, close=False) == Accepted(200, then=icy_lines(HEADERS))


def test_ok2_cut_short_by_the_answer_timeout_is_still_go() -> None:
    # Nothing but "OK2" and no line end within the timeout (eof() then).
    assert every_split(b"OK2") == Accepted(200, then=icy_lines(HEADERS))


@pytest.mark.parametrize(
    "answer", [b"invalid password\r\n", b"Invalid Password\n", b"invalid password"]
)
def test_invalid_password_is_an_authentication_error(answer: bytes) -> None:
    for close in (True, False):
        error = error_of(every_split(answer, close=close))
        assert type(error) is AuthenticationError
        assert str(error) == "authentication failed for the SHOUTcast source on radio.example:8011"


def test_icecast_hangs_up_on_a_wrong_password() -> None:
    error = error_of(every_split(b""))
    assert type(error) is AuthenticationError
    assert "radio.example:8011" in str(error) and "hung up" in str(error)


def test_other_answers_are_told_apart() -> None:
    refused = error_of(every_split(b"Stream ID not found\r\n"))
    assert type(refused) is ProtocolError  # retried with backoff: something answered
    assert str(refused) == (
        "the SHOUTcast server on radio.example:8011 refused the source: Stream ID not found"
    )
    garbage = error_of(every_split(b"\x00\xff\x17\r\n"))
    assert type(garbage) is WrongServerError and "not a SHOUTcast server:" in str(garbage)
    cut = error_of(every_split(b"OK"[:1]))
    assert type(cut) is IcecastError and "in the middle of its answer" in str(cut)
    endless = ShoutcastReader(TARGET, HEADERS)
    assert endless.feed(b"x" * LINE_LIMIT) is None
    assert isinstance(error_of(endless.feed(b"x")), ProtocolError)


def test_an_http_answer_is_icecasts_refusal_or_the_wrong_port() -> None:
    limit = (
        b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\n"
        b"Icecast connection limit reached"
    )
    error = error_of(every_split(limit))
    assert type(error) is IcecastError and error.status == 403
    assert str(error) == (
        "radio.example:8011 refused the SHOUTcast source: Icecast connection limit reached"
    )
    wrong = error_of(every_split(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
    assert type(wrong) is WrongServerError  # the wrong port: a config error, not retried
    assert "answers HTTP (400), not the SHOUTcast source protocol" in str(wrong)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_an_answer_and_never_raise(data: bytes) -> None:
    reader = ShoutcastReader(TARGET, HEADERS)
    answer = reader.feed(data) or reader.eof()
    assert isinstance(answer, Accepted | Refused)
    for later in (reader.later(data), reader.later(b""), reader.ended()):
        assert later is None or isinstance(later, IcecastError)


# --- what comes after OK2 ---------------------------------------------------------------


def after_ok(pieces: list[bytes]) -> list[IcecastError]:
    reader = ShoutcastReader(TARGET, HEADERS)
    assert reader.feed(b"OK2\r\n") == Accepted(200, then=icy_lines(HEADERS))
    told = [e for piece in [b"", *pieces] if (e := reader.later(piece)) is not None]
    if (ended := reader.ended()) is not None:
        told.append(ended)
    return told


@pytest.mark.parametrize("head", [b"icy-caps:11\r\n\r\n", b""])
def test_icecasts_mount_in_use_after_ok2_is_told_once_at_any_split(head: bytes) -> None:
    data = head + IN_USE
    for cut in range(len(data) + 1):
        told = after_ok([data[:cut], data[cut:], b"more"])
        assert len(told) == 1, (cut, told)
        assert type(told[0]) is MountInUseError and told[0].status == 403
        assert str(told[0]) == "the SHOUTcast mount of radio.example:8011 is in use"
    named = ShoutcastReader(parse_target("shoutcast://pw@h/live"), {})
    assert named.feed(OK + IN_USE) is not None
    assert named.later(b"") is None  # its reason may still be coming: Icecast closes after it
    error = named.ended()
    assert isinstance(error, MountInUseError) and str(error) == "mountpoint /live is in use"


def test_after_ok2_nothing_else_is_ours() -> None:
    assert after_ok([b"icy-caps:11\r\n\r\n"]) == []
    assert after_ok([b"icy-caps:11\r\n\r\n", b"some server chatter\r\n", IN_USE]) == []
    assert after_ok([]) == []
    # A refusal cut short by the close is told at the close, with its status.
    told = after_ok([b"icy-caps:11\r\n\r\nHTTP/1.0 500 Internal Server Error\r\n\r\nno"])
    assert len(told) == 1 and told[0].status == 500


# --- titles: admin.cgi ------------------------------------------------------------------


def test_admin_cgi_query_for_dnas_v1_and_v2() -> None:
    assert admin_params(TARGET, "Sigur Rós - 東京") == [
        ("mode", "updinfo"),
        ("pass", SECRET),
        ("song", "Sigur Rós - 東京"),
    ]
    assert ("sid", "2") in admin_params(V2, "t")
    assert "Mozilla" in ADMIN_USER_AGENT  # DNAS v1 streams to anything else


class _AdminHandler(http.server.BaseHTTPRequestHandler):
    answer: ClassVar[int] = 200
    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        body = b"<html><body>Metadata update successful</body></html>"
        if self.answer != 200:
            body = b"You need to authenticate\r\n"
        self.send_response(self.answer)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[http.server.ThreadingHTTPServer]:
    _AdminHandler.seen = []
    _AdminHandler.answer = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AdminHandler)
    thread = threading.Thread(target=server.serve_forever, name="admin-cgi")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_send_title_goes_by_admin_cgi_on_the_listener_port(
    admin_server: http.server.ThreadingHTTPServer,
) -> None:
    port = admin_server.server_address[1]
    target = parse_target(f"shoutcast://{ENCODED}@localhost:{port}/2")
    with requests.Session() as session:
        assert send_title(session, target, "127.0.0.1", "Sigur Rós - 東京") is None
    (path, headers), *_ = _AdminHandler.seen
    parts = urlsplit(path)
    assert parts.path == "/admin.cgi"
    assert dict(parse_qsl(parts.query)) == {
        "mode": "updinfo",
        "pass": SECRET,
        "sid": "2",
        "song": "Sigur Rós - 東京",
    }
    assert headers["User-Agent"] == ADMIN_USER_AGENT
    assert headers["Host"] == f"localhost:{port}"
    assert "Authorization" not in headers


def test_a_refused_or_failed_title_says_why_without_the_password(
    admin_server: http.server.ThreadingHTTPServer,
) -> None:
    _AdminHandler.answer = 401
    port = admin_server.server_address[1]
    target = parse_target(f"shoutcast://{ENCODED}@127.0.0.1:{port}")
    with requests.Session() as session:
        problem = send_title(session, target, "127.0.0.1", "t", retries=1)
        assert problem == "the SHOUTcast server answered 401 You need to authenticate"
        down = parse_target(f"shoutcast://{ENCODED}@127.0.0.1:9")
        problem = send_title(session, down, "127.0.0.1", "t", retries=1, timeout=1)
    assert problem is not None and hidden(problem), problem


# --- SourceSocket -----------------------------------------------------------------------


class ShoutcastFake:
    """A SHOUTcast v1 source port on 127.0.0.1 (the target's listener port is
    the one below it) that answers the password line with ``answer``, then
    reads the icy-* lines and the audio."""

    def __init__(self, answer: bytes, after_icy: bytes = b"") -> None:
        self.answer = answer
        self.after_icy = after_icy
        self.password = b""
        self.icy = b""
        self.icy_at = 0.0
        self.audio = bytearray()
        self.audio_at: float | None = None
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.password = await reader.readline()
            writer.write(self.answer)
            if not self.answer.startswith(b"OK2"):
                return
            self.icy = await reader.readuntil(b"\r\n\r\n")
            self.icy_at = time.monotonic()
            writer.write(self.after_icy)
            if self.after_icy:
                return
            while chunk := await reader.read(65536):
                if self.audio_at is None:
                    self.audio_at = time.monotonic()
                self.audio.extend(chunk)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.close()

    async def __aenter__(self) -> ShoutcastFake:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def target(self) -> IcecastTarget:
        assert self.server is not None
        port = int(self.server.sockets[0].getsockname()[1])
        return parse_target(f"shoutcast://{ENCODED}@127.0.0.1:{port - 1}/7")


def test_a_source_logs_in_sends_its_icy_lines_then_the_audio_byte_exact() -> None:
    body = bytes(i * 7 % 251 for i in range(200_000))

    async def main() -> ShoutcastFake:
        async with ShoutcastFake(OK) as fake:
            events = Events()
            sock = SourceSocket(asyncio.get_running_loop(), fake.target(), events, metaint=8192)
            assert not sock.titles_inside  # SHOUTcast v1 sources carry no titles
            sock.open(HEADERS)
            await events.until(lambda: events.accepted_at is not None)
            accepted = time.monotonic()
            # The audio waits until the server has read the icy-* lines alone.
            assert accepted - fake.icy_at >= SETTLE - 0.05
            for i in range(0, len(body), 4096):
                sock.send(body[i : i + 4096])
            sock.close()
            for _ in range(250):
                if len(fake.audio) >= len(body):
                    break
                await asyncio.sleep(0.02)
            assert events.errors == []
            assert sock.sent == len(body) and sock.unsent == 0
            return fake

    fake = run(main())
    assert fake.password == f"{SECRET}:#7\r\n".encode()
    assert fake.icy == icy_lines(HEADERS)
    assert bytes(fake.audio) == body


@pytest.mark.parametrize(
    ("answer", "after_icy", "kind", "text"),
    [
        (b"invalid password\r\n", b"", AuthenticationError, "authentication failed"),
        (b"", b"", AuthenticationError, "hung up"),
        (OK, IN_USE, MountInUseError, "is in use"),
    ],
)
def test_refusals_fail_the_source_before_it_is_on_air(
    answer: bytes, after_icy: bytes, kind: type[IcecastError], text: str
) -> None:
    async def main() -> IcecastError:
        async with ShoutcastFake(answer, after_icy) as fake:
            events = Events()
            sock = SourceSocket(asyncio.get_running_loop(), fake.target(), events)
            sock.open(HEADERS)
            error = await events.error()
            assert events.accepted_at is None
            return error

    error = run(main())
    assert type(error) is kind and text in str(error) and hidden(str(error))


def test_nothing_on_the_source_port() -> None:
    async def main() -> IcecastError:
        events = Events()
        # Port 9 + 1 = 10: nothing listens there.
        target = parse_target(f"shoutcast://{ENCODED}@127.0.0.1:9")
        sock = SourceSocket(asyncio.get_running_loop(), target, events, timeout=2)
        sock.open(HEADERS)
        return await events.error()

    error = run(main())
    assert str(error) == "cannot connect to 127.0.0.1:10: Connection refused"
