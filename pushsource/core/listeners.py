"""Listeners over time: one sample a minute per station, for a week, compactly.

A series is one ``array('H')`` (2 bytes a minute: 20 KB for 7 days, 20 MB
at 1000 stations) and the minute of its first sample; sample ``i`` is the
minute ``start + i``. A sample holds the count plus one, so 0 means not
known (no watch, not read yet, the process was down), never "no listeners",
and C-level ``max``/``count``/``sum`` give peaks and totals without a Python
loop per sample. Within a minute the highest count seen is kept: a peak
between two samples is not lost.

Sans-IO: the caller gives the time. Readers on other threads take
:meth:`ListenerSeries.view`: a new array is published (one attribute) for
every new minute; only the newest sample is changed in place, which a reader
sees as either its old or its new value.
"""

from __future__ import annotations

import base64
import sys
import zlib
from array import array
from dataclasses import dataclass
from typing import Final

#: Seconds a sample stands for.
EVERY: Final = 60
#: Samples kept: 7 days of minutes.
KEPT: Final = 7 * 24 * 60
#: The stored value of a count not known.
UNKNOWN: Final = 0
#: The highest count kept (higher is kept as this).
MAX_COUNT: Final = 0xFFFE


@dataclass(frozen=True, slots=True)
class SeriesView:
    """A series at one moment: ``samples[i]`` (count + 1, 0 unknown) is the
    minute ``start + i`` (Unix time ``(start + i) * EVERY``)."""

    start: int
    samples: array[int]

    @property
    def end(self) -> int:
        """The minute after the last sample."""
        return self.start + len(self.samples)

    def window(self, first: int, end: int) -> array[int]:
        """The samples of minutes ``first`` to ``end`` (excluded), unknown
        where the series has none."""
        out = array("H", bytes(2 * max(0, end - first)))
        lo, hi = max(first, self.start), min(end, self.end)
        if lo < hi:
            out[lo - first : hi - first] = self.samples[lo - self.start : hi - self.start]
        return out


class ListenerSeries:
    """One station's listeners, a sample a minute, the last ``kept`` minutes."""

    def __init__(self, view: SeriesView | None = None, *, kept: int = KEPT) -> None:
        self.kept = kept
        self._view = view if view is not None else SeriesView(0, array("H"))
        #: Bumped with every change: the state file re-encodes only then.
        self.version = 0

    def view(self) -> SeriesView:
        return self._view

    def add(self, now: float, count: int | None) -> None:
        """The count (None: not known) at Unix time ``now``."""
        minute = int(now // EVERY)
        value = UNKNOWN if count is None else min(max(count, 0), MAX_COUNT) + 1
        view = self._view
        samples = view.samples
        if samples and minute == view.end - 1:
            if value > samples[-1]:  # the minute's highest; a known count beats unknown
                samples[-1] = value
                self.version += 1
            return
        if samples and minute < view.end - 1:
            return  # the clock went back: what is kept stays
        gap = minute - view.end if samples else 0
        if not samples or gap >= self.kept:
            grown = array("H", [value])
        else:
            grown = samples + array("H", bytes(2 * gap))
            grown.append(value)
            del grown[: max(0, len(grown) - self.kept)]
        self._view = SeriesView(minute + 1 - len(grown), grown)
        self.version += 1

    # --- the state file's form: {"start": minute, "samples": base64(zlib(LE uint16))}

    def to_json(self) -> dict[str, object]:
        view = self._view
        data = view.samples
        if sys.byteorder != "little":
            data = array("H", data)
            data.byteswap()
        # A quiet station's week (long runs of one count) packs into a few hundred bytes.
        packed = base64.b64encode(zlib.compress(data.tobytes(), 6)).decode("ascii")
        return {"every": EVERY, "start": view.start, "samples": packed}

    @classmethod
    def from_json(cls, value: object, *, kept: int = KEPT) -> ListenerSeries:
        """The series ``to_json`` gave. Raises ValueError if it is not one."""
        if not isinstance(value, dict) or value.get("every") != EVERY:
            raise ValueError("expected {every: 60, start, samples}")
        start, packed = value.get("start"), value.get("samples")
        if type(start) is not int or start < 0 or not isinstance(packed, str):
            raise ValueError("expected start as an int >= 0 and samples as base64")
        try:
            # Bounded: a hostile or broken file cannot inflate past a week.
            raw = zlib.decompressobj().decompress(base64.b64decode(packed, validate=True), 4 * kept)
        except (ValueError, zlib.error) as exc:
            raise ValueError(f"samples: {exc}") from None
        if len(raw) % 2:
            raise ValueError("samples: an odd number of bytes")
        samples = array("H", raw)
        if sys.byteorder != "little":
            samples.byteswap()
        drop = max(0, len(samples) - kept)
        del samples[:drop]
        return cls(SeriesView(start + drop, samples), kept=kept)


def peak(samples: array[int]) -> tuple[int, int] | None:
    """(the highest count, its index, the latest if several), None if none is known."""
    top = max(samples, default=UNKNOWN)
    if top == UNKNOWN:
        return None
    last = len(samples) - 1 - samples[::-1].index(top)
    return top - 1, last


def counts(samples: array[int]) -> list[int | None]:
    """The counts, None where not known (for JSON)."""
    return [value - 1 if value else None for value in samples]


def downsample(samples: array[int], step: int) -> array[int]:
    """Each ``step`` samples as their highest (a bucket's peak), the last bucket maybe shorter."""
    if step <= 1:
        return samples
    return array("H", [max(samples[i : i + step]) for i in range(0, len(samples), step)])


def total(windows: list[array[int]], length: int) -> list[int | None]:
    """The sum of aligned windows (each ``length`` samples): None where no
    station's count is known; summed column by column in C (zip, sum,
    count), not sample by sample in Python."""
    if not windows:
        return [None] * length
    out: list[int | None] = []
    for column in zip(*windows, strict=True):
        known = len(column) - column.count(UNKNOWN)
        # stored values are count + 1: the sum of the counts is sum - known
        out.append(sum(column) - known if known else None)
    return out
