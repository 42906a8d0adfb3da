"""Icecast's side of the crash fallback: a ``<mount>`` block for every mount the
stations stream to, whose ``<fallback-mount>`` is a file of silence in the
station's sample rate and channels, served from Icecast's webroot, with
``<fallback-override>1``. When pushsource dies (even ``kill -9``) Icecast 2.4
moves the mount's listeners to the file instead of closing them, and back the
moment pushsource is on the mount again.

One place makes this for every way pushsource ships an Icecast: the container's
entrypoint (``python3 -m pushsource.ops.icecastconf``, the image has no other
dependency), ``make station`` and ``pushsource icecast-config``; ``pushsource
check --icecast-config`` checks a hand-written config with :func:`problems`.

Only the standard library and pushsource's pure parts: the Icecast image runs
this with Debian's python3 alone.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser, header_for, silent_frame
from pushsource.core.target import parse_target
from pushsource.errors import ConfigError, FrameError, PushsourceError

if TYPE_CHECKING:
    from pushsource.ops.settings import StationSettings

#: Where Debian's icecast2 serves files from when a config names no <webroot>.
DEFAULT_WEBROOT: Final = Path("/usr/share/icecast2/web")
#: The fallback files' bitrate: the highest (MPEG-1's; MPEG-2's below 32 kHz),
#: so the silence a player has buffered when pushsource comes back is the shortest.
SILENCE_BITRATE: Final = 320
_SILENCE_BITRATE_MPEG2: Final = 160
#: The formats a station gets unless its table says otherwise (StationSettings').
DEFAULT_FORMAT: Final = (44100, 2)
_VAR = re.compile(r"\$(\$|\{[^}]*\})")
# A fallback this module (or the README's `pushsource silence`) made: replaced
# by the file of the mount's format. Any other fallback (an operator's own mount
# or file) is kept.
_OURS = re.compile(r"/silence(-\d+-[12])?\.mp3")


@dataclass(frozen=True, order=True)
class Mount:
    """A mount a station (or one of its outputs) streams to, in what format."""

    mount: str
    sample_rate: int
    channels: int

    @property
    def fallback(self) -> str:
        """Its fallback, a file in the webroot: one per format."""
        return fallback_name(self.sample_rate, self.channels)


def fallback_name(sample_rate: int, channels: int) -> str:
    return f"/silence-{sample_rate}-{channels}.mp3"


# --- which mounts ----------------------------------------------------------------


def mounts_of(stations: Iterable[StationSettings]) -> list[tuple[str, Mount]]:
    """(who: station id or "id output N", Mount) for every Icecast mount of
    checked stations (SHOUTcast has no fallback mounts), in config order."""
    from pushsource.ops.settings import output_format

    found = []
    for station in stations:
        target = parse_target(station.url, password="-")
        if target.protocol == "icecast":
            found.append(
                (str(station.id), Mount(target.mount, station.samplerate, station.channels))
            )
        for n, output in enumerate(station.outputs, 1):
            target = parse_target(output.url, password="-")
            if target.protocol == "icecast":
                _bitrate, rate, channels = output_format(station, output)
                found.append((f"{station.id} output {n}", Mount(target.mount, rate, channels)))
    return found


def read_mounts(path: Path, environ: Mapping[str, str] | None = None) -> list[Mount]:
    """The Icecast mounts of a stations.toml, read leniently: only each
    [[station]]'s and [[station.output]]'s url, samplerate and channels (where
    Icecast's config is made, the music folders, secrets and the variables of
    other keys may be missing). Distinct, sorted. Raises ConfigError."""
    import tomllib

    env = os.environ if environ is None else environ
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tables = data.get("station")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[station]] tables")
    found: set[Mount] = set()
    for n, table in enumerate(tables, 1):
        where = f"{path}: station {n}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table ([[station]])")
        rate = _format_key(table, "samplerate", DEFAULT_FORMAT[0], where)
        channels = _format_key(table, "channels", DEFAULT_FORMAT[1], where)
        _add(found, table.get("url"), rate, channels, env, where)
        outputs = table.get("output", [])
        if not isinstance(outputs, list):
            raise ConfigError(f'{where}: key "output" must be [[station.output]] tables')
        for k, output in enumerate(outputs, 1):
            if not isinstance(output, dict):
                raise ConfigError(f'{where}: key "output" must be [[station.output]] tables')
            out_rate = _format_key(output, "samplerate", rate, f"{where} output {k}")
            out_channels = _format_key(output, "channels", channels, f"{where} output {k}")
            _add(found, output.get("url"), out_rate, out_channels, env, f"{where} output {k}")
    return sorted(found)


def _format_key(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f'{where}: key "{key}" must be a whole number')
    return value


def _add(
    found: set[Mount], url: object, rate: int, channels: int, env: Mapping[str, str], where: str
) -> None:
    if not isinstance(url, str):
        raise ConfigError(f'{where}: key "url" is missing')

    def sub(match: re.Match[str]) -> str:
        # Unset variables are secrets of the other container: any text parses.
        return "$" if match.group(1) == "$" else env.get(match.group(1)[1:-1], "x")

    try:
        target = parse_target(_VAR.sub(sub, url), password="-")
        silence(rate, channels)
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if target.protocol == "icecast":
        found.add(Mount(target.mount, rate, channels))


# --- the fallback files ------------------------------------------------------------


def silence(sample_rate: int, channels: int, bitrate: int | None = None) -> bytes:
    """A second (whole frames, a little more) of silent Layer III frames, at
    the highest bitrate by default. Raises ValueError for a format MPEG has not."""
    if bitrate is None:
        bitrate = SILENCE_BITRATE if sample_rate >= 32000 else _SILENCE_BITRATE_MPEG2
    header = header_for(sample_rate, channels, bitrate)
    return silent_frame(header) * -(-header.sample_rate // header.samples)


def write_fallbacks(webroot: Path, mounts: Iterable[Mount]) -> list[Path]:
    """One silence file per format of ``mounts`` in ``webroot``, readable by
    all (Icecast may run as another user), each written whole or not at all.
    Returns the paths. Raises ConfigError."""
    written = []
    for rate, channels in sorted({(m.sample_rate, m.channels) for m in mounts}):
        path = webroot / fallback_name(rate, channels).lstrip("/")
        _write(path, silence(rate, channels), 0o644)
        written.append(path)
    return written


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def prepare_webroot(webroot: Path, mounts: Iterable[Mount], stock: Path = DEFAULT_WEBROOT) -> None:
    """A webroot of our own (``make station``: Debian's is root's): a copy of
    ``stock`` (the status pages Icecast serves from it) plus the fallback files.
    Raises ConfigError."""
    try:
        if stock.is_dir():
            shutil.copytree(stock, webroot, dirs_exist_ok=True)
        webroot.mkdir(parents=True, exist_ok=True)
        webroot.chmod(0o755)
    except OSError as exc:
        raise ConfigError(f"cannot make the webroot {webroot}: {exc}") from None
    write_fallbacks(webroot, mounts)


# --- icecast.xml -------------------------------------------------------------------


def _parse(text: str, where: str) -> ET.Element:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        return ET.fromstring(text, parser=parser)
    except ET.ParseError as exc:
        raise ConfigError(f"{where}: not valid XML: {exc}") from None


def _blocks(root: ET.Element) -> dict[str, ET.Element]:
    """The <mount> blocks of named mounts, by mount name."""
    found: dict[str, ET.Element] = {}
    for block in root.findall("mount"):
        name = (block.findtext("mount-name") or "").strip()
        if block.get("type", "normal") == "normal" and name:
            found.setdefault(name, block)
    return found


def webroot_of(root: ET.Element) -> Path:
    found = (root.findtext("paths/webroot") or "").strip()
    return Path(found) if found else DEFAULT_WEBROOT


def add_fallbacks(text: str, mounts: Sequence[Mount], *, webroot: Path | None = None) -> str:
    """icecast.xml ``text`` with a fallback for each mount: its <mount> block
    (made after the template's last one if it has none) gets our silence file
    of its format as <fallback-mount> (an operator's own fallback is kept) and
    <fallback-override>1; <fileserve>1, so the files are served; <limits>
    <sources> at least the number of mounts; ``webroot`` as <webroot> if given.
    Comments and everything else are kept. Raises ConfigError."""
    root = _parse(text, "icecast.xml template")
    if root.tag != "icecast":
        raise ConfigError(f"icecast.xml template: the root is <{root.tag}>, not <icecast>")
    blocks = _blocks(root)
    mounts_at = max((i for i, e in enumerate(root) if e.tag == "mount"), default=len(root) - 1)
    for mount in sorted(set(mounts)):
        block = blocks.get(mount.mount)
        if block is None:
            block = ET.Element("mount", type="normal")
            _set(block, "mount-name", mount.mount)
            _set(block, "charset", "UTF-8")  # as the template's default mount: titles byte for byte
            mounts_at += 1
            root.insert(mounts_at, block)
            blocks[mount.mount] = block
        current = (block.findtext("fallback-mount") or "").strip()
        if not current or _OURS.fullmatch(current):
            _set(block, "fallback-mount", mount.fallback)
        _set(block, "fallback-override", "1")
    _set(root, "fileserve", "1")
    limits = _child(root, "limits")
    sources = (limits.findtext("sources") or "").strip()
    count = len({m.mount for m in mounts})
    if not sources.isdigit() or int(sources) < count:
        _set(limits, "sources", str(count))
    if webroot is not None:
        _set(_child(root, "paths"), "webroot", str(webroot))
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _child(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    return found if found is not None else ET.SubElement(parent, tag)


def _set(parent: ET.Element, tag: str, value: str) -> None:
    _child(parent, tag).text = value


def generate(
    template: Path, mounts: Sequence[Mount], out: Path, *, webroot: Path | None = None
) -> list[Path]:
    """Write ``template`` with the fallbacks of ``mounts`` to ``out`` (mode 600:
    it holds passwords) and the fallback files to its webroot (``webroot`` if
    given). Returns the files written. Raises ConfigError."""
    try:
        text = template.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {template}: {exc}") from None
    if webroot is not None:
        webroot = webroot.resolve()  # icecast2 may run elsewhere
    rendered = add_fallbacks(text, mounts, webroot=webroot)
    if webroot is not None and webroot.resolve() != DEFAULT_WEBROOT:
        prepare_webroot(webroot, mounts)  # its status pages too
    files = write_fallbacks(webroot_of(_parse(rendered, str(out))), mounts)
    _write(out, rendered.encode("utf-8"), 0o600)
    return files


# --- the check ---------------------------------------------------------------------


def problems(config: Path, mounts: Sequence[tuple[str, Mount]]) -> list[tuple[str, str]]:
    """(who, problem) for each mount of ``mounts`` that Icecast run from
    ``config`` would not keep listeners on through a crash: no fallback, no
    override, a fallback file missing from its webroot or in another format
    (Icecast drops the listeners it moves to a stream of another sample rate
    or channel count). A file ``config`` cannot be read is one problem (who
    ""). Does not raise."""
    try:
        root = _parse(config.read_text("utf-8"), str(config))
    except (OSError, UnicodeDecodeError) as exc:
        return [("", f"cannot read {config}: {exc}")]
    except ConfigError as exc:
        return [("", str(exc))]
    blocks = _blocks(root)
    webroot = webroot_of(root)
    ours = {mount.mount for _who, mount in mounts}
    fileserve = (root.findtext("fileserve") or "1").strip() != "0"
    found = []
    for who, mount in mounts:
        block = blocks.get(mount.mount)
        fallback = (block.findtext("fallback-mount") or "").strip() if block is not None else ""
        if not fallback:
            found.append(
                (
                    who,
                    f"{mount.mount} has no <mount> block with a <fallback-mount> in {config}: "
                    "Icecast drops its listeners when pushsource stops (pushsource "
                    "icecast-config writes one)",
                )
            )
            continue
        assert block is not None
        if (block.findtext("fallback-override") or "").strip() != "1":
            found.append(
                (
                    who,
                    f"{mount.mount}: no <fallback-override>1</fallback-override>: its "
                    "listeners stay on the fallback after pushsource is back",
                )
            )
        if fallback in ours:
            continue  # another mount of these stations: not a file
        if not fileserve:
            found.append(
                (who, f"{mount.mount}: <fileserve>0: the fallback {fallback} is not served")
            )
            continue
        path = webroot / fallback.lstrip("/")
        why = _format_problem(path, mount)
        if why is not None:
            found.append((who, f"{mount.mount}: the fallback {fallback}: {why}"))
    return found


def _format_problem(path: Path, mount: Mount) -> str | None:
    try:
        with path.open("rb") as file:
            head = file.read(1 << 16)
    except OSError as exc:
        return (
            f"{path} is missing from the webroot ({exc.strerror or exc}): Icecast drops the "
            f"listeners (pushsource silence {path} --samplerate {mount.sample_rate} "
            f"--channels {mount.channels} writes it)"
        )
    first = _first_frame(head)
    if first is None:
        return f"{path} holds no MPEG audio frame"
    if (first.header.sample_rate, first.header.channels) != (mount.sample_rate, mount.channels):
        return (
            f"{path} is {first.header.sample_rate} Hz, {first.header.channels} channels, the "
            f"mount {mount.sample_rate} Hz, {mount.channels}: Icecast drops listeners moved "
            "between them"
        )
    return None


def _first_frame(data: bytes) -> Frame | None:
    parser = FrameParser()
    parser.feed(data)
    parser.feed(b"")
    try:
        while (event := parser.next_event()) is not END and event is not NEED_DATA:
            if isinstance(event, Frame):
                return event
    except FrameError:
        return None
    return None


# --- python -m pushsource.ops.icecastconf ------------------------------------------


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options, on ``parser`` (``pushsource icecast-config``) or a new one."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m pushsource.ops.icecastconf", description=DESCRIPTION
        )
    parser.add_argument(
        "--stations", type=Path, metavar="FILE", help="the stations' config (its Icecast mounts)"
    )
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        help="a mount beside the config's (pushsource stream's), at --samplerate and "
        "--channels; may be repeated",
    )
    parser.add_argument("--samplerate", type=int, default=DEFAULT_FORMAT[0], help="of --mount")
    parser.add_argument(
        "--channels", type=int, choices=(1, 2), default=DEFAULT_FORMAT[1], help="of --mount"
    )
    parser.add_argument(
        "--template", type=Path, required=True, metavar="FILE", help="an icecast.xml to start from"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the icecast.xml to write"
    )
    parser.add_argument(
        "--webroot",
        type=Path,
        metavar="DIR",
        help="make DIR the <webroot>: Debian's status pages are copied there, with the "
        "fallback files (default: the template's <webroot>, the files are written there)",
    )
    return parser


DESCRIPTION: Final = (
    "Write an icecast.xml in which every mount of the stations' config falls back "
    "to a file of silence in its format (with fallback-override), and those files "
    "into its webroot: listeners stay through a crash of pushsource."
)


def run(args: argparse.Namespace) -> int:
    """Raises ConfigError."""
    mounts = read_mounts(args.stations) if args.stations is not None else []
    for name in args.mount:
        if not name.startswith("/"):
            raise ConfigError(f"--mount {name}: a mount starts with /")
        try:
            silence(args.samplerate, args.channels)
        except ValueError as exc:
            raise ConfigError(f"--mount {name}: {exc}") from None
        mounts.append(Mount(name, args.samplerate, args.channels))
    if not mounts:
        raise ConfigError("no mounts: give --stations FILE or --mount MOUNT")
    files = generate(args.template, mounts, args.out, webroot=args.webroot)
    shown = ", ".join(str(p) for p in files)
    count = "1 mount" if len(mounts) == 1 else f"{len(mounts)} mounts"
    print(f"{args.out}: {count} with a fallback; wrote {shown}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PushsourceError as exc:
        print(f"pushsource: error: {exc}", file=sys.stderr)
        return exc.exit_status


if __name__ == "__main__":
    raise SystemExit(main())
