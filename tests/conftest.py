"""Shared fixtures: one real icecast2 per session and the pushsource CLI as a process."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from tests.support.icecast import IcecastServer, temp_icecast
from tests.support.media import Fixture, build_corpus
from tests.support.servers import KINDS, Kind, PeerServer

#: Environment variables that would leak the developer's setup into a test.
_HERMETIC_UNSET = ("PUSHSOURCE_PASSWORD",)

# --- passwords must never show ------------------------------------------------------
#
# Every password the helpers below hand to pushsource (in a URL, the environment
# or a --password-file) is registered in SECRETS, and everything those runs print
# is kept in CAPTURED. At the end of the session no_password_in_any_output checks
# that no secret shows in any of it.

#: Passwords tests gave pushsource, and their percent-encoded forms.
SECRETS: set[str] = set()
#: (which run, its stdout and stderr) of every pushsource run the helpers made.
CAPTURED: list[tuple[str, str]] = []
#: A password nobody writes by accident: if it shows up anywhere, it leaked. It
#: has characters a URL needs percent-encoded (see secret_url()).
SECRET_PASSWORD = "Zq7-ps@S3cr3t:wX9"
_SHORTEST_SECRET = 6  # shorter ones would match innocent text
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:(.+)@")


def register_secret(secret: str) -> None:
    """Make the session fail if ``secret`` (or its percent-encoded form) shows
    in any captured output."""
    for form in (secret, quote(secret, safe=""), unquote(secret)):
        if len(form) >= _SHORTEST_SECRET:
            SECRETS.add(form)


def capture_output(which: str, text: str) -> None:
    """Keep ``text`` (output, log or exception text) for the end-of-session check."""
    CAPTURED.append((which, text))


def _register_passwords(args: Sequence[str | Path], env: dict[str, str] | None) -> None:
    """Register the passwords an argument list and environment carry."""
    words = [str(a) for a in args]
    for i, word in enumerate(words):
        match = _URL_PASSWORD.match(word)
        if match:
            register_secret(match.group(1))
        path: str | None = None
        if word == "--password-file" and i + 1 < len(words):
            path = words[i + 1]
        elif word.startswith("--password-file="):
            path = word.partition("=")[2]
        if path is not None:
            try:
                lines = Path(path).read_text("utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            if lines:
                register_secret(lines[0])
    if env and env.get("PUSHSOURCE_PASSWORD"):
        register_secret(env["PUSHSOURCE_PASSWORD"])


register_secret(SECRET_PASSWORD)


@pytest.fixture(scope="session", autouse=True)
def no_password_in_any_output() -> Iterator[None]:
    """After the last test: no registered password in anything captured."""
    yield
    leaks = sorted(
        {f"{which}: {secret!r}" for which, text in CAPTURED for secret in SECRETS if secret in text}
    )
    assert not leaks, f"passwords in captured output ({len(CAPTURED)} texts checked):\n" + (
        "\n".join(leaks)
    )


# --- no thread outlives its test ---------------------------------------------------


def _threads() -> set[threading.Thread]:
    # watchdog's inotify reader is a process-wide singleton it keeps for good.
    return {
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and type(t).__name__ != "InotifyFD"
    }


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every thread a test starts (engines, workers, observers, servers) has
    ended once the test is over, or soon after: a leak fails the test."""
    before = _threads()
    yield
    deadline = time.monotonic() + 5.0
    while (left := _threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, "threads left running: " + ", ".join(sorted(t.name for t in left))


#: Where runs that name no XDG_STATE_HOME keep their play state: a temp dir made
#: on first use and removed after the session, never the developer's home.
_STATE_HOME: list[str] = []


def _state_home() -> str:
    if not _STATE_HOME:
        _STATE_HOME.append(tempfile.mkdtemp(prefix="pushsource-state-"))
    return _STATE_HOME[0]


@pytest.fixture(scope="session", autouse=True)
def _remove_state_home() -> Iterator[None]:
    yield
    for path in _STATE_HOME:
        shutil.rmtree(path, ignore_errors=True)


def pushsource_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _HERMETIC_UNSET}
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_STATE_HOME"] = _state_home()
    env.update(extra or {})
    return env


def pushsource_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pushsource", *map(str, args)]


