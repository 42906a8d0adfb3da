"""Real Icecast servers of three kinds for compatibility tests: Debian's
icecast2 2.4.4, Icecast 2.5.0 and icecast-kh, each from a stock config made
here, on a free loopback port.

2.5.0 and kh are built from ../shared/servers by .ci/build-servers into a
cache outside the clone (PUSHSOURCE_SERVERS, default
/var/cache/pushsource-servers). Only the tests use them; the product never
does.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, get_args
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import pytest

from pushsource.ops.trial import HOST, free_port, port_taken

Kind = Literal["2.4.4", "2.5.0", "kh"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / ".ci" / "build-servers"
DEBIAN_BINARY: Final = Path("/usr/bin/icecast2")
DEBIAN_SHARE: Final = Path("/usr/share/icecast2")

#: The tarball each built kind comes from (in ../shared/servers) and the name
#: of its folder in the cache, <name>-<first 8 hex digits of its sha256>:
#: the same names .ci/build-servers uses.
_TARBALLS: Final[dict[Kind, tuple[str, str]]] = {
    "2.5.0": ("icecast2_2.5.0.orig.tar.gz", "icecast-2.5.0"),
    "kh": ("icecast-kh-2.4.0-kh22-10-gea3554b.tar.gz", "icecast-kh"),
}


class ServerError(RuntimeError):
    """A server would not start or answer; the message has its log's tail."""


def shared_servers() -> Path:
    """Where the server sources are: PUSHSOURCE_SHARED_SERVERS, else
    ../shared/servers from the repository."""
    found = os.environ.get("PUSHSOURCE_SHARED_SERVERS")
    return Path(found) if found else REPO_ROOT.parent / "shared" / "servers"


def servers_cache() -> Path:
    return Path(os.environ.get("PUSHSOURCE_SERVERS", "/var/cache/pushsource-servers"))


def _unavailable(why: str) -> None:
    """Fail in CI, where every server must be there; skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@functools.cache
def _sha8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def server_binary(kind: Kind) -> Path:
    """The server's executable: Debian's for 2.4.4, else the cached build,
    made by .ci/build-servers when missing. Skips the test (fails it in CI)
    when the binary cannot be had."""
    if kind == "2.4.4":
        if not DEBIAN_BINARY.exists():
            _unavailable("icecast2 2.4.4 is not installed (apt-get install icecast2)")
        return DEBIAN_BINARY
    tarball, name = _TARBALLS[kind]
    sources = shared_servers()
    if not (sources / tarball).exists():
        _unavailable(f"no Icecast {kind} to test with: {sources / tarball} is missing")
    binary = servers_cache() / f"{name}-{_sha8(sources / tarball)}" / "bin" / "icecast"
    if not binary.exists():
        done = subprocess.run(
            [str(BUILD_SCRIPT), kind],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not binary.exists():
            _unavailable(f"{BUILD_SCRIPT.name} {kind} failed:\n{done.stdout}{done.stderr}")
    return binary


def _share(kind: Kind, binary: Path) -> Path:
    """The folder holding the server's web/ and admin/ (XSL templates)."""
    return DEBIAN_SHARE if kind == "2.4.4" else binary.parent.parent / "share" / "icecast"


