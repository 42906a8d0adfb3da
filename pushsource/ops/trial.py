# mutagen ships py.typed but leaves its tag constructors unannotated.
# mypy: disallow-untyped-calls=False
"""A trial station on this machine: demo tracks made with sox and lame, and a
local icecast2 run from a config template (the repository's icecast.xml).

``make station`` runs ``python -m pushsource.ops.trial station``; the tests and
benchmarks use the same pieces (tests/support re-exports them), so there is one
way to start a local Icecast and one way to make a tone.

    python -m pushsource.ops.trial station --config icecast.xml --port 8000 music
    python -m pushsource.ops.trial icecast --config icecast.xml --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, cast

from pushsource.errors import PushsourceError

HOST = "127.0.0.1"
_PACKAGES = {"sox": "sox", "lame": "lame", "ffprobe": "ffmpeg", "ffmpeg": "ffmpeg"}

#: The demo tracks ``make station`` makes in an empty music folder: titles in
#: three scripts, so the page and a player show that UTF-8 goes through.
DEMO_TITLES: tuple[tuple[str, str], ...] = (
    ("pushsource", "Demo Tone"),
    ("Sigur Rós", "Ágætis tónn"),
    ("東京", "デモ 🎶"),
)


class TrialError(PushsourceError):
    """The trial station cannot be set up: a tool is missing, a port is taken,
    icecast2 will not start. The message says which and what to do."""


# --- tones ----------------------------------------------------------------------------


def run_tool(*args: str | Path) -> bytes:
    """Run sox/lame/ffmpeg/ffprobe and return its stdout. Raises TrialError
    (a missing tool names its Debian package)."""
    name = str(args[0])
    if shutil.which(name) is None:
        raise TrialError(f"{name} is not installed (apt-get install {_PACKAGES.get(name, name)})")
    done = subprocess.run([str(a) for a in args], capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise TrialError(
            f"{name} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def encode_tone(
    path: Path,
    seconds: float,
    *,
    sound: Sequence[str],
    samplerate: int,
    channels: int,
    lame_args: Sequence[str],
) -> bytes:
    """``sox synth`` ``sound`` for ``seconds``, encoded by ``lame lame_args`` into
    path; returns the file's bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "in.wav"
        run_tool(
            "sox", "-R", "-n", "-r", str(samplerate), "-c", str(channels), "-b", "16", wav,
            "synth", str(seconds), *sound, "vol", "0.5",
        )  # fmt: skip
        run_tool("lame", "--quiet", *lame_args, wav, path)
    return path.read_bytes()


def make_tone_mp3(
    path: Path,
    seconds: float,
    *,
    freq: int = 440,
    samplerate: int = 44100,
    channels: int = 2,
    bitrate: int | None = 128,
    extra_lame_args: Sequence[str] = (),
) -> bytes:
    """A sine tone encoded with ``lame -t``: the file is nothing but audio frames
    (no Xing/Info frame, no tags). bitrate None leaves it to extra_lame_args
    (for -V, where -b means a minimum)."""
    rate = ["-b", str(bitrate)] if bitrate is not None else []
    return encode_tone(
        path,
        seconds,
        sound=("sine", str(freq)),
        samplerate=samplerate,
        channels=channels,
        lame_args=["-t", *rate, *extra_lame_args],
    )


def tag_mp3(path: Path, artist: str, title: str) -> None:
    """Put an ID3v2.4 tag (UTF-8) with artist and title on path."""
    from mutagen.id3 import ID3, TIT2, TPE1

    tags = ID3()
    tags.add(TPE1(encoding=3, text=artist))
    tags.add(TIT2(encoding=3, text=title))
    tags.save(path, v2_version=4, v1=0)


