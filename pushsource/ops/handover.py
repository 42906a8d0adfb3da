"""Upgrade and restart in place (SIGUSR2, ``pushsource restart``): the process
execs itself anew (same PID, the installed code loaded again) and the new
image goes on with the old one's source connections at their next byte.

The old image (:func:`restart`, on a thread of its own):

1. checks that the new image will start: a child ``python -c`` imports the
   installed package and checks the command line and config as ``stream`` or
   ``run`` would; a problem is one line, and the old image goes on;
2. holds every station (nothing more goes out), waits for the bytes already
   given to each socket to reach the kernel, and takes from each station on
   air where it is (core.station.Tail: the frames it would send next, their
   clock, where the track goes on after them) and from its socket the ICY
   place (audio bytes since the last block, the title in force);
3. writes that into a file of its own (mode 600 in a fresh 700 directory; no
   password: the new image reads those from the config as usual), names it
   in ``$PUSHSOURCE_HANDOVER`` and lets the sockets and the control server's
   and harbors' listening sockets be inherited;
4. sends the frames due, forks a child (:func:`_bridge_child`) that goes on
   sending each station's frames from memory on the old clock through the
   exec and the new image's start (a few hundred milliseconds: a listener
   would hear that as a gap), and execs the same interpreter with the same
   arguments.

The new image: :func:`take` (run when ``pushsource.ops`` is first imported)
reads and removes the file, and keeps a SIGUSR2 that comes before the
command line's handler is up for then. :func:`attach` tells each station handed over
where it goes on (after its frames in memory); at its first connect the
driver adopts the socket instead of logging in, after taking the station back
from the child, which says where it stopped (the rest of those frames the
engine sends as they come due). :func:`listener` gives back the listening
sockets.

What cannot be handed over (TLS, a station with other outputs, one off air,
a DJ's connection) is closed by the exec: those reconnect as after a drop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

# Only what the bridge needs at the new image's start: every millisecond
# before its first send is a millisecond of silence on the wire.
from pushsource.core.icy import IcyWriter
from pushsource.errors import ConfigError, PushsourceError

if TYPE_CHECKING:
    from pushsource.core.station import Tail

log = logging.getLogger("pushsource")

#: Names the hand-over file for the new image.
ENV: Final = "PUSHSOURCE_HANDOVER"
#: Set when a SIGUSR2 came while a restart was under way: the new image
#: restarts again once it is up (each signal is a restart).
AGAIN: Final = "PUSHSOURCE_RESTART_AGAIN"
#: The longest the old image waits for bytes queued in user space to reach
#: the kernel (a socket that does not drain is not handed over).
DRAIN: Final = 1.0
#: The longest the new image's check (the child) may take.
CHECK_TIMEOUT: Final = 60.0
#: A connection handed over that no station took this long after its tail
#: ran out is closed (the station is gone from the config, or stopped).
UNCLAIMED: Final = 10.0
#: The longest a restart waits for the last one's hand-over to be done.
SETTLE: Final = 5.0
#: How often the bridge looks for frames due.
BRIDGE_STEP: Final = 0.01

_CHECK: Final = (
    "import sys; from pushsource.ops.handover import preflight; sys.exit(preflight(sys.argv[1:]))"
)


# --- finding the running process (restart, reload) -------------------------------------


def find_running(pid: int | None = None, config: Path | None = None) -> int:
    """The PID of the pushsource ``stream``/``run`` to signal: ``pid`` if
    given (it must be one), else the one process of this user running
    pushsource (with ``config``: the one running that config file). Raises
    ConfigError with one line when there is none, or more than one."""
    if pid is not None:
        if _pushsource_args(pid) is None:
            raise ConfigError(f"process {pid} is not a running pushsource stream or run")
        return pid
    wanted = config.resolve() if config is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        number = int(entry.name)
        args = _pushsource_args(number)
        if args is None:
            continue
        if wanted is not None and _config_of(number, args) != wanted:
            continue
        found.append(number)
    if not found:
        which = f" with --config {config}" if config is not None else ""
        raise ConfigError(f"no running pushsource stream or run{which} of this user; give --pid")
    if len(found) > 1:
        pids = ", ".join(str(n) for n in sorted(found))
        raise ConfigError(f"more than one pushsource is running ({pids}): give --pid or --config")
    return found[0]


def read_pid_file(path: Path) -> int:
    """The process id ``run --pid-file`` wrote. Raises ConfigError."""
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--pid-file {path}: no process id in it ({exc})") from None


def signal_running(signum: int, pid: int | None = None, config: Path | None = None) -> int:
    """Send ``signum`` to the running pushsource (see :func:`find_running`);
    one line says what was done. Returns the exit status. Raises ConfigError."""
    target = find_running(pid, config)
    try:
        os.kill(target, signum)
    except OSError as exc:
        raise ConfigError(f"cannot signal process {target}: {exc.strerror or exc}") from None
    print(f"sent {signal.Signals(signum).name} to pushsource (PID {target})")
    return 0


def _pushsource_args(pid: int) -> list[str] | None:
    """The arguments after ``pushsource`` of a ``stream``/``run`` process of
    this user, else None. ps shows what setproctitle made of them (one
    string), or the interpreter's own argv (``python -m pushsource ...``)."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    words = [w for part in raw.split(b"\0") for w in part.decode("utf-8", "replace").split(" ")]
    words = [w for w in words if w]
    for n, word in enumerate(words):
        if Path(word).name == "pushsource" and words[n + 1 : n + 2] in (["stream"], ["run"]):
            return words[n + 1 :]
    return None


