"""What the air costs the engine itself (issue 19), without Icecast or sockets.

``python -m benchmarks.tick`` runs N real stations (StationMachine,
StationDriver, Feed and the files of a folder, on one real Engine) whose
source sockets take every byte and do nothing with it, for a while in real
time, and prints the process's CPU (every thread: the engine's, the workers')
per station-hour of audio, the wake-ups, the sends, and the engine's longest
gap between two passes of its timer, and the interpreter's garbage collections
while it ran (how many, the longest pause; gen 2 is the full one, which
`pushsource run` keeps short with gc.freeze() once its stations are started;
`--no-freeze` to compare). It is the part of a station's CPU that
is pushsource's own Python, apart from the kernel's share of real sends and
from Icecast. ``--profile`` prints where the engine's thread spends it
(cProfile). Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.media import make_tracks
from pushsource.core.frames import header_for
from pushsource.core.icy import METAINT, IcyWriter
from pushsource.core.station import Pacing, StationMachine
from pushsource.core.target import IcecastTarget, StationInfo
from pushsource.engine.loop import Engine
from pushsource.engine.source import SEND_BUFFER
from pushsource.engine.station import StationDriver
from pushsource.workers.feed import Feed, ListSource
from pushsource.workers.tracks import skipped

RELEASE = False


class NullSocket:
    """Takes the source at once; wraps each send in ICY blocks as a real one
    does (titles inside the stream, the default; the blocks it remembers as
    a SourceSocket with its default high-water mark), then drops it."""

    titles_inside = True
    buffered = unsent = 0

    def __init__(self, loop: Any, target: IcecastTarget, events: Any) -> None:
        self._loop, self._events = loop, events
        self.address = "127.0.0.1"
        self._icy = IcyWriter(METAINT, remember=(64 * 1024 + 4 * SEND_BUFFER) // METAINT + 64)
        self.sends = 0

    def open(self, headers: dict[str, str]) -> None:
        self._loop.call_soon(self._events.accepted)

    def send(self, data: bytes) -> None:
        self._icy.wrap(data)
        self.sends += 1
        if RELEASE:
            time.sleep(0)  # a real send gives up the interpreter lock

    def title(self, title: str, at: int = 0) -> None:
        self._icy.title(title, at)

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Quiet:
    def __init__(self) -> None:
        self.finished = threading.Event()

    def connection(self, state: str, error: str | None = None) -> None:
        pass

    def track_started(self, track: Any) -> None:
        pass

    def track_ended(self, track: Any, *, skipped: bool) -> None:
        pass

    def file_skipped(self, exc: Any) -> None:
        pass

    def live_title(self, live: Any, title: str) -> None:
        pass

    def sent(self, nbytes: int, frames: int, lead: float) -> None:
        pass

    def done(self, error: Any) -> None:
        self.finished.set()


def run(
    stations: int, seconds: float, folder: list[Path], profile: bool, freeze: bool
) -> dict[str, float]:
    engine = Engine().start()
    sockets: list[NullSocket] = []
    fmt = header_for(44100, 2, 128)

    def connect(loop: Any, target: IcecastTarget, events: Any) -> NullSocket:
        sockets.append(NullSocket(loop, target, events))
        return sockets[-1]

    drivers = []
    for n in range(stations):
        feed = Feed(
            ListSource(list(folder)),
            resolve=lambda p: p,
            prepare=lambda p: None,
            was_played=lambda p: False,
            mark_played=lambda p: None,
            unplayable=skipped,
        )
        machine = StationMachine(
            silence=fmt,
            headers=StationInfo().headers(128, 44100, 2),
            once=True,
            pacing=Pacing(),
            metaint=METAINT,
        )
        target = IcecastTarget(host="127.0.0.1", port=9, mount=f"/m{n}", password="pw")
        drivers.append(
            StationDriver(
                engine,
                machine,
                feed,
                target,
                events=Quiet(),
                connect=connect,
                titles=lambda *a: None,
                name=f"m{n}",
            )
        )
    gaps: list[float] = []
    last = [0.0]

    def probe() -> None:  # the engine's timer, every 50 ms: how late it runs
        now = engine.loop.time()
        if last[0]:
            gaps.append(now - last[0])
        last[0] = now
        engine.loop.call_later(0.05, probe)

    engine.call(probe)
    for driver in drivers:
        driver.start()
    time.sleep(3.0)  # all on air, first reads done
    if freeze:
        gc.freeze()  # what `pushsource run` does once its stations are started
    pauses: list[tuple[int, float]] = []
    began: list[float] = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - began[0]))

    gc.callbacks.append(timed)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        engine.run(profiler.enable)
    sends0 = sum(s.sends for s in sockets)
    cpu0, wall0 = time.process_time(), time.monotonic()
    gaps.clear()
    time.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sends = sum(s.sends for s in sockets) - sends0
    gc.callbacks.remove(timed)
    if freeze:
        gc.unfreeze()
    full = [pause for generation, pause in pauses if generation == 2]
    if profiler is not None:
        engine.run(profiler.disable)
    worst = max(gaps) if gaps else 0.0
    for driver in drivers:
        driver.stop()
    engine.stop()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return {
        "stations": stations,
        "cpu_percent": 100 * cpu / wall,
        "cpu_s_per_station_hour": cpu / wall * 3600 / stations,
        "sends_per_station_s": sends / wall / stations,
        "us_per_send": 1e6 * cpu / max(1, sends),
        "longest_timer_gap_ms": 1000 * worst,
        "collections": len(pauses),
        "gen2_collections": len(full),
        "longest_gen2_ms": 1000 * max(full, default=0.0),
        "longest_gc_ms": 1000 * max((p for _, p in pauses), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tick", description=__doc__)
    parser.add_argument("--stations", default="1,300,1000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--release", action="store_true", help="give up the lock per send")
    parser.add_argument("--no-freeze", action="store_true", help="no gc.freeze() after start-up")
    args = parser.parse_args()
    global RELEASE
    RELEASE = args.release
    with tempfile.TemporaryDirectory() as tmp:
        tracks = make_tracks(Path(tmp), 4, 30.0)
        folder = [t.path for t in tracks] * 3
        print(
            "stations  CPU %  CPU s/stn-h  sends/stn/s  µs/send  longest 50 ms timer gap"
            "  GCs (gen 2)  longest GC pause (gen 2)"
        )
        for n in (int(x) for x in args.stations.split(",")):
            r = run(n, args.seconds, folder, args.profile, not args.no_freeze)
            print(f"{n:8d}  {r['cpu_percent']:5.1f}  {r['cpu_s_per_station_hour']:11.2f}"
                  f"  {r['sends_per_station_s']:11.1f}  {r['us_per_send']:7.1f}"
                  f"  {r['longest_timer_gap_ms']:8.1f} ms"
                  f"  {r['collections']:5d} ({r['gen2_collections']})"
                  f"  {r['longest_gc_ms']:.1f} ms ({r['longest_gen2_ms']:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
