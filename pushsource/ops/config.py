"""The TOML config file of ``pushsource run``: any number of ``[[station]]``
tables (keys are the long options of ``pushsource stream`` with underscores)
and an optional ``[control]`` table.

Everything is checked before anything connects; the first problem is one
ConfigError naming the file, the station and the key. ``${VAR}`` in a string
expands from the environment (``$$`` is a plain ``$``), so secrets stay out of
the file. Relative paths are relative to the file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pushsource.core.target import IcecastTarget, redact
from pushsource.core.values import header_problem
from pushsource.errors import ConfigError
from pushsource.ops.settings import (
    DEFAULT_LIVE_TITLE,
    LOUDNESS_RANGE,
    MAX_CROSSFADE,
    SILENCE_ALARM_MAX,
    ControlSettings,
    LiveSettings,
    OutputSettings,
    StationSettings,
    check_header_values,
    check_live_title,
    check_record,
    output_format,
    parse_address,
    resolve_output_target,
    resolve_target,
)
from pushsource.workers.state import check_state_path
from pushsource.workers.transcode import StationFormat

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?))")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATHS = {"folder", "password_file", "cache", "state"}


@dataclass(frozen=True)
class Config:
    path: Path
    stations: list[StationSettings]
    control: ControlSettings | None = None
    #: With ``problems`` asked for (``pushsource check``): each station and the
    #: [control] table that was left out, and why; ``stations`` holds the rest.
    problems: tuple[Problem, ...] = ()
    #: The file's [[station]] tables, the ones left out too.
    tables: int = 0


@dataclass(frozen=True)
class Problem:
    """A [[station]] (its number, from 1) or the [control] table (0) left out."""

    station: int
    error: ConfigError


class _Problem(Exception):
    """A bad value; the caller adds where it is."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"must be a string, not {_kind(value)}")
    if not value:
        raise _Problem("must not be empty")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"must be true or false, not {_kind(value)}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"must be a number of seconds, not {_kind(value)}")
    if not 0 < value <= 60:
        raise _Problem(f"must be between 0 and 60 seconds, not {value}")
    return float(value)


def _off_or_seconds(most: float) -> Callable[[object], float]:
    """A number of seconds from 0 (off) to ``most``."""

    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Problem(f"must be a number of seconds (0: off), not {_kind(value)}")
        if not 0 <= value <= most:
            raise _Problem(f"must be between 0 (off) and {most:g} seconds, not {value}")
        return float(value)

    return check


_crossfade = _off_or_seconds(MAX_CROSSFADE)
_alarm = _off_or_seconds(SILENCE_ALARM_MAX)


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"must be a whole number, not {_kind(value)}")
    return value


def _channels(value: object) -> int:
    if type(value) is not int or value not in (1, 2):
        raise _Problem(f"must be 1 or 2, not {value!r}")
    return 1 if value == 1 else 2


def _retries(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Problem(f"must be a whole number, 0 or more, not {value!r}")
    return value


def _idle(value: object) -> str:
    if value not in ("silence", "loop", "stop"):
        raise _Problem(f'must be "silence", "loop" or "stop", not {value!r}')
    return str(value)


def _titles(value: object) -> str:
    if value not in ("stream", "admin"):
        raise _Problem(f'must be "stream" or "admin", not {value!r}')
    return str(value)


def _lufs(value: object) -> float:
    low, high = LOUDNESS_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"must be a loudness in LUFS (say -18), not {_kind(value)}")
    if not low <= value <= high:
        raise _Problem(f"must be between {low:g} and {high:g} LUFS, not {value}")
    return float(value)


def _station_id(value: object) -> str:
    text = _text(value)
    if not _ID.fullmatch(text):
        raise _Problem("must be letters, digits, '.', '_' or '-' (at most 64)")
    return text


def _public_url(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"https?://[^/\s]+/\S*", text):
        raise _Problem(f"must be an http:// or https:// URL of the mount, not {text!r}")
    return text


_STATION_KEYS: dict[str, Callable[[object], Any]] = {
    "folder": _text,
    "url": _text,
    "password": _text,
    "password_file": _text,
    "insecure_password_file": _flag,
    "id": _station_id,
    "once": _flag,
    "name": _text,
    "description": _text,
    "genre": _text,
    "station_url": _text,
    "public": _flag,
    "lead": _seconds,
    "batch": _seconds,
    "samplerate": _whole,
    "channels": _channels,
    "bitrate": _whole,
    "strict_bitrate": _flag,
    "cache": _text,
    "loudness": _lufs,
    "idle": _idle,
    "crossfade": _crossfade,
    "titles": _titles,
    "shuffle": _flag,
    "state": _text,
    "max_retries": _retries,
    "timeout": _seconds,
    "settle": _seconds,
    "silence_alarm": _alarm,
    "trim_silence": _flag,
    "public_url": _text,  # checked once ${VAR}s are expanded
    "live": lambda value: value,  # a table: _live(), which expands its ${VAR}s itself
    "output": lambda value: value,  # [[station.output]] tables: _outputs(); field "outputs"
}
assert set(_STATION_KEYS) == {field.name for field in fields(StationSettings)} - {"outputs"} | {
    "output"
}

