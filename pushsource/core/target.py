"""Where a source goes: the parsed ``icecast://`` URL, the ``ice-*`` station
headers, and the redaction that keeps its password out of every message.

Pure: no I/O, so the sans-IO protocol and the operator surfaces share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote, urlsplit

from pushsource import __version__
from pushsource.errors import ConfigError

USER_AGENT: Final = f"pushsource/{__version__}"
DEFAULT_PORT: Final = 8000
DEFAULT_USER: Final = "source"


@dataclass(frozen=True)
class IcecastTarget:
    """Where to send: parsed from ``icecast://user:password@host:port/mount``."""

    host: str
    port: int
    mount: str
    user: str = DEFAULT_USER
    password: str = field(default="", repr=False)
    tls: bool = False

    def __str__(self) -> str:
        scheme = "https" if self.tls else "icecast"
        return f"{scheme}://{self.user}@{netloc(self.host, self.port)}{self.mount}"


def netloc(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_target(
    url: str, *, password: str | None = None, fallback_password: str | None = None
) -> IcecastTarget:
    """Parse a source URL. The password is ``password`` if given (from a
    file), else the URL's, else ``fallback_password`` (from the environment).
    Raises ConfigError, whose message never repeats the password."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # its text may quote part of the password
        raise ConfigError(f"bad Icecast URL {shown}: the port is not a number") from None
    if parts.scheme not in ("icecast", "http", "https"):
        raise ConfigError(
            f"bad Icecast URL {shown}: scheme must be icecast://, http:// or https://"
        )
    if not parts.hostname:
        raise ConfigError(f"bad Icecast URL {shown}: no host")
    mount = parts.path
    if not mount or mount == "/" or parts.query or parts.fragment:
        raise ConfigError(f"bad Icecast URL {shown}: give a mount, e.g. {shown.rstrip('/')}/stream")
    if any(c.isspace() for c in mount):
        raise ConfigError(f"bad Icecast URL {shown}: the mount contains white space")
    secret = password or unquote(parts.password or "") or fallback_password
    if not secret:
        raise ConfigError(
            "no source password: put it in the URL, in --password-file, "
            "or in the PUSHSOURCE_PASSWORD environment variable"
        )
    return IcecastTarget(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        mount=mount,
        user=unquote(parts.username or "") or DEFAULT_USER,
        password=secret,
        tls=parts.scheme == "https",
    )


def redact(text: str) -> str:
    """Replace the password of any URL in text with ***."""
    # Up to the last "@" of the word: a password may hold "@" and "/" too.
    return re.sub(r"(//[^:/@\s]*:)\S*@", r"\1***@", text)


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
