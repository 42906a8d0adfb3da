"""Listeners over time: the sampler's thread, and the series as the API serves them.

The sampler wakes every ``every`` seconds on a thread of its own (never the
engine's: it only paces) and copies each station's listener count, which the
server watches read already, into its series (core/listeners.py). The API
serialises on request from the series' views, and keeps each answer until a
sample changes or the minute turns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from pushsource.core.listeners import (
    EVERY,
    KEPT,
    ListenerSeries,
    SeriesView,
    counts,
    downsample,
    peak,
    total,
)
from pushsource.errors import ControlError

log = logging.getLogger("pushsource.listeners")

#: Seconds between two looks at the counts (the watches refresh them every 6 s).
SAMPLE_EVERY: Final = 10.0
#: The most points a station GET /api/listeners gives (a week at step=7).
ALL_POINTS: Final = 1440
#: Answers kept (a few views poll the same two or three queries; one answer
#: for 1000 stations may be 4 MB).
_CACHED: Final = 8


class Sampled(Protocol):
    """What the sampler needs of a station (StationRunner)."""

    @property
    def id(self) -> str: ...

    def sample_listeners(self, now: float) -> None: ...


class ListenerSampler:
    """Samples every station's listeners every ``every`` seconds until stopped."""

    def __init__(
        self,
        stations: Sequence[Sampled],
        *,
        every: float = SAMPLE_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stations = stations  # the very list: a reload changes it in place
        self.every = every
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """One look at every station."""
        now = self._clock()
        for station in self._stations:
            try:
                station.sample_listeners(now)
            except Exception:  # one station's bug must not stop the others' series
                log.exception("sampling the listeners of %s failed", station.id)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="listeners", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, after a last sample (the state saved at exit then has it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every):
                self.sample()
                return


def window_of(
    query: dict[str, list[str]],
    now: float,
    *,
    hours: int = KEPT // 60,
    step: int = 1,
    most: int = KEPT,
) -> tuple[int, int, int]:
    """(first minute, end minute, minutes a point) from ``?hours=`` (1 to 168)
    and ``?step=`` (minutes a point, 1 to 1440), else the defaults given: the
    window ends with the current minute; ``most`` points. Raises ControlError (400)."""
    hours = _int(query, "hours", hours, 1, KEPT // 60)
    step = _int(query, "step", step, 1, 1440)
    if hours * 60 > most * step:
        raise ControlError(f"at most {most} points: ask for a larger step", 400)
    end = int(now // EVERY) + 1
    first = end - hours * 60
    first -= first % step  # points on fixed minutes: a poll later, the same buckets
    return first, end, step


def _int(query: dict[str, list[str]], key: str, default: int, low: int, high: int) -> int:
    given = query.get(key)
    if not given:
        return default
    text = given[0]
    if not (text.isascii() and text.isdigit()) or len(text) > 6 or not low <= int(text) <= high:
        raise ControlError(f"{key} must be a whole number from {low} to {high}", 400)
    return int(text)


def _points(view: SeriesView | None, first: int, end: int, step: int) -> tuple[Any, dict[str, Any]]:
    """A station's window (raw, for the total) and its JSON part."""
    window = view.window(first, end) if view is not None else None
    if window is None:
        return None, {"samples": None, "peak": None, "current": None}
    top = peak(window)
    return window, {
        "samples": counts(downsample(window, step)),
        "peak": None if top is None else {"listeners": top[0], "at": (first + top[1]) * EVERY},
        "current": window[-1] - 1 if window[-1] else None,
    }


class ListenerViews:
    """Builds (and keeps for a moment) the API's listener series answers."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[tuple[Any, ...], bytes] = {}

    def _cached(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        with self._lock:  # one build at a time: a page full of readers waits for it
            found = self._kept.get(key)
            if found is None:
                found = build()
                if len(self._kept) >= _CACHED:
                    self._kept.clear()
                self._kept[key] = found
            return found

    def station(
        self,
        station_id: str,
        series: ListenerSeries | None,
        query: dict[str, list[str]],
        dumps: Callable[[Any], bytes],
    ) -> bytes:
        """``GET /api/stations/ID/listeners``: {id, every, start, end, samples,
        peak, current}; sample i stands for ``start + i * every`` (Unix s)."""
        if series is None:
            raise ControlError("this station keeps no listeners over time", 404)
        first, end, step = window_of(query, self._clock())
        key = ("station", station_id, id(series), series.version, first, end, step)

        def build() -> bytes:
            part = _points(series.view(), first, end, step)[1]
            return dumps({"id": station_id, **_frame(first, end, step), **part})

        return self._cached(key, build)

    def all(
        self,
        stations: Sequence[tuple[str, ListenerSeries | None]],
        query: dict[str, list[str]],
        dumps: Callable[[Any], bytes],
    ) -> bytes:
        """``GET /api/listeners``: {every, start, end, total: {samples, peak,
        current}, stations: [{id, samples, peak, current}]}; by default the
        last 24 hours, a point per 10 minutes (the overview's sparklines)."""
        # 1000 stations' weeks, a point a minute, are 29 MB of JSON and seconds of work.
        first, end, step = window_of(query, self._clock(), hours=24, step=10, most=ALL_POINTS)
        versions = tuple(None if s is None else (id(s), s.version) for _, s in stations)
        key = ("all", versions, first, end, step)

        def build() -> bytes:
            windows = []
            parts = []
            for station_id, series in stations:
                window, part = _points(
                    series.view() if series is not None else None, first, end, step
                )
                if window is not None:
                    windows.append(window)
                parts.append({"id": station_id, **part})
            summed = total(windows, end - first)
            known = [(n, i) for i, n in enumerate(summed) if n is not None]
            top = max(known, default=None)  # the latest of equal peaks: (n, i) sorts by i
            bucketed = [
                max((n for n in summed[i : i + step] if n is not None), default=None)
                for i in range(0, len(summed), step)
            ]
            whole = {
                "samples": bucketed,
                "peak": None
                if top is None
                else {"listeners": top[0], "at": (first + top[1]) * EVERY},
                "current": summed[-1] if summed else None,
            }
            return dumps({**_frame(first, end, step), "total": whole, "stations": parts})

        return self._cached(key, build)


def _frame(first: int, end: int, step: int) -> dict[str, int]:
    return {"every": step * EVERY, "start": first * EVERY, "end": end * EVERY}