def _config_of(pid: int, args: list[str]) -> Path | None:
    for n, word in enumerate(args):
        text = None
        if word == "--config" and n + 1 < len(args):
            text = args[n + 1]
        elif word.startswith("--config="):
            text = word.split("=", 1)[1]
        if text is not None:
            path = Path(text)
            if not path.is_absolute():
                with contextlib.suppress(OSError):
                    path = Path(os.readlink(f"/proc/{pid}/cwd")) / path
            return path.resolve()
    return None


# --- the new image's check, in a child ------------------------------------------------


def preflight(argv: Sequence[str]) -> int:
    """In the child: import the package as installed now, check the command
    line and the config as ``stream``/``run`` would (building nothing). One
    line on stderr for a problem; returns the exit status."""
    try:
        from pushsource.ops import cli, control, runner  # noqa: F401 (they must import)
        from pushsource.ops.config import load_config

        args = cli.build_parser().parse_args(list(argv))
        if args.command == "stream":
            cli.stream_settings(args)
            cli._control_settings(args, None)
        elif args.command == "run":
            cli._control_settings(args, load_config(args.config, os.environ))
    except PushsourceError as exc:
        print(f"{exc}", file=sys.stderr)
        return exc.exit_status
    except SystemExit as exc:  # argparse said why, on stderr
        return exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # a broken upgrade: a SyntaxError, an ImportError...
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def check_new_image(argv: Sequence[str]) -> str | None:
    """Run :func:`preflight` in a child; its one line when it fails, else None."""
    import subprocess

    env = {key: value for key, value in os.environ.items() if key not in (ENV, AGAIN)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK, *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot check the new image: {exc}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"the new image's check failed (status {done.returncode})"


# --- the old image --------------------------------------------------------------------


@dataclass
class Listening:
    """A listening socket to hand over, under the address it was asked for."""

    host: str
    port: int
    sock: Any  # a socket, or asyncio's TransportSocket: its fileno()


_restarting = threading.Lock()


def restart(
    runners: Sequence[Any],
    engine: Any,
    listening: Callable[[], Iterable[Listening]],
    before_exec: Callable[[], None],
    quiet: Callable[[], Callable[[], None]] = lambda: lambda: None,
) -> None:
    """Exec the new image and hand it everything that can be (module doc).
    Returns only when it did not happen (said in one line); the old image goes
    on. ``quiet``: stop taking new connections on the listening sockets (they
    wait in the listen queue for the new image); it returns how to undo that.
    Not on the engine's thread."""
    if not _restarting.acquire(blocking=False):
        os.environ[AGAIN] = "1"  # (the exec passes it on)
        log.info("restart: one is under way; the new image restarts again once it is up")
        return
    undo: list[Callable[[], None]] = []
    try:
        if not _restart(runners, engine, listening, before_exec, lambda: undo.append(quiet())):
            for again in undo:
                again()
    except Exception:  # a bug must not leave the stations held
        log.exception("restart failed (the running image goes on)")
        engine.run(lambda: [runner.driver.let_go() for runner in runners])
        for again in undo:
            again()
    finally:
        os.environ.pop(AGAIN, None)  # no exec: the one asked meanwhile is this one
        _restarting.release()


def _restart(
    runners: Sequence[Any],
    engine: Any,
    listening: Callable[[], Iterable[Listening]],
    before_exec: Callable[[], None],
    quiet: Callable[[], None],
) -> bool:
    """False when it did not exec (said why)."""
    argv = sys.orig_argv[1:]
    problem = check_new_image(sys.argv[1:])
    if problem is not None:
        log.error("restart refused: %s (the running image goes on)", problem)
        return False
    quiet()
    # The last restart's frames still going out (a second SIGUSR2 right
    # after the first): let them, so those stations are handed over too.
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and engine.run(
        lambda: any(runner.driver.settling for runner in runners)
    ):
        time.sleep(0.05)
    started = time.monotonic()
    held: list[Any] = []
    tails: dict[int, Tail] = {}

    def hold() -> None:
        for n, runner in enumerate(runners):
            driver = runner.driver
            if not driver.hold():
                continue
            held.append(driver)
            if len(driver.outputs) != 1:
                continue  # other outputs: reconnect (one clock, several sockets)
            tail = driver.machine.hand_over()
            if tail is not None and driver.outputs[0].on_air:
                tails[n] = tail

    engine.run(hold)
    socks: dict[int, tuple[int, int, str | None, list[tuple[int, str]]]] = {}
    deadline = time.monotonic() + DRAIN

    def collect() -> bool:
        waiting = False
        for n in tails:
            sock = runners[n].driver.outputs[0].sock
            if sock is not None and sock.buffered:
                waiting = True
                continue
            got = sock.hand_over() if sock is not None else None
            if got is not None:
                socks[n] = got
        return waiting

    while engine.run(collect) and time.monotonic() < deadline:
        socks.clear()
        time.sleep(0.01)
    feeds: list[tuple[int, _Feed]] = []
    for n, (fd, phase, title, titles) in socks.items():
        runner, tail = runners[n], tails[n]
        metaint = _metaint(runner.driver.outputs[0].sock)
        icy = None
        if metaint is not None:
            icy = IcyWriter(metaint)
            icy.go_on(phase, phase, title)
            for at, text in titles:
                icy.title(text, at)
        copy = socket.socket(fileno=os.dup(fd))  # to send through, closed after
        copy.settimeout(1.0)
        key = (runner.id, _where(runner.driver.target))
        feeds.append((fd, _Feed(key, copy, tail.data, list(tail.ends), tail.duration, tail.due,
                                tail.lead, tail.sent, tail.wire, icy, tail.resume)))  # fmt: skip
    listeners = [{"host": s.host, "port": s.port, "fd": s.sock.fileno()} for s in listening()]
    djs = sum(harbor.connections for harbor in _harbors(runners))
    if djs:
        log.warning("restart: %d DJ connection%s dropped; encoders reconnect", djs, "s"[djs == 1 :])
    others = len(runners) - len(feeds)
    log.info(
        "restarting in place (PID %d): %d station%s carried on%s, %.0f ms to hand over",
        os.getpid(),
        len(feeds),
        "s"[len(feeds) == 1 :],
        f", {others} reconnect" if others else "",
        (time.monotonic() - started) * 1000,
    )
    # The frames due now go from here; then a forked child goes on sending
    # them on their clock while this process execs and the new image loads
    # (a few hundred ms: a listener would hear that as a gap), until the new
    # image asks for each station back (_bridge_child).
    # A --once run's list starts again in the new image: what it played
    # already goes with it (a folder's station keeps that in its state file).
    once = {
        (runner.id, _where(runner.driver.target)): [str(p) for p in runner.driver.machine.played]
        for runner in runners
        if runner.settings.once
    }
    stations, blobs, live = [], [], []
    for fd, feed in feeds:
        feed.pump(time.monotonic())
        if feed.failed:
            feed.sock.close()
            continue
        played = once.get(feed.key)
        stations.append({"fd": fd, **feed.record(), "played": played})
        blobs.append(feed.rest_data())
        live.append(feed)
    asks, ask = os.pipe()  # the new image asks for a station back...
    answer, answers = os.pipe()  # ...and the child answers where it stopped
    folder = Path(tempfile.mkdtemp(prefix="pushsource-handover-"))  # 0700
    path = folder / "handover"
    bridge = {"ask": ask, "answer": answer}
    head = json.dumps({"stations": stations, "listeners": listeners, "bridge": bridge})
    fd_file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd_file, "wb") as out:
        out.write(head.encode("utf-8") + b"\n")
        for blob in blobs:
            out.write(blob)
    before_exec()
    child = os.fork() if live else -1
    if child == 0:
        _bridge_child(live, asks, answers)  # does not return
    if child > 0:  # for the new image to reap it once it is done
        (folder / "child").write_text(str(child), "ascii")
    for feed in live:
        feed.sock.close()
    os.close(asks)
    os.close(answers)
    for fd in (ask, answer, *(int(station["fd"]) for station in stations)):
        os.set_inheritable(fd, True)
    for listener in listeners:
        os.set_inheritable(int(listener["fd"]), True)
    os.environ[ENV] = str(path)
    # A SIGUSR2 from here until the new image's take() has its handler up
    # would end the process (the default): held back (the mask crosses the
    # exec), it comes then and restarts the new image once it is up.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        os.execv(sys.executable, [sys.executable, *argv])
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        os.environ.pop(ENV, None)
        shutil.rmtree(folder, ignore_errors=True)
        if child > 0:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        log.error(
            "restart failed: cannot run %s: %s (the running image goes on; its stations reconnect)",
            sys.executable,
            exc,
        )
        # The child may have sent frames past each machine's place: a new
        # connection, not a repeat.
        engine.run(lambda: [driver.let_go(reconnect=True) for driver in held])
    return False


