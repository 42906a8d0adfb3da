"""Where a source goes: the parsed ``icecast://`` (or ``shoutcast://``) URL,
the ``ice-*`` station headers, and the redaction that keeps its password out
of every message.

Pure: no I/O, so the sans-IO protocol and the operator surfaces share it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pushsource import __version__
from pushsource.errors import ConfigError

USER_AGENT: Final = f"pushsource/{__version__}"
DEFAULT_PORT: Final = 8000
DEFAULT_USER: Final = "source"

SourceProtocol = Literal["icecast", "shoutcast"]


@dataclass(frozen=True)
class IcecastTarget:
    """Where to send: parsed from ``icecast://user:password@host:port/mount``
    or ``shoutcast://password@host:port[/streamid]``.

    For SHOUTcast, ``port`` is the server's listener port (titles and the
    status go there) and the source connects to :attr:`source_port`; ``sid``
    is a DNAS v2 stream id; ``mount`` is where listeners find the stream."""

    host: str
    port: int
    mount: str
    user: str = DEFAULT_USER
    password: str = field(default="", repr=False)
    tls: bool = False
    protocol: SourceProtocol = "icecast"
    sid: int | None = None

    @property
    def source_port(self) -> int:
        """The port the source connects to: SHOUTcast v1 takes sources on the
        listener port + 1."""
        return self.port + 1 if self.protocol == "shoutcast" else self.port

    def __str__(self) -> str:
        where = netloc(self.host, self.port)
        if self.protocol == "shoutcast":
            path = f"/{self.sid}" if self.sid is not None else self.mount.rstrip("/")
            return f"shoutcast://{where}{path}"
        scheme = "https" if self.tls else "icecast"
        return f"{scheme}://{self.user}@{where}{self.mount}"


def netloc(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_target(
    url: str, *, password: str | None = None, fallback_password: str | None = None
) -> IcecastTarget:
    """Parse a source URL. The password is ``password`` if given (from a
    file), else the URL's, else ``fallback_password`` (from the environment).
    Raises ConfigError, whose message never repeats the password."""
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in url):
        # urlsplit drops tabs and line breaks unasked (a mount "/m\r\nX" became
        # "/mX"), and redact stops at one: name none of the URL, it may be the password.
        raise ConfigError(
            "bad Icecast URL: it holds a control character (a NUL, tab or line break); "
            "percent-encode it (%0A for a line break) if it belongs there"
        )
    shown = redact(url)
    parts: SplitResult | None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # its text may quote part of the password ("#" ends the host part)
        parts = None
    if parts is None:  # raised out here: "from None" still keeps the ValueError as __context__
        raise ConfigError(f"bad Icecast URL {shown}: the port is not a number")
    if parts.scheme in ("shoutcasts", "shoutcast+tls"):
        raise ConfigError("bad URL: SHOUTcast v1 sources have no TLS; use shoutcast://")
    if parts.scheme == "shoutcast":
        return _parse_shoutcast(parts, shown, password, fallback_password)
    if parts.scheme not in ("icecast", "http", "https"):
        raise ConfigError(
            f"bad Icecast URL {shown}: scheme must be icecast://, http://, https:// or shoutcast://"
        )
    if not parts.hostname:
        raise ConfigError(f"bad Icecast URL {shown}: no host")
    if not host_ok(parts.hostname):
        raise ConfigError(f"bad Icecast URL {shown}: {parts.hostname!r} is not a host name")
    mount = parts.path
    if not mount or mount == "/" or parts.query or parts.fragment:
        raise ConfigError(f"bad Icecast URL {shown}: give a mount, e.g. {shown.rstrip('/')}/stream")
    if any(c.isspace() for c in mount):
        raise ConfigError(f"bad Icecast URL {shown}: the mount contains white space")
    secret = password or unquote(parts.password or "") or fallback_password
    if not secret:
        raise ConfigError(_NO_PASSWORD)
    return IcecastTarget(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        mount=mount,
        user=unquote(parts.username or "") or DEFAULT_USER,
        password=secret,
        tls=parts.scheme == "https",
    )


def host_ok(host: str) -> bool:
    """Whether the resolver can be asked for ``host``: Python's getaddrinfo
    encodes a name with the IDNA codec, which raises UnicodeError (not
    OSError) for an empty or too long label ("a..b"). Does not raise."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


