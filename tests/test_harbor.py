"""The DJ protocol (sans-IO): what real encoders send, fed whole, split at
every position, and byte by byte; the events must be the same."""

from __future__ import annotations

import base64

import pytest

from pushsource.core.harbor import (
    METADATA_OK,
    Audio,
    BadRequest,
    BodyEnd,
    Event,
    HarborConnection,
    MetadataRequest,
    SourceRequest,
    refusal,
)

AUTH = "Basic " + base64.b64encode(b"alice:s3cret").decode()
BODY = bytes(range(256)) * 3


def merged(events: list[Event]) -> list[Event]:
    """Audio events joined, so splits that cut the body differently compare equal."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, Audio) and out and isinstance(out[-1], Audio):
            out[-1] = Audio(out[-1].data + e.data)
        else:
            out.append(e)
    return out


def feed_all(data: bytes, splits: list[int]) -> list[Event]:
    conn = HarborConnection()
    events: list[Event] = []
    last = 0
    for at in [*splits, len(data)]:
        events += conn.feed(data[last:at])
        last = at
    return merged(events)


def every_split(data: bytes) -> list[Event]:
    """The events, checked to be the same however the bytes are split."""
    whole = feed_all(data, [])
    for at in range(len(data) + 1):
        assert feed_all(data, [at]) == whole, f"split at {at}"
    assert feed_all(data, list(range(len(data)))) == whole, "byte by byte"
    return whole


def test_butt_source_with_basic_auth_and_ice_headers() -> None:
    head = (
        "SOURCE /live HTTP/1.0\r\n"
        f"Authorization: {AUTH}\r\n"
        "Content-Type: audio/mpeg\r\n"
        "ice-name: Alice live\r\nice-bitrate: 128\r\n\r\n"
    ).encode()
    events = every_split(head + BODY)
    assert events == [
        SourceRequest(
            "SOURCE",
            "/live",
            "alice",
            "s3cret",
            {
                "authorization": AUTH,
                "content-type": "audio/mpeg",
                "ice-name": "Alice live",
                "ice-bitrate": "128",
            },
        ),
        Audio(BODY),
    ]
    request = events[0]
    assert isinstance(request, SourceRequest)
    assert request.content_type == "audio/mpeg"
    assert "s3cret" not in repr(request)


def test_ffmpeg_put_with_expect_continue() -> None:
    head = (
        "PUT /live HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        f"Authorization: {AUTH}\r\nContent-Type: audio/mpeg\r\n\r\n"
    ).encode()
    [request, audio] = every_split(head + BODY)
    assert isinstance(request, SourceRequest)
    assert (request.method, request.mount, request.expect_continue) == ("PUT", "/live", True)
    assert audio == Audio(BODY)


def test_curl_chunked_body_is_dechunked() -> None:
    head = (
        f"PUT /live HTTP/1.1\r\nTransfer-Encoding: chunked\r\nAuthorization: {AUTH}\r\n\r\n"
    ).encode()
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (n, BODY[:n]) for n in (1, 17, 256, 500))
    events = every_split(head + body + b"0\r\nX-Trailer: y\r\n\r\n" + b"ignored")
    expected = b"".join(BODY[:n] for n in (1, 17, 256, 500))
    assert events[1:] == [Audio(expected), BodyEnd()]


def test_a_broken_chunked_body_is_refused() -> None:
    head = b"PUT /live HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert every_split(head + b"zz\r\n")[-1] == BadRequest(400, "bad chunk size in the body")
    assert every_split(head + b"2\r\nabX\r\n")[-1] == BadRequest(400, "chunk not followed by CRLF")
    assert feed_all(head + b"1" * 300, [])[-1] == BadRequest(400, "chunked body line too long")


def test_content_length_ends_the_body() -> None:
    head = b"PUT /live HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
    assert every_split(head + BODY)[1:] == [Audio(BODY[:10]), BodyEnd()]


def test_libshout_metadata_without_then_with_credentials() -> None:
    bare = b"GET /admin/metadata?mode=updinfo&mount=%2Flive&song=Caf%C3%A9+del+Mar HTTP/1.0\r\n\r\n"
    assert every_split(bare) == [MetadataRequest("/live", "Café del Mar", "updinfo", None, None)]
    authed = bare.replace(b"\r\n\r\n", f"\r\nAuthorization: {AUTH}\r\n\r\n".encode())
    [request] = every_split(authed)
    assert request == MetadataRequest("/live", "Café del Mar", "updinfo", "alice", "s3cret")


def test_shoutcast_admin_cgi_password_in_the_query() -> None:
    data = b"GET /admin.cgi?pass=s3cret&mode=updinfo&song=Hello%20there HTTP/1.0\r\n\r\n"
    assert every_split(data) == [MetadataRequest(None, "Hello there", "updinfo", None, "s3cret")]


def test_shoutcast_v1_password_line_then_icy_headers_then_audio() -> None:
    data = b"s3cret\r\nicy-name:Alice\r\nicy-br:128\r\ncontent-type:audio/mpeg\r\n\r\n" + BODY
    assert every_split(data) == [SourceRequest("SHOUTCAST", None, None, "s3cret", {}), Audio(BODY)]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"DELETE /live HTTP/1.1\r\n\r\n", 405),
        (b"GET /status.xsl HTTP/1.0\r\n\r\n", 404),
        (b"PUT /live HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"PUT /live HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
    ],
)
def test_what_no_encoder_sends_is_refused(data: bytes, status: int) -> None:
    events = feed_all(data, [])
    assert isinstance(events[-1], BadRequest)
    assert events[-1].status == status
    assert HarborConnection().feed(data[:5]) == []  # nothing decided on a partial line


def test_a_head_that_never_ends_is_refused_at_the_limit() -> None:
    conn = HarborConnection()
    assert conn.feed(b"PUT /live HTTP/1.1\r\n") == []
    events: list[Event] = []
    for _ in range(100):
        events += conn.feed(b"X-Pad: " + b"a" * 100 + b"\r\n")
    assert events == [BadRequest(431, "request head too long")]
    assert conn.done and conn.feed(b"more") == []


def test_bad_basic_credentials_are_none() -> None:
    data = b"PUT /live HTTP/1.1\r\nAuthorization: Basic !!!\r\n\r\n"
    [request] = feed_all(data, [])
    assert isinstance(request, SourceRequest)
    assert (request.user, request.password) == (None, None)


def test_answers() -> None:
    answer = refusal(401, "wrong user or password")
    assert answer.startswith(b"HTTP/1.0 401 ")
    assert b'WWW-Authenticate: Basic realm="Icecast2 Server"\r\n' in answer
    assert answer.endswith(b"\r\n\r\nwrong user or password\n")
    assert b"WWW-Authenticate" not in refusal(403, "a DJ is already live")
    assert refusal(415, "a\r\nb").endswith(b"a  b\n")  # one line, whatever it is given
    head, _, body = METADATA_OK.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