def _bridge_child(feeds: list[_Feed], asks: int, answers: int) -> None:
    """The forked child: send each station's frames on their clock until the
    new image asks for it back ("KEY\n" on ``asks``); answer with where it
    stopped (its record, a JSON line on ``answers``). Only this thread exists
    here: no logging, no locks another thread might hold; os._exit at the end."""
    try:
        import select

        keep = {0, 1, 2, asks, answers, *(feed.sock.fileno() for feed in feeds)}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:  # the parent's other sockets: theirs to close
                with contextlib.suppress(OSError):
                    os.close(int(name))
        live = {json.dumps(list(feed.key)): feed for feed in feeds}
        until = max(feed.end for feed in feeds) + UNCLAIMED
        pending = b""
        poll = select.poll()  # (select() cannot watch a descriptor past 1023)
        poll.register(asks, select.POLLIN)
        while live and time.monotonic() < until:
            now = time.monotonic()
            for feed in live.values():
                feed.pump(now)
            if not poll.poll(BRIDGE_STEP * 1000):
                continue
            data = os.read(asks, 65536)
            if not data:
                return  # the new image is gone
            pending += data
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                feed_or_none = live.pop(line.decode("utf-8"), None)
                reply: dict[str, Any] = {"gone": True}
                if feed_or_none is not None:
                    feed_or_none.done = True
                    feed_or_none.sock.close()
                    reply = {"failed": feed_or_none.failed, **feed_or_none.record()}
                os.write(answers, json.dumps(reply).encode("utf-8") + b"\n")
    finally:
        os._exit(0)


