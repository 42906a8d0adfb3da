"""What one station is told to do: the options of ``pushsource stream``, or one
``[[station]]`` table of a config file, in one checked form."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pushsource.core.target import IcecastTarget, parse_target
from pushsource.core.values import HEADER_LIMITS, header_problem
from pushsource.errors import ConfigError

#: The environment variable a password may come from.
PASSWORD_ENV: Final = "PUSHSOURCE_PASSWORD"
#: ... and the control API's token.
TOKEN_ENV: Final = "PUSHSOURCE_TOKEN"

#: The loudness targets a station may ask for, in LUFS.
LOUDNESS_RANGE: Final = (-40.0, -5.0)
#: The longest crossfade, in seconds.
MAX_CROSSFADE: Final = 20.0
#: The longest mount, in UTF-8 bytes: it must fit in Icecast's 4 KB requests with the rest.
MAX_MOUNT: Final = 255

#: What a DJ who sends no title is shown as; {user} is their user name.
DEFAULT_LIVE_TITLE: Final = "Live: {user}"

#: Where the control API listens when it is on and no address is given.
DEFAULT_CONTROL: Final = ("127.0.0.1", 8700)


@dataclass(frozen=True)
class LiveSettings:
    """``[station.live]``: where DJs connect, who may, and how the folder takes back."""

    listen: tuple[str, int]
    mount: str | None = None  # default: the station's own mount
    users: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    grace: float = 5.0
    interrupted: str = "resume"  # or "skip"
    title: str = DEFAULT_LIVE_TITLE  # shown for a DJ who sends none; {user} is their name
    #: Each set recorded to this path ({station}, {user}, {start}); None: not recorded.
    record: str | None = None
    convert: bool = True  # other formats converted to the station's (libvlc), else refused


def check_live_title(text: str) -> str:
    """The ``title`` of a DJ who sends none. Raises ValueError."""
    if not text.strip() or len(text) > 255 or any(ord(ch) < 32 for ch in text):
        raise ValueError("the live title must be one line of 1 to 255 characters")
    return text


def check_record(text: str) -> str:
    """A ``record`` path template. Raises ValueError (one line)."""
    from pushsource.workers.recorder import RecordTemplate

    RecordTemplate(text)
    return text


def parse_live_user(text: str) -> tuple[str, str]:
    """``NAME:PASSWORD``. Raises ValueError (naming no password)."""
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise ValueError("a live user is NAME:PASSWORD, both not empty")
    if any(ch in name for ch in ":\r\n") or len(name) > 64:
        raise ValueError(f"bad live user name: {name[:64]!r}")
    return name, password


#: The longest --silence-alarm / silence_alarm, in seconds.
SILENCE_ALARM_MAX: Final = 3600


@dataclass(frozen=True)
class OutputSettings:
    """``[[station.output]]`` (``--output``): one more mount the station is sent
    to, in the station's format or its own (what is not given is the station's)."""

    url: str  # icecast://[user[:password]@]host[:port]/mount
    password: str | None = dataclasses.field(default=None, repr=False)
    password_file: Path | None = None
    bitrate: int | None = None
    samplerate: int | None = None
    channels: int | None = None
    public_url: str | None = None  # what listeners are told (links, .m3u, the page)


@dataclass(frozen=True)
class StationSettings:
    folder: Path
    url: str  # icecast://[user[:password]@]host[:port]/mount
    password: str | None = dataclasses.field(default=None, repr=False)
    password_file: Path | None = None
    insecure_password_file: bool = False
    id: str | None = None  # for the control API; default: the mount without its slash
    once: bool = False
    name: str | None = None
    description: str | None = None
    genre: str | None = None
    station_url: str | None = None
    public: bool = False
    lead: float = 0.5
    batch: float = 0.1  # seconds between wake-ups, at most
    samplerate: int = 44100
    channels: int = 2
    bitrate: int = 128
    strict_bitrate: bool = False
    cache: Path | None = None
    loudness: float | None = None  # LUFS to level tracks to; None: frames as they are
    idle: str = "silence"
    crossfade: float = 0.0  # seconds the tracks sound together at a join; 0: off
    #: How titles reach Icecast: "stream" (ICY blocks inside the audio, every
    #: server, no config) or "admin" (/admin/metadata requests). SHOUTcast v1
    #: outputs always use admin.cgi.
    titles: str = "stream"
    shuffle: bool = False
    state: Path | None = None
    max_retries: int | None = None
    timeout: float = 5.0
    settle: float = 2.0
    #: A warning once digital silence has gone out this long (seconds; 0: none).
    silence_alarm: float = 30.0
    #: Drop the digital silence at the start and end of each track.
    trim_silence: bool = False
    #: Where listeners reach the mount, for the page's links and playlists, when
    #: the source URL's host is not it (a compose service name, a proxy).
    public_url: str | None = None
    #: The live input for DJs; None: off.
    live: LiveSettings | None = None
    #: More outputs beside ``url``, all on the station's one timeline.
    outputs: tuple[OutputSettings, ...] = ()


@dataclass(frozen=True)
class ControlSettings:
    host: str = DEFAULT_CONTROL[0]
    port: int = DEFAULT_CONTROL[1]
    token: str | None = dataclasses.field(default=None, repr=False)
    #: Host names the control page may be reached by, beside IP addresses and localhost.
    allowed_hosts: tuple[str, ...] = ()


def check_header_values(
    settings: StationSettings, name: Callable[[str], str] = lambda key: f'key "{key}"'
) -> None:
    """Refuse a setting that Icecast would get in a header and cannot take (a line
    break, a 100 KB name); ``name`` says how the key is called where it was set.
    Raises ConfigError."""
    for key, limit in HEADER_LIMITS.items():
        value = getattr(settings, key)
        if value is not None and (problem := header_problem(value, limit)) is not None:
            raise ConfigError(f"{name(key)} {problem}")


def parse_address(text: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``port`` (host then 127.0.0.1). Raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or DEFAULT_CONTROL[0]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return host, port


def resolve_target(settings: StationSettings, environ: Mapping[str, str]) -> IcecastTarget:
    """Where a station sends, with its password from (first found) the
    password setting or file, the URL, or $PUSHSOURCE_PASSWORD. Raises ConfigError."""
    password = settings.password
    if password is None and settings.password_file is not None:
        password = read_password_file(
            settings.password_file, insecure=settings.insecure_password_file
        )
    target = parse_target(
        settings.url, password=password, fallback_password=environ.get(PASSWORD_ENV)
    )
    # The mount travels in the request line of every source and title request.
    if (problem := header_problem(target.mount, MAX_MOUNT)) is not None:
        raise ConfigError(f"bad Icecast URL: the mount {problem}")
    return target


def output_format(settings: StationSettings, output: OutputSettings) -> tuple[int, int, int]:
    """(bitrate, sample rate, channels) of an output: its own, else the station's."""
    return (
        output.bitrate or settings.bitrate,
        output.samplerate or settings.samplerate,
        output.channels or settings.channels,
    )