_OUTPUT_KEYS: dict[str, Callable[[object], Any]] = {
    "url": _text,
    "password": _text,
    "password_file": _text,
    "bitrate": _whole,
    "samplerate": _whole,
    "channels": _channels,
    "public_url": _text,
}


def unknown_key(key: str, valid: Collection[str], *, expected: bool = False) -> str:
    """'unknown key "KEY"' and the valid one it is nearest (a typo), if any;
    else, with ``expected``, the valid ones."""
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    if close:
        return f'unknown key "{key}" (did you mean "{close[0]}"?)'
    return f'unknown key "{key}"' + (f" (expected {', '.join(valid)})" if expected else "")


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "a table" if isinstance(value, dict) else "a list"
    )


def expand(text: str, environ: Mapping[str, str]) -> str:
    """``${VAR}`` from ``environ``, ``$$`` as ``$``. Raises _Problem for an unset VAR."""

    def sub(match: re.Match[str]) -> str:
        name, bad = match.group(1), match.group(2)
        if bad is not None:
            raise _Problem(
                f"has ${bad[:20]}, which is not ${{NAME}} with NAME letters, digits and _ "
                "(not starting with a digit); write $$ for a plain $"
            )
        if name is None:
            return "$"
        if name not in environ:
            raise _Problem(f"environment variable {name} is not set")
        return environ[name]

    return _VAR.sub(sub, text)


def load_config(path: Path, environ: Mapping[str, str], *, collect: bool = False) -> Config:
    """Read and check ``path``. Raises ConfigError: at the first problem, or
    with ``collect`` only for the file as a whole (the problems of a station
    or [control] go to Config.problems, the table left out)."""
    import tomllib  # only `run --config` and `check` need it: start-up time

    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return parse_config(data, path, environ, collect=collect)


def parse_config(
    data: Mapping[str, Any], path: Path, environ: Mapping[str, str], *, collect: bool = False
) -> Config:
    """The checked form of a config's TOML ``data`` read from ``path``
    (``collect``: see load_config)."""
    for key in data:
        if key not in ("station", "control"):
            close = difflib.get_close_matches(key, ["station", "control"], n=1)
            hint = {"station": "did you mean [[station]]?", "control": "did you mean [control]?"}
            raise ConfigError(
                f'{path}: unknown key "{key}" '
                f"({hint[close[0]] if close else 'expected [[station]] or [control]'})"
            )
    tables = data.get("station")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[station]] tables")
    base = path.parent
    problems: list[Problem] = []
    numbered = []
    for n, table in enumerate(tables, 1):
        try:
            numbered.append((n, _station(table, base, environ, f"{path}: station {n}")))
        except ConfigError as exc:
            if not collect:
                raise
            problems.append(Problem(n, exc))
    for n, repeated in _check_unique(numbered, path, environ, collect=collect):
        problems.append(Problem(n, repeated))
        numbered = [(k, station) for k, station in numbered if k != n]
    control = None
    if "control" in data:
        try:
            control = _control(data["control"], environ, f"{path}: [control]")
        except ConfigError as exc:
            if not collect:
                raise
            problems.append(Problem(0, exc))
    stations = [station for _n, station in numbered]
    return Config(path, stations, control, tuple(problems), len(tables))