def _where(target: Any) -> str:
    return f"{target.protocol}://{target.host}:{target.port}{target.mount}"


def _metaint(sock: Any) -> int | None:
    icy = getattr(sock, "_icy", None)
    return icy.interval if icy is not None else None


def _harbors(runners: Sequence[Any]) -> list[Any]:
    seen: list[Any] = []
    for runner in runners:
        harbor = runner.harbor
        if harbor is not None and all(h is not harbor for h in seen):
            seen.append(harbor)
    return seen


# --- the new image --------------------------------------------------------------------


@dataclass
class _Feed:
    """One station's tail, sent by the bridge on the old image's clock."""

    key: tuple[str, str]
    sock: socket.socket
    data: bytes
    ends: list[int]
    duration: float
    due: float
    lead: float
    sent: int
    wire: int
    icy: IcyWriter | None
    resume: tuple[str, int, float] | None
    frames: int = 0  # of the tail, sent
    bridged: int = 0  # wire bytes the bridge sent
    failed: bool = False
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pump(self, now: float, *, flush: bool = False) -> None:
        """Send the frames due within the lead (``flush``: all that are left)."""
        with self.lock:
            if self.done or self.failed:
                return
            count = len(self.ends)
            if not flush:
                count = min(
                    count, max(0, math.floor((now + self.lead - self.due) / self.duration) + 1)
                )
            if count <= self.frames:
                return
            start = self.ends[self.frames - 1] if self.frames else 0
            data = self.data[start : self.ends[count - 1]]
            if self.icy is not None:
                data = self.icy.wrap(data)
            try:
                self.sock.sendall(data)
            except OSError:  # (no line here: the bridge child may not log)
                self.failed = True
                return
            self.bridged += len(data)
            self.frames = count

    def rest_data(self) -> bytes:
        """The frames not sent yet."""
        return self.data[self.ends[self.frames - 1] if self.frames else 0 :]

    def record(self) -> dict[str, Any]:
        """Where it is, for the hand-over file (the frames not sent yet go
        after it, :meth:`rest_data`)."""
        icy = self.icy
        done = self.ends[self.frames - 1] if self.frames else 0
        return {
            "id": self.key[0],
            "where": self.key[1],
            "phase": icy.audio % icy.interval if icy is not None else 0,
            "metaint": icy.interval if icy is not None else None,
            "title": icy.last_title if icy is not None else None,
            "titles": icy.pending() if icy is not None else [],
            "due": self.due + self.frames * self.duration,
            "ends": [end - done for end in self.ends[self.frames :]],
            "duration": self.duration,
            "sent": self.sent + done,
            "wire": self.wire + self.bridged,
            "lead": self.lead,
            "resume": self.resume,
        }

    @property
    def end(self) -> float:
        """When the tail's audio ends."""
        return self.due + len(self.ends) * self.duration