_NO_PASSWORD: Final = (
    "no source password: put it in the URL, in --password-file, "
    "or in the PUSHSOURCE_PASSWORD environment variable"
)


def _parse_shoutcast(
    parts: SplitResult, shown: str, password: str | None, fallback_password: str | None
) -> IcecastTarget:
    """``shoutcast://[user:]password@host[:port][/streamid or /mount]``: a
    SHOUTcast v1 source has a password and no user, so a lone word before the
    "@" is the password."""
    if "@" in parts.path + parts.query + parts.fragment:  # the host part ended in the password
        raise ConfigError(
            f'bad SHOUTcast URL {shown}: write "/", "?" and "#" in the password as %2F, %3F, %23'
        )
    if not parts.hostname:
        raise ConfigError(f"bad SHOUTcast URL {shown}: no host")
    if not host_ok(parts.hostname):
        raise ConfigError(f"bad SHOUTcast URL {shown}: {parts.hostname!r} is not a host name")
    if parts.query or parts.fragment:
        raise ConfigError(f"bad SHOUTcast URL {shown}: no ?query or #fragment here")
    if any(c.isspace() for c in parts.path):
        raise ConfigError(f"bad SHOUTcast URL {shown}: the path contains white space")
    word = parts.path.strip("/")
    sid: int | None = None
    mount = parts.path if word else "/"  # DNAS v1 serves its one stream at /
    if word.isascii() and word.isdigit():
        sid = int(word)
        if not 1 <= sid <= 2**31 - 1:
            raise ConfigError(f"bad SHOUTcast URL {shown}: stream ids count from 1")
        mount = f"/stream/{sid}/"  # where DNAS v2 serves stream sid
    in_url = parts.password if parts.password is not None else parts.username
    secret = password or unquote(in_url or "") or fallback_password
    if not secret:
        raise ConfigError(_NO_PASSWORD)
    if any(c in secret for c in "\r\n"):  # it goes alone on a line
        raise ConfigError("a SHOUTcast password cannot hold a line break")
    port = parts.port if parts.port is not None else DEFAULT_PORT
    if port >= 65535:
        raise ConfigError(
            f"bad SHOUTcast URL {shown}: sources go to the listener port + 1, "
            f"and {port} + 1 is no port"
        )
    return IcecastTarget(
        host=parts.hostname,
        port=port,
        mount=mount,
        user="",
        password=secret,
        protocol="shoutcast",
        sid=sid,
    )


def redact(text: str) -> str:
    """Replace the password of any URL in text with ***."""
    # Up to the last "@" on the line: a password may hold "@", "/", "#", quotes and
    # white space, and the text gives no other end to it. Hiding too much is the safe
    # side; parse_target refuses a URL with a line break.
    # shoutcast://secret@host: there a lone word before the "@" is the password.
    text = re.sub(r"(shoutcast[a-z+]*://)[^\r\n]*@", r"\1***@", text, flags=re.I)
    text = re.sub(r"(//[^:/@\r\n]*:)[^\r\n]*@", r"\1***@", text)
    # SHOUTcast's admin.cgi takes the password in the query.
    return re.sub(r"([?&]pass=)[^&#\s]*", r"\1***", text, flags=re.I)


@dataclass(frozen=True)
class StationInfo:
    """What listeners' directories show: sent as ``ice-*`` headers."""

    name: str | None = None
    description: str | None = None
    genre: str | None = None
    url: str | None = None
    public: bool = False

    def headers(self, bitrate: int, sample_rate: int, channels: int) -> dict[str, str]:
        headers = {
            "ice-public": "1" if self.public else "0",
            "ice-bitrate": str(bitrate),
            "ice-audio-info": f"bitrate={bitrate};samplerate={sample_rate};channels={channels}",
        }
        for key, value in (
            ("ice-name", self.name),
            ("ice-description", self.description),
            ("ice-genre", self.genre),
            ("ice-url", self.url),
        ):
            if value:
                headers[key] = value
        return headers