def _station(table: object, base: Path, environ: Mapping[str, str], where: str) -> StationSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ([[station]])")
    name = table.get("name")
    if isinstance(name, str) and header_problem(name, 80) is None:  # shown, so short and plain
        where = f'{where} ("{name}")'
    values: dict[str, Any] = {}
    for key, raw in table.items():
        check = _STATION_KEYS.get(key)
        if check is None:
            raise ConfigError(f"{where}: {unknown_key(key, _STATION_KEYS)}")
        try:
            if key == "live":
                values[key] = _live(raw, environ, base)
                continue
            if key == "output":
                values["outputs"] = _outputs(raw, base, environ)
                continue
            value = check(raw)
            if isinstance(value, str) and key != "id":
                value = expand(value, environ)
            if key == "public_url":
                value = _public_url(value)
            if key in _PATHS:
                value = base / Path(value).expanduser()
        except _Problem as exc:
            raise ConfigError(f'{where}: key "{key}" {exc}') from None
        values[key] = value
    for key in ("folder", "url"):
        if key not in values:
            raise ConfigError(f'{where}: key "{key}" is missing')
    folder: Path = values["folder"]
    if not folder.is_dir():
        raise ConfigError(f'{where}: key "folder": {folder} is not a directory')
    if "state" in values:
        try:
            check_state_path(values["state"], folder)
        except ConfigError as exc:
            raise ConfigError(f'{where}: key "state": {exc}') from None
    settings = StationSettings(**values)
    check_header_values(settings, lambda key: f'{where}: key "{key}"')
    try:
        target = resolve_target(settings, environ)
    except ConfigError as exc:
        message = redact(str(exc))
        if message.startswith("no source password"):
            raise ConfigError(
                f'{where}: no source password: set key "password" or "password_file", '
                "or put it in the URL or in $PUSHSOURCE_PASSWORD"
            ) from None
        key = "password_file" if message.startswith(("--password-file", "cannot read")) else "url"
        raise ConfigError(f'{where}: key "{key}": {message}') from None
    try:
        StationFormat(settings.samplerate, settings.channels, settings.bitrate)
    except ConfigError as exc:
        raise ConfigError(f"{where}: keys samplerate, channels, bitrate: {exc}") from None
    for n, output in enumerate(settings.outputs, 1):
        check_output(settings, output, environ, f"{where}: output {n}")
    if settings.id is None:
        settings = dataclasses.replace(settings, id=default_id(target.mount))
    return settings


def _outputs(raw: object, base: Path, environ: Mapping[str, str]) -> tuple[OutputSettings, ...]:
    """``[[station.output]]`` tables. Raises _Problem."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise _Problem("must be [[station.output]] tables")
    outputs = []
    for n, table in enumerate(raw, 1):
        values: dict[str, Any] = {}
        for key, value in table.items():
            check = _OUTPUT_KEYS.get(key)
            if check is None:
                raise _Problem(f"output {n}: {unknown_key(key, _OUTPUT_KEYS, expected=True)}")
            try:
                value = check(value)
                if isinstance(value, str):
                    value = expand(value, environ)
                if key == "public_url":
                    value = _public_url(value)
                if key == "password_file":
                    value = base / Path(value).expanduser()
            except _Problem as exc:
                raise _Problem(f'output {n}: key "{key}" {exc}') from None
            values[key] = value
        if "url" not in values:
            raise _Problem(f'output {n}: key "url" is missing')
        outputs.append(OutputSettings(**values))
    return tuple(outputs)


def check_output(
    settings: StationSettings, output: OutputSettings, environ: Mapping[str, str], where: str
) -> None:
    """What an output needs beyond its keys: a password, a format MP3 can
    carry, a mount of its own. Raises ConfigError."""
    try:
        target = resolve_output_target(settings, output, environ)
    except ConfigError as exc:
        message = redact(str(exc))
        if message.startswith("no source password"):
            raise ConfigError(
                f'{where}: no source password: set key "password" or "password_file", '
                "or put it in the URL (the station's own is used only on its own server)"
            ) from None
        key = "password_file" if message.startswith(("--password-file", "cannot read")) else "url"
        raise ConfigError(f'{where}: key "{key}": {message}') from None
    bitrate, rate, channels = output_format(settings, output)
    try:
        StationFormat(rate, channels, bitrate)
    except ConfigError as exc:
        raise ConfigError(f"{where}: keys samplerate, channels, bitrate: {exc}") from None
    if settings.live is not None and (bitrate, rate, channels) != (
        settings.bitrate,
        settings.samplerate,
        settings.channels,
    ):
        raise ConfigError(
            f"{where}: an output in another format than the station's cannot carry the "
            "live input (a DJ's audio is in the station's format only): drop "
            "[station.live] or the output's bitrate, samplerate and channels"
        )
    station = resolve_target(settings, environ)
    if _mount_key(target) == _mount_key(station):
        raise ConfigError(f'{where}: key "url": {_where(target)} is the station\'s own mount')


def _mount_key(target: IcecastTarget) -> tuple[str, int, str]:
    return (target.host.casefold(), target.port, target.mount)


def _where(target: IcecastTarget) -> str:
    return f"{target.host}:{target.port}{target.mount}"


_LIVE_KEYS = {"listen", "mount", "users", "grace", "interrupted", "title", "record", "convert"}


def _live(table: object, environ: Mapping[str, str], base: Path) -> LiveSettings:
    """``[station.live]``. Raises _Problem (naming the key, never a password)."""
    if not isinstance(table, dict):
        raise _Problem("must be a table ([station.live])")
    for key in table:
        if key not in _LIVE_KEYS:
            raise _Problem(f"has an {unknown_key(key, sorted(_LIVE_KEYS), expected=True)}")
    if "listen" not in table:
        raise _Problem('needs "listen" (host:port where DJs connect)')
    try:
        listen = parse_address(expand(_text(table["listen"]), environ))
    except ValueError as exc:
        raise _Problem(f'key "listen": {exc}') from None
    mount = None
    if "mount" in table:
        mount = expand(_text(table["mount"]), environ)
        if not mount.startswith("/") or header_problem(mount, 255) is not None:
            raise _Problem('key "mount" must be a path like "/live"')
    users = table.get("users", {})
    if not isinstance(users, dict) or not users:
        raise _Problem('key "users" must be a table of name = "password", at least one')
    pairs = []
    for name, secret in users.items():
        if not isinstance(secret, str):
            raise _Problem(f'key "users": the password of {name} must be a string')
        secret = expand(secret, environ)
        if not secret or ":" in name or header_problem(name, 64) is not None:
            raise _Problem(f'key "users": {name[:64]!r} needs a plain name and a password')
        pairs.append((name, secret))
    grace = _seconds(table.get("grace", 5.0))
    interrupted = table.get("interrupted", "resume")
    if interrupted not in ("resume", "skip"):
        raise _Problem('key "interrupted" must be "resume" or "skip"')
    title = DEFAULT_LIVE_TITLE
    if "title" in table:
        if not isinstance(table["title"], str):
            raise _Problem(f'key "title" must be a string, not {_kind(table["title"])}')
        try:
            title = check_live_title(expand(table["title"], environ))
        except ValueError as exc:
            raise _Problem(f'key "title": {exc}') from None
    record = None
    if "record" in table:
        if not isinstance(table["record"], str):
            raise _Problem(f'key "record" must be a string, not {_kind(table["record"])}')
        try:
            record = check_record(str(base / Path(expand(table["record"], environ)).expanduser()))
        except ValueError as exc:
            raise _Problem(f'key "record": {exc}') from None
    convert = table.get("convert", True)
    if not isinstance(convert, bool):
        raise _Problem(f'key "convert" must be true or false, not {_kind(convert)}')
    return LiveSettings(
        listen, mount, tuple(pairs), grace, str(interrupted), title, record, convert
    )


def default_id(mount: str) -> str:
    """A station's id from its mount: "/rock" → "rock", "/" → "stream"."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", mount.strip("/")).strip("-.")
    return text[:64] or "stream"


