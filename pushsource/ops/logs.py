"""Log lines: one per event, plain for people or JSON for log shippers, with
the station they concern when a process runs several."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Collection
from typing import TextIO

from pushsource.core.target import redact
from pushsource.engine.loop import current_station


class StationFilter(logging.Filter):
    """Puts ``record.station``: the station the engine or a worker was busy
    with when it logged (``current_station``), else the logging thread's name
    if it names one (``<station id>`` or ``<station id>/<role>``), else ""."""

    def __init__(self, stations: Collection[str]) -> None:
        super().__init__()
        self._stations = frozenset(stations)

    def filter(self, record: logging.LogRecord) -> bool:
        name = current_station.get() or threading.current_thread().name.split("/", 1)[0]
        record.station = name if name in self._stations else ""
        return True


class PlainFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL [station] message``; the station only if asked for."""

    def __init__(self, *, show_station: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(where)s%(message)s", "%H:%M:%S")
        self._show_station = show_station

    def format(self, record: logging.LogRecord) -> str:
        station = getattr(record, "station", "")
        record.where = f"[{station}] " if self._show_station and station else ""
        return redact(super().format(record))

    def formatMessage(self, record: logging.LogRecord) -> str:
        # A title or file name with a line break must not forge a log line of its
        # own; only a traceback (added after this) spans lines.
        record.message = one_line(record.message)
        return super().formatMessage(record)


_BREAKS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters (tab aside) shown
    as escapes (``\\n``, ``\\x1b``), so it stays one line on a terminal."""
    return _BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, station, message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        station = getattr(record, "station", "")
        if station:
            entry["station"] = station
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(
    level: int,
    *,
    json_lines: bool = False,
    stations: Collection[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Log pushsource's events at ``level`` (libraries: warnings only) to stderr."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(StationFilter(stations))
    handler.setFormatter(
        JsonFormatter() if json_lines else PlainFormatter(show_station=len(stations) > 1)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries speak up only when it matters
    logging.getLogger("pushsource").setLevel(level)
    return handler
