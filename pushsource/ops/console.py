"""Live status lines on a terminal: one per station, redrawn in place, with
the log lines scrolling above them (rich). Not used when stderr is no TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from rich.console import Console as RichConsole
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

BAR = 24


class Shown(Protocol):
    def status(self) -> dict[str, Any]: ...


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


COLOURS = {"on air": "green", "reconnecting": "yellow", "failed": "red"}


def _outputs(text: Text, outputs: list[dict[str, Any]]) -> None:
    """``/rock on air · /rock-64 on air · backup:8000/rock reconnecting (3)``:
    each output by its mount (and server, when not the first's), its state
    and, if any, its reconnects."""
    home = outputs[0]["server"]
    for n, output in enumerate(outputs):
        text.append(" · " if n else "  ", style="dim")
        where = output["mount"] if output["server"] == home else output["server"] + output["mount"]
        state = output["state"]
        text.append(f"{where} ")
        text.append(state, style=COLOURS.get(state, "cyan"))
        if output["reconnects"]:
            text.append(f" ({output['reconnects']})", style="yellow")


def line(status: dict[str, Any]) -> Text:
    """``name  state  [=====-----] 1:02/3:40  title  (queue N, L listeners)``,
    then each output's state when there are several."""
    playing = status.get("now_playing")
    state = status["connection"]["state"]
    text = Text()
    text.append(f"{status['name'][:20]:<20} ", style="bold")
    colour = COLOURS.get(state, "cyan")
    text.append(f"{state:<12} ", style=colour)
    if playing is None:
        text.append("-" * (BAR + 2) + " " + " " * 9 + " (nothing playing)", style="dim")
    else:
        elapsed, duration = playing["elapsed"], playing["duration"]
        done = int(BAR * min(1.0, elapsed / duration)) if duration else 0
        text.append("[" + "=" * done + "-" * (BAR - done) + "] ")
        text.append(f"{_clock(elapsed)}/{_clock(duration)} ")
        text.append(playing["title"], style="bold")
    listeners = status.get("listeners")
    heard = "" if listeners is None else f", {listeners} listener{'' if listeners == 1 else 's'}"
    text.append(f"  (queue {len(status['queue'])}{heard})", style="dim")
    reconnects = status["connection"]["reconnects"]
    if reconnects:
        text.append(f"  reconnects {reconnects}", style="yellow")
    live = status.get("live")
    if live and live.get("user"):
        text.append(f"  live: {live['user']}", style="magenta")
    outputs = status.get("outputs") or []
    if len(outputs) > 1:
        _outputs(text, outputs)
    return text


class Console:
    """Redraw the stations' lines about four times a second."""

    def __init__(self, stations: Sequence[Shown]) -> None:
        self._stations = stations
        self._console = RichConsole(file=sys.stderr)
        self._live = Live(
            self._render(), console=self._console, refresh_per_second=4, transient=True
        )
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _render(self) -> Group | Table:
        return Group(*(line(station.status()) for station in self._stations))

    def start(self) -> None:
        self._live.start()
        # Live now stands in for sys.stderr: log lines written there print
        # above the live lines instead of through them.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                self._handlers.append((handler, handler.stream))
                handler.setStream(sys.stderr)

    def refresh(self) -> None:
        self._live.update(self._render())

    def stop(self) -> None:
        self._live.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
