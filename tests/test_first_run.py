"""A new operator's first run: ``make station`` in a fresh copy of the
repository, in a folder only root may enter (a 0700 home), on a terminal, to
the first frame a real listener hears; then Ctrl-C, and a second run that
plays from the first track again.

The copy reuses this test run's venv (its ``.venv`` is a link to it, the
station stamp made new), so the time measured is ``make station`` without the
pip install: a fresh venv would download packages and measure the network.
The copy's own code runs: ``python -m`` puts the copy first on sys.path.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushsource.ops.trial import DEMO_TITLES, free_port
from tests.support.icecast import REPO_ROOT
from tests.support.listener import Listener

pytestmark = pytest.mark.integration

#: The issue's bound for a fresh Debian 12, pip install included; without it,
#: this is generous.
FIRST_FRAME_WITHIN = 30.0


def _copy_tree(target: Path) -> None:
    """The repository's files as a clone would have them (tracked and new,
    ignored ones left out), with what is not committed yet."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        name = os.fsdecode(raw)
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


class Terminal:
    """A command on a pseudo-terminal of its own, as a person would run it."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.output = bytearray()
        pid, self._fd = pty.fork()
        if pid == 0:  # the child: never returns
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid = pid

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._fd], [], [], min(left, 0.1))
            if ready:
                try:
                    chunk = os.read(self._fd, 65536)
                except OSError:  # the child closed the terminal
                    return
                if not chunk:
                    return
                self.output += chunk

    def ctrl_c(self) -> None:
        os.write(self._fd, b"\x03")

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.read(0.2)
                os.close(self._fd)
                return os.waitstatus_to_exitcode(status)
            self.read(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"still running after {timeout} s:\n{self.text}")

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


def _run_station(clone: Path, port: int, env: dict[str, str]) -> tuple[float, Listener, str]:
    """``make station`` until the listener has a title; returns the seconds to
    its first audio byte, the listener and what the terminal showed."""
    listener = Listener(port, "/stream", connect_timeout=60).start()
    started = time.monotonic()
    terminal = Terminal(["make", "station", f"PORT={port}"], clone, env)
    code: int | None = None
    try:
        first_title = f"{DEMO_TITLES[0][0]} - {DEMO_TITLES[0][1]}"
        deadline = started + 60

        def titles() -> list[tuple[int, str]]:
            # Before the station is on air the listener may get the crash
            # fallback's silence (make station sets it up), titled "".
            return [(offset, title) for offset, title in listener.titles if title]

        while not titles() and time.monotonic() < deadline:
            terminal.read(0.2)
        assert titles(), f"no title heard in 60 s:\n{terminal.text}"
        assert titles()[0][1] == first_title, (listener.titles, terminal.text)
        # The station's first frame: the first read past where its title came.
        on_air = titles()[0][0]
        first_frame = next(t for t, upto in listener.arrivals if upto > on_air) - started
        terminal.ctrl_c()
        code = terminal.wait(20)
    finally:
        listener.stop()
        if code is None:  # failed on the way: stop the station (and its icecast2) anyway
            terminal.ctrl_c()
            with contextlib.suppress(AssertionError, OSError):
                terminal.wait(20)
    assert code == 0, f"make station exited {code}:\n{terminal.text}"
    return first_frame, listener, terminal.text


def test_make_station_from_a_fresh_copy_in_a_private_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is not installed (apt-get install make)")
    home = tmp_path / "home"
    clone = home / "pushsource"
    clone.mkdir(parents=True)
    home.chmod(0o700)  # as root: icecast2, running as nobody, cannot enter it
    _copy_tree(clone)
    venv = Path(sys.prefix)
    (clone / ".venv").symlink_to(venv, target_is_directory=True)
    (venv / ".station").touch()  # installed: the test extras are a superset
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TERM": "xterm",
    }
    env.pop("MAKEFLAGS", None)
    port = free_port()

    took, _, shown = _run_station(clone, port, env)
    print(f"make station, fresh copy, existing venv: first frame heard after {took:.2f} s")
    assert took < FIRST_FRAME_WITHIN, shown
    assert sorted(p.name for p in (clone / "music").iterdir()) == [
        "01-track.mp3",
        "02-track.mp3",
        "03-track.mp3",
    ]
    assert ".venv/bin/pushsource" in shown
    assert "Error" not in shown and "Traceback" not in shown, shown
    assert "pip" not in shown  # nothing was installed
    if os.geteuid() == 0:  # nobody cannot enter the home: Icecast's files went elsewhere
        assert "icecast2 logs in /tmp/pushsource-icecast-" in shown, shown
        logs = shown.split("icecast2 logs in ", 1)[1].split()[0]
        assert not Path(logs).exists()  # removed when the station stopped

    # Again, after a run that played everything: without --fresh the station
    # would skip all three (and send silence); make station plays them again.
    from pushsource.workers.state import PlayState, default_state_path, save_state

    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
    state_file = default_state_path(f"127.0.0.1:{port}/stream")  # as the station names it
    assert state_file.exists(), "the first run kept no play state"
    played = PlayState()
    for track in sorted((clone / "music").iterdir()):
        played.mark_played(track.resolve())
    save_state(state_file, played)
    again, _, shown = _run_station(clone, port, env)
    print(f"second make station: first frame heard after {again:.2f} s")
    assert "Error" not in shown and "Traceback" not in shown, shown
    assert "making" not in shown  # the demo tracks are there already


def test_make_station_names_a_port_in_use(tmp_path: Path) -> None:
    import socket

    clone = tmp_path / "pushsource"
    clone.mkdir()
    _copy_tree(clone)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (Path(sys.prefix) / ".station").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            ["make", "station", f"PORT={port}"],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use already" in done.stderr, done
    assert "authentication" not in done.stderr + done.stdout
