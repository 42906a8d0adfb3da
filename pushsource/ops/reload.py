"""What a reload changes: the running config against the file read again.

Pure: settings in, a :class:`Plan` out; no socket, thread or file here (the
runner carries the plan out, see :mod:`pushsource.ops.fleet`).

A station is known by its ``id`` (the config gives every station one: the
``id`` key, else the mount without its slash, as the control API and the logs
name it). So a station keeps its identity while its ``id`` stays; a station
without an ``id`` whose ``url`` moves to another mount is a new station (the
old one stops, the new one starts). For each id:

- only in the file now: **added** (it starts);
- only in the running config: **removed** (it stops cleanly: its last frame
  flushed through the server, its state saved);
- in both, the table the same: **unchanged** (not touched: same source
  connection, same objects, no gap);
- in both, only ``[station.live]``'s ``users`` differ: **updated** in place
  (new logins are checked against the new users; the source is not touched);
- in both, anything else differs (a key, an output, a password file's
  content): **restarted** (stopped cleanly, then started from its new table).

A station that stopped with an error (a wrong password, retries used up) is
restarted by a reload even with its table unchanged: the reload is how an
operator says "try again".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pushsource.ops.config import Config
from pushsource.ops.settings import ControlSettings, StationSettings

#: What a changed [control] asks of the running control server.
ControlChange = Literal["same", "update", "restart", "start", "stop"]


@dataclass(frozen=True)
class Plan:
    """What a reload does, station by station (ids in the new file's order)."""

    added: tuple[StationSettings, ...] = ()
    removed: tuple[str, ...] = ()
    #: New settings of stations that stop and start again.
    restarted: tuple[StationSettings, ...] = ()
    #: New settings of stations changed in place, and the keys that changed.
    updated: tuple[tuple[StationSettings, tuple[str, ...]], ...] = ()
    unchanged: tuple[str, ...] = ()
    #: The stations' ids in the file's order, after the reload.
    order: tuple[str, ...] = ()
    control: ControlChange = "same"

    def summary(self) -> str:
        """The reload's one closing line."""
        line = (
            f"reload: {len(self.added)} added, {len(self.removed)} removed, "
            f"{len(self.restarted)} restarted, {len(self.unchanged)} unchanged"
        )
        return line + (f", {len(self.updated)} updated in place" if self.updated else "")

    @property
    def changes_nothing(self) -> bool:
        return not (self.added or self.removed or self.restarted or self.updated) and (
            self.control == "same"
        )


def refusal(config: Config) -> list[str]:
    """One line per problem of a config read with ``collect=True`` (a station
    or [control] left out); empty when it checks out."""
    return [str(problem.error) for problem in config.problems]


#: Keys of [station.live] a reload applies to a running station at once.
LIVE_IN_PLACE = frozenset({"users"})


def station_change(old: StationSettings, new: StationSettings) -> tuple[str, ...] | None:
    """What differs between a station's two tables: () nothing; the keys a
    running station takes in place (``live.users``); None: it must restart."""
    if old == new:
        return ()
    if old.live is None or new.live is None:
        return None
    # Everything but the live users the same?
    if dataclasses.replace(old, live=None) != dataclasses.replace(new, live=None):
        return None
    changed = [
        f.name
        for f in dataclasses.fields(old.live)
        if getattr(old.live, f.name) != getattr(new.live, f.name)
    ]
    if not set(changed) <= LIVE_IN_PLACE:
        return None
    return tuple(f"live.{name}" for name in changed)


def control_change(old: ControlSettings | None, new: ControlSettings | None) -> ControlChange:
    """A new listen address restarts the control server (bound before
    anything else changes); a new token or allowed_hosts is taken at once."""
    if old == new:
        return "same"
    if old is None:
        return "start"
    if new is None:
        return "stop"
    if (old.host, old.port) != (new.host, new.port):
        return "restart"
    return "update"


def station_keys(old: StationSettings, new: StationSettings) -> list[str]:
    """The keys whose values differ (``live.users``, ``output`` for the
    outputs), for the log line; never a value."""
    keys = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name == "live" and a is not None and b is not None:
            keys += [
                f"live.{g.name}"
                for g in dataclasses.fields(a)
                if getattr(a, g.name) != getattr(b, g.name)
            ]
        else:
            keys.append("output" if f.name == "outputs" else f.name)
    return keys


def plan(
    running: Sequence[StationSettings],
    wanted: Sequence[StationSettings],
    *,
    control: tuple[ControlSettings | None, ControlSettings | None] = (None, None),
    before: Mapping[str, object] | None = None,
    now: Mapping[str, object] | None = None,
    ended: Mapping[str, bool] | None = None,
) -> Plan:
    """The plan from the ``running`` stations' settings to the ``wanted``
    ones (the file read again, checked). ``before`` and ``now``: by id, what
    a station's table does not hold but its connections depend on (the
    passwords its files held when it started, and now); a difference
    restarts it. ``ended``: by id, whether it stopped with an error
    (restarted). ``control``: the control settings before and after."""
    old_by_id = {settings.id or "": settings for settings in running}
    before, now, ended = before or {}, now or {}, ended or {}
    added: list[StationSettings] = []
    restarted: list[StationSettings] = []
    updated: list[tuple[StationSettings, tuple[str, ...]]] = []
    unchanged: list[str] = []
    for new in wanted:
        key = new.id or ""
        old = old_by_id.get(key)
        if old is None:
            added.append(new)
            continue
        change = station_change(old, new)
        if before.get(key) != now.get(key) or ended.get(key, False):
            change = None
        if change is None:
            restarted.append(new)
        elif change:
            updated.append((new, change))
        else:
            unchanged.append(key)
    kept = {settings.id or "" for settings in wanted}
    return Plan(
        added=tuple(added),
        removed=tuple(key for key in old_by_id if key not in kept),
        restarted=tuple(restarted),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        order=tuple(settings.id or "" for settings in wanted),
        control=control_change(*control),
    )