def resolve_output_target(
    settings: StationSettings, output: OutputSettings, environ: Mapping[str, str]
) -> IcecastTarget:
    """Where an output sends. Its password: its own setting or file, its URL,
    the station's own when it is on the station's server (never sent to
    another server unasked), or $PUSHSOURCE_PASSWORD. Raises ConfigError."""
    password = output.password
    if password is None and output.password_file is not None:
        password = read_password_file(
            output.password_file, insecure=settings.insecure_password_file
        )
    fallback = environ.get(PASSWORD_ENV)
    station = resolve_target(settings, environ)
    bare = parse_target(output.url, password="-")  # only where it goes
    if (bare.host.casefold(), bare.port, bare.tls) == (
        station.host.casefold(),
        station.port,
        station.tls,
    ):
        fallback = station.password
    target = parse_target(output.url, password=password, fallback_password=fallback)
    if (problem := header_problem(target.mount, MAX_MOUNT)) is not None:
        raise ConfigError(f"bad Icecast URL: the mount {problem}")
    return target


_OUTPUT_OPTION_KEYS: Final = ("bitrate", "samplerate", "channels", "password_file", "public_url")


def parse_output_option(text: str) -> OutputSettings:
    """``--output "URL [bitrate=64] [samplerate=22050] [channels=1]
    [password_file=PATH] [public_url=URL]"``. Raises ConfigError (quoting no password)."""
    words = text.split()
    if not words:
        raise ConfigError("--output needs an Icecast URL")
    url, *pairs = words
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in _OUTPUT_OPTION_KEYS:
            # Quote a key only: a stray word may be a password.
            shown = f"{key!r}" if sep and key.isidentifier() else "a word"
            raise ConfigError(
                f"--output: {shown} is not bitrate=, samplerate=, channels=, "
                "password_file= or public_url= (after the URL)"
            )
        if key in ("bitrate", "samplerate", "channels"):
            if not value.isdigit():
                raise ConfigError(f"--output: {key} must be a whole number, not {value!r}")
            values[key] = int(value)
        elif key == "password_file":
            values[key] = Path(value).expanduser()
        else:
            if not re.fullmatch(r"https?://[^/\s]+/\S*", value):
                raise ConfigError(
                    f"--output: public_url must be an http:// or https:// URL, not {value!r}"
                )
            values[key] = value
    return OutputSettings(url, **values)  # type: ignore[arg-type]


def read_password_file(path: Path, *, insecure: bool = False) -> str:
    """The password in ``path`` (its first line). Like ssh with keys, refuse a
    file that group or others can read, unless ``insecure``. Raises ConfigError."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read --password-file {path}: {exc.strerror or exc}") from None
    if mode & 0o077 and not insecure:
        raise ConfigError(
            f"--password-file {path} is readable by others (mode {mode & 0o777:03o}); "
            f"chmod 600 it, or pass --insecure-password-file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read --password-file {path}: {reason}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ConfigError(f"--password-file {path} is empty")
    return secret
