"""A DJ's connection to a station's live input, sans-IO.

Fed the bytes a DJ's encoder sends, :class:`HarborConnection` returns events:
the request head (``SOURCE``/``PUT`` with its mount, Basic credentials and
``ice-*`` headers; a title update by ``GET /admin/metadata`` or SHOUTcast's
``/admin.cgi``; a SHOUTcast v1 password line), then the audio body, de-chunked
when the encoder chunks it (curl). The answers Icecast gives are built by the
functions at the bottom; what to answer is the engine's choice.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

#: A request head larger than this is refused: no encoder sends one.
MAX_HEAD: Final = 8192
#: A chunk-size line (and trailer line) longer than this is not a chunked body.
MAX_LINE: Final = 256
#: What Icecast calls its realm; libshout only needs the header to be there.
REALM: Final = "Icecast2 Server"

_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/(1\.[01])$")


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """A DJ asks to go live: ``SOURCE``/``PUT`` (or ``SHOUTCAST``, the v1
    password line: no mount, no user)."""

    method: str
    mount: str | None
    user: str | None
    password: str | None = dataclasses.field(repr=False)
    headers: dict[str, str]
    expect_continue: bool = False

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";")[0].strip().lower() if value else None


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """A title update: ``song`` for ``mount`` (None: not said, SHOUTcast)."""

    mount: str | None
    song: str | None
    mode: str | None
    user: str | None
    password: str | None = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class BodyEnd:
    """The body is over (the last chunk, or Content-Length reached)."""


@dataclass(frozen=True, slots=True)
class BadRequest:
    """Not something a DJ's encoder sends: answer ``status`` and hang up."""

    status: int
    reason: str


Event = SourceRequest | MetadataRequest | Audio | BodyEnd | BadRequest


