"""The stations of ``pushsource run`` as a set a reload changes: SIGHUP,
``pushsource reload`` and ``POST /api/reload`` read the config file again,
check it whole (a config that does not check out is refused, one line per
problem, and nothing changes), then carry out :mod:`pushsource.ops.reload`'s
plan: stations added start, removed ones stop cleanly, changed ones restart
alone, the rest are not touched; the folders are looked at again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pushsource.core.target import redact
from pushsource.engine.loop import Engine
from pushsource.errors import ConfigError
from pushsource.ops.config import Config, load_config
from pushsource.ops.reload import Plan, plan, refusal, station_keys
from pushsource.ops.runner import StationRunner, harbor_of
from pushsource.ops.settings import (
    ControlSettings,
    StationSettings,
    resolve_output_target,
    resolve_target,
)

if TYPE_CHECKING:
    from pushsource.ops.control import ControlServer

log = logging.getLogger("pushsource")

#: How long a removed or changed station may take to stop cleanly (its last
#: frames flushed through the server) before the reload goes on without it.
STOP_TIMEOUT = 5.0
#: A reload the control API asked for: its answer goes out before the
#: server it came through is closed (a new listen address, or [control] gone).
ANSWER_FIRST = 0.5


@dataclass
class Outcome:
    """What a reload did: ``applied`` and the plan, or the problems that
    refused it (nothing changed then)."""

    applied: bool
    plan: Plan | None = None
    problems: list[str] = field(default_factory=list)
    #: Stations the plan started whose start failed (one line each).
    failed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        if not self.applied or self.plan is None:
            return {"applied": False, "error": "the config does not check out; nothing changed",
                    "problems": self.problems}  # fmt: skip
        p = self.plan
        return {
            "applied": True,
            "summary": p.summary(),
            "added": [s.id for s in p.added],
            "removed": list(p.removed),
            "restarted": [s.id for s in p.restarted],
            "updated": [s.id for s, _ in p.updated],
            "unchanged": list(p.unchanged),
            "control": p.control,
            "failed": self.failed,
        }


def fingerprint(settings: StationSettings, environ: Mapping[str, str]) -> tuple[object, ...]:
    """Where each of a station's outputs goes, passwords included: what a
    password file holds is read now (its path alone says nothing)."""
    return (
        resolve_target(settings, environ),
        *(resolve_output_target(settings, o, environ) for o in settings.outputs),
    )


class Fleet:
    """The running stations (``runners``: the very list the control server's
    metrics, the console and the listener sampler read, changed in one step)
    and what a reload needs to change them."""

    def __init__(
        self,
        runners: list[StationRunner],
        *,
        path: Path,
        environ: Mapping[str, str],
        engine: Engine,
        make: Callable[[StationSettings], StationRunner],
        relog: Callable[[Sequence[str]], object] | None = None,
        control_for: Callable[[Config], ControlSettings | None],
        control: ControlSettings | None,
        serve: Callable[[ControlSettings], ControlServer] | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        """``make(settings)``: a station built (not started), raising
        ConfigError; ``control_for(config)``: the control settings a config
        gives (``--control`` wins, as at start); ``serve(settings)``: a
        control server bound, not started."""
        self.runners = runners
        self.path = path
        self._environ = environ
        self._engine = engine
        self._make = make
        self._relog = relog  # the log lines' station names: the stations now
        self._control_for = control_for
        self.control = control
        self._serve = serve
        self.server: ControlServer | None = None
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()  # one reload at a time
        self._stopping = False
        #: What each running station's outputs were started with (passwords read then).
        self._prints = {r.id: _started_with(r) for r in runners}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    # -- asking for one

    def start(self) -> None:
        """The thread that runs the reloads signals ask for."""
        self._thread = threading.Thread(target=self._serve_signals, name="reload", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """From a signal handler (SIGHUP): wake the reload thread. A byte into
        a pipe is safe there; several signals before it runs make one reload."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"h")

    def _serve_signals(self) -> None:
        while True:
            try:
                data = os.read(self._wake_r, 64)
            except OSError:
                return
            if not data or b"q" in data:
                return
            try:
                self.reload("SIGHUP")
            except Exception:  # a bug in a reload must not end the reloads to come
                log.exception("reload failed")

    def stop(self) -> None:
        """The process is stopping (a signal handler may call it): no reload
        starts a station from now on."""
        self._stopping = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"q")
        if self._thread is not None:
            self._thread.join(self.stop_timeout + 5)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def all_ended(self) -> bool:
        """Every station has ended, and no reload is under way (one may be
        about to start some)."""
        with self._lock:
            return all(runner.join(0) for runner in self.runners)

    # -- the reload

    def reload(self, source: str, *, answer_first: bool = False) -> Outcome:
        """Read the config again and apply it. ``source``: who asked, for the
        log. ``answer_first``: asked through the control server, which is
        closed (if the reload closes it) only after its answer went out."""
        with self._lock:
            if self._stopping:
                return self._refuse(["pushsource is stopping"])
            log.info("reload: reading %s again (%s)", self.path, source, extra={"event": "reload"})
            try:
                config = load_config(self.path, self._environ, collect=True)
                problems = refusal(config)
                control = None if problems else self._control_for(config)
                if not problems:
                    problems = self._live_clashes(config.stations)
                prints = {} if problems else {
                    s.id or "": fingerprint(s, self._environ) for s in config.stations
                }  # fmt: skip
            except ConfigError as exc:
                problems = [str(exc)]
            if problems:
                return self._refuse(problems)
            running = list(self.runners)
            by_id = {runner.id: runner for runner in running}
            todo = plan(
                [runner.settings for runner in running],
                config.stations,
                control=(self.control, control),
                before=self._prints,
                now=prints,
                ended={r.id: r.error is not None for r in running},
            )
            # What must bind binds first: when it cannot, nothing has changed.
            server = None
            try:
                if todo.control in ("start", "restart"):
                    assert control is not None and self._serve is not None
                    server = self._serve(control)
                held = self._bind_harbors(todo, running)
            except ConfigError as exc:
                if server is not None:
                    server.close()
                return self._refuse([str(exc)])
            failed = self._apply(todo, by_id, prints, held)
            self._control(todo, control, server, answer_first=answer_first)
            # The watcher may have missed something (the new ones walk theirs now).
            for key in (*todo.unchanged, *(s.id or "" for s, _ in todo.updated)):
                by_id[key].rescan()
            log.info("%s", todo.summary(), extra={"event": "reload_done"})
            return Outcome(True, todo, failed=failed)

    def _refuse(self, problems: list[str]) -> Outcome:
        for problem in problems:
            log.error("reload refused: %s", problem, extra={"event": "reload_refused"})
        log.error(
            "reload: nothing changed (%d problem%s in %s)",
            len(problems),
            "" if len(problems) == 1 else "s",
            self.path,
            extra={"event": "reload_refused"},
        )
        return Outcome(False, problems=problems)

    def _live_clashes(self, stations: Sequence[StationSettings]) -> list[str]:
        """Two live inputs on one address and mount (the config alone does
        not know the harbor's mounts). Raises ConfigError."""
        seen: dict[tuple[str, int, str], str] = {}
        clashes = []
        for settings in stations:
            if settings.live is None:
                continue
            mount = settings.live.mount or resolve_target(settings, self._environ).mount
            key = (*settings.live.listen, mount)
            if key in seen:
                clashes.append(
                    f"{self.path}: station {settings.id}: [station.live] mount {mount} on "
                    f"{key[0]}:{key[1]} is already station {seen[key]}'s"
                )
            seen[key] = settings.id or ""
        return clashes

    def _bind_harbors(self, todo: Plan, running: Sequence[StationRunner]) -> list[Any]:
        """The harbors the new stations listen on, bound now if none of ours
        listens there yet. Raises ConfigError (those bound here closed again)."""
        listening = {id(r.harbor) for r in running if r.harbor is not None}
        held: list[Any] = []
        for settings in (*todo.added, *todo.restarted):
            if settings.live is None:
                continue
            harbor = harbor_of(self._engine, settings.live.listen)
            if id(harbor) in listening:
                continue
            try:
                harbor.start(announce=False)
            except ConfigError as exc:
                for other in held:
                    other.close()
                raise ConfigError(
                    f'station {settings.id}: [station.live] key "listen": {exc}'
                ) from None
            listening.add(id(harbor))
            held.append(harbor)
        return held

    def _apply(
        self,
        todo: Plan,
        by_id: Mapping[str, StationRunner],
        prints: Mapping[str, tuple[object, ...]],
        held: Sequence[Any],
    ) -> list[str]:
        """Stop what goes, change what changes in place, start what comes;
        then the list the readers read, in the file's order. Returns the
        lines of stations that could not start."""
        restarted = {s.id for s in todo.restarted}
        if self._relog is not None:  # the lines of the stations going and coming name them
            self._relog([*by_id, *(s.id or "" for s in todo.added)])
        leaving = [by_id[key] for key in todo.removed] + [by_id[s.id or ""] for s in todo.restarted]
        for runner in leaving:
            runner.stop()
        for runner in leaving:
            if not runner.join(self.stop_timeout):
                log.warning(
                    "reload: station %s did not stop within %.0f s; going on",
                    runner.id,
                    self.stop_timeout,
                )
        harbors = {id(r.harbor): r.harbor for r in leaving if r.harbor is not None}
        for runner in leaving:
            runner.settle_saves(1.0)
            # Its folder unwatched, its live input off the harbor (which
            # stays bound: a restarted station comes back to it), state saved.
            runner.close(harbor=False)
            self._prints.pop(runner.id, None)
            if runner.id not in restarted:
                log.info(
                    "reload: station %s removed (stopped)",
                    runner.id,
                    extra=_said("station_removed", runner.id),
                )
        for settings, keys in todo.updated:
            by_id[settings.id or ""].take_live_users(settings)
            log.info(
                "reload: station %s: %s taken at once (its source untouched)",
                settings.id,
                ", ".join(keys),
                extra=_said("station_updated", settings.id),
            )
        started: dict[str, StationRunner] = {}
        failed: list[str] = []
        for settings in (*todo.added, *todo.restarted):
            key = settings.id or ""
            fresh, why = self._start_one(settings)
            if fresh is None:
                failed.append(f"station {key}: {why}")
                continue
            runner = fresh
            started[key] = runner
            self._prints[key] = prints[key]
            if self._stopping:  # a stop came in meanwhile: this one goes with the rest
                runner.stop()
            if key in restarted:
                old = by_id[key]
                log.info(
                    "reload: station %s restarted (changed: %s)",
                    key,
                    ", ".join(station_keys(old.settings, settings))
                    or ("none: it had stopped with an error" if old.error else "a password file"),
                    extra=_said("station_restarted", key),
                )
            else:
                log.info("reload: station %s added", key, extra=_said("station_added", key))
        # Harbors none of the stations listen on any more (those of the
        # stations gone, those bound above for a station that did not start).
        for harbor in (*harbors.values(), *held):
            if not harbor.inputs:
                harbor.close()
        after = [started.get(key) or by_id.get(key) for key in todo.order]
        self.runners[:] = [runner for runner in after if runner is not None]
        if self._relog is not None:
            self._relog([runner.id for runner in self.runners])
        return failed

    def _start_one(self, settings: StationSettings) -> tuple[StationRunner | None, str]:
        """A station built and started, or None and why not (said in a line):
        one that cannot start stops no other."""
        runner = None
        try:
            runner = self._make(settings)
            runner.start()
        except Exception as exc:
            if not isinstance(exc, ConfigError):
                log.exception("reload: station %s could not start", settings.id)
            log.error("reload: station %s not started: %s", settings.id, exc)
            if runner is not None:
                runner.stop()
                runner.close(harbor=False)
            return None, redact(str(exc))
        return runner, ""

    def _control(
        self,
        todo: Plan,
        control: ControlSettings | None,
        server: ControlServer | None,
        *,
        answer_first: bool,
    ) -> None:
        """The control server after the stations: the new set, a new token or
        allowed_hosts taken at once, a new address served by ``server`` (bound
        already) and the old one closed."""
        old = self.server
        self.control = control
        if todo.control == "update" and old is not None and control is not None:
            old.set_access(control.token, control.allowed_hosts)
            log.info("reload: the control server takes its new token and allowed_hosts at once")
        if server is not None:
            server.set_stations(self.runners)
            server.start()
            self.server = server
            assert control is not None
            announce_control(server, control)
        elif todo.control == "stop":
            self.server = None
        elif old is not None:
            old.set_stations(self.runners)
        if old is not None and self.server is not old:
            log.info("reload: the control server on %s:%d closes", *old.address)
            if answer_first:  # this answer goes out through it first
                threading.Timer(ANSWER_FIRST, old.close).start()
            else:
                old.close()


def _said(event: str, station: str | None) -> dict[str, object]:
    """A reload's line about one station: its event, and the station it
    names itself (no [id] before it)."""
    return {"event": event, "station": station, "names_station": True}


def _started_with(runner: StationRunner) -> tuple[object, ...]:
    return tuple(output.target for output in runner.driver.outputs)


def announce_control(server: ControlServer, control: ControlSettings) -> None:
    """The log line saying where the control page is (at start and after a reload moved it)."""
    from pushsource.ops.settings import TOKEN_ENV

    host, port = server.address[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "control page at http://%s:%d/ (%s)",
        shown,
        port,
        "actions need the token" if control.token else f"read only: no token (set {TOKEN_ENV})",
    )
