"""What readers of the status cost the air: ``python -m benchmarks.status``.

300 stations (real StationRunners on one Engine, never connected: no Icecast
needed), each with a queue, 50 tracks of history and a track playing, behind
the control server. 32 threads read ``GET /api/stations`` over keep-alive
loopback connections for 5 s, first with the status snapshots off (every
request builds every station's status, as before), then on. Meanwhile a timer
on the engine's loop, the thread the stations send on, asks to tick every
100 ms: its longest gap is how long a station could have waited to send.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from pushsource.core.effects import Cued
from pushsource.engine.loop import Engine
from pushsource.ops.control import ControlServer
from pushsource.ops.metrics import Metrics
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import StationSettings
from pushsource.ops.status import DEFAULT_INTERVAL
from pushsource.ops.trial import make_tone_mp3

TICK = 0.1


def build_stations(root: Path, count: int, engine: Engine) -> list[StationRunner]:
    folder = root / "music"
    folder.mkdir()
    tone = make_tone_mp3(folder / "tone 00.mp3", 1.0)
    for n in range(1, 20):
        (folder / f"Artist {n:02d} - Title of track {n:02d}.mp3").write_bytes(tone)
    runners = []
    for n in range(count):
        settings = StationSettings(
            folder=folder,
            url=f"icecast://source:pw@127.0.0.1:9/station{n}",
            id=f"station{n}",
            name=f"Station {n}",
            once=True,  # no folder watching: 300 observers would be 300 threads
            cache=root / "cache",
        )
        runner = StationRunner(settings, {}, engine=engine)
        runner.feed.refresh()
        runner.connection("on air")
        # History and a track playing, through the runner's own events.
        for k in range(51):
            track = SimpleNamespace(
                path=folder / f"Artist {k % 19 + 1:02d} - Title of track {k % 19 + 1:02d}.mp3",
                title=f"Artist {k} - Title {k}",
                duration=180.0,
                bitrate=128,
                gain_db=None,
                resumed=False,
                before=0.0,
            )
            runner.track_started(cast(Cued, track))
            if k < 50:
                runner.track_ended(cast(Cued, track), skipped=False)
        runners.append(runner)
    return runners


class LoopTimer:
    """A timer on the engine's loop, asking to run every TICK seconds; the
    longest time between two runs."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.longest = 0.0
        self._last: float | None = None
        self._stop = False

    def start(self) -> None:
        self._engine.call(self._tick)

    def stop(self) -> None:
        self._stop = True

    def reset(self) -> None:
        self.longest = 0.0
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.longest = max(self.longest, now - self._last)
        self._last = now
        if not self._stop:  # the Ticker, as a station's wake-ups are
            self._engine.ticker.at(self._engine.loop.time() + TICK, self._tick)


def hammer(address: tuple[str, int], readers: int, seconds: float, path: str) -> int:
    """Requests answered by ``readers`` keep-alive threads reading ``path`` for ``seconds``."""
    done = [0] * readers
    until = time.monotonic() + seconds

    def read(slot: int) -> None:
        conn = http.client.HTTPConnection(*address, timeout=30)
        while time.monotonic() < until:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    done[slot] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(*address, timeout=30)
        conn.close()

    threads = [threading.Thread(target=read, args=(n,), daemon=True) for n in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def phase(
    runners: list[StationRunner],
    timer: LoopTimer,
    interval: float,
    readers: int,
    seconds: float,
    path: str,
    air: threading.Event | None = None,
) -> dict[str, Any]:
    builds = [0]
    for runner in runners:
        plain = runner.status

        def counted(plain: Any = plain) -> dict[str, Any]:
            builds[0] += 1
            return cast(dict[str, Any], plain())

        runner.status = counted  # type: ignore[method-assign]
    server = ControlServer(
        ("127.0.0.1", 0),
        runners,
        token=None,
        metrics=Metrics(runners).render,
        max_connections=readers + 8,
        max_per_client=readers + 8,
        status_interval=interval,
        air=air,
    )
    with server:
        server.start()
        timer.reset()
        started = time.monotonic()
        answered = hammer(server.address, readers, seconds, path)
        took = time.monotonic() - started
        longest = timer.longest
    for runner in runners:
        del runner.status  # the class's own again
    return {
        "requests_per_s": answered / took,
        "longest_gap_ms": longest * 1000,
        "statuses_built_per_s": builds[0] / took,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.status", description=__doc__)
    parser.add_argument("--stations", type=int, default=300)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--path", default="/api/stations")
    args = parser.parse_args(argv)
    engine = Engine().start()
    timer = LoopTimer(engine)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runners = build_stations(Path(tmp), args.stations, engine)
            timer.start()
            idle_until = time.monotonic() + 1.0
            while time.monotonic() < idle_until:  # the timer alone: its gap with no readers
                time.sleep(0.1)
            print(
                f"{args.stations} stations, {args.readers} readers of {args.path}, "
                f"{args.seconds:g} s each; a {TICK * 1000:.0f} ms timer on the engine's loop "
                f"(alone: longest gap {timer.longest * 1000:.0f} ms)"
            )
            print(
                f"{'snapshots':<28} {'requests/s':>10} {'statuses built/s':>17} {'longest gap':>12}"
            )
            snapshot = f"on, {DEFAULT_INTERVAL * 1000:.0f} ms"
            for label, interval, air in (
                ("off (before)", 0.0, None),
                (snapshot, DEFAULT_INTERVAL, None),
                (f"{snapshot}, after passes", DEFAULT_INTERVAL, engine.air_idle),
            ):
                got = phase(runners, timer, interval, args.readers, args.seconds, args.path, air)
                print(
                    f"{label:<28} {got['requests_per_s']:>10.0f} "
                    f"{got['statuses_built_per_s']:>17.0f} {got['longest_gap_ms']:>9.0f} ms"
                )
            timer.stop()
            for runner in runners:
                runner.close()
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