def _free_pair() -> int:
    """A free port whose next port is free too (the SHOUTcast source port)."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and not port_taken(port + 1):
            return port
    raise ServerError("no two free ports in a row on 127.0.0.1")


class PeerServer:
    """One real Icecast of ``kind`` on 127.0.0.1, from a stock config (no
    charset, no mounts of its own unless ``extra`` adds some).

    ``extra``: XML elements added at the top level of the config, such as a
    ``<mount>`` with a fallback (kh reads no ``<mount type="default">``: it
    takes ``<mount><mount-name>/*</mount-name>...`` instead). ``shoutcast``
    (2.4.4 only): the listen socket gets ``<shoutcast-mount>/shout</shoutcast-mount>``,
    with which Icecast 2.4 also listens on port + 1 for SHOUTcast v1 sources
    (:attr:`shoutcast_port`).

    As root the server runs as nobody (through setpriv), its workdir a fresh
    folder under /tmp; close() removes it.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        source_password: str = "hackme",
        admin_password: str = "hackme",
        shoutcast: bool = False,
        extra: str = "",
        port: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if shoutcast and kind != "2.4.4":
            raise ValueError("shoutcast=True is for 2.4.4 (its <shoutcast-mount>)")
        try:
            ET.fromstring(f"<extra>{extra}</extra>")
        except ET.ParseError as error:
            raise ValueError(f"extra is not an XML snippet: {error}") from error
        self.kind: Kind = kind
        self.source_password = source_password
        self.admin_password = admin_password
        self.shoutcast = shoutcast
        self.extra = extra
        self._port = port if port is not None else (_free_pair() if shoutcast else free_port())
        #: The Server header it answers with, e.g. "Icecast 2.5.0"; set by start().
        self.version = ""
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"PeerServer({self.kind!r}, port={self._port})"

    @property
    def port(self) -> int:
        return self._port

    @property
    def shoutcast_port(self) -> int:
        if not self.shoutcast:
            raise RuntimeError(
                "this server has no SHOUTcast port (PeerServer(..., shoutcast=True))"
            )
        return self._port + 1

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def source_url(self, mount: str) -> str:
        """The URL pushsource pushes ``mount`` ("/name") to, password percent-encoded."""
        return f"icecast://source:{quote(self.source_password, safe='')}@{HOST}:{self._port}{mount}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- config ---------------------------------------------------------------

    def config(self, binary: Path, workdir: Path) -> str:
        """The config text: what the three kinds all read, plus their differences."""
        share = _share(self.kind, binary)
        shout = "<shoutcast-mount>/shout</shoutcast-mount>" if self.shoutcast else ""
        return f"""<?xml version="1.0"?>
<icecast>
    <location>test</location>
    <admin>test@localhost</admin>
    <hostname>{HOST}</hostname>
    <limits>
        <clients>100</clients>
        <sources>50</sources>
        <queue-size>524288</queue-size>
        <client-timeout>30</client-timeout>
        <header-timeout>15</header-timeout>
        <source-timeout>10</source-timeout>
        <burst-size>65535</burst-size>
    </limits>
    <authentication>
        <source-password>{escape(self.source_password)}</source-password>
        <admin-user>admin</admin-user>
        <admin-password>{escape(self.admin_password)}</admin-password>
    </authentication>
    <listen-socket>
        <port>{self._port}</port>
        <bind-address>{HOST}</bind-address>
        {shout}
    </listen-socket>
    <fileserve>1</fileserve>
    <paths>
        <basedir>{workdir}</basedir>
        <logdir>{workdir}</logdir>
        <pidfile>{workdir}/icecast.pid</pidfile>
        <webroot>{share}/web</webroot>
        <adminroot>{share}/admin</adminroot>
    </paths>
    <logging>
        <accesslog>access.log</accesslog>
        <errorlog>error.log</errorlog>
        <loglevel>3</loglevel>
    </logging>
    <security>
        <chroot>0</chroot>
    </security>
    {self.extra}
</icecast>
"""

    # --- life -----------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Run it and return once it answers HTTP. Raises ServerError (with
        its log's tail) if it exits or stays mute; skips the test if the
        binary cannot be had (see server_binary)."""
        binary = server_binary(self.kind)
        if self.running:
            raise RuntimeError(f"{self!r} runs already")
        if port_taken(self._port):
            raise ServerError(f"port {self._port} is in use already")
        if self.workdir is None:
            # /tmp, not pytest's private folders: nobody must reach it.
            self.workdir = Path(
                tempfile.mkdtemp(prefix=f"pushsource-peer-{self.kind}-", dir="/tmp")
            )
            self.workdir.chmod(0o777)
        config = self.workdir / "icecast.xml"
        config.write_text(self.config(binary, self.workdir), "utf-8")
        config.chmod(0o644)
        command = [str(binary), "-c", str(config)]
        if os.geteuid() == 0:
            # All three refuse root; setpriv execs, so our child is the server.
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        # 2.4.4 now and then dies of a signal while starting, whatever the
        # config (see pushsource.ops.trial): start it again, twice at most.
        for attempt in range(3):
            if self._launch(command, timeout, last=attempt == 2):
                return

    def _launch(self, command: list[str], timeout: float, *, last: bool) -> bool:
        assert self.workdir is not None
        with open(self.workdir / "output.log", "ab") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is not for it
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is None:
                try:
                    self.version = self._server_header()
                    # 2.4.4's status is broken JSON for a moment after it starts.
                    self._sources()
                except (OSError, ValueError, ET.ParseError):
                    pass
                else:
                    # An answer while our process is gone came from another server.
                    if self._process.poll() is None:
                        return True
            if code is not None and code < 0 and not last:
                self._process = None
                return False
            if code is not None or time.monotonic() > deadline:
                tail = self._tail()
                self.kill()
                state = f"exited with {code}" if code is not None else "did not answer"
                raise ServerError(f"Icecast {self.kind} on port {self._port} {state}\n{tail}")
            time.sleep(0.05)

    def _server_header(self) -> str:
        connection = http.client.HTTPConnection(HOST, self._port, timeout=1.0)
        try:
            # kh leaves the Server header off its 404s: ask for a page all have.
            connection.request("GET", "/status.xsl")
            response = connection.getresponse()
            return response.getheader("Server") or ""
        finally:
            connection.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL. Does nothing when it is not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, and wait for it: its sources and listeners see the
        connection die."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop it and start it again on the same port."""
        self.stop()
        # kh fails to bind a port its old process still holds: wait it out.
        deadline = time.monotonic() + timeout
        while port_taken(self._port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start(timeout)

    def close(self) -> None:
        """Stop it and remove its workdir."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- what it says ---------------------------------------------------------

    def error_log(self) -> str:
        if self.workdir is None:
            return ""
        return _read(self.workdir / "error.log")

    def access_log(self) -> str:
        """The requests it served (kh writes them a moment later)."""
        if self.workdir is None:
            return ""
        return _read(self.workdir / "access.log")

    def _tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("error.log", "output.log"):
            text = _read(self.workdir / name) if self.workdir else ""
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts)

    def _get(self, path: str, *, user: str = "", password: str = "") -> bytes:
        request = urllib.request.Request(self.base_url + path)
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return bytes(response.read())

    def _sources(self) -> dict[str, dict[str, Any]]:
        """{mount: its figures} from the server's status: /status-json.xsl on
        2.4.4 and 2.5.0, /admin/stats (XML, admin credentials) on kh."""
        if self.kind == "kh":
            root = ET.fromstring(
                self._get("/admin/stats", user="admin", password=self.admin_password)
            )
            found: dict[str, dict[str, Any]] = {}
            for element in root.iter("source"):
                mount = element.get("mount")
                if mount:
                    found[mount] = {child.tag: child.text or "" for child in element}
            return found
        stats = json.loads(self._get("/status-json.xsl"))["icestats"]
        sources = stats.get("source", [])
        by_mount: dict[str, dict[str, Any]] = {}
        for source in [sources] if isinstance(sources, dict) else sources:
            by_mount[urlsplit(str(source.get("listenurl", ""))).path] = source
        return by_mount

    def mounts(self) -> list[str]:
        """The mounts that have a source, sorted."""
        return sorted(self._sources())

    def listeners(self, mount: str) -> int | None:
        """The server's own listener count on ``mount``; None without a source there."""
        source = self._sources().get(mount)
        if source is None or source.get("listeners") in (None, ""):
            return None
        return int(source["listeners"])

    def title(self, mount: str) -> str | None:
        """The server's current title of ``mount``; None when it has none."""
        source = self._sources().get(mount)
        title = None if source is None else source.get("title")
        return str(title) if title not in (None, "") else None

    def wait_for_mount(self, mount: str, timeout: float = 10.0) -> None:
        """Poll until ``mount`` has a source. Raises AssertionError."""
        self._wait(lambda: mount in self.mounts(), timeout, f"a source on {mount}")

    def wait_for_listeners(self, mount: str, count: int, timeout: float = 10.0) -> None:
        """Poll until the server counts ``count`` listeners on ``mount``
        (its count lags a new client a moment). Raises AssertionError."""
        self._wait(lambda: self.listeners(mount) == count, timeout, f"{count} on {mount}")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                if done():
                    return
            except (OSError, ValueError, ET.ParseError) as error:
                last = error
            time.sleep(0.05)
        raise AssertionError(f"{self!r}: no {what} after {timeout} s ({last})\n{self._tail()}")


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


__all__ = [
    "KINDS",
    "Kind",
    "PeerServer",
    "ServerError",
    "server_binary",
    "servers_cache",
    "shared_servers",
]
