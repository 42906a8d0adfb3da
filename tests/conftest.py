"""Shared fixtures: one real icecast2 per session and the pushsource CLI as a process."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.media import Fixture, build_corpus

#: Environment variables that would leak the developer's setup into a test.
_HERMETIC_UNSET = ("PUSHSOURCE_PASSWORD",)


def pushsource_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _HERMETIC_UNSET}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def pushsource_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "pushsource", *map(str, args)]


def run_pushsource(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end; its output is captured as text."""
    return subprocess.run(
        pushsource_command(*args),
        env=pushsource_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
    numbers = itertools.count(1)

    def start(*args: str | Path, env: dict[str, str] | None = None) -> PushsourceProcess:
        n = next(numbers)
        out, err = tmp_path / f"pushsource-{n}.out", tmp_path / f"pushsource-{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                pushsource_command(*args),
                env=pushsource_env(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        started.append(PushsourceProcess(proc, out, err))
        return started[-1]

    yield start
    for process in started:
        process.terminate()


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
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-"))
    server = IcecastServer(DEFAULT_TEMPLATE, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


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
