"""A station: tracks from a source, paced frame batches into one PUT, titles as tracks start."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from pushsource.errors import TrackError
from pushsource.frames import FrameHeader, silent_frame
from pushsource.icecast import IcecastTarget, SourceConnection, StationInfo, TitleUpdater
from pushsource.pacer import Pacer
from pushsource.tracks import Track

log = logging.getLogger("pushsource")

#: Icecast 2.4.4 relays source data in blocks of this many bytes and drops the
#: last partial block when a source leaves: a clean close sends at least this
#: much silence after the last real frame.
ICECAST_BLOCK: Final = 1400


class TrackSource(Protocol):
    """Where the next file comes from (the watched folder, or a fixed list)."""

    def get(self, timeout: float | None = None) -> Path | None:
        """The next file to play, waiting up to ``timeout`` s; None if none came."""
        ...


class ListSource:
    """A fixed list of files, for ``--once``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)

    def get(self, timeout: float | None = None) -> Path | None:
        return self._paths.pop(0) if self._paths else None


class Connection(Protocol):
    def stream(self, chunks: Iterator[bytes], headers: dict[str, str]) -> int: ...


class Titles(Protocol):
    def set(self, title: str) -> None: ...
    def close(self, timeout: float = 2.0) -> None: ...


@dataclass(frozen=True)
class Pacing:
    lead: float = 0.5  # seconds of audio handed to Icecast ahead of real time, at most
    batch: float = 0.05  # seconds between wake-ups


class Station:
    """Streams the files of ``source`` to ``target`` until the source runs out
    (``once``) or :meth:`stop` is called.

    Without ``once``, the connection stays up while files keep coming; when the
    queue runs dry it closes cleanly and a new connection opens when the next
    file is ready.
    """

    def __init__(
        self,
        target: IcecastTarget,
        source: TrackSource,
        info: StationInfo,
        *,
        once: bool = False,
        pacing: Pacing = Pacing(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        connect: Callable[[IcecastTarget], Connection] = SourceConnection,
        titles: Callable[[Connection], Titles] | None = None,
    ) -> None:
        self.target = target
        self._source = source
        self._info = info
        self._once = once
        self._pacing = pacing
        self._clock = clock
        self._stopping = threading.Event()
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._connect = connect
        self._titles = titles if titles is not None else _title_updater
        self.played: list[Path] = []

    def stop(self) -> None:
        """Finish the batch in flight, close the stream cleanly, return from run()."""
        self._stopping.set()

    def run(self) -> None:
        """Stream until done. Raises IcecastError (AuthenticationError...)."""
        while not self._stopping.is_set():
            first = self._next_track(wait=not self._once)
            if first is None:
                return
            connection = self._connect(self.target)
            header = first.first.header
            headers = self._info.headers(
                first.info.bitrate or header.bitrate, header.sample_rate, header.channels
            )
            titles = self._titles(connection)
            try:
                log.info("connecting to %s", self.target)
                connection.stream(self._body(first, titles), headers)
            finally:
                titles.close()
            if self._once:
                return
            if not self._stopping.is_set():
                log.info("queue empty: closed the stream, waiting for files")

    # -- tracks -----------------------------------------------------------

    def _next_track(self, *, wait: bool, until: float | None = None) -> Track | None:
        """Open the next playable file, skipping bad ones with one warning each.

        ``wait``: block until a file comes (or stop); else give up at ``until``
        (a clock time) or at once.
        """
        while not self._stopping.is_set():
            if wait:
                timeout: float | None = 0.5  # wake to notice stop()
            else:
                timeout = 0.0 if until is None else max(0.0, until - self._clock())
            path = self._source.get(timeout)
            if path is None:
                if wait:
                    continue
                return None
            try:
                return Track(path).open()
            except TrackError as exc:
                log.warning("skipped %s: %s", exc.path, exc.reason)
        return None

    def _announce_all(self, tracks: list[Track], titles: Titles) -> None:
        for track in tracks:
            self._announce(track, titles)
        tracks.clear()

    def _announce(self, track: Track, titles: Titles) -> None:
        header = track.first.header
        bitrate = track.info.bitrate or header.bitrate
        log.info(
            "playing %s (%s, %d kbps, %d Hz) [%s]",
            track.info.title,
            _clock_time(track.info.duration),
            bitrate,
            header.sample_rate,
            track.path.name,
        )
        titles.set(track.info.title)
        self.played.append(track.path)

    # -- the body of the PUT ----------------------------------------------

    def _body(self, first: Track, titles: Titles) -> Iterator[bytes]:
        """Frame batches, each handed over when its audio is due within the lead."""
        pacer = Pacer(self._clock(), lead=self._pacing.lead, batch=self._pacing.batch)
        current: Track | None = first
        starting = [first]  # tracks whose first frame is in the batch being built
        last: FrameHeader = first.first.header
        pending_first = True
        handed = 0  # batches handed to the connection
        while True:
            now = self._clock()
            out = bytearray()
            while current is not None and pacer.may_send(now):
                if pending_first:
                    frame = current.first
                    pending_first = False
                else:
                    next_frame = current.next_frame()
                    if next_frame is None:
                        current = self._next_track(wait=False)
                        if current is not None:
                            starting.append(current)
                            pending_first = True
                        continue
                    frame = next_frame
                out += frame.data
                pacer.add(frame.header.samples, frame.header.sample_rate)
                last = frame.header
            if out:
                yield bytes(out)
                handed += 1
            # Their first frame is sent. A refused source (wrong password) only
            # shows when the second batch cannot be sent: announce after that.
            if handed >= 2:
                self._announce_all(starting, titles)
            if self._stopping.is_set():
                break
            if current is None:
                if self._once:
                    break
                # The queue ran dry: wait for a file while the audio sent lasts.
                current = self._next_track(wait=False, until=pacer.due() - self._pacing.batch)
                if current is None:
                    break
                starting.append(current)
                pending_first = True
                continue
            self._sleep_until(pacer.wake_at())
        if current is not None:
            current.close()
        # Close cleanly: enough silence that Icecast relays the last real frame.
        silence = silent_frame(last)
        remaining = math.ceil(ICECAST_BLOCK / len(silence)) + 1
        while remaining:
            hurry = self._stopping.is_set()  # on stop, no need to keep to the lead
            count = 0
            while count < remaining and (hurry or pacer.may_send(self._clock())):
                pacer.add(last.samples, last.sample_rate)
                count += 1
            if count:
                yield silence * count
                remaining -= count
            self._announce_all(starting, titles)
            if remaining:
                self._sleep_until(pacer.wake_at())
        self._sleep_until(pacer.due())  # let listeners hear the end before we hang up

    def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay > 0:
            self._sleep(delay)


def _title_updater(connection: Connection) -> Titles:
    assert isinstance(connection, SourceConnection)
    return TitleUpdater(connection)


def _clock_time(seconds: float | None) -> str:
    if seconds is None:
        return "?:??"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