@dataclass
class _Station:
    """A station handed over, in the new image: its socket and where the
    bridge child started from (its record and the frames it had to send)."""

    key: tuple[str, str]
    sock: socket.socket
    record: dict[str, Any]
    data: bytes


@dataclass
class _Taken:
    stations: dict[tuple[str, str], _Station]
    listeners: dict[tuple[str, int], socket.socket]
    ask: int = -1  # to the bridge child ("KEY\n"), and its answers
    answer: int = -1
    child: int = 0  # its PID: ours to reap, once every station is back
    _pending: bytes = b""

    def back(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """Ask the bridge child for a station back: where it stopped sending,
        or None when it is gone (or does not answer within a second)."""
        import select

        if self.ask < 0:
            return None
        try:
            os.write(self.ask, json.dumps(list(key)).encode("utf-8") + b"\n")
            deadline = time.monotonic() + 1.0
            poll = select.poll()  # (select() cannot watch a descriptor past 1023)
            poll.register(self.answer, select.POLLIN)
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not poll.poll(left * 1000):
                    return None
                data = os.read(self.answer, 65536)
                if not data:
                    return None
                self._pending += data
        except OSError:
            return None
        line, _, self._pending = self._pending.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return None if reply.get("gone") else reply

    def reap(self) -> None:
        """Once every station is back, the child ends: wait for it (a thread
        of its own: it may still be writing its last answer)."""
        child, self.child = self.child, 0
        if child > 0 and not self.stations:
            threading.Thread(
                target=_reap, args=(child,), name="pushsource-reap", daemon=True
            ).start()
        else:
            self.child = child


def _reap(child: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(child, 0)


_taken: _Taken | None = None


def take() -> None:
    """The new image, first thing: read and remove the hand-over named in
    ``$PUSHSOURCE_HANDOVER`` (its bridge child goes on sending meanwhile)."""
    global _taken
    name = os.environ.pop(ENV, "")
    if not name or _taken is not None:
        return
    # A SIGUSR2 before the command line's handler is up must not end us: kept
    # for then (the old image held it back across the exec: let it come now).
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGUSR2, _early_restart)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    if os.environ.pop(AGAIN, None):
        _early_restart(signal.SIGUSR2, None)
    path = Path(name)
    child = 0
    try:
        raw = path.read_bytes()
        with contextlib.suppress(OSError, ValueError):
            child = int((path.parent / "child").read_text("ascii"))
    except OSError as exc:
        print(f"pushsource: restart: cannot read the hand-over {path}: {exc}", file=sys.stderr)
        return
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    head, _, blob = raw.partition(b"\n")
    handed = json.loads(head)
    stations: dict[tuple[str, str], _Station] = {}
    at = 0
    for record in handed["stations"]:
        ends = record["ends"]
        data = blob[at : at + (int(ends[-1]) if ends else 0)]
        at += len(data)
        sock = socket.socket(fileno=int(record["fd"]))
        sock.set_inheritable(False)  # a later exec that does not hand it over closes it
        key = (str(record["id"]), str(record["where"]))
        stations[key] = _Station(key, sock, record, data)
    listeners = {
        (str(item["host"]), int(item["port"])): socket.socket(fileno=int(item["fd"]))
        for item in handed["listeners"]
    }
    for sock in listeners.values():
        sock.set_inheritable(False)
    _taken = taken = _Taken(stations, listeners, child=child)
    bridge = handed.get("bridge")
    if bridge:
        taken.ask, taken.answer = int(bridge["ask"]), int(bridge["answer"])
        for fd in (taken.ask, taken.answer):
            os.set_inheritable(fd, False)


_asked_early = False


def _early_restart(signum: int, frame: object) -> None:
    global _asked_early
    _asked_early = True


def restart_asked() -> bool:
    """A SIGUSR2 came while the new image started: restart again once up."""
    return _asked_early


def handed_over() -> bool:
    """Whether this image was started by a restart in place."""
    return _taken is not None


def attach(runners: Sequence[Any]) -> None:
    """Each station handed over goes on where its frames in memory end, on
    its socket; connections no station takes are closed (their stations
    left the config)."""
    taken = _taken
    if taken is None:
        return
    from pushsource.core.station import Carried
    from pushsource.engine.station import Adopted

    wanted = set()
    for runner in runners:
        key = (runner.id, _where(runner.driver.target))
        station = taken.stations.get(key)
        if station is None or len(runner.driver.outputs) != 1:
            continue
        wanted.add(key)
        for path in station.record.get("played") or ():
            runner._played.mark_played(Path(path))  # the --once list's PlayState
        resume = station.record["resume"]
        runner.driver.machine.go_on_at(
            (Path(resume[0]), int(resume[1]), float(resume[2])) if resume else None
        )

        def carry(station: _Station = station) -> Adopted | None:
            taken.stations.pop(station.key, None)
            record = taken.back(station.key)
            taken.reap()
            if record is None or record.get("failed"):
                log.warning(
                    "restart: the connection to %s did not last the exec: a new one",
                    station.key[1],
                )
                station.sock.close()
                return None
            # The frames the child had not sent yet: the new image sends them,
            # as they come due, before the station's own.
            skip = int(record["sent"]) - int(station.record["sent"])
            data, ends = station.data[skip:], [int(end) for end in record["ends"]]
            due, duration = float(record["due"]), float(record["duration"])
            rest, start = [], 0
            for n, end in enumerate(ends):
                rest.append((due + n * duration, data[start:end]))
                start = end
            metaint = record["metaint"]
            title = record["title"]
            resume = record["resume"]
            size = ends[-1] if ends else 0
            carried = Carried(
                due=due + len(ends) * duration,
                sent=int(record["sent"]) + size,
                # (the blocks in the rest, about: the wire's count only
                # places the pacing's sends against Icecast's relay blocks)
                wire=int(record["wire"]) + size + (size // metaint if metaint else 0),
                title=title,
                at=(Path(resume[0]), int(resume[1])) if resume else None,
            )
            log.info("carried on: the connection to %s, with no new login", station.key[1])
            return Adopted(
                station.sock,
                phase=int(record["phase"]),
                title=title,
                titles=[(int(at), str(text)) for at, text in record["titles"]],
                carried=carried,
                rest=rest,
                lead=float(record["lead"]),
            )

        runner.driver.carry = carry
    for key, station in list(taken.stations.items()):
        if key not in wanted:
            taken.stations.pop(key, None)
            taken.back(key)
            station.sock.close()
            log.info("restart: station %s is not in the config any more: closed", key[0])
    taken.reap()
    for runner in runners:
        harbor = runner.harbor
        if harbor is not None and harbor.inherited is None:
            harbor.inherited = listener(harbor.host, harbor.port)


def listener(host: str, port: int) -> socket.socket | None:
    """The listening socket the old image had on (host, port), if any."""
    taken = _taken
    if taken is None:
        return None
    return taken.listeners.pop((host, port), None)


def release_listeners() -> None:
    """Close the listening sockets nobody took (an address changed)."""
    taken = _taken
    if taken is None:
        return
    for sock in taken.listeners.values():
        sock.close()
    taken.listeners.clear()
