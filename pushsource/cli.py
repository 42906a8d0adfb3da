"""The ``pushsource`` command line. Exit status: 0 done, 2 usage or configuration
error (a wrong password included), 1 anything else fatal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import setproctitle

from pushsource import __version__
from pushsource.errors import ConfigError, PushsourceError
from pushsource.folder import FolderQueue, scan
from pushsource.icecast import (
    IcecastTarget,
    SourceConnection,
    StationInfo,
    parse_target,
    redact,
)
from pushsource.listen import listen
from pushsource.prefetch import Prefetch
from pushsource.state import FileStamp, StateKeeper, default_state_path, load_state
from pushsource.station import Idle, ListSource, Pacing, Retry, Station
from pushsource.transcode import Resolver, StationFormat, Transcoder, default_cache_dir

log = logging.getLogger("pushsource")

PASSWORD_ENV = "PUSHSOURCE_PASSWORD"


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

    parser = _Parser(
        prog="pushsource",
        description="A folder-driven source client for Icecast.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pushsource {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    stream = commands.add_parser(
        "stream",
        parents=[common],
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
        "port to 8000); http:// and https:// work the same way",
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
        "--idle",
        choices=[idle.value for idle in Idle],
        default=Idle.SILENCE.value,
        help="when the queue runs dry: send silence and keep listeners (default), "
        "loop the folder's library, or stop (close the stream until a file arrives)",
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
        "--settle",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="a dropped-in file with no close event is ready once its size "
        "holds still this long (default %(default)s)",
    )

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
    return parser


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


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries speak up only when it matters
    logging.getLogger("pushsource").setLevel(level)


def run_stream(args: argparse.Namespace) -> int:
    target = parse_target(
        args.url,
        password=read_password_file(args.password_file, insecure=args.insecure_password_file)
        if args.password_file
        else None,
        fallback_password=os.environ.get(PASSWORD_ENV),
    )
    folder: Path = args.folder
    if not folder.is_dir():
        raise ConfigError(f"music folder {folder} is not a directory")
    if args.max_retries is not None and args.max_retries < 0:
        raise ConfigError("--max-retries must be 0 or more")
    fmt = StationFormat(args.samplerate, args.channels, args.bitrate)
    key = f"{target.host}:{target.port}{target.mount}"
    transcoder = Transcoder(args.cache or default_cache_dir(key), fmt)
    resolver = Resolver(fmt, transcoder, strict_bitrate=args.strict_bitrate)
    info = StationInfo(
        name=args.name,
        description=args.description,
        genre=args.genre,
        url=args.station_url,
        public=args.public,
    )
    queue: FolderQueue | None = None
    keeper: StateKeeper | None = None
    resume: list[tuple[Path, int]] = []
    if args.once:
        paths = scan(folder)
        if not paths:
            log.warning("nothing to play in %s", folder)
            return 0
        prefetch = Prefetch(ListSource(paths), resolver.prepare, finite=True)
    else:
        keeper, resume = _restore(args.state, target)
        queue = FolderQueue(folder, settle=args.settle)
        queue.start(order=[Path(p) for p in keeper.state.queue])
        root = queue.root
        prefetch = Prefetch(
            queue,
            resolver.prepare,
            skip=keeper.state.was_played,
            housekeeping=lambda: transcoder.prune(scan(root)),
        )
    station = Station(
        target,
        prefetch,
        info,
        once=args.once,
        pacing=Pacing(lead=args.lead, batch=min(Pacing.batch, args.lead)),
        retry=Retry(limit=args.max_retries),
        connect=lambda t: SourceConnection(t, timeout=args.timeout),
        keeper=keeper,
        resume=resume,
        idle=Idle(args.idle),
        silence=fmt.header(),
        library=lambda: scan(queue.root) if queue is not None else [],
        shuffle=args.shuffle,
        resolve=resolver.resolve,
    )
    _handle_signals(station, queue, prefetch)
    prefetch.start()
    try:
        station.run()
    finally:
        prefetch.close()
        if queue is not None:
            queue.stop()
        transcoder.close()
    return 0


def _restore(
    path: Path | None, target: IcecastTarget
) -> tuple[StateKeeper, list[tuple[Path, int]]]:
    """Load the play state; where the last run was part-way through a track
    that is still the same file, go on from there."""
    if path is None:
        path = default_state_path(f"{target.host}:{target.port}{target.mount}")
    state = load_state(path)
    log.debug("play state in %s", path)
    resume: list[tuple[Path, int]] = []
    if state.current is not None:
        current = Path(state.current)
        if state.current_stamp is not None and FileStamp.of(current) == state.current_stamp:
            resume.append((current, state.current_offset))
    return StateKeeper(path, state, interval=5.0), resume


def _handle_signals(station: Station, queue: FolderQueue | None, prefetch: Prefetch) -> None:
    """Like ezstream: TERM/INT stop cleanly, HUP rescans the folder, USR1 skips."""

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping (%s)", signal.Signals(signum).name)
        station.stop()
        prefetch.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends us at once

    def rescan(signum: int, frame: FrameType | None) -> None:
        if queue is not None:
            log.info("rescanning the folder (SIGHUP)")
            queue.rescan()

    def skip(signum: int, frame: FrameType | None) -> None:
        station.skip()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    signal.signal(signal.SIGHUP, rescan)
    signal.signal(signal.SIGUSR1, skip)


def _hide_password_from_ps(argv: Sequence[str]) -> None:
    """The URL may carry the password: ps and /proc/PID/cmdline show argv."""
    setproctitle.setproctitle(" ".join(["pushsource", *(redact(arg) for arg in argv)]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
        _hide_password_from_ps(argv)
    args = parser.parse_args(argv)
    setup_logging(args)
    try:
        if args.command == "stream":
            return run_stream(args)
        if args.command == "listen":
            return listen(args.url, audio=args.audio, duration=args.duration)
        parser.error(f"unknown command {args.command}")
    except PushsourceError as exc:
        print(f"pushsource: error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0
