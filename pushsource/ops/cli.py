"""The ``pushsource`` command line. Exit status: 0 done, 2 usage or configuration
error (a wrong password included), 1 anything else fatal."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import setproctitle

from pushsource import __version__
from pushsource.core.frames import header_for, silent_frame
from pushsource.core.station import Idle, Pacing
from pushsource.core.target import redact
from pushsource.engine.loop import Engine
from pushsource.errors import ConfigError, PushsourceError
from pushsource.ops import docs, handover, icecastconf
from pushsource.ops.config import Config, check_output, load_config
from pushsource.ops.logs import NativeStderr, setup_logging
from pushsource.ops.runner import StationRunner, build_runners
from pushsource.ops.settings import (
    DEFAULT_LIVE_TITLE,
    LOUDNESS_RANGE,
    MAX_CROSSFADE,
    PASSWORD_ENV,
    SILENCE_ALARM_MAX,
    TOKEN_ENV,
    ControlSettings,
    LiveSettings,
    StationSettings,
    check_header_values,
    check_live_title,
    check_record,
    parse_address,
    parse_live_user,
    parse_output_option,
    read_password_file,
    resolve_target,
)
from pushsource.workers.state import default_state_path

if TYPE_CHECKING:
    from pushsource.ops.fleet import Fleet, Outcome

log = logging.getLogger("pushsource")


class _Parser(argparse.ArgumentParser):
    """Usage errors quote the offending argument, which may be a URL with a password."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message))


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug output"
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="warnings and errors only",
    )

    common.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default=argparse.SUPPRESS,
        help="plain lines (default) or one JSON object per line, for log shippers",
    )

    serving = _Parser(add_help=False)
    serving.add_argument(
        "--control",
        metavar="[HOST:]PORT",
        nargs="?",
        const="127.0.0.1:8700",
        help="serve the control API, web page and /metrics (default address "
        f"127.0.0.1:8700); changing anything needs the token in ${TOKEN_ENV}",
    )
    serving.add_argument(
        "--no-console",
        dest="console",
        action="store_false",
        help="plain log lines even in a terminal (no live status lines)",
    )

    parser = _Parser(
        prog="pushsource",
        description="A folder-driven source client for Icecast.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pushsource {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    stream = commands.add_parser(
        "stream",
        parents=[common, serving],
        help="stream the MP3s of a folder to an Icecast mount",
        description="Play the MP3s in FOLDER (name order, then files as they are dropped in) "
        "to an Icecast mount, in real time, with the now-playing title of each track.",
        epilog="The password may instead come from --password-file or the "
        f"{PASSWORD_ENV} environment variable; it is never prompted for.",
    )
    stream.add_argument("folder", metavar="FOLDER", type=Path, help="the music folder")
    stream.add_argument(
        "url",
        metavar="URL",
        help="icecast://[user[:password]@]host[:port]/mount (user defaults to source, "
        "port to 8000); http:// and https:// work the same way; "
        "shoutcast://password@host[:port][/streamid] for a SHOUTcast v1 server "
        "(its listener port)",
    )
    stream.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        help="read the password from PATH (first line); the file must not be "
        "readable by group or others",
    )
    stream.add_argument(
        "--insecure-password-file",
        action="store_true",
        help="accept a --password-file that others can read",
    )
    stream.add_argument(
        "--once",
        action="store_true",
        help="play what is in the folder, then close cleanly and exit",
    )
    stream.add_argument(
        "--fresh",
        action="store_true",
        help="forget what has played (the state file) and start from the first file",
    )
    stream.add_argument(
        "--public-url",
        metavar="URL",
        help="where listeners reach the mount, for the control page's links and "
        "playlists (default: the URL's host, port and mount)",
    )
    stream.add_argument(
        "--output",
        action="append",
        default=[],
        metavar='"URL [bitrate=N] [samplerate=N] [channels=N] [password_file=P] [public_url=U]"',
        help="one more mount to send the station to, on the same timeline (repeatable); "
        "in another format when bitrate, samplerate or channels say so (each track is "
        "converted ahead); the password is the URL's or password_file's, the station's "
        "own on the station's server, else $PUSHSOURCE_PASSWORD",
    )
    stream.add_argument("--name", help="station name (ice-name)")
    stream.add_argument("--description", help="station description (ice-description)")
    stream.add_argument("--genre", help="genre (ice-genre)")
    stream.add_argument(
        "--url", dest="station_url", metavar="URL", help="station web site (ice-url)"
    )
    stream.add_argument(
        "--public",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="list the stream in public directories (ice-public; default: no)",
    )
    stream.add_argument(
        "--lead",
        type=_seconds,
        default=Pacing.lead,
        metavar="SECONDS",
        help="how far ahead of real time audio is sent (default %(default)s)",
    )
    stream.add_argument(
        "--batch",
        type=_seconds,
        default=Pacing.batch,
        metavar="SECONDS",
        help="the longest sleep between hand-overs (default %(default)s): longer costs "
        "less CPU and makes listeners' timing coarser (capped at --lead)",
    )
    stream.add_argument(
        "--samplerate",
        type=int,
        default=44100,
        metavar="HZ",
        help="the station's sample rate; other files are converted (default %(default)s)",
    )
    stream.add_argument(
        "--channels",
        type=int,
        default=2,
        choices=[1, 2],
        help="the station's channel count (default %(default)s)",
    )
    stream.add_argument(
        "--bitrate",
        type=int,
        default=128,
        metavar="KBPS",
        help="bitrate of converted files and of silence (default %(default)s)",
    )
    stream.add_argument(
        "--strict-bitrate",
        action="store_true",
        help="convert MP3s that are not CBR at --bitrate too (default: any bitrate passes)",
    )
    stream.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="where converted files are kept (default: $XDG_CACHE_HOME/pushsource/, "
        "one folder per station)",
    )
    stream.add_argument(
        "--loudness",
        type=_lufs,
        metavar="LUFS",
        help="level every track to this loudness (ReplayGain 2.0's reference is -18) "
        "by rewriting its frames' global_gain, in 1.5 dB steps; from its ReplayGain "
        "tag, else measured once (default: off, frames as they are)",
    )
    stream.add_argument(
        "--idle",
        choices=[idle.value for idle in Idle],
        default=Idle.SILENCE.value,
        help="when the queue runs dry: send silence and keep listeners (default), "
        "loop the folder's library, or stop (close the stream until a file arrives)",
    )
    stream.add_argument(
        "--crossfade",
        type=_crossfade,
        default=0.0,
        metavar="SECONDS",
        help="let each track fade into the next over this long, re-encoding only the "
        "join (default 0: off)",
    )
    stream.add_argument(
        "--titles",
        choices=["stream", "admin"],
        default="stream",
        help="how titles reach Icecast: inside the stream as ICY metadata (default: "
        "every server, no config) or by /admin/metadata requests",
    )
    stream.add_argument(
        "--live-listen",
        metavar="HOST:PORT",
        help="take DJs live: where their encoders connect (SOURCE/PUT, like Icecast; default: off)",
    )
    stream.add_argument(
        "--live-mount", metavar="MOUNT", help="the mount DJs send to (default: the station's)"
    )
    stream.add_argument(
        "--live-user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a DJ who may go live (repeatable; others on this machine can read the "
        "command line: prefer --live-users-file)",
    )
    stream.add_argument(
        "--live-users-file",
        type=Path,
        metavar="PATH",
        help="DJs who may go live, one NAME:PASSWORD a line (chmod 600)",
    )
    stream.add_argument(
        "--live-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a DJ may go quiet or away before the folder takes back (default 5)",
    )
    stream.add_argument(
        "--live-interrupted",
        choices=["resume", "skip"],
        default="resume",
        help="the folder track a DJ cut: resume it where it stopped (default), or skip it",
    )
    stream.add_argument(
        "--live-title",
        default=DEFAULT_LIVE_TITLE,
        metavar="TITLE",
        help="what a DJ who sends no title is shown as; {user} is their name "
        "(default: %(default)s)",
    )
    stream.add_argument(
        "--live-record",
        metavar="PATH",
        help="record each DJ set as it went on air, to PATH with {station}, {user} and "
        "{start} filled in (folders made as needed; default: not recorded)",
    )
    stream.add_argument(
        "--no-live-convert",
        dest="live_convert",
        action="store_false",
        help="refuse a DJ whose audio is not MP3 in the station's format (default: "
        "convert it live)",
    )
    stream.add_argument(
        "--shuffle",
        action="store_true",
        help="with --idle loop: play the library in random order, no track twice in a row",
    )
    stream.add_argument(
        "--state",
        type=Path,
        metavar="PATH",
        help="where to keep what has played and what is queued, for restarts "
        "(default: $XDG_STATE_HOME/pushsource/, one file per host:port/mount; "
        "not used with --once)",
    )
    stream.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="give up after N retries in a row, that is N+1 failed connection "
        "attempts (default: never)",
    )
    stream.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="connect timeout, and how long a send may stall before the "
        "connection is dropped and made again (default %(default)s)",
    )
    stream.add_argument(
        "--silence-alarm",
        type=_alarm,
        default=30.0,
        metavar="SECONDS",
        help="warn when the audio going out has been digital silence this long "
        "(dead air; 0: never; default %(default)g)",
    )
    stream.add_argument(
        "--trim-silence",
        action="store_true",
        help="drop the digital silence at the start and end of each track",
    )
    stream.add_argument(
        "--settle",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="a dropped-in file with no close event is ready once its size "
        "holds still this long (default %(default)s)",
    )

    run = commands.add_parser(
        "run",
        parents=[common, serving],
        help="run the stations of a config file, all in one process",
        description="Run every [[station]] of a TOML config file in this process. A "
        "station that fails says why and stops; the others go on.",
    )
    run.add_argument("--config", type=Path, required=True, metavar="FILE", help="the config")
    run.add_argument(
        "--pid-file",
        type=Path,
        metavar="FILE",
        help="write the process id here (removed at exit), for pushsource reload --pid-file",
    )
    _add_reload_command(commands, common)
    restart = commands.add_parser(
        "restart",
        parents=[common],
        help="restart the running pushsource in place (SIGUSR2): an upgrade takes "
        "effect, no listener drops",
        description="Send SIGUSR2 to the running pushsource stream or run: it checks "
        "that the installed code and the config start, then execs itself anew with the "
        "same PID, handing over its source connections, listening sockets and each "
        "station's place (a problem is one line in its log, and it goes on as it was). "
        "Finds the process by --pid or --pid-file, else the one pushsource stream or "
        "run of this user (with --config FILE: the run of that config).",
    )
    _add_process_options(restart)
    check = commands.add_parser(
        "check",
        parents=[common],
        help="check a config file, its listen addresses and each server's credentials, "
        "without streaming",
        description="Check the config; that the addresses run listens on (the control "
        "server, the harbors of [station.live]) are free; then log in to every mount as "
        "its source, all of a server's at once (its source limit counts them), and leave "
        "(no audio is sent). Problems get a line each, then one tally (-v: a line per "
        "mount too). Exit 0: all good; 2: a config error, a wrong password, an address "
        "taken or too many sources for a server; 1: a server that cannot be reached.",
    )
    check.add_argument("--config", type=Path, required=True, metavar="FILE", help="the config")
    check.add_argument(
        "--control",
        metavar="[HOST:]PORT",
        nargs="?",
        const="127.0.0.1:8700",
        help="check the address run --control would listen on too (the config's "
        "[control] is checked without it)",
    )
    check.add_argument(
        "--icecast-config",
        type=Path,
        metavar="FILE",
        help="also check that this icecast.xml keeps listeners through a crash: every "
        "mount has a fallback with fallback-override, its file in the webroot, in the "
        "mount's sample rate and channels (a line each; exit 2)",
    )
    icecast_config = commands.add_parser(
        "icecast-config",
        help="write an icecast.xml whose mounts fall back to silence, and the silence files",
        description=icecastconf.DESCRIPTION,
    )
    icecastconf.build_parser(icecast_config)

    listen = commands.add_parser(
        "listen",
        parents=[common],
        help="play a mount and print each title as it changes",
        description="Play an Icecast mount with libvlc and print [m:ss] Title each time "
        "the title changes. Ctrl-C stops.",
    )
    listen.add_argument(
        "url",
        metavar="URL",
        help="http://host[:port]/mount; icecast:// works too (port 8000 by default), "
        "its user and password are ignored",
    )
    listen.add_argument(
        "--no-audio",
        dest="audio",
        action="store_false",
        help="decode without playing sound, for machines without a sound card",
    )
    listen.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="stop after this many seconds (default: until Ctrl-C or the stream ends)",
    )
    silence = commands.add_parser(
        "silence",
        help="write an MP3 of silence, for Icecast's fallback mount",
        description="Write a second of MPEG audio silence to FILE. In Icecast's webroot "
        "and named by a mount's <fallback-mount> with <fallback-override>1, it keeps "
        "listeners connected while pushsource restarts (see icecast.xml). Give the "
        "sample rate and channels of the station; a high bitrate keeps the silence "
        "a player has buffered short.",
    )
    silence.add_argument("file", type=Path, metavar="FILE", help="where to write it")
    silence.add_argument("--samplerate", type=int, default=44100, help="(default %(default)s)")
    silence.add_argument("--channels", type=int, choices=(1, 2), default=2)
    silence.add_argument("--bitrate", type=int, default=320, help="kbps (default %(default)s)")
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print the completion script for SHELL, made from these options: "
        "pushsource completion bash > /etc/bash_completion.d/pushsource, or for zsh "
        "into a file named _pushsource in a directory on $fpath.",
    )
    completion.add_argument("shell", metavar="SHELL", choices=docs.SHELLS, help="bash or zsh")
    commands.add_parser(
        "manpage",
        help="print the man page (troff)",
        description="Print pushsource(1), made from these options: "
        "pushsource manpage > /usr/local/share/man/man1/pushsource.1",
    )
    return parser


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    """How ``restart`` finds the running process (ops.handover.find_running)."""
    parser.add_argument("--pid", type=int, metavar="PID", help="the process to signal")
    parser.add_argument(
        "--pid-file", type=Path, metavar="FILE", help="the process run --pid-file named"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the pushsource run --config FILE among several of this user",
    )