class HarborConnection:
    """One DJ connection's bytes in, events out. After BadRequest, a
    MetadataRequest or BodyEnd, later bytes are ignored."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "head"  # head, icy (SHOUTcast headers), body, chunk-*, done
        self._left = 0  # bytes of the current chunk (or Content-Length body) to come
        self._sized = False  # the body has a Content-Length

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> list[Event]:
        if self._state == "done":
            return []
        self._buf += data
        out: list[Event] = []
        while self._state != "done":
            before = (self._state, len(self._buf))
            self._step(out)
            if (self._state, len(self._buf)) == before:
                break
        return out

    def _step(self, out: list[Event]) -> None:
        state = self._state
        if state == "head":
            self._head(out)
        elif state == "icy":
            end = _head_end(self._buf)
            if end is None:
                if len(self._buf) > MAX_HEAD:
                    self._bad(out, 400, "SHOUTcast headers too long")
                return
            del self._buf[:end]
            self._state = "body"
        elif state == "body":
            if not self._buf:
                return
            if self._sized:
                take = bytes(self._buf[: self._left])
                self._left -= len(take)
            else:
                take = bytes(self._buf)
            del self._buf[: len(take)]
            out.append(Audio(take))
            if self._sized and self._left == 0:
                self._finish(out)
        elif state == "chunk-size":
            line = self._line(out)
            if line is None:
                return
            size_text = line.split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self._bad(out, 400, "bad chunk size in the body")
                return
            if size_text.startswith((b"-", b"+")) or size < 0:
                self._bad(out, 400, "bad chunk size in the body")
                return
            self._left = size
            self._state = "chunk-data" if size else "trailer"
        elif state == "chunk-data":
            take = bytes(self._buf[: self._left])
            if not take:
                return
            del self._buf[: len(take)]
            self._left -= len(take)
            out.append(Audio(take))
            if self._left == 0:
                self._state = "chunk-end"
        elif state == "chunk-end":
            line = self._line(out)
            if line is None:
                return
            if line:
                self._bad(out, 400, "chunk not followed by CRLF")
                return
            self._state = "chunk-size"
        elif state == "trailer":
            line = self._line(out)
            if line is None:
                return
            if not line:
                self._finish(out)

    def _line(self, out: list[Event]) -> bytes | None:
        """The next line without its CRLF (or LF), or None for more data (or
        a line too long for a chunked body: then BadRequest)."""
        end = self._buf.find(b"\n")
        if end < 0 or end > MAX_LINE:
            if end > MAX_LINE or len(self._buf) > MAX_LINE:
                self._bad(out, 400, "chunked body line too long")
            return None
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        return line

    def _head(self, out: list[Event]) -> None:
        first = self._buf.find(b"\n")
        if first < 0:
            if len(self._buf) > MAX_HEAD:
                self._bad(out, 400, "request line too long")
            return
        line = bytes(self._buf[:first]).rstrip(b"\r")
        match = _REQUEST_LINE.match(line)
        if match is None:
            if b" HTTP/" in line or not line:
                self._bad(out, 400, "not an HTTP request")
                return
            # SHOUTcast v1: the password alone on the first line; icy-* headers
            # follow once the server has said OK2.
            del self._buf[: first + 1]
            secret = line.decode("utf-8", "replace")
            out.append(SourceRequest("SHOUTCAST", None, None, secret, {}))
            self._state = "icy"
            return
        end = _head_end(self._buf)
        if end is None:
            if len(self._buf) > MAX_HEAD:
                self._bad(out, 431, "request head too long")
            return
        if end > MAX_HEAD:
            self._bad(out, 431, "request head too long")
            return
        head = bytes(self._buf[:end])
        del self._buf[:end]
        method = match.group(1).decode()
        target = match.group(2).decode("latin-1")
        headers = _headers(head.split(b"\n")[1:])
        if headers is None:
            self._bad(out, 400, "malformed header line")
            return
        user, password = _basic(headers.get("authorization"))
        url = urlsplit(target)
        path = unquote(url.path, errors="replace")
        if method == "GET":
            query = parse_qs(url.query, keep_blank_values=True, errors="replace")

            def arg(key: str) -> str | None:
                values = query.get(key)
                return values[-1] if values else None

            if path == "/admin/metadata":
                out.append(MetadataRequest(arg("mount"), arg("song"), arg("mode"), user, password))
            elif path == "/admin.cgi":
                # SHOUTcast's: the password in the query, no user.
                pw = arg("pass")
                out.append(
                    MetadataRequest(
                        arg("mount"), arg("song"), arg("mode"), None if pw else user, pw or password
                    )
                )
            else:
                self._bad(out, 404, f"no such page: {path[:100]}")
                return
            self._state = "done"
            self._buf.clear()
            return
        if method not in ("SOURCE", "PUT"):
            self._bad(out, 405, f"method {method} not allowed")
            return
        expect = headers.get("expect", "").lower() == "100-continue"
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        out.append(SourceRequest(method, path, user, password, headers, expect))
        if chunked:
            self._state = "chunk-size"
        else:
            self._state = "body"
            if length is not None:
                try:
                    self._left = int(length)
                except ValueError:
                    self._bad(out, 400, "bad Content-Length")
                    return
                self._sized = True
                if self._left <= 0:
                    self._finish(out)

    def _bad(self, out: list[Event], status: int, reason: str) -> None:
        out.append(BadRequest(status, reason))
        self._state = "done"
        self._buf.clear()

    def _finish(self, out: list[Event]) -> None:
        out.append(BodyEnd())
        self._state = "done"
        self._buf.clear()


def _head_end(buf: bytearray) -> int | None:
    """Where the head ends (past its blank line), CRLF or bare LF."""
    ends = [i + n for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else None


def _headers(lines: list[bytes]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None
        out[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return out


def _basic(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


# -- credentials ----------------------------------------------------------------

#: The user name an Icecast client without a user field sends (libshout's default).
DEFAULT_USER: Final = "source"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def unpack(user: str | None, password: str) -> tuple[str, str] | None:
    """A DJ's ``user:password`` (or ``user,password``) packed into the password,
    as SHOUTcast v1 encoders (no user field) and clients that send only
    ``source`` as the user do; None if not packed or the user is named."""
    if user not in (None, "", DEFAULT_USER):
        return None
    cut = min((i for i in (password.find(":"), password.find(",")) if i > 0), default=-1)
    if cut <= 0:
        return None
    return password[:cut], password[cut + 1 :]


def claimed_user(user: str | None, password: str | None) -> str:
    """Who these credentials say they are (the throttle's key with the
    address): the user named, or packed into the password; "" for none."""
    packed = unpack(user, password) if password is not None else None
    if packed is not None:
        return packed[0]
    return "" if user in (None, DEFAULT_USER) else str(user)


def check_credentials(
    users: Mapping[str, str], user: str | None, password: str | None
) -> str | None:
    """The user these credentials are right for, or None. ``user`` None (or
    ``source``) is any user with that password, or the user packed into it.

    Constant time whatever the lengths: SHA-256 digests are compared, and every
    user's name and password is compared for both readings of the credentials
    (as sent, and packed), so timing tells neither a user name nor a length.
    Does not raise."""
    if password is None:
        return None
    packed = unpack(user, password)
    named = None if user in (None, "", DEFAULT_USER) else user
    # As sent (``named`` None: any user with this password), and packed; when
    # not packed, a reading that matches nothing, for the same work.
    readings = [(named, password, True), (*packed, True) if packed else ("", "", False)]
    digests = [(who is None, _digest(who or ""), _digest(given), ok) for who, given, ok in readings]
    found = None
    for name, secret in users.items():
        name_digest, secret_digest = _digest(name), _digest(secret)
        for anyone, who_digest, given_digest, valid in digests:
            same_secret = hmac.compare_digest(given_digest, secret_digest)
            same_name = hmac.compare_digest(who_digest, name_digest)
            if valid and same_secret and (anyone or same_name):
                found = found or name
    return found


# -- answers ------------------------------------------------------------------

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Authentication Required",
    403: "Forbidden",
    404: "File Not Found",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}

#: What Icecast answers a source it takes (without Expect: 100-continue).
SOURCE_OK: Final = b"HTTP/1.0 200 OK\r\n\r\n"
#: ... and one that asked to hear first (ffmpeg, curl): only this, like Icecast.
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
#: What a SHOUTcast v1 server answers a right password.
SHOUTCAST_OK: Final = b"OK2\r\nicy-caps:11\r\n\r\n"
SHOUTCAST_BAD: Final = b"invalid password\r\n"
_METADATA_BODY: Final = (
    b'<?xml version="1.0"?>\n<iceresponse><message>Metadata update successful</message>'
    b"<return>1</return></iceresponse>\n"
)
METADATA_OK: Final = (
    b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n"
    + f"Content-Length: {len(_METADATA_BODY)}\r\n\r\n".encode()
    + _METADATA_BODY
)


def refusal(status: int, line: str) -> bytes:
    """An error answer with ``line`` (one sentence) as its text; a 401 asks for
    Basic credentials, so libshout sends them next."""
    body = (line.replace("\r", " ").replace("\n", " ") + "\n").encode()
    head = [f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}"]
    if status == 401:
        head.append(f'WWW-Authenticate: Basic realm="{REALM}"')
    head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    head += ["Connection: close", "", ""]
    return "\r\n".join(head).encode() + body
