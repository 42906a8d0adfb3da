"""SHOUTcast v1's source protocol, sans-IO: the password line we open with,
the server's answer, the ``icy-*`` lines that follow it, and the admin.cgi
query that sets a title.

A SHOUTcast v1 source connects to the listener port + 1 and sends its
password alone on a line (DNAS v2: ``password:#streamid``). A right one is
answered ``OK2`` and header lines up to an empty one (DNAS 1.9 and Icecast:
``OK2\\r\\nicy-caps:11\\r\\n\\r\\n``); the source then sends its ``icy-*``
lines, an empty line, and the audio. DNAS answers a wrong password
``invalid password``; Icecast 2.4 closes the connection without a word, and
answers an HTTP ``403`` only after the ``icy-*`` lines when its mount is in
use. There are no titles in the stream: they go by ``GET /admin.cgi`` on the
listener port, the password in the query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from pushsource.core.source import (
    BODY_LIMIT,
    HEAD_LIMIT,
    Accepted,
    Answer,
    AnswerBuffer,
    AnswerReader,
    Refused,
    icecast_reason,
)
from pushsource.core.target import USER_AGENT, IcecastTarget, netloc
from pushsource.errors import (
    AuthenticationError,
    IcecastError,
    MountInUseError,
    ProtocolError,
    WrongServerError,
)

#: DNAS v1 answers admin.cgi with its stream, not a title update, unless the
#: client says it is a browser (libshout fakes one too).
ADMIN_USER_AGENT: Final = f"Mozilla/5.0 (compatible; {USER_AGENT})"
ADMIN_PATH: Final = "/admin.cgi"
#: Seconds between the icy-* lines and the first audio. Icecast 2.4 drops
#: whatever audio it reads in the same read as those lines (up to 4 KiB); it
#: polls a waiting source every 5 ms, so by then it has read them alone.
SETTLE: Final = 0.2
#: A first line longer than this is not a SHOUTcast server's answer.
LINE_LIMIT: Final = 1024
#: The station's ``ice-*`` headers and their SHOUTcast v1 names.
_ICY_NAMES: Final = {
    "ice-name": "icy-name",
    "ice-genre": "icy-genre",
    "ice-url": "icy-url",
    "ice-public": "icy-pub",
    "ice-bitrate": "icy-br",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
#: "OK2" (DNAS 1.9, Icecast); older servers said "OK".
_OK = re.compile(rb"OK\d?\Z", re.I)
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:")
_HTTP: Final = b"HTTP/"


def opening(target: IcecastTarget) -> bytes:
    """What the source sends first: its password on a line, with the stream
    id for DNAS v2."""
    secret = target.password if target.sid is None else f"{target.password}:#{target.sid}"
    return secret.encode("utf-8") + b"\r\n"


def icy_lines(headers: Mapping[str, str]) -> bytes:
    """The ``icy-*`` lines sent after ``OK2``, from the station's ``ice-*``
    headers, and the empty line that ends them. Control characters in values
    become spaces, so no value can add a line."""
    lines = []
    for name, value in headers.items():
        icy = _ICY_NAMES.get(name.lower())
        if icy is not None:
            lines.append(f"{icy}:{_CONTROL.sub(' ', value).strip()}")
    lines.append("content-type:audio/mpeg")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def admin_params(target: IcecastTarget, title: str) -> list[tuple[str, str]]:
    """The query of the admin.cgi request that sets ``title``. It holds the
    password: never log the URL made of it."""
    params = [("mode", "updinfo"), ("pass", target.password)]
    if target.sid is not None:
        params.append(("sid", str(target.sid)))
    params.append(("song", title))
    return params


class ShoutcastReader(AnswerBuffer):
    """Reads a SHOUTcast v1 server's answer to the password line, with
    :class:`~pushsource.core.source.AnswerReader`'s interface: :meth:`feed`
    returns the answer once known, :meth:`eof` always returns one;
    :meth:`later` and :meth:`ended` tell a refusal that comes after ``OK2``
    (Icecast's mount in use). The answer is decided on ``OK2``'s line: what
    follows it is read by :meth:`later`. Messages never hold the password.
    Does not raise."""

    def __init__(self, target: IcecastTarget, headers: Mapping[str, str]) -> None:
        super().__init__()
        self._target = target
        self._where = netloc(target.host, target.source_port)
        self._then = icy_lines(headers)
        #: After OK2: its header lines still to skip, then what the server says.
        self._after = bytearray()
        self._head_open = True
        self._http: AnswerReader | None = None  # an HTTP answer, before or after OK2
        self._done = False  # later() has nothing more to tell

    def later(self, data: bytes) -> IcecastError | None:
        """What the server sends while the body goes: OK2's header lines are
        skipped; an HTTP refusal after them (Icecast: "Mountpoint in use") is
        the error to fail with, told once; anything else is not ours."""
        if not isinstance(self._answer, Accepted) or self._done:
            return None
        if len(self._after) < HEAD_LIMIT + BODY_LIMIT:
            self._after += data[: HEAD_LIMIT + BODY_LIMIT - len(self._after)]
        while self._head_open:
            end = self._after.find(b"\n")
            line = bytes(self._after[: end if end >= 0 else len(self._after)]).strip()
            if line.startswith(_HTTP[: len(line)]) and line:
                self._head_open = False  # no empty line before it: the refusal is here
            elif end < 0:
                return None
            elif not line or _HEADER_LINE.match(line):
                del self._after[: end + 1]
                self._head_open = bool(line)
            else:
                self._head_open = False
        if self._http is None:
            if not self._after.startswith(_HTTP[: len(self._after)]):
                self._done = True  # not an answer: nothing of ours to read
                return None
            if len(self._after) < len(_HTTP):
                return None
            self._http = AnswerReader(self._target)
            self._http.feed(bytes(self._after))
        elif self._http.answer is None:
            self._http.feed(data)
        return self._refusal_after_ok(eof=False)

    def ended(self) -> IcecastError | None:
        """The server closed while the body went: the refusal it was
        sending after ``OK2``, if that is what it was."""
        if self._http is None or self._done:
            return None
        return self._refusal_after_ok(eof=True)

    # --- deciding ---------------------------------------------------------------------

    def _decide(self, *, eof: bool) -> Answer | None:
        data = bytes(self._data)
        if data and data.startswith(_HTTP[: len(data)]):
            return self._http_answer(data, eof=eof)
        if b"invalid password" in data.lower():  # DNAS; no need to wait for its line end
            return self._wrong_password()
        end = data.find(b"\n")
        line = (data[:end] if end >= 0 else data).strip()
        if end < 0 and not eof:
            if len(data) > LINE_LIMIT:
                return self._garbage(f"{self._where} answered {data[:40]!r}")
            return None
        if _OK.match(line):
            self._after += data[end + 1 :] if end >= 0 else b""
            return Accepted(200, then=self._then)
        if not data:
            # Icecast's way of saying the password is wrong: it reads the
            # line and hangs up (DNAS would say "invalid password").
            return self._wrong_password(": the server hung up on the password")
        if end < 0:
            cut = f"closed the connection in the middle of its answer ({data[:40]!r})"
            return Refused(IcecastError(f"{self._where} {cut}"))
        text = line.decode("utf-8", "replace")
        if text.isprintable() and len(text) <= 200:
            return self._garbage(
                f"the SHOUTcast server on {self._where} refused the source: {text}"
            )
        return self._wrong(f"not a SHOUTcast server: {self._where} answered {data[:40]!r}")

    def _http_answer(self, data: bytes, *, eof: bool) -> Answer | None:
        """An HTTP answer to the password line: Icecast refusing a client
        (403, its connection limit), or an HTTP server on that port."""
        reader = AnswerReader(self._target)
        answer = reader.feed(data)
        if answer is None and eof:
            answer = reader.eof()
        if answer is None:
            return None
        status = answer.error.status if isinstance(answer, Refused) else answer.status
        if isinstance(answer, Refused) and status == 403:
            return Refused(self._refusal(data, answer.error))
        if isinstance(answer, Refused) and status is None and eof:
            cut = f"closed the connection in the middle of its answer ({data[:40]!r})"
            return Refused(IcecastError(f"{self._where} {cut}"))
        if isinstance(answer, Refused) and status is None:
            return self._wrong(f"not a SHOUTcast server: {self._where} answered {data[:40]!r}")
        return self._wrong(
            f"{self._where} answers HTTP ({status}), not the SHOUTcast source protocol: "
            "give the server's listener port in the URL (the source goes to the next one)"
        )

    def _refusal_after_ok(self, *, eof: bool) -> IcecastError | None:
        assert self._http is not None
        answer = self._http.eof() if eof else self._http.answer
        if answer is None:
            return None
        self._done = True
        if isinstance(answer, Refused) and answer.error.status:
            return self._refusal(bytes(self._after), answer.error)
        return None

    def _refusal(self, data: bytes, error: IcecastError) -> IcecastError:
        """An HTTP refusal, in SHOUTcast terms (its mount may be unknown to us)."""
        if isinstance(error, MountInUseError):
            mount = self._target.mount
            which = (
                f"mountpoint {mount}" if mount != "/" else f"the SHOUTcast mount of {self._where}"
            )
            return MountInUseError(f"{which} is in use", error.status)
        head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
        phrase = head.split(b"\n", 1)[0][13:].decode("latin-1").strip()
        reason = icecast_reason(body, phrase, error.status or 0)
        return IcecastError(f"{self._where} refused the SHOUTcast source: {reason}", error.status)

    def _wrong_password(self, why: str = "") -> Refused:
        return Refused(
            AuthenticationError(
                f"authentication failed for the SHOUTcast source on {self._where}{why}"
            )
        )

    def _garbage(self, message: str) -> Refused:
        # Retried with backoff, like a refusal: something answered.
        return Refused(ProtocolError(message))

    def _wrong(self, message: str) -> Refused:
        # Not a SHOUTcast server at all: the URL is wrong (a config error, exit 2).
        return Refused(WrongServerError(message))
