"""Log lines: one per event, plain for people or JSON for log shippers, with
the station they concern when a process runs several."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Collection
from typing import Final, TextIO

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
        # A line may name its station itself (extra=): a control action, logged
        # on a control server's thread.
        name = (
            getattr(record, "station", "")
            or current_station.get()
            or threading.current_thread().name.split("/", 1)[0]
        )
        record.station = name if name in self._stations else ""
        return True


class PlainFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL [station] message``; the station only if asked for."""

    def __init__(self, *, show_station: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(where)s%(message)s", "%H:%M:%S")
        self._show_station = show_station

    def format(self, record: logging.LogRecord) -> str:
        station = getattr(record, "station", "")
        shown = self._show_station and station and not getattr(record, "names_station", False)
        record.where = f"[{station}] " if shown else ""
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


#: The structured fields a log call may pass (``extra=``), in this order, for
#: --log-format json: what happened (``event``: "track_start", "off_air",
#: "on_air", "skip", "queue"...), and what about.
FIELDS: Final = (
    "event", "mount", "title", "file", "url", "error", "client", "off_air", "position", "bytes",
)  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    station, and the fields of FIELDS the line carries."""

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
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = redact(value) if isinstance(value, str) else value
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


#: A line of C code's stderr longer than this is logged in pieces.
_LINE_LIMIT: Final = 8192


class NativeStderr:
    """File descriptor 2 made a pipe whose lines become debug records of
    ``pushsource.stderr``, while Python's sys.stderr (the log handler,
    tracebacks, error messages) keeps writing to the real stderr through a
    copy of it.

    libvlc's plugins and the libraries under them write to fd 2 themselves,
    whatever libvlc's --quiet says: libmpg123 prints a line for every damaged
    frame it decodes ("[src/libmpg123/layer3.c:...] error: dequantization
    failed!"). Among --log-format json lines that breaks the one object per
    line a log shipper reads, and in a terminal it cuts through the live
    status lines. Kept as debug records they cost nothing at the usual level
    (pushsource says what matters about a damaged file itself) and are there
    with --verbose, in the log's own format.
    """

    log = logging.getLogger("pushsource.stderr")

    def __init__(self) -> None:
        """Raises OSError if fd 2 is not open or no pipe can be made."""
        self._real = os.dup(2)
        try:
            read, write = os.pipe()
        except OSError:
            os.close(self._real)
            raise
        self._saved = sys.stderr
        self.stream = open(  # noqa: SIM115 (close() closes it)
            self._real,
            "w",
            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            buffering=1,
            closefd=False,
        )
        # Only a sys.stderr that writes to fd 2 itself is moved to the copy:
        # one that captures (pytest's) is left as it is.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        if _fileno(sys.stderr) == 2:
            sys.stderr = self.stream
        if faulthandler.is_enabled():  # a crash's traceback must not go down the pipe
            faulthandler.enable(self._real)
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(
            target=self._pump, args=(read,), name="pushsource-stderr", daemon=True
        )
        self._thread.start()

    def _pump(self, fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > _LINE_LIMIT:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    self._emit(line)
        except OSError:  # the pipe broke: nothing more can come through it
            pass
        finally:
            self._emit(pending)
            os.close(fd)

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip()
        if text:
            self.log.debug("%s", text)

    def close(self) -> None:
        """Give fd 2 back to the real stderr; lines already written are
        logged first. Does not raise."""
        try:
            os.dup2(self._real, 2)  # the pipe's last write end: the reader sees its end
        except OSError:
            return
        self._thread.join(2)
        if sys.stderr is self.stream:
            sys.stderr = self._saved
        if faulthandler.is_enabled():
            faulthandler.enable(2)
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
        os.close(self._real)


def _fileno(stream: object) -> int | None:
    try:
        number = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return number if isinstance(number, int) else None
