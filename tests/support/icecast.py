"""A real icecast2 for tests, started from the repository's icecast.xml.

Run ``python -m tests.support.icecast --port 8000 --workdir run/icecast`` to keep
one in the foreground until Ctrl-C (the Makefile's ``station`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, cast

from tests.support.tls import make_certificate

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "icecast.xml"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _child(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    return found if found is not None else ET.SubElement(parent, tag)


def _set_text(parent: ET.Element, tag: str, value: str) -> None:
    _child(parent, tag).text = value


def _check_reachable_by_others(directory: Path) -> None:
    # icecast2 switches to nobody before it opens its logs, so every parent
    # must be searchable by others (pytest's /tmp/pytest-of-root is not).
    for parent in directory.resolve().parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"{directory}: icecast2 runs as nobody and cannot reach it because "
                f"{parent} is not searchable by others; use a directory under /tmp"
            )


def render_config(
    template: Path,
    *,
    port: int,
    workdir: Path,
    tls_port: int | None = None,
    certificate: Path | None = None,
    webroot: Path | None = None,
) -> str:
    """The template's XML with the port, 127.0.0.1 and logs/pidfile in workdir;
    with ``tls_port``, a second listen socket there with ``<ssl>1</ssl>``
    serving ``certificate`` (one PEM, certificate and key); with ``webroot``,
    that webroot instead of the template's.

    Everything else is kept. As root, icecast2 refuses to run unless told to
    drop to an unprivileged user, so a changeowner block is added and workdir
    is made writable for nobody.
    """
    root = ET.parse(template).getroot()
    sockets = root.findall("listen-socket")
    if not sockets:
        sockets = [ET.SubElement(root, "listen-socket")]
    for extra in sockets[1:]:
        root.remove(extra)
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

    if os.geteuid() == 0:
        security = _child(root, "security")
        owner = _child(security, "changeowner")
        _set_text(owner, "user", "nobody")
        _set_text(owner, "group", "nogroup")
        _check_reachable_by_others(workdir)
        workdir.chmod(0o777)

    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


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


class IcecastServer:
    """icecast2 in the foreground on 127.0.0.1, its files in workdir; with
    ``tls``, it also listens with ``<ssl>1</ssl>`` on :attr:`tls_port`, with a
    self-signed certificate for 127.0.0.1 made at start (:attr:`certificate`)."""

    def __init__(
        self,
        template: Path,
        workdir: Path,
        port: int | None = None,
        *,
        tls: bool = False,
        webroot: Path | None = None,
    ) -> None:
        """``webroot``: instead of the template's (to add files such as a fallback)."""
        self.template = template
        self.workdir = workdir
        self.webroot = webroot
        self._port = port if port is not None else free_port()
        self._tls_port = free_port() if tls else None
        self._certificate = workdir / "tls" / "cert.pem" if tls else None
        self._process: subprocess.Popen[bytes] | None = None
        logging = ET.parse(template).getroot().find("logging")
        name = logging.findtext("errorlog") if logging is not None else None
        self._errorlog = workdir / (name or "error.log")

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
        if self._certificate is None:
            raise RuntimeError("this icecast2 has no TLS port (IcecastServer(..., tls=True))")
        return self._certificate

    @property
    def tls_base_url(self) -> str:
        return f"https://{HOST}:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Run icecast2 and return once /status-json.xsl answers."""
        binary = shutil.which("icecast2")
        if binary is None:
            raise RuntimeError("icecast2 is not installed (apt-get install icecast2)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "icecast.xml"
        if self._certificate is not None and not self._certificate.exists():
            make_certificate(self._certificate.parent, self._certificate.stem)
            # icecast2 runs as nobody when started as root: it must reach the file
            self._certificate.parent.chmod(0o755)
        config.write_text(
            render_config(
                self.template,
                port=self._port,
                workdir=self.workdir,
                tls_port=self._tls_port,
                certificate=self._certificate,
                webroot=self.webroot,
            ),
            "utf-8",
        )
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
            try:
                fetch_status(self.base_url, timeout=1.0)
                return
            except (OSError, ValueError) as error:
                code = self._process.poll()
                if code is not None or time.monotonic() > deadline:
                    self.kill()
                    state = f"exited with {code}" if code is not None else "did not answer"
                    raise RuntimeError(
                        f"icecast2 on port {self._port} {state} ({error})\n{self._diagnostics()}"
                    ) from error
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL. Does nothing if it is not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the sources and listeners see the connection die."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start(timeout)

    def status(self) -> dict[str, Any]:
        return fetch_status(self.base_url)

    def sources(self) -> list[dict[str, Any]]:
        return sources_of(self.status())

    def source(self, mount: str) -> dict[str, Any] | None:
        """The status entry of mount ("/name"), None when no source holds it."""
        return _find_source(self.sources(), mount)

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
                found = _find_source(sources_of(last), mount)
                if found is not None:
                    return found
            time.sleep(0.05)
        raise AssertionError(
            f"no source on {mount} after {timeout} s; last status: {last}\n{self._diagnostics()}"
        )

    def error_log(self) -> str:
        try:
            return self._errorlog.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

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


def _find_source(sources: list[dict[str, Any]], mount: str) -> dict[str, Any] | None:
    for source in sources:
        # listenurl is http://<hostname>:<port><mount>; the hostname is the
        # configured one, not necessarily 127.0.0.1.
        url = str(source.get("listenurl", ""))
        if urllib.parse.urlparse(url).path == mount:
            return source
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.icecast",
        description="Run icecast2 from the repository's icecast.xml until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workdir", type=Path, default=Path("run/icecast"))
    parser.add_argument("--config", type=Path, default=DEFAULT_TEMPLATE)
    args = parser.parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # The Makefile stops a background runner with SIGTERM; icecast2 must go too.
    signal.signal(signal.SIGTERM, on_term)
    server = IcecastServer(args.config, args.workdir.resolve(), args.port)
    try:
        server.start()
        print(
            f"icecast2 on {server.base_url}/ (logs in {args.workdir}); Ctrl-C stops it", flush=True
        )
        while server.running:
            time.sleep(0.5)
        print("icecast2 exited on its own", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