def write_silence(path: Path, sample_rate: int, channels: int, bitrate: int) -> None:
    """A second (or a little more) of silent Layer III frames at ``path``. Raises ConfigError."""
    try:
        header = header_for(sample_rate, channels, bitrate)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    frames = -(-header.sample_rate // header.samples)  # whole frames, at least 1 s
    try:
        path.write_bytes(silent_frame(header) * frames)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0 and 60 seconds: {text}")
    return value


def _off_or_seconds(most: float) -> Callable[[str], float]:
    """A number of seconds from 0 (off) to ``most``."""

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(
                f"must be between 0 (off) and {most:g} seconds: {text}"
            )
        return value

    return check


_crossfade = _off_or_seconds(MAX_CROSSFADE)
_alarm = _off_or_seconds(SILENCE_ALARM_MAX)


def _lufs(text: str) -> float:
    low, high = LOUDNESS_RANGE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a loudness in LUFS: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} LUFS: {text}")
    return value


def _level(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", False):
        return logging.DEBUG
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.INFO


def stream_settings(args: argparse.Namespace) -> StationSettings:
    """The one station of ``pushsource stream``."""
    password = None
    if args.password_file:
        password = read_password_file(args.password_file, insecure=args.insecure_password_file)
    settings = StationSettings(
        folder=args.folder,
        url=args.url,
        password=password,
        once=args.once,
        name=args.name,
        description=args.description,
        genre=args.genre,
        station_url=args.station_url,
        public=args.public,
        lead=args.lead,
        batch=args.batch,
        samplerate=args.samplerate,
        channels=args.channels,
        bitrate=args.bitrate,
        strict_bitrate=args.strict_bitrate,
        cache=args.cache,
        loudness=args.loudness,
        idle=args.idle,
        crossfade=args.crossfade,
        titles=args.titles,
        shuffle=args.shuffle,
        state=args.state,
        max_retries=args.max_retries,
        timeout=args.timeout,
        settle=args.settle,
        silence_alarm=args.silence_alarm,
        trim_silence=args.trim_silence,
        public_url=args.public_url,
        live=_live_settings(args),
        outputs=tuple(parse_output_option(text) for text in args.output),
    )
    check_header_values(settings, lambda key: "--url" if key == "station_url" else f"--{key}")
    for n, output in enumerate(settings.outputs, 1):
        check_output(settings, output, os.environ, f"--output {n}")
    return settings


def _live_settings(args: argparse.Namespace) -> LiveSettings | None:
    """``--live-*``, or None when there is no --live-listen. Raises ConfigError."""
    if not args.live_listen:
        if args.live_user or args.live_users_file:
            raise ConfigError("--live-user and --live-users-file need --live-listen")
        if args.live_record:
            raise ConfigError("--live-record needs --live-listen")
        return None
    try:
        listen = parse_address(args.live_listen)
    except ValueError as exc:
        raise ConfigError(f"--live-listen: {exc}") from None
    # (where it was given, NAME:PASSWORD): a bad line is told where it is.
    lines = [("--live-user", line) for line in args.live_user]
    if args.live_users_file:
        path = args.live_users_file
        read_password_file(path, insecure=args.insecure_password_file)  # checks its mode
        text = path.read_text(encoding="utf-8")
        lines += [
            (f"--live-users-file {path} line {n}", line)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
    users = []
    for where, line in lines:
        try:
            users.append(parse_live_user(line.strip()))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if not users:
        raise ConfigError("--live-listen needs at least one --live-user or --live-users-file")
    if not 0 < args.live_grace <= 60:
        raise ConfigError("--live-grace must be between 0 and 60 seconds")
    mount = args.live_mount
    if mount is not None and not mount.startswith("/"):
        raise ConfigError("--live-mount must be a path like /live")
    try:
        title = check_live_title(args.live_title)
    except ValueError as exc:
        raise ConfigError(f"--live-title: {exc}") from None
    record = None
    if args.live_record:
        try:
            record = check_record(str(Path(args.live_record).expanduser().absolute()))
        except ValueError as exc:
            raise ConfigError(f"--live-record: {exc}") from None
    return LiveSettings(
        listen,
        mount,
        tuple(users),
        args.live_grace,
        args.live_interrupted,
        title,
        record,
        convert=getattr(args, "live_convert", True),
    )


def _control_settings(args: argparse.Namespace, config: Config | None) -> ControlSettings | None:
    """--control overrides the config's [control] address; the token comes
    from the config, else $PUSHSOURCE_TOKEN."""
    settings = config.control if config is not None else None
    if args.control is None and settings is None:
        return None
    host, port = (settings.host, settings.port) if settings else ("127.0.0.1", 8700)
    if args.control is not None:
        try:
            host, port = parse_address(args.control)
        except ValueError as exc:
            raise ConfigError(f"--control {args.control}: {exc}") from None
    token = (settings.token if settings else None) or os.environ.get(TOKEN_ENV) or None
    return ControlSettings(host, port, token, settings.allowed_hosts if settings else ())


def run_stations(
    args: argparse.Namespace,
    stations: Sequence[StationSettings],
    control: ControlSettings | None,
    *,
    single: bool,
    config: Path | None = None,
) -> int:
    """Build every station (checking all before any connects), run them until
    they end or a signal stops them. Returns the exit status. ``config``: the
    file ``run`` read, which a reload (SIGHUP, the control API) reads again."""
    # One watchdog observer for every folder: inotify allows 128 instances per user.
    # Imported only when a folder is watched: start-up time (--once watches none).
    observer = None
    if not all(settings.once for settings in stations):
        from watchdog.observers import Observer

        observer = Observer()
    engine = Engine()
    try:
        runners = build_runners(
            stations, os.environ, engine=engine, observer=observer, announce_errors=not single
        )
    except BaseException:
        # Closed now, not by the collector at exit, where its self-pipe may be
        # gone first (a traceback after the one-line error).
        engine.stop()
        raise
    setup_logging(
        _level(args),
        json_lines=getattr(args, "log_format", "plain") == "json",
        stations=[runner.id for runner in runners],
    )
    handover.attach(runners)  # restarted in place: the connections handed over
    fleet = None
    if config is not None:
        fleet = _fleet(args, config, runners, control, engine, observer)
    server = None
    if control is not None:
        server = _serve(control, runners, engine, fleet)
    if fleet is not None:
        fleet.server = server
    _handle_signals(runners)
    _handle_restart(
        runners,
        engine,
        lambda: fleet.control if fleet is not None else control,
        lambda: fleet.server if fleet is not None else server,
    )
    if fleet is not None:
        _handle_reload_signals(fleet)
    # Listeners over time, on a thread of its own (never the engine's).
    from pushsource.ops.listeners import ListenerSampler

    sampler = ListenerSampler(runners)
    pid_file = getattr(args, "pid_file", None)
    try:
        if pid_file is not None:
            _write_pid(pid_file)
        engine.start()
        for runner in runners:
            runner.start()
        handover.release_listeners()  # those no harbor or control server took
        sampler.start()
        if fleet is not None:
            fleet.start()
        # What start-up made (modules, settings, the stations' objects) lives
        # as long as the process: out of the collector's reach, so a full
        # collection, which stops every station while it runs, walks only
        # what came since (benchmarks.tick prints the longest).
        gc.freeze()
        _wait(runners, args, fleet)
    finally:
        if fleet is not None:
            fleet.stop()
            fleet.close()  # no reload under way from here on: runners is final
            server = fleet.server
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(10)
        sampler.stop()  # before close(): the last save has its last sample
        engine.stop()
        for runner in runners:
            runner.close()
        if server is not None:
            server.close()
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join(5)
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.unlink()
    errors = [runner.error for runner in runners if runner.error is not None]
    if single and errors:
        raise errors[0]
    # An output refused for good (a wrong password) while its station played
    # on: said when it happened (one ERROR line); the exit status says it too.
    refused = any(o.refused for runner in runners for o in runner.driver.outputs)
    return max([error.exit_status for error in errors] + [2 if refused else 0])


def _control_server(
    control: ControlSettings,
    runners: Sequence[StationRunner],
    engine: Engine,
    fleet: Fleet | None = None,
) -> Any:
    """The control server, bound (raises ConfigError), not started."""
    from pushsource.ops.control import ControlServer
    from pushsource.ops.metrics import Metrics

    metrics = Metrics(runners, engine.air_idle)

    def reload(client: str) -> Outcome:
        assert fleet is not None
        return fleet.reload(client, answer_first=True)

    return ControlServer(
        (control.host, control.port),
        runners,
        inherited=handover.listener(control.host, control.port),
        token=control.token,
        metrics=metrics.render,
        allowed_hosts=control.allowed_hosts,
        air=engine.air_idle,
        reload=reload if fleet is not None else None,
    )


def _serve(
    control: ControlSettings,
    runners: Sequence[StationRunner],
    engine: Engine,
    fleet: Fleet | None = None,
) -> Any:
    from pushsource.ops.fleet import announce_control

    server = _control_server(control, runners, engine, fleet)
    server.start()
    announce_control(server, control)
    return server


def _wait(
    runners: Sequence[StationRunner], args: argparse.Namespace, fleet: Fleet | None = None
) -> None:
    """Until every station has ended (``runners`` may change: a reload); a
    live status line per station on a terminal."""
    view = None
    if getattr(args, "console", True) and sys.stderr.isatty() and not getattr(args, "quiet", False):
        from pushsource.ops.console import Console

        view = Console(runners)
    try:
        if view is not None:
            view.start()
        # Nothing to draw: sleep until the stations end. A signal still runs
        # its handler at once (a lock's wait is interrupted for it), and the
        # main thread no longer wakes four times a second for nothing.
        every = None if view is None else 0.25
        while True:
            waiting = [runner for runner in list(runners) if not runner.join(0)]
            if not waiting:
                # A reload under way may be starting stations: it says.
                if fleet is None or fleet.all_ended():
                    return
                continue
            waiting[0].join(every)
            if view is not None:
                view.refresh()
    finally:
        if view is not None:
            view.stop()


def check_config(args: argparse.Namespace) -> int:
    """``pushsource check``: the config, the addresses ``run`` listens on, each
    station's and output's login (see pushsource.ops.check)."""
    from pushsource.ops.check import check

    config = load_config(args.config, os.environ, collect=True)  # every station's problem
    setup_logging(_level(args), json_lines=getattr(args, "log_format", "plain") == "json")
    control_key = "--control" if args.control is not None else '[control] key "listen"'
    return check(
        config,
        _control_settings(args, config),
        control_key,
        verbose=getattr(args, "verbose", False),
        icecast_config=args.icecast_config,
    )


def _handle_signals(runners: Sequence[StationRunner]) -> None:
    """Like ezstream: TERM/INT stop cleanly, HUP rescans the folders, USR1 skips
    (on every station: the control API skips one)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # First: a second signal ends us at once, even one that comes while
        # this handler waits for the GIL that a busy engine holds.
        signal.signal(signum, signal.SIG_DFL)
        log.info("stopping (%s)", signal.Signals(signum).name)
        for runner in runners:
            runner.stop()

    def rescan(signum: int, frame: FrameType | None) -> None:
        log.info("rescanning the folders (SIGHUP)")
        for runner in runners:
            runner.rescan()

    def skip(signum: int, frame: FrameType | None) -> None:
        for runner in runners:
            runner.skip()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    signal.signal(signal.SIGHUP, rescan)
    signal.signal(signal.SIGUSR1, skip)


def _handle_restart(
    runners: Sequence[StationRunner],
    engine: Engine,
    controls: Callable[[], ControlSettings | None],
    server: Callable[[], Any],
) -> None:
    """SIGUSR2 (``pushsource restart``): exec anew in place, handing over the
    connections (ops.handover), on a thread of its own: the check of the new
    image takes a second or two, and the signal handler must not wait.
    ``runners`` is the list a reload edits in place; ``controls`` and
    ``server``: the control settings and server now (a reload may change them)."""

    def listening() -> list[handover.Listening]:
        out = []
        httpd, control = server(), controls()
        if control is not None and httpd is not None:
            out.append(handover.Listening(control.host, control.port, httpd.listening_socket))
        seen: list[Any] = []
        for runner in runners:
            harbor = runner.harbor
            if harbor is not None and all(h is not harbor for h in seen):
                seen.append(harbor)
                sock = harbor.listening_socket
                if sock is not None:
                    out.append(handover.Listening(harbor.host, harbor.port, sock))
        return out

    def before_exec() -> None:
        for handler in [*logging.getLogger().handlers, *log.handlers]:
            handler.flush()
        if _native is not None:
            _native.close()  # fd 2 the real stderr again, for the new image

    def quiet() -> Callable[[], None]:
        httpd = server()
        if httpd is None:
            return lambda: None
        httpd.pause()
        return httpd.start  # type: ignore[no-any-return]

    def go() -> None:
        handover.restart(runners, engine, listening, before_exec, quiet)

    def restart(signum: int, frame: FrameType | None) -> None:
        log.info("restart asked (SIGUSR2): checking the new image")
        threading.Thread(target=go, name="pushsource-restart", daemon=True).start()

    signal.signal(signal.SIGUSR2, restart)
    if handover.restart_asked():  # came while this image started
        restart(signal.SIGUSR2, None)


# -- reload (issue 24): SIGHUP, `pushsource reload`, POST /api/reload


def _fleet(
    args: argparse.Namespace,
    path: Path,
    runners: list[StationRunner],
    control: ControlSettings | None,
    engine: Engine,
    observer: Any,
) -> Fleet:
    """What a reload of ``run --config`` changes, and how it builds."""
    from pushsource.ops.fleet import Fleet

    def make(settings: StationSettings) -> StationRunner:
        (runner,) = build_runners([settings], os.environ, engine=engine, observer=observer)
        return runner

    fleet: Fleet

    def serve(settings: ControlSettings) -> Any:
        return _control_server(settings, fleet.runners, engine, fleet)

    fleet = Fleet(
        runners,
        path=path,
        environ=os.environ,
        engine=engine,
        make=make,
        relog=lambda ids: setup_logging(
            _level(args), json_lines=getattr(args, "log_format", "plain") == "json", stations=ids
        ),
        control_for=lambda config: _control_settings(args, config),
        control=control,
        serve=serve,
    )
    return fleet


def _handle_reload_signals(fleet: Fleet) -> None:
    """``run --config``: SIGHUP reads the config again and applies it (the
    folders are looked at again too); a stop stops reloads first."""

    def reload(signum: int, frame: FrameType | None) -> None:
        fleet.request()

    signal.signal(signal.SIGHUP, reload)
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def stop(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            fleet.stop()
            previous(signum, frame)

        signal.signal(signum, stop)


def _write_pid(path: Path) -> None:
    try:
        path.write_text(f"{os.getpid()}\n", encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"--pid-file: cannot write {path}: {exc.strerror or exc}") from None


def _add_reload_command(commands: Any, common: argparse.ArgumentParser) -> None:
    reload = commands.add_parser(
        "reload",
        parents=[common],
        help="make a running pushsource run read its config again",
        description="Make pushsource run read its config file again and apply it: "
        "stations added start, removed ones stop, changed ones restart alone, the "
        "others are not touched; a config that does not check out changes nothing. "
        "With --config, through the control API that file's [control] names (its "
        "token, or $PUSHSOURCE_TOKEN), and the outcome is printed; with --pid or "
        "--pid-file, by SIGHUP (the outcome is in that process's log).",
    )
    reload.add_argument(
        "--config", type=Path, metavar="FILE", help="the config the running process runs"
    )
    reload.add_argument(
        "--control",
        metavar="[HOST:]PORT",
        help="the address the process's control server listens on, when run --control "
        "gave it (default: the config's [control] listen)",
    )
    reload.add_argument("--pid", type=int, metavar="PID", help="send SIGHUP to this process")
    reload.add_argument(
        "--pid-file",
        type=Path,
        metavar="FILE",
        help="send SIGHUP to the process run --pid-file named",
    )


def reload_command(args: argparse.Namespace) -> int:
    """``pushsource reload``: 0 applied (or the signal sent), 2 refused or a
    usage error, 1 the process or its control server not reached."""
    pid = args.pid
    if pid is None and args.pid_file is not None:
        try:
            pid = int(args.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--pid-file {args.pid_file}: no process id in it ({exc})") from None
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            print(f"pushsource: error: no process {pid}", file=sys.stderr)
            return 1
        except PermissionError:
            print(f"pushsource: error: not allowed to signal process {pid}", file=sys.stderr)
            return 1
        print(f"sent SIGHUP to {pid}: its log says what the reload did")
        return 0
    if args.config is None:
        raise ConfigError("pushsource reload needs --config FILE, --pid PID or --pid-file FILE")
    config = load_config(args.config, os.environ, collect=True)
    settings = _control_settings(args, config)  # --control wins, as with run
    token = settings.token if settings else None
    if settings is None or not token:
        raise ConfigError(
            f"{args.config} has no [control] with a token (or ${TOKEN_ENV}): "
            "use --pid or --pid-file (SIGHUP)"
        )
    return _reload_through_api(settings, token)


def _reload_through_api(control: ControlSettings, token: str) -> int:
    import http.client
    import json

    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(control.host, control.host)
    try:
        conn = http.client.HTTPConnection(host, control.port, timeout=60)
        conn.request(
            "POST",
            "/api/reload",
            body=b"",
            headers={"Authorization": f"Bearer {token}", "Content-Length": "0"},
        )
        response = conn.getresponse()
        body = response.read()
        conn.close()
    except OSError as exc:
        where = f"[{host}]:{control.port}" if ":" in host else f"{host}:{control.port}"
        print(f"pushsource: error: control API on {where}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if response.status == 200 and answer.get("applied"):
        print(answer.get("summary", "reloaded"))
        for line in answer.get("failed") or []:
            print(f"not started: {line}")
        return 1 if answer.get("failed") else 0
    if response.status == 422:
        for line in answer.get("problems") or []:
            print(f"refused: {line}")
        print("nothing changed")
        return 2
    print(
        f"pushsource: error: the control API answered {response.status}: "
        f"{answer.get('error', body[:200].decode('utf-8', 'replace'))}",
        file=sys.stderr,
    )
    return 2 if response.status in (401, 403) else 1


def _forget_state(settings: StationSettings) -> None:
    """--fresh: remove the station's state file, so everything plays again."""
    target = resolve_target(settings, os.environ)
    path = settings.state or default_state_path(f"{target.host}:{target.port}{target.mount}")
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"--fresh: cannot remove {path}: {exc.strerror or exc}") from None
    log.info("--fresh: forgot what played before (%s)", path)


def _hide_password_from_ps(argv: Sequence[str]) -> None:
    """The URL may carry the password: ps and /proc/PID/cmdline show argv."""
    setproctitle.setproctitle(" ".join(["pushsource", *(redact(arg) for arg in argv)]))


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own arena, up to 8 per core,
    each holding freed memory of its own; the engine's pools have a dozen
    threads. Two arenas serve them (300 stations: 20 MB less resident). Only
    before the first thread; elsewhere (musl, macOS) it does nothing."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX


def main(argv: Sequence[str] | None = None) -> int:
    _few_malloc_arenas()
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
        _hide_password_from_ps(argv)
    args = parser.parse_args(argv)
    global _native
    native = _native = _native_stderr()
    setup_logging(_level(args), json_lines=getattr(args, "log_format", "plain") == "json")
    try:
        if args.command == "stream":
            settings = stream_settings(args)
            if args.fresh and not args.once and not handover.handed_over():
                _forget_state(settings)  # not again when restarted in place
            return run_stations(args, [settings], _control_settings(args, None), single=True)
        if args.command == "run":
            config = load_config(args.config, os.environ)
            return run_stations(
                args,
                config.stations,
                _control_settings(args, config),
                single=False,
                config=args.config,
            )
        if args.command == "reload":
            return reload_command(args)
        if args.command == "check":
            return check_config(args)
        if args.command == "restart":
            pid = args.pid if args.pid_file is None else handover.read_pid_file(args.pid_file)
            return handover.signal_running(signal.SIGUSR2, pid, args.config)
        if args.command == "icecast-config":
            return icecastconf.run(args)
        if args.command == "silence":
            write_silence(args.file, args.samplerate, args.channels, args.bitrate)
            return 0
        if args.command == "completion":
            sys.stdout.write(docs.completion(build_parser(), args.shell))
            return 0
        if args.command == "manpage":
            sys.stdout.write(docs.manpage(build_parser()))
            return 0
        if args.command == "listen":
            from pushsource.ops.listen import listen

            return listen(args.url, audio=args.audio, duration=args.duration)
        parser.error(f"unknown command {args.command}")
    except PushsourceError as exc:
        print(f"pushsource: error: {exc}", file=sys.stderr)
        return exc.exit_status
    finally:
        if native is not None:
            native.close()
    return 0


_native: NativeStderr | None = None


def _native_stderr() -> NativeStderr | None:
    """What C code (libvlc's plugins) writes to fd 2, made log lines."""
    try:
        return NativeStderr()
    except OSError:  # no fd 2 to take: such lines go where fd 2 goes
        return None
