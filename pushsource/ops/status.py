"""Status snapshots for readers: built once per change, and at most every
``interval`` seconds, then served as they are to every reader.

Building every station's status holds the interpreter lock, which the air
shares; readers (the page polling, /api/stations, /metrics) must not be able
to make the stations wait by asking often. A snapshot is rebuilt when its
station says it changed (a version it bumps), when an action invalidates
everything, or when it is older than the interval (elapsed times move on
their own). Readers that find it stale while another builds wait for that
build instead of making their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

#: How old a snapshot may get before a reader has it rebuilt (seconds).
DEFAULT_INTERVAL: Final = 0.25

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Entry:
    value: Any
    version: Hashable
    generation: int
    at: float


class SnapshotCache:
    """Values by key, each kept while its version and the cache's generation
    are unchanged and it is younger than ``interval``. ``interval`` 0 turns
    the cache off (every read builds, as if there were none)."""

    def __init__(
        self, interval: float = DEFAULT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        # Re-entrant: the stations' list is built from each station's snapshot.
        self._lock = threading.RLock()
        self._entries: dict[Hashable, _Entry] = {}
        self._generation = 0

    def get(self, key: Hashable, version: Hashable | None, build: Callable[[], _T]) -> _T:
        """The value for ``key``, built by ``build()`` unless a fresh one is kept.
        ``version`` is read by the caller before this call (a change during the
        build then leaves the entry stale); None: the value cannot be kept."""
        if self.interval <= 0 or version is None:
            return build()
        entry = self._entries.get(key)
        if entry is not None and self._fresh(entry, version):
            return cast(_T, entry.value)
        with self._lock:
            entry = self._entries.get(key)  # another reader may have built it meanwhile
            if entry is not None and self._fresh(entry, version):
                return cast(_T, entry.value)
            generation, at = self._generation, self._clock()  # before: the age counts the build
            value = build()
            self._entries[key] = _Entry(value, version, generation, at)
            return value

    def invalidate(self) -> None:
        """Everything kept is stale (an action changed something): the next read
        builds. No lock: an action must not wait for a build; one that runs
        meanwhile keeps the generation it began with, stale already."""
        self._generation += 1

    def _fresh(self, entry: _Entry, version: Hashable) -> bool:
        return (
            entry.version == version
            and entry.generation == self._generation
            and self._clock() - entry.at < self.interval
        )
