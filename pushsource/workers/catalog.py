"""Titles and lengths of a station's files, from their tags, for the status
and the library: read on a worker the first time someone asks, then kept.

Readers (the control API's threads) never open a file: they get what is
known and leave the rest wanted; a worker reads the wanted files a batch at
a time. A file's entry is replaced when the file is opened to play (its
tags are read then anyway), so a title edited in place shows from its turn on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from pushsource.workers.tracks import TrackInfo, read_info

#: Files kept (the least recently asked for go first): a page shows a queue
#: and a library search, not every file of a large folder at once.
KEEP: Final = 20_000
#: Files read per job: a worker job stays short, whatever the backlog.
BATCH: Final = 32


class Catalog:
    """What the tags say about files, by path. Any thread."""

    def __init__(self, read: Callable[[Path], TrackInfo] = read_info, keep: int = KEEP) -> None:
        self._read = read
        self._keep = keep
        self._lock = threading.Lock()
        self._known: OrderedDict[Path, TrackInfo] = OrderedDict()
        self._wanted: dict[Path, None] = {}  # in the order asked for

    def lookup(self, paths: Iterable[Path], *, want: bool = True) -> list[TrackInfo | None]:
        """Each path's info, None for those not read yet (now wanted, unless
        ``want`` is false). No I/O."""
        found: list[TrackInfo | None] = []
        with self._lock:
            known, wanted = self._known, self._wanted
            for path in paths:
                info = known.get(path)
                if info is None and want:
                    wanted.setdefault(path, None)
                found.append(info)
        return found

    def put(self, path: Path, info: TrackInfo) -> None:
        """What a file's tags said when it was opened (no read of our own)."""
        with self._lock:
            self._keep_one(path, info)
            self._wanted.pop(path, None)

    @property
    def wanted(self) -> bool:
        """Whether some file waits to be read."""
        return bool(self._wanted)

    def read_some(self, batch: int = BATCH) -> bool:
        """On a worker: read up to ``batch`` wanted files (a file that cannot
        be read gets its name as title, as read_info gives it); returns
        whether any was read."""
        with self._lock:
            paths = list(self._wanted)[:batch]
            for path in paths:
                del self._wanted[path]
        if not paths:
            return False
        infos = [(path, self._read(path)) for path in paths]  # read_info does not raise
        with self._lock:
            for path, info in infos:
                self._keep_one(path, info)
        return True

    def _keep_one(self, path: Path, info: TrackInfo) -> None:
        known = self._known
        known[path] = info
        known.move_to_end(path)
        while len(known) > self._keep:
            known.popitem(last=False)
