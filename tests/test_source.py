"""pushsource.core.source: the PUT head we write and Icecast's answer we read,
fed whole, byte by byte, split at every position, and at random (hypothesis)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsource.core.source import (
    BODY_LIMIT,
    HEAD_LIMIT,
    Accepted,
    Answer,
    AnswerReader,
    Refused,
    icecast_reason,
    request_head,
)
from pushsource.core.target import USER_AGENT, IcecastTarget
from pushsource.errors import (
    AuthenticationError,
    IcecastError,
    MountInUseError,
    ProtocolError,
    WrongServerError,
)

SECRET = "S3cr:et@pw/é"
TARGET = IcecastTarget("radio.example", 8443, "/live.mp3", "dj", SECRET, tls=True)

# What Icecast 2.4.4 answers (the 200 is exactly this: no headers at all).
OK = b"HTTP/1.0 200 OK\r\n\r\n"
AUTH = (
    b"HTTP/1.0 401 Authentication Required\r\n"
    b'WWW-Authenticate: Basic realm="Icecast2 Server"\r\n\r\n'
    b"You need to authenticate\r\n"
)
IN_USE = (
    b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 18\r\n\r\nMountpoint in use\n"
)
NO_TYPE = b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nNo Content-type given\r\n"
XML = (
    b"HTTP/1.0 500 Internal Server Error\r\nContent-Type: text/xml\r\n\r\n"
    b'<?xml version="1.0"?>\n<iceresponse><message>Too many sources connected</message>'
    b"<return>0</return></iceresponse>\n"
)


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    assert head.endswith(b"\r\n\r\n")
    lines = head[:-4].decode("utf-8").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        assert sep, line
        fields[name] = value
    return lines[0], fields


# --- request_head ------------------------------------------------------------------------


def test_request_head_is_a_raw_put_with_basic_auth_and_the_ice_headers() -> None:
    head = request_head(TARGET, {"ice-name": "Sigur Rós · 東京", "ice-public": "0"})
    line, fields = parse_head(head)
    assert line == "PUT /live.mp3 HTTP/1.1"
    assert fields.pop("Host") == "radio.example:8443"
    auth = fields.pop("Authorization")
    assert auth.startswith("Basic ")
    assert base64.b64decode(auth[6:]).decode("utf-8") == f"dj:{SECRET}"
    assert fields == {
        "User-Agent": USER_AGENT,
        "Content-Type": "audio/mpeg",
        # Icecast 2.5 answers a PUT without it only once the source has ended.
        "Expect": "100-continue",
        "ice-name": "Sigur Rós · 东京".replace("东", "東"),
        "ice-public": "0",
    }
    # No body framing: Icecast reads the body raw and never de-chunks.
    assert b"content-length" not in head.lower() and b"transfer-encoding" not in head.lower()


def test_an_ipv6_host_goes_in_brackets() -> None:
    _, fields = parse_head(request_head(IcecastTarget("::1", 8000, "/m", password="x"), {}))
    assert fields["Host"] == "[::1]:8000"


@pytest.mark.parametrize(
    "value", ["a\r\nX-Evil: 1", "a\nX-Evil: 1", "a\r\n\r\nGET / HTTP/1.0", "a\0b\x7f"]
)
def test_no_value_can_add_a_header_line(value: str) -> None:
    head = request_head(TARGET, {"ice-name": value, "ice-genre": "g"})
    _, fields = parse_head(head)
    assert head.count(b"\r\n\r\n") == 1 and head.count(b"\n") == 9
    assert "X-Evil" not in fields and "\n" not in fields["ice-name"]
    assert fields["ice-genre"] == "g"


def test_a_mount_is_sent_as_a_path_and_our_headers_cannot_be_overridden() -> None:
    target = IcecastTarget("h", 1, "/a b/ü%41\r\n", password="pw")
    line, fields = parse_head(request_head(target, {"authorization": "Basic Zm9v", "ice-x": "1"}))
    assert line == "PUT /a%20b/%C3%BC%41 HTTP/1.1"
    assert base64.b64decode(fields["Authorization"][6:]) == b"source:pw"
    assert "authorization" not in fields and fields["ice-x"] == "1"


def test_a_header_name_that_is_no_token_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="header name"):
        request_head(TARGET, {"ice name": "x"})
    with pytest.raises(ValueError, match="header name"):
        request_head(TARGET, {"ice-x\r\nEvil": "x"})


# --- AnswerReader ------------------------------------------------------------------------


Key = tuple[str, str, str, int | None] | None


def key(answer: Answer | None) -> Key:
    """What tells answers apart (exceptions do not compare equal)."""
    if answer is None:
        return None
    if isinstance(answer, Accepted):
        return ("accepted", "", "", answer.status)
    error = answer.error
    # Garbage is quoted as far as it had come when it was told: that depends
    # on the split, the rest does not.
    text = str(error).partition(" answered b")[0]
    return ("refused", type(error).__name__, text, error.status)


def read_whole(data: bytes, *, close: bool = True) -> Answer | None:
    reader = AnswerReader(TARGET)
    answer = reader.feed(data)
    if answer is None and close:
        answer = reader.eof()
    return answer


def read_in_pieces(pieces: list[bytes], *, close: bool = True) -> Answer | None:
    """Feed pieces; the answer must come exactly once."""
    reader = AnswerReader(TARGET)
    answers = [a for piece in pieces if (a := reader.feed(piece)) is not None]
    assert len(answers) <= 1, answers
    if not answers and close:
        answers.append(reader.eof())
    elif answers:
        assert key(reader.eof()) == key(answers[0])  # eof after the answer changes nothing
    return answers[0] if answers else None


def every_split(data: bytes, *, close: bool = True) -> Answer | None:
    """The answer, checked to be the same for data whole, byte by byte, and
    split in two at every position."""
    whole = read_whole(data, close=close)
    assert key(read_in_pieces([data[i : i + 1] for i in range(len(data))], close=close)) == key(
        whole
    )
    for cut in range(len(data) + 1):
        assert key(read_in_pieces([data[:cut], data[cut:]], close=close)) == key(whole), cut
    return whole


def error_of(answer: Answer | None) -> IcecastError:
    assert isinstance(answer, Refused), answer
    assert SECRET not in str(answer.error)
    return answer.error


def test_200_is_accepted_as_soon_as_its_head_ends_and_what_follows_is_ignored() -> None:
    assert every_split(OK, close=False) == Accepted(200)
    assert every_split(OK + b"\xff\x00 trailing junk that is not ours", close=False) == Accepted()
    reader = AnswerReader(TARGET)
    assert reader.feed(OK[:-1]) is None
    assert reader.feed(OK[-1:] + b"more") == Accepted()
    assert reader.feed(b"HTTP/1.0 401 x\r\n\r\n") is None  # after the answer: not read
    assert reader.answer == Accepted()


def test_metaint_announces_titles_inside_the_stream() -> None:
    _, fields = parse_head(request_head(TARGET, {"Icy-MetaInt": "5"}, metaint=1024))
    assert fields["Icy-MetaInt"] == "1024"  # ours: the station's headers cannot change it
    _, fields = parse_head(request_head(TARGET, {}))
    assert "Icy-MetaInt" not in fields


CONTINUE = b"HTTP/1.1 100 Continue\r\nServer: Icecast 2.5.0\r\nContent-Length: 0\r\n\r\n"


def test_100_continue_is_go_and_a_200_after_it_changes_nothing() -> None:
    assert every_split(CONTINUE, close=False) == Accepted(100)
    reader = AnswerReader(TARGET)
    assert reader.feed(CONTINUE) == Accepted(100)
    assert reader.later(b"HTTP/1.0 200 OK\r\n") is None
    assert reader.later(b"\r\n") is None
    assert reader.later(b"HTTP/1.0 403 Forbidden\r\n\r\nMountpoint in use") is None  # after a 200
    assert reader.ended() is None


def test_100_and_200_together_as_icecast_kh_sends_them() -> None:
    reader = AnswerReader(TARGET)
    assert reader.feed(CONTINUE + OK) == Accepted(100)
    assert reader.later(b"") is None and reader.ended() is None


def test_a_refusal_after_100_is_told_once_as_it_comes_or_at_the_close() -> None:
    refusal = b"HTTP/1.0 403 Forbidden\r\nContent-Length: 17\r\n\r\nMountpoint in use"
    reader = AnswerReader(TARGET)
    assert reader.feed(CONTINUE) == Accepted(100)
    error = reader.later(refusal)
    assert isinstance(error, MountInUseError) and error.status == 403
    assert reader.later(b"more") is None  # told once
    together = AnswerReader(TARGET)
    assert together.feed(CONTINUE + refusal) == Accepted(100)
    assert isinstance(together.later(b""), MountInUseError)
    cut = AnswerReader(TARGET)
    assert cut.feed(CONTINUE + b"HTTP/1.0 500 Internal Server Error\r\n\r\noops") == Accepted(100)
    assert cut.later(b"") is None  # its reason may still be coming
    error = cut.ended()
    assert error is not None and error.status == 500 and SECRET not in str(error)
    lost = AnswerReader(TARGET)
    assert lost.feed(CONTINUE) == Accepted(100)
    assert lost.ended() is None  # nothing after the 100: a lost connection, not a refusal


def test_426_says_the_port_wants_tls() -> None:
    error = error_of(every_split(b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.0\r\n\r\n"))
    assert error.status == 426
    assert str(error) == (
        "radio.example:8443 wants TLS on this port (426 Upgrade Required): use an https:// URL"
    )


def test_another_interim_status_is_not_icecast() -> None:
    assert isinstance(error_of(every_split(b"HTTP/1.1 101 Switching\r\n\r\n")), ProtocolError)


def test_401_is_an_authentication_error_naming_user_and_mount() -> None:
    error = error_of(every_split(AUTH, close=False))
    assert type(error) is AuthenticationError and error.status == 401
    assert str(error) == "authentication failed for dj user on /live.mp3"


def test_403_mountpoint_in_use_is_a_mount_in_use_error() -> None:
    # With a Content-Length the reader needs no close; without one, the close ends it.
    error = error_of(every_split(IN_USE, close=False))
    assert type(error) is MountInUseError and error.status == 403
    assert str(error) == "mountpoint /live.mp3 is in use"
    plain = IN_USE.replace(b"Content-Length: 18\r\n", b"")
    assert read_whole(plain, close=False) is None  # the reason may still be coming
    assert type(error_of(every_split(plain))) is MountInUseError


def test_another_403_carries_icecasts_reason() -> None:
    error = error_of(every_split(NO_TYPE))
    assert type(error) is IcecastError and error.status == 403
    assert str(error) == "Icecast refused the source on /live.mp3: No Content-type given"


def test_any_other_status_carries_the_message_of_an_xml_answer() -> None:
    error = error_of(every_split(XML))
    assert type(error) is IcecastError and error.status == 500
    assert str(error) == "Icecast answered 500 Too many sources connected for /live.mp3"


def test_a_long_refusal_is_decided_without_waiting_for_the_close() -> None:
    answer = b"HTTP/1.0 500 Internal Server Error\r\n\r\n" + b"x" * (BODY_LIMIT + 10)
    error = error_of(read_whole(answer, close=False))
    # No short line: the phrase.
    assert str(error) == "Icecast answered 500 Internal Server Error for /live.mp3"


# What web servers answer a source PUT (nginx's page, Python's http.server).
NGINX_404 = (
    b"HTTP/1.1 404 Not Found\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 153\r\nConnection: close\r\n\r\n"
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
PYTHON_501 = (
    b"HTTP/1.0 501 Unsupported method ('PUT')\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n"
    b"Content-Type: text/html;charset=utf-8\r\nContent-Length: 38\r\n\r\n"
    b"<p>Message: Unsupported method ('PUT')"
)
PAGE_200 = (
    b"HTTP/1.1 200 OK\r\nServer: Apache\r\nContent-Type: text/html\r\n"
    b"Content-Length: 20\r\n\r\n<html>welcome</html>"
)
REDIRECT = b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://radio.example/\r\n\r\n"


#: Answers only Icecast gives, whatever their shape: never "not Icecast".
ICECASTS = [
    OK,  # 2.4.4's bare 200
    b"HTTP/1.0 200 OK\r\nServer: Icecast 2.4.0-kh22\r\nContent-Length: 0\r\n\r\n",
    # 2.5's report for a mount it will not take, with its Server header.
    b"HTTP/1.1 404 Not Found\r\nServer: Icecast 2.5.0\r\nContent-Type: text/xml\r\n\r\n"
    b"<report><incident><state><text>Mount unavailable</text></state></incident></report>",
    b"HTTP/1.0 404 Not Found\r\nContent-Type: text/html\r\n\r\n<b>Icecast: no</b>",
    IN_USE,
    NO_TYPE,
    XML,
    # A proxy in front of an Icecast that is down: retried, as before.
    b"HTTP/1.0 503 Service Unavailable\r\nServer: nginx\r\n\r\n<h1>502 Bad Gateway</h1>",
]


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (NGINX_404, "radio.example:8443 (nginx/1.22.1) answered 404 Not Found to the source"),
        (PYTHON_501, "(SimpleHTTP/0.6 Python/3.11.2) answered 501 Unsupported method ('PUT') to"),
        (PAGE_200, "radio.example:8443 (Apache) answered 200 OK with a page to the source"),
        (REDIRECT, "radio.example:8443 answered 301 Moved Permanently to the source on"),
    ],
)
def test_a_web_servers_answer_is_not_icecast_and_icecasts_own_are(answer: bytes, said: str) -> None:
    error = error_of(every_split(answer))
    assert type(error) is WrongServerError and WrongServerError.exit_status == 2
    assert str(error).startswith("not an Icecast server: "), error
    assert said in str(error), error
    assert str(error).endswith("/live.mp3"), error
    for icecasts in ICECASTS:
        told = every_split(icecasts, close=icecasts is not OK and b"kh22" not in icecasts)
        assert told is not None, icecasts
        assert not isinstance(told, Refused) or type(told.error) is not WrongServerError, told


def test_a_close_before_any_answer() -> None:
    reader = AnswerReader(TARGET)
    assert not reader.started
    error = error_of(reader.eof())
    assert error.status is None
    assert str(error) == "radio.example:8443 closed the connection before answering"


@pytest.mark.parametrize("partial", [b"H", b"HTTP/1.", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.0 200"])
def test_a_close_in_the_middle_of_the_answer(partial: bytes) -> None:
    error = error_of(every_split(partial))
    assert "closed the connection in the middle of its answer" in str(error)


def test_a_refusal_cut_short_still_tells_its_kind() -> None:
    error = error_of(every_split(b"HTTP/1.0 401 Authentication Required\r\nWWW-Auth"))
    assert type(error) is AuthenticationError


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00",  # a TLS server's bytes read as plain text
        b"<html><body>hello</body></html>",
        b"HTTP/1.0 20x OK\r\n\r\n",
        b"HTTP/1.0 2000 OK\r\n\r\n",
        b"HTTP/1\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
)
def test_garbage_is_told_within_a_few_bytes(garbage: bytes) -> None:
    error = error_of(every_split(garbage, close=False))
    assert type(error) is WrongServerError  # a config error: not retried
    assert str(error).startswith("not an Icecast server: radio.example:8443 answered "), error
    # It is told from the first bytes that cannot be a status line on.
    first_wrong = next(
        i for i in range(1, len(garbage) + 1) if read_whole(garbage[:i], close=False) is not None
    )
    assert first_wrong <= 13


def test_a_head_that_never_ends_is_garbage_after_4_kib() -> None:
    endless = b"HTTP/1.0 200 OK\r\n" + b"X-Pad: " + b"a" * HEAD_LIMIT
    reader = AnswerReader(TARGET)
    assert reader.feed(endless[: HEAD_LIMIT - 1]) is None
    error = error_of(reader.feed(endless[HEAD_LIMIT - 1 :]))
    assert type(error) is WrongServerError
    assert str(error).startswith("not an Icecast server:")
    assert "without an end of its head" in str(error)


def test_bare_newlines_end_a_head_too() -> None:
    assert every_split(b"HTTP/1.1 200 OK\nServer: x\n\n", close=False) == Accepted()


ANSWERS = [OK, AUTH, IN_USE, NO_TYPE, XML, b"SSH-2.0-x\r\n", b"HTTP/1.0 200", b""]


@given(
    answer=st.sampled_from(ANSWERS),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_split_reads_the_same_answer(answer: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(answer)) for c in cuts})
    pieces = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    assert key(read_in_pieces(pieces)) == key(read_whole(answer))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_an_answer_and_never_raise(data: bytes) -> None:
    answer = read_whole(data)
    assert isinstance(answer, Accepted | Refused)
    if isinstance(answer, Refused):
        assert isinstance(answer.error, IcecastError)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"Mountpoint in use\r\n", "Mountpoint in use"),
        (b"\r\n  Too\tmany \x00 sources  \r\nsecond line", "Too many sources"),
        (b"<iceresponse><message>\nNo such mount\n</message></iceresponse>", "No such mount"),
        (
            b"<html><head><title>Error 403</title></head>"
            b"<body><b>403 - Forbidden</b></body></html>",
            "403 - Forbidden",
        ),
        (b"", "Forbidden"),
        (b"y" * 300, "Forbidden"),
    ],
)
def test_icecast_reason(body: bytes, reason: str) -> None:
    assert icecast_reason(body, "Forbidden", 403) == reason
    assert icecast_reason(b"", "", 418) == "HTTP 418"