def run_pushsource(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end; its output is captured as text."""
    _register_passwords(args, env)
    done = subprocess.run(
        pushsource_command(*args),
        env=pushsource_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    capture_output(f"pushsource {_shown(args)}", done.stdout + done.stderr)
    return done


def _shown(args: Sequence[str | Path]) -> str:
    """The arguments, for naming a run: short, and never with a password."""
    text = " ".join(str(a) for a in args)
    for secret in SECRETS:
        text = text.replace(secret, "<secret>")
    return text[:160]


@dataclass
class PushsourceProcess:
    """The CLI running in the background, its output going to files."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def wait(self, timeout: float) -> int:
        """Its exit status. Raises AssertionError, with its output, on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"pushsource still running after {timeout} s\n{self.describe()}"
            ) from None

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", errors="replace")

    def describe(self) -> str:
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


StartPushsource = Callable[..., PushsourceProcess]


@pytest.fixture
def start_pushsource(tmp_path: Path) -> Iterator[StartPushsource]:
    """start_pushsource(*args, env=None): the CLI in the background, ended at teardown."""
    started: list[PushsourceProcess] = []
    shown: list[str] = []  # how each is named in CAPTURED
    numbers = itertools.count(1)

    def start(*args: str | Path, env: dict[str, str] | None = None) -> PushsourceProcess:
        n = next(numbers)
        out, err = tmp_path / f"pushsource-{n}.out", tmp_path / f"pushsource-{n}.err"
        _register_passwords(args, env)
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                pushsource_command(*args),
                env=pushsource_env(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        started.append(PushsourceProcess(proc, out, err))
        shown.append(f"pushsource {_shown(args)} (background)")
        return started[-1]

    yield start
    for process in started:
        process.terminate()
    for process, which in zip(started, shown, strict=True):
        capture_output(which, process.stdout + process.stderr)


@pytest.fixture(name="run_pushsource")
def run_pushsource_fixture() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_pushsource(*args, env=None, timeout=60): the CLI run to its end."""
    return run_pushsource


@pytest.fixture(scope="session")
def icecast() -> Iterator[IcecastServer]:
    """A real icecast2 from the repository's icecast.xml, on a free port.

    Its workdir is a fresh directory under /tmp: as root icecast2 runs as
    nobody, who cannot enter pytest's private tmp directories.
    """
    with temp_icecast("shared") as server:
        yield server


_mount_numbers = itertools.count(1)


@pytest.fixture
def unique_mount(request: pytest.FixtureRequest) -> str:
    """A mount no other test uses: /t-<test name>-<n>."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"/t-{name}-{next(_mount_numbers)}"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Fixture]:
    """build_corpus() once per session, in a folder holding nothing else."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def secret_url(server: IcecastServer, mount: str, password: str = SECRET_PASSWORD) -> str:
    """The source URL of mount on server, the password percent-encoded."""
    return f"icecast://source:{quote(password, safe='')}@127.0.0.1:{server.port}{mount}"


@pytest.fixture(scope="session")
def secret_icecast() -> Iterator[IcecastServer]:
    """A second real icecast2, whose source and admin password is SECRET_PASSWORD.

    The shared ``icecast`` fixture uses icecast.xml's "hackme", which is common
    text; a leak of this one cannot be a coincidence.
    """

    def secret(root: ET.Element) -> None:
        for tag in ("source-password", "admin-password"):
            found = root.find(f"authentication/{tag}")
            assert found is not None, f"icecast.xml has no <{tag}>"
            found.text = SECRET_PASSWORD

    with temp_icecast("secret", edit=secret) as server:
        yield server


# --- the peer servers: Icecast 2.4.4, 2.5.0 and icecast-kh ---------------------------
#
# One of each per session, from PeerServer's stock config: source password
# "hackme", admin password PEER_ADMIN_PASSWORD (another one, so that a request
# made with the source's credentials cannot pass as the admin's). 2.5.0 and kh
# are built from ../shared/servers on first use; without it the tests that
# use them skip (fail in CI).

PEER_ADMIN_PASSWORD = "peer-admin-pw"


def _peer(kind: Kind) -> Iterator[PeerServer]:
    server = PeerServer(kind, source_password="hackme", admin_password=PEER_ADMIN_PASSWORD)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def icecast_244() -> Iterator[PeerServer]:
    """Debian's icecast2 2.4.4, stock config."""
    yield from _peer("2.4.4")


@pytest.fixture(scope="session")
def icecast_250() -> Iterator[PeerServer]:
    """Icecast 2.5.0 built from ../shared/servers, stock config."""
    yield from _peer("2.5.0")


@pytest.fixture(scope="session")
def icecast_kh() -> Iterator[PeerServer]:
    """icecast-kh built from ../shared/servers, stock config."""
    yield from _peer("kh")


_PEER_FIXTURES: dict[Kind, str] = {
    "2.4.4": "icecast_244",
    "2.5.0": "icecast_250",
    "kh": "icecast_kh",
}


@pytest.fixture(params=KINDS, ids=[f"icecast-{kind}" for kind in KINDS])
def peer_server(request: pytest.FixtureRequest) -> PeerServer:
    """Each of the three servers in turn (its session one): a test that takes
    it runs once per server, as test_x[icecast-2.4.4], [icecast-2.5.0] and
    [icecast-kh]."""
    server: PeerServer = request.getfixturevalue(_PEER_FIXTURES[request.param])
    return server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``make compat``: the compatibility table the tests filled."""
    from tests.support.compat import write_table

    write_table()