def make_demo_tracks(
    directory: Path,
    titles: Sequence[tuple[str, str]] = DEMO_TITLES,
    seconds: float = 20.0,
) -> list[tuple[Path, bytes]]:
    """One tagged tone per (artist, title), named 01-track.mp3, 02-... so that
    name order is play order. Returns (path, its audio frames) for each."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for number, (artist, title) in enumerate(titles, start=1):
        path = directory / f"{number:02d}-track.mp3"
        audio = make_tone_mp3(path, seconds, freq=330 + 110 * number)
        tag_mp3(path, artist, title)
        # Finished files: dated a minute back, the folder queues them at once
        # instead of waiting for them to settle.
        past = time.time() - 60
        os.utime(path, (past, past))
        made.append((path, audio))
    return made


# --- a local icecast2 -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_taken(port: int, host: str = HOST) -> bool:
    """Whether something holds ``host:port`` already (icecast2 would then fail,
    and a status probe would reach the other server instead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As icecast2 does: a port in TIME_WAIT is free to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _child(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    return found if found is not None else ET.SubElement(parent, tag)


def _set_text(parent: ET.Element, tag: str, value: str) -> None:
    _child(parent, tag).text = value


def unreachable_parent(directory: Path) -> Path | None:
    """The first parent of directory that others cannot search, if any:
    icecast2 switches to nobody before it opens its logs there."""
    for parent in directory.resolve().parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def make_certificate(directory: Path, name: str = "cert") -> Path:
    """A PEM file holding a self-signed certificate for IP 127.0.0.1 and its
    key, readable by everyone (icecast2 reads it as nobody). Raises TrialError."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, pem = (directory / f"{name}.{ext}" for ext in ("crt", "key", "pem"))
    run_tool(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", key, "-out", cert,
    )  # fmt: skip
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    pem.chmod(0o644)
    return pem


def render_config(
    template: Path,
    *,
    port: int,
    workdir: Path,
    tls_port: int | None = None,
    certificate: Path | None = None,
    webroot: Path | None = None,
    extra: str = "",
) -> str:
    """The template's XML with the port, 127.0.0.1 and logs/pidfile in workdir;
    with ``tls_port``, a second listen socket there with ``<ssl>1</ssl>``
    serving ``certificate`` (one PEM, certificate and key); with ``webroot``,
    that webroot instead of the template's (to add files such as a fallback);
    ``extra``, elements (an XML snippet) added at the top level, such as
    ``<relay>`` blocks or the ``<master-server>`` settings of a relay.

    Everything else is kept. As root, icecast2 refuses to run unless told to
    drop to an unprivileged user, so a changeowner block is added and workdir
    is made writable for nobody. Raises TrialError if nobody cannot reach it.
    """
    root = ET.parse(template).getroot()
    sockets = root.findall("listen-socket")
    if not sockets:
        sockets = [ET.SubElement(root, "listen-socket")]
    for surplus in sockets[1:]:
        root.remove(surplus)
    _set_text(sockets[0], "port", str(port))
    _set_text(sockets[0], "bind-address", HOST)

    paths = _child(root, "paths")
    _set_text(paths, "logdir", str(workdir))
    _set_text(paths, "pidfile", str(workdir / "icecast.pid"))
    if webroot is not None:
        _set_text(paths, "webroot", str(webroot))
    if tls_port is not None:
        if certificate is None:
            raise ValueError("a TLS port needs a certificate")
        secure = ET.Element("listen-socket")
        _set_text(secure, "port", str(tls_port))
        _set_text(secure, "bind-address", HOST)
        _set_text(secure, "ssl", "1")
        root.insert(list(root).index(sockets[0]) + 1, secure)
        _set_text(paths, "ssl-certificate", str(certificate))
    if extra.strip():
        try:
            root.extend(ET.fromstring(f"<extra>{extra}</extra>"))
        except ET.ParseError as error:
            raise ValueError(f"extra is not an XML snippet: {error}") from error

    if os.geteuid() == 0:
        security = _child(root, "security")
        owner = _child(security, "changeowner")
        _set_text(owner, "user", "nobody")
        _set_text(owner, "group", "nogroup")
        blocked = unreachable_parent(workdir)
        if blocked is not None:
            raise TrialError(
                f"{workdir}: icecast2 runs as nobody and cannot reach it because "
                f"{blocked} is not searchable by others; use a directory under /tmp"
            )
        workdir.chmod(0o777)

    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def source_password(template: Path) -> str:
    """The template's <source-password> (Icecast's default "hackme" if it has none)."""
    found = ET.parse(template).getroot().findtext("authentication/source-password")
    return found.strip() if found and found.strip() else "hackme"


def fetch_status(base_url: str, timeout: float = 2.0) -> dict[str, Any]:
    """The parsed /status-json.xsl. Raises OSError or ValueError."""
    with urllib.request.urlopen(f"{base_url}/status-json.xsl", timeout=timeout) as response:
        return cast(dict[str, Any], json.loads(response.read().decode("utf-8")))


def wait_for_status(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /status-json.xsl until it answers. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fetch_status(base_url)
        except (OSError, ValueError) as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url} did not answer in {timeout} s: {error}") from error
            time.sleep(0.05)


def sources_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    """icestats.source as a list: Icecast gives an object for one, a list, or nothing."""
    found = status.get("icestats", {}).get("source")
    if found is None:
        return []
    if isinstance(found, dict):
        return [found]
    return list(found)


def find_source(sources: list[dict[str, Any]], mount: str) -> dict[str, Any] | None:
    """The status entry of mount ("/name") among sources, None if no source holds it."""
    for source in sources:
        # listenurl is http://<hostname>:<port><mount>; the hostname is the
        # configured one, not necessarily 127.0.0.1.
        url = str(source.get("listenurl", ""))
        if urllib.parse.urlparse(url).path == mount:
            return source
    return None


class IcecastServer:
    """icecast2 in the foreground on 127.0.0.1, its files in workdir; with
    ``tls``, it also listens with ``<ssl>1</ssl>`` on :attr:`tls_port`, with a
    self-signed certificate for 127.0.0.1 made at start (:attr:`certificate`).

    As root, icecast2 runs as nobody, who must be able to reach workdir: when
    a parent of it is closed to others (a 0700 home), a fresh directory under
    the system's temp folder is used instead (``workdir`` then names it) and
    removed by stop().
    """

    def __init__(
        self,
        template: Path,
        workdir: Path,
        port: int | None = None,
        *,
        tls: bool = False,
        webroot: Path | None = None,
        extra: str = "",
    ) -> None:
        """``webroot``: instead of the template's (to add files such as a
        fallback); ``extra``: top-level elements to add (see render_config)."""
        self.webroot = webroot
        self.extra = extra
        self.template = template
        self.workdir = workdir
        self._own_workdir: Path | None = None
        self._port = port if port is not None else free_port()
        self._tls_port = free_port() if tls else None
        self._process: subprocess.Popen[bytes] | None = None
        logging = ET.parse(template).getroot().find("logging")
        self._errorlog_name = (logging.findtext("errorlog") if logging is not None else None) or (
            "error.log"
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    @property
    def tls_port(self) -> int:
        if self._tls_port is None:
            raise RuntimeError("this icecast2 has no TLS port (IcecastServer(..., tls=True))")
        return self._tls_port

    @property
    def certificate(self) -> Path:
        """The PEM (certificate and key) the TLS port serves: trust it to connect."""
        if self._tls_port is None:
            raise RuntimeError("this icecast2 has no TLS port (IcecastServer(..., tls=True))")
        return self.workdir / "tls" / "cert.pem"

    @property
    def tls_base_url(self) -> str:
        return f"https://{HOST}:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if (
            os.geteuid() == 0
            and self._own_workdir is None
            and unreachable_parent(self.workdir) is not None
        ):
            self._own_workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-", dir="/tmp"))
            self.workdir = self._own_workdir

    def start(self, timeout: float = 10.0) -> None:
        """Run icecast2 and return once it answers /status-json.xsl. Raises
        TrialError: not installed, the port taken, or it exited or stayed mute
        (with the tail of its logs)."""
        binary = shutil.which("icecast2")
        if binary is None:
            raise TrialError("icecast2 is not installed (apt-get install icecast2)")
        if port_taken(self._port):
            raise TrialError(
                f"port {self._port} on {HOST} is in use already (another Icecast?); "
                f"stop what listens there (ss -ltnp 'sport = :{self._port}') or pick another port "
                "(make station PORT=8001)"
            )
        self._prepare_workdir()
        if (
            self._own_workdir is not None
            and self.webroot is not None
            and unreachable_parent(self.webroot) is not None
        ):  # moved out of reach of nobody (make station's): its webroot goes along
            self.webroot = Path(shutil.copytree(self.webroot, self.workdir / "web"))
            self.webroot.chmod(0o755)
        config = self.workdir / "icecast.xml"
        certificate = None
        if self._tls_port is not None:
            certificate = self.certificate
            if not certificate.exists():
                make_certificate(certificate.parent, certificate.stem)
                # icecast2 runs as nobody when started as root: it must reach the file
                certificate.parent.chmod(0o755)
        config.write_text(
            render_config(
                self.template,
                port=self._port,
                workdir=self.workdir,
                tls_port=self._tls_port,
                certificate=certificate,
                webroot=self.webroot,
                extra=self.extra,
            ),
            "utf-8",
        )
        # icecast2 2.4.4 now and then dies of a signal (SIGSEGV) while starting,
        # whatever the config: start it again, twice at most.
        for attempt in range(3):
            if self._launch(binary, config, timeout, last=attempt == 2):
                return

    def _launch(self, binary: str, config: Path, timeout: float, *, last: bool) -> bool:
        """Run it until it answers: True; False if it crashed starting (and
        ``last`` is false); else raises TrialError."""
        with (
            open(self.workdir / "stdout.log", "ab") as out,
            open(self.workdir / "stderr.log", "ab") as err,
        ):
            self._process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # Its own session: a terminal's Ctrl-C goes to whoever owns it.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            try:
                fetch_status(self.base_url, timeout=1.0)
            except (OSError, ValueError) as error:
                if code is None and time.monotonic() <= deadline:
                    time.sleep(0.05)
                    continue
                if code is not None and code < 0 and not last:
                    self._process = None
                    return False
                self._fail(code, str(error))
            else:
                # An answer while our process is gone came from another server.
                if code is None and self._process.poll() is None:
                    return True
                self._fail(self._process.poll(), "another server answered on its port")

    def _fail(self, code: int | None, why: str) -> None:
        diagnostics = self._diagnostics()
        self.kill()
        state = f"exited with {code}" if code is not None else "did not answer"
        raise TrialError(f"icecast2 on port {self._port} {state} ({why})\n{diagnostics}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL. Does nothing if it is not running."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self._process = None
        self._remove_own_workdir()

    def kill(self) -> None:
        """SIGKILL: the sources and listeners see the connection die."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def _remove_own_workdir(self) -> None:
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (and in the same workdir)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.start(timeout)

    def status(self) -> dict[str, Any]:
        return fetch_status(self.base_url)

    def sources(self) -> list[dict[str, Any]]:
        return sources_of(self.status())

    def source(self, mount: str) -> dict[str, Any] | None:
        """The status entry of mount ("/name"), None when no source holds it."""
        return find_source(self.sources(), mount)

    def wait_for_mount(self, mount: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll the status until mount has a source. Raises AssertionError."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
            except (OSError, ValueError) as error:
                last = f"status failed: {error}"
            else:
                found = find_source(sources_of(last), mount)
                if found is not None:
                    return found
            time.sleep(0.05)
        raise AssertionError(
            f"no source on {mount} after {timeout} s; last status: {last}\n{self._diagnostics()}"
        )

    def error_log(self) -> str:
        return _read(self.workdir / self._errorlog_name)

    def _diagnostics(self, lines: int = 30) -> str:
        parts = []
        for name, text in (
            ("error log", self.error_log()),
            ("stderr", _read(self.workdir / "stderr.log")),
        ):
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- icecast2 {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# --- the command line -------------------------------------------------------------------


@contextlib.contextmanager
def _foreground() -> Iterator[None]:
    """Own the terminal's Ctrl-C while the station runs.

    make, our parent, is in the terminal's foreground process group: Ctrl-C
    would reach it too, and it would report the interrupt ("Error 130") however
    quietly we stop. A process group of our own, made the foreground one, gets
    Ctrl-C alone; the terminal goes back to make's group afterwards.
    """
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError:
        yield  # no terminal: nothing sends Ctrl-C
        return
    try:
        before = os.tcgetpgrp(tty)
        if before != os.getpgrp():  # we are not the foreground: leave it alone
            yield
            return
        os.setpgid(0, 0)
        # A background group that sets the foreground gets SIGTTOU.
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(tty, os.getpgrp())
            yield
        finally:
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty, before)
            signal.signal(signal.SIGTTOU, old)
    finally:
        os.close(tty)


def _empty(folder: Path) -> bool:
    return not folder.is_dir() or not any(folder.iterdir())


def _station(args: argparse.Namespace) -> int:
    if _empty(args.music):
        print(f"making {len(DEMO_TITLES)} demo tracks in {args.music}", flush=True)
        make_demo_tracks(args.music)
    # Named, so that it goes along if the workdir moves (as root: see IcecastServer).
    webroot = (ET.parse(args.config).getroot().findtext("paths/webroot") or "").strip()
    server = IcecastServer(
        args.config, args.workdir.resolve(), args.port, webroot=Path(webroot) if webroot else None
    )
    server.start()
    url = f"icecast://source:{source_password(args.config)}@{HOST}:{server.port}{args.mount}"
    if server.workdir != args.workdir.resolve():
        print(f"icecast2 logs in {server.workdir} (nobody cannot reach {args.workdir})")
    print(
        f"listen at {server.base_url}{args.mount}; Ctrl-C stops\n"
        f"pushsource itself is .venv/bin/pushsource (try .venv/bin/pushsource --help)",
        flush=True,
    )
    command = [sys.executable, "-m", "pushsource", "stream", "--fresh", str(args.music), url]
    try:
        with _foreground():
            child = subprocess.Popen(command)
            # Ctrl-C reaches pushsource too, which stops cleanly; we wait for it.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                code = child.wait()
            finally:
                signal.signal(signal.SIGINT, previous)
    finally:
        server.stop()
    return 0 if code in (0, -signal.SIGINT, 130) else code


def _icecast(args: argparse.Namespace) -> int:
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    server = IcecastServer(args.config, args.workdir.resolve(), args.port)
    try:
        server.start()
        print(f"icecast2 on {server.base_url}/ (logs in {server.workdir}); Ctrl-C stops it")
        while server.running:
            time.sleep(0.5)
        print("icecast2 exited on its own", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pushsource.ops.trial",
        description="A local icecast2 from a config template, with or without a station.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    station = commands.add_parser(
        "station", help="icecast2 and `pushsource stream --fresh MUSIC` to it, until Ctrl-C"
    )
    icecast = commands.add_parser("icecast", help="only icecast2, until Ctrl-C")
    for sub in (station, icecast):
        sub.add_argument("--config", type=Path, default=Path("icecast.xml"), help="the template")
        sub.add_argument("--port", type=int, default=8000)
        sub.add_argument("--workdir", type=Path, default=Path("run/icecast"))
    station.add_argument("--mount", default="/stream")
    station.add_argument("music", type=Path, help="the folder; demo tracks are made if empty")
    args = parser.parse_args(argv)
    try:
        return _station(args) if args.command == "station" else _icecast(args)
    except PushsourceError as exc:
        print(f"pushsource: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:  # Ctrl-C before the station started
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