def _check_unique(
    stations: list[tuple[int, StationSettings]],
    path: Path,
    environ: Mapping[str, str],
    *,
    collect: bool = False,
) -> list[tuple[int, ConfigError]]:
    """Each mount and id once. Raises ConfigError; with ``collect``, returns
    (number, error) of each station that repeats one, left out of the count."""
    mounts: dict[tuple[str, int, str], int] = {}
    ids: dict[str | None, int] = {}
    repeated = []
    for n, station in stations:
        targets = [("", resolve_target(station, environ))] + [
            (f"output {k}: ", resolve_output_target(station, output, environ))
            for k, output in enumerate(station.outputs, 1)
        ]
        error = None
        own: dict[tuple[str, int, str], int] = {}  # a station's, kept if it passes
        for which, target in targets:
            key = _mount_key(target)
            if key in mounts or key in own:
                error = ConfigError(
                    f'{path}: station {n}: {which}key "url": mount {_where(target)} is '
                    f"already station {mounts.get(key, n)}'s"
                )
                break
            own[key] = n
        if error is None and station.id in ids:
            error = ConfigError(
                f'{path}: station {n}: key "id": "{station.id}" is already station '
                f"{ids[station.id]} (set a different id)"
            )
        if error is not None:
            if not collect:
                raise error
            repeated.append((n, error))
            continue
        mounts.update(own)
        ids[station.id] = n
    return repeated


def _control(table: object, environ: Mapping[str, str], where: str) -> ControlSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    host, port, token = ControlSettings.host, ControlSettings.port, None
    hosts: tuple[str, ...] = ()
    for key, raw in table.items():
        try:
            if key == "listen":
                host, port = parse_address(expand(_text(raw), environ))
            elif key == "token":
                token = expand(_text(raw), environ) or None
            elif key == "allowed_hosts":
                hosts = _host_names(raw)
            else:
                keys = ("listen", "token", "allowed_hosts")
                raise ConfigError(f"{where}: {unknown_key(key, keys, expected=True)}")
        except (_Problem, ValueError) as exc:
            raise ConfigError(f'{where}: key "{key}" {exc}') from None
    return ControlSettings(host, port, token, hosts)


_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)


def _host_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Problem("must be a list of host names")
    for name in value:
        if not _HOST_NAME.fullmatch(name):
            raise _Problem(f"{name!r} is not a host name")
    return tuple(value)
