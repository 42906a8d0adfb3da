"""``pushsource check``: what ``run`` would hit, found without streaming.

The stations are built as ``run`` builds them (which checks the config);
then the addresses ``run`` listens on are bound, in its order (the control
server, then each harbor) and all held together, so that one taken by
another program or by two of ours shows; then every station's and output's
login is made, the logins to one server at once (its source limit counts
them together, as when ``run`` starts), and left without sending audio.

Problems get a line each; the rest is one closing tally, so 300 stations
say what is wrong in a few lines (``--verbose``: a line per login too).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pushsource.core.target import IcecastTarget, netloc
from pushsource.engine.loop import Engine
from pushsource.errors import AuthenticationError, ConfigError, IcecastError, MountInUseError
from pushsource.ops.config import Config
from pushsource.ops.icecastconf import mounts_of, problems
from pushsource.ops.runner import StationRunner, build_runners
from pushsource.ops.settings import ControlSettings

#: Names shown in one line about many logins or stations; the rest are counted.
SHOWN: int = 5
#: Icecast's refusal of a source over its ``<limits><sources>``: a 403 (2.4),
#: 503 (2.5), 404 (before 2.3); icecast-kh says streams.
_TOO_MANY = re.compile(r"too many (sources|streams)( connected)?", re.IGNORECASE)


@dataclass
class _Report:
    out: TextIO
    verbose: bool
    status: int = 0
    failed: set[str] = field(default_factory=set)  # station ids (or "#N") with an error
    in_use: int = 0  # mounts that already have a source (a running pushsource)

    def error(self, station_ids: Sequence[str], line: str, status: int) -> None:
        print(line, file=self.out)
        self.failed.update(station_ids)
        self.status = max(self.status, status)


def check(
    config: Config,
    control: ControlSettings | None,
    control_key: str,
    *,
    verbose: bool = False,
    out: TextIO | None = None,
    icecast_config: Path | None = None,
) -> int:
    """Check ``config`` as ``run`` would run it, with ``control`` (from
    ``control_key``: named in its problem). Returns the exit status: 0 all ok,
    2 a config error, a wrong password, an address taken or a source limit too
    low, 1 a server that cannot be reached. ``config.problems`` (loaded with
    ``collect``) are said first; the stations left out count as errors. With
    ``icecast_config``, each mount that Icecast run from it would not keep
    listeners on through a crash of pushsource is an error too (status 2)."""
    report = _Report(out if out is not None else sys.stdout, verbose)
    for problem in sorted(config.problems, key=lambda p: (p.station == 0, p.station)):
        # "#N": no station id has a "#"; [control] is no station (0).
        numbers = [f"#{problem.station}"] if problem.station else []
        report.error(numbers, f"error: {problem.error}", problem.error.exit_status)
    engine = Engine()
    try:
        runners = []
        for settings in config.stations:
            try:  # one at a time: a station that cannot be built is one line
                runners += build_runners([settings], os.environ, engine=engine)
            except ConfigError as exc:
                sid = str(settings.id)
                report.error([sid], f"{sid}: error: {exc}", exc.exit_status)
        engine.start()  # the harbors listen on its loop
        held: list[Any] = []
        try:
            _bind(runners, control, control_key, report, held)
        finally:
            # Closed before the logins: a DJ who connects now finds no station.
            for server in held:
                server.close()
        _logins(runners, report)
    finally:
        engine.stop()
    _record_folders(config, report)
    fallbacks = 0
    if icecast_config is not None:
        for who, why in problems(icecast_config, mounts_of(config.stations)):
            sid = who.split(" output ")[0]
            line = f"{who or icecast_config}: error: {why}"
            report.error([sid] if sid else [], line, ConfigError.exit_status)
            fallbacks += 1
    total = max(config.tables, len(config.stations))  # a Config built by hand has no tables
    failed = len(report.failed)
    stations = "1 station" if total == 1 else f"{total} stations"
    tally = f"{config.path}: {stations}: {total - failed} ok, {failed} with errors"
    if report.in_use:
        tally += f"; {report.in_use} mounts already have a source (the login passed)"
    if icecast_config is not None:
        said = {0: "every mount has its fallback", 1: "1 fallback problem"}
        tally += f"; {icecast_config}: {said.get(fallbacks, f'{fallbacks} fallback problems')}"
    print(tally, file=report.out)
    return report.status


def _bind(
    runners: Sequence[StationRunner],
    control: ControlSettings | None,
    control_key: str,
    report: _Report,
    held: list[Any],
) -> None:
    """Listen where ``run`` would, in its order; what listens goes to ``held``,
    to close after."""
    from pushsource.ops.control import ControlServer

    ours: dict[int, str] = {}  # port: which of ours listens there, when one is taken
    if control is not None:
        try:
            # Built as run builds it (no stations needed to bind), never started.
            held.append(ControlServer((control.host, control.port), [], token=None))
            ours[control.port] = f"the control server ({control_key})"
        except ConfigError as exc:
            report.error([], f"{control_key}: error: {exc}", exc.exit_status)
    harbors: dict[int, tuple[Any, list[str]]] = {}  # one per listen address, shared
    for runner in runners:
        if runner.harbor is not None:
            harbors.setdefault(id(runner.harbor), (runner.harbor, []))[1].append(runner.id)
    for harbor, ids in harbors.values():
        try:
            harbor.start(announce=False)
        except ConfigError as exc:
            mine = ours.get(harbor.port) if harbor.port else None
            line = f'{_names(ids)}: error: [station.live] key "listen": {exc}'
            report.error(ids, line + (f": {mine} listens there" if mine else ""), exc.exit_status)
        else:
            held.append(harbor)
            ours.setdefault(harbor.port, f"the harbor of {_names(ids)}")


def _logins(runners: Sequence[StationRunner], report: _Report) -> None:
    from pushsource.engine.source import check_sources

    logins: list[tuple[str, str, IcecastTarget]] = []  # (station id, name, target)
    for runner in runners:
        for output in runner.driver.outputs:  # the station's own URL, then its outputs
            name = runner.id if not output.number else f"{runner.id} output {output.number}"
            logins.append((runner.id, name, output.target))
    timeouts = {runner.id: runner.settings.timeout for runner in runners}
    errors = check_sources([(target, timeouts[sid]) for sid, _name, target in logins])
    over: dict[str, list[tuple[str, str, str]]] = {}  # server: (id, name, why) over its limit
    sent: dict[str, int] = {}  # server: logins this config makes there
    down: dict[str, list[tuple[str, str, IcecastTarget, IcecastError]]] = {}  # not reached
    # server: (id, name, error) refused their credentials; past SHOWN of them
    # (one shared wrong password over 300 stations) one line, not 300.
    wrong_password: dict[str, list[tuple[str, str, AuthenticationError]]] = {}
    for (sid, name, target), error in zip(logins, errors, strict=True):
        server = netloc(target.host, target.port)
        sent[server] = sent.get(server, 0) + 1
        if error is None:
            if report.verbose:
                print(f"{name}: ok: {target} accepts the source", file=report.out)
        elif isinstance(error, AuthenticationError):
            wrong_password.setdefault(server, []).append((sid, name, error))
        elif error.status is not None and (too_many := _TOO_MANY.search(str(error))):
            over.setdefault(server, []).append((sid, name, too_many.group(0)))
        elif isinstance(error, MountInUseError):  # servers check the login first: it passed
            report.in_use += 1
            if report.verbose:
                print(f"{name}: ok: credentials accepted, but {error}", file=report.out)
        elif error.status == 403:  # as above, for a reason run may hit too: said
            print(f"{name}: ok: credentials accepted, but {error}", file=report.out)
        elif error.status is None:  # no answer at all: said once a server, below
            down.setdefault(server, []).append((sid, name, target, error))
        else:
            report.error([sid], f"{name}: error: {error}", error.exit_status)
    for server, wrong in wrong_password.items():
        if len(wrong) <= SHOWN:  # a few: each says which user on which mount
            for sid, name, error in wrong:
                code = f" ({error.status})" if error.status else ""
                report.error([sid], f"{name}: error: {error}{code}", error.exit_status)
            continue
        error = wrong[0][2]
        code = f" ({error.status})" if error.status else ""
        line = (
            f"{server}: error: {len(wrong)} logins refused their credentials{code}: "
            f"{_names([name for _sid, name, _e in wrong])}"
        )
        report.error([sid for sid, _name, _e in wrong], line, error.exit_status)
    for server, failures in down.items():
        if len(failures) == 1:
            sid, name, target, error = failures[0]
            line = f"{name}: error: cannot reach {target}: {error}"
        else:  # a server that is down is one problem, however many go there
            line = (
                f"{server}: error: cannot reach it for {len(failures)} logins "
                f"({failures[0][3]}): {_names([name for _sid, name, _t, _e in failures])}"
            )
        report.error([f[0] for f in failures], line, failures[0][3].exit_status)
    for server, refused in over.items():
        # One line a server: at 300 stations over a limit of 10, not 290.
        report.error(
            [sid for sid, _name, _why in refused],
            f"{server}: error: {len(refused)} of the {sent[server]} sources this config sends "
            f"there refused: {refused[0][2]} (raise <limits><sources> in its icecast.xml, "
            f"or send fewer): {_names([name for _sid, name, _why in refused])}",
            ConfigError.exit_status,
        )


def _record_folders(config: Config, report: _Report) -> None:
    """Each ``[station.live]`` ``record`` folder can be made and written: at
    ``run`` a set whose file cannot be opened airs unrecorded, with one line."""
    from pushsource.workers.recorder import RecordTemplate

    for settings in config.stations:
        if settings.live is None or settings.live.record is None:
            continue
        root = RecordTemplate(settings.live.record).root
        why = _unwritable(root)
        if why is not None:
            sid = str(settings.id)
            line = f'{sid}: error: [station.live] key "record": cannot record under {root}: {why}'
            report.error([sid], line, ConfigError.exit_status)


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be made under ``folder`` (made as needed), or None."""
    at = folder
    while not at.exists():  # the first that exists is where the rest would be made
        if at.parent == at:
            return "no such place"
        at = at.parent
    if not at.is_dir():
        return f"{at} is not a folder"
    if not os.access(at, os.W_OK | os.X_OK):
        return f"{at} is not writable by this user"
    return None


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown if len(names) <= SHOWN else f"{shown} and {len(names) - SHOWN} more"
