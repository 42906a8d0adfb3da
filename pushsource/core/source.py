"""Icecast's source protocol, sans-IO: the ``PUT`` head we send and the answer
we read back, while the body is still going out.

A source is ``PUT /mount HTTP/1.1`` with Basic auth, a ``Content-Type`` and
``Expect: 100-continue``, then the body raw (no Content-Length, no chunking:
Icecast 2.4.4 never decodes chunks, icecast-kh ends a chunked source). The
``Expect`` is what makes every server answer at once: without it Icecast 2.5
sends no status line at all until the source ends. So a ``100 Continue`` or a
``200`` means "go" (Icecast 2.4.4 sends ``100`` then ``200``, icecast-kh both
together after about 0.22 s, 2.5 its ``200`` only once the source has ended).
A refusal is a status line, a few headers and a one-line reason (``401`` "You
need to authenticate", ``403`` "Mountpoint in use"), then the server closes.
This module turns bytes into those answers; sockets, TLS and timers live in
:mod:`pushsource.engine.source`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from pushsource.core.target import USER_AGENT, IcecastTarget, netloc
from pushsource.errors import AuthenticationError, IcecastError, MountInUseError, WrongServerError

#: An answer whose head has not ended after this many bytes is not Icecast's.
HEAD_LIMIT: Final = 4096
#: Enough of a refusal's body to find its reason; Icecast's are one line.
BODY_LIMIT: Final = 1024
#: Characters a header value may not carry: a CR or LF would start a new
#: header line (or end the head); other controls have no place in one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: What a mount path keeps as it is: RFC 3986 path characters and existing %XX.
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
#: A status line, as far as it has come: "HTTP/" digit "." digit " " 3 digits.
_STATUS_SHAPE: Final = b"HTTP/9.9 999"
_HEAD_END = re.compile(rb"\r?\n\r?\n")
#: Answers no Icecast gives a source PUT (a redirect, "no such page", "no
#: such method"): from a web server, unless the answer names Icecast (2.5
#: answers 404 "Mount unavailable", in its own report).
_NOT_FOR_SOURCES: Final = frozenset({301, 302, 303, 307, 308, 404, 405, 501})


def request_head(
    target: IcecastTarget, headers: Mapping[str, str], *, metaint: int | None = None
) -> bytes:
    """The head of the source ``PUT`` for target, with ``headers`` (the
    station's ``ice-*`` ones) after ours; ``metaint``: the body carries ICY
    title blocks every so many audio bytes (:mod:`pushsource.core.icy`).
    Control characters in values become spaces, so no value can add a header
    line; values go as UTF-8. Raises ValueError for a header name that is not
    an HTTP token (a programming error: names come from code, not from users)."""
    credentials = f"{target.user}:{target.password}".encode()
    fields: dict[str, str] = {
        "Host": netloc(_ascii_host(target.host), target.port),
        "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
        "User-Agent": USER_AGENT,
        "Content-Type": "audio/mpeg",
        "Expect": "100-continue",
    }
    if metaint is not None:
        fields["Icy-MetaInt"] = str(metaint)
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ValueError(f"not an HTTP header name: {name!r}")
        if name.lower() in {n.lower() for n in fields}:
            continue  # ours cannot be overridden (the auth above all)
        fields[name] = value
    path = quote(_CONTROL.sub("", target.mount), safe=_PATH_SAFE)
    lines = [f"PUT {path} HTTP/1.1"]
    lines += [f"{name}: {_CONTROL.sub(' ', value).strip()}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _ascii_host(host: str) -> str:
    return host if host.isascii() else host.encode("idna").decode("ascii")


@dataclass(frozen=True)
class Accepted:
    """The server took the source: ``then`` goes out, then the body."""

    status: int = 200
    then: bytes = b""  # what the protocol sends after the answer (SHOUTcast's icy-* lines)


@dataclass(frozen=True)
class Refused:
    """No source on this connection: a refusal, garbage, or a close before
    any answer, told by ``error``."""

    error: IcecastError


Answer = Accepted | Refused


class AnswerBuffer:
    """What every protocol's answer reader shares: the bytes of the answer
    kept (up to HEAD_LIMIT + BODY_LIMIT), and the answer decided once, by the
    subclass's ``_decide``. :meth:`feed` returns the answer once it is known
    (None before, and after); :meth:`eof` says no more is coming (the server
    closed, or the caller stops waiting) and always returns the answer."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._answer: Answer | None = None

    @property
    def answer(self) -> Answer | None:
        """The answer, once known."""
        return self._answer

    @property
    def started(self) -> bool:
        """Whether any byte of an answer has come."""
        return bool(self._data)

    def feed(self, data: bytes) -> Answer | None:
        if self._answer is not None:
            return None
        if len(self._data) < HEAD_LIMIT + BODY_LIMIT:
            self._data += data[: HEAD_LIMIT + BODY_LIMIT - len(self._data)]
        self._answer = self._decide(eof=False)
        return self._answer

    def eof(self) -> Answer:
        if self._answer is None:
            self._answer = self._decide(eof=True)
        assert self._answer is not None
        return self._answer

    def _decide(self, *, eof: bool) -> Answer | None:
        raise NotImplementedError


class AnswerReader(AnswerBuffer):
    """Reads Icecast's answer to the source ``PUT``, fed what the server sends
    (what Icecast sends after its ``200`` is not ours to read). Messages name
    the user and mount, never the password. Does not raise.
    """

    def __init__(self, target: IcecastTarget) -> None:
        super().__init__()
        self._target = target
        self._where = netloc(target.host, target.port)
        #: After a ``100 Continue``: the final answer, read while the body goes.
        self._final: AnswerReader | None = None
        self._told = False  # later() has returned the final refusal

    def later(self, data: bytes) -> IcecastError | None:
        """What the server sends while the body goes: after a ``100``, its
        final answer. A ``200`` changes nothing (Icecast 2.4.4 sends one at
        once, 2.5 when the source has ended); a refusal is the error to fail
        with. None before an answer is whole, and after a ``200``."""
        final = self._final
        if final is None or self._told:
            return None
        if final.answer is None:
            final.feed(data)
        if isinstance(final.answer, Refused):
            self._told = True
            return final.answer.error
        return None

    def ended(self) -> IcecastError | None:
        """The server closed while the body went: the refusal it sent after
        its ``100``, if that is what it was (else None: the connection was lost)."""
        final = self._final
        if final is None or not final.started or final.answer is not None:
            return None
        answer = final.eof()
        return answer.error if isinstance(answer, Refused) and answer.error.status else None

    def _decide(self, *, eof: bool) -> Answer | None:
        data = bytes(self._data)
        shape = len(_STATUS_SHAPE)
        if not _looks_like_status(data[:shape]):
            return self._garbage(f"{self._where} answered {data[:40]!r}")
        if len(data) > shape and data[shape : shape + 1] not in (b" ", b"\r", b"\n"):
            return self._garbage(f"{self._where} answered {data[:40]!r}")
        end = _HEAD_END.search(data)
        if end is None:
            if len(data) > HEAD_LIMIT:
                return self._garbage(
                    f"{self._where} sent {HEAD_LIMIT} bytes of answer without an end of its head"
                )
            if not eof:
                return None
            if not data:
                return self._refused(f"{self._where} closed the connection before answering")
            if len(data) < shape:
                return self._refused(
                    f"{self._where} closed the connection in the middle of its answer ({data!r})"
                )
        head = data[: end.start()] if end is not None else data
        body = data[end.end() :] if end is not None else b""
        lines = head.decode("latin-1").splitlines()
        status = int(lines[0][9:12])
        phrase = lines[0][13:].strip()
        mount = self._target.mount
        if 200 <= status < 300 or status == 100:
            if end is None:  # eof: a 200 cut short is no stream to send to
                return self._refused(
                    f"{self._where} closed the connection in the middle of its answer"
                )
            if status != 100 and _a_page(lines[1:]) and not _names_icecast(head):
                # Icecast's 200 is a bare head; a page is a web server's answer.
                what = f"{status} {_printable(phrase)[:40]} with a page"
                return self._garbage(
                    f"{self._answered(lines)} {what} to the source on {mount}", status
                )
            if status == 100:  # the final answer follows, read by later()
                self._final = AnswerReader(self._target)
                if body:
                    self._final.feed(body)
            return Accepted(status)
        if 100 < status < 200:
            return self._garbage(f"{self._where} answered {lines[0][:40]!r}")
        if status == 426:
            return Refused(
                IcecastError(
                    f"{self._where} wants TLS on this port (426 Upgrade Required): "
                    "use an https:// URL",
                    status,
                )
            )
        if status == 401:
            return Refused(
                AuthenticationError(
                    f"authentication failed for {self._target.user} user on {mount}", status
                )
            )
        length = _content_length(lines[1:])
        if not eof and len(body) < min(length if length is not None else BODY_LIMIT, BODY_LIMIT):
            return None  # the reason is still coming (Icecast closes after it)
        reason = icecast_reason(body, phrase, status)
        if status in _NOT_FOR_SOURCES and not _names_icecast(head + body):
            # The status line's phrase: a web server's page says less ("Error response").
            said = f"{status} {_printable(phrase)[:60]}".rstrip()
            what = f"{self._answered(lines)} {said} to the source on {mount}"
            return self._garbage(what, status)
        if status == 403 and "in use" in body.decode("utf-8", "replace").lower() + reason.lower():
            return Refused(MountInUseError(f"mountpoint {mount} is in use", status))
        if status == 403:
            return Refused(IcecastError(f"Icecast refused the source on {mount}: {reason}", status))
        return Refused(IcecastError(f"Icecast answered {status} {reason} for {mount}", status))

    def _answered(self, lines: list[str]) -> str:
        """ "host:port answered", with what the server calls itself, if it does."""
        shown = _printable(_field(lines[1:], "server")[:60])
        return f"{self._where} ({shown}) answered" if shown else f"{self._where} answered"

    def _garbage(self, what: str, status: int | None = None) -> Refused:
        # Not retried: the URL names the wrong server (a config error, exit 2).
        return Refused(WrongServerError(f"not an Icecast server: {what}", status))

    def _refused(self, message: str) -> Refused:
        return Refused(IcecastError(message))


def _looks_like_status(start: bytes) -> bool:
    """Whether ``start`` can begin an HTTP/1.x status line."""
    for got, want in zip(start, _STATUS_SHAPE, strict=False):
        if want == ord("9"):
            if not 0x30 <= got <= 0x39:
                return False
        elif got != want:
            return False
    return True


def _printable(text: str) -> str:
    """``text`` on one line, control characters and runs of space made one space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _field(lines: list[str], wanted: str) -> str:
    """The value of header ``wanted`` (lower case) in ``lines``, or ""."""
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == wanted:
            return value.strip()
    return ""


def _content_length(lines: list[str]) -> int | None:
    try:
        return max(0, int(_field(lines, "content-length")))
    except ValueError:
        return None


def _a_page(lines: list[str]) -> bool:
    """Whether a head announces a body (a web page), which Icecast's 200 never does."""
    length = _content_length(lines)
    kind = _field(lines, "content-type").lower()
    return bool(length) or kind.startswith(("text/html", "application/xhtml"))


def _names_icecast(data: bytes) -> bool:
    """Whether an answer calls itself Icecast (its Server header, its realm, its report)."""
    return b"icecast" in data.lower()


def icecast_reason(body: bytes, phrase: str, status: int) -> str:
    """Icecast's short reason from an answer's body: a one-line text
    ("Mountpoint in use"), the ``<message>`` of an XML answer, or the text of
    an HTML error page; else the status line's phrase. Does not raise."""
    text = body.decode("utf-8", "replace")
    found = re.search(r"<message>(.*?)</message>", text, re.S)
    if found:
        text = found.group(1)
    else:
        text = re.sub(r"<head>.*?</head>", " ", text, flags=re.S | re.I)
        text = re.sub(r"<[^>]*>", " ", text)
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = " ".join("".join(c if c.isprintable() else " " for c in line).split())
    if line and len(line) <= 200:
        return line
    phrase = " ".join("".join(c if c.isprintable() else " " for c in phrase).split())
    return phrase or f"HTTP {status}"
