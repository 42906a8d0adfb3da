"""What a queue edit from the control API costs on the engine's thread (issue 19).

``python -m benchmarks.queue`` fills a folder with N empty ``.mp3`` files (a
folder queues every file at start), builds a real StationRunner on a real
Engine and FolderQueue (no server: the station never connects) and times
``move`` (the middle file to the front), ``remove`` and ``enqueue`` through
them: ``engine`` is the time the edit held the engine's thread (every other
station's sends wait that long), ``call`` the whole API call, control thread
included. ``before`` runs the same calls with the O(n²) originals put back
(the list-based ``_edited``, one ``resolve()`` per queued file in
``enqueue`` and in finding the file); its three edits take over a minute at 10,000.
Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pushsource.engine.loop import Engine
from pushsource.errors import ControlError
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import StationSettings
from pushsource.workers import feed as feed_module
from pushsource.workers.folder import QueueEdit, inside, playable

T = TypeVar("T")
SIZES = (1000, 3000, 10000)
EDITS = ("move", "remove", "enqueue")


# -- the originals, as they were before issue 19 (tests/test_queue_edit.py
# checks the new _edited against the same reference)


def reference_edited(queued: list[Path], edit: QueueEdit) -> list[Path]:
    paths = [p for p in edit.front if p not in edit.remove]
    paths += [p for p in queued if p not in edit.remove and p not in paths]
    paths += [p for p in edit.enqueue if p not in paths]
    ordered = [p for p in edit.order if p in paths]
    return ordered + [p for p in paths if p not in ordered]


def reference_enqueue(self: StationRunner, file: str) -> None:
    path = playable(self.folder, self._in_folder(file))
    if path is None:
        raise ControlError(f"no such file in the folder: {file}", 404)

    def make(queued: list[Path]) -> QueueEdit:
        if any(inside(self.folder, p) == path for p in queued):
            raise ControlError(f"{file} is queued already", 409)
        self._played.forget(path)
        return QueueEdit((*queued, path), enqueue=(path,))

    self.driver.edit(make)


def reference_queued(self: StationRunner, file: str) -> Path:
    wanted = inside(self.folder, self._in_folder(file))
    for path in self.driver.queued():
        if wanted is not None and inside(self.folder, path) == wanted:
            return path
    raise ControlError(f"{file} is not in the queue", 404)


@contextmanager
def originals(runner: StationRunner) -> Iterator[None]:
    """The runner and Feed with the O(n²) originals, for as long as it lasts."""
    edited = feed_module._edited
    feed_module.__dict__["_edited"] = reference_edited
    runner.__dict__["enqueue"] = types.MethodType(reference_enqueue, runner)
    runner.__dict__["_queued"] = types.MethodType(reference_queued, runner)
    try:
        yield
    finally:
        feed_module.__dict__["_edited"] = edited
        del runner.__dict__["enqueue"], runner.__dict__["_queued"]


# --


class EngineTimer:
    """Times what Engine.run runs on the engine's thread (a queue edit's apply)."""

    def __init__(self, engine: Engine) -> None:
        self.last = 0.0
        run = engine.run

        def timed_run(fn: Callable[[], T], timeout: float = 10.0) -> T:
            def timed() -> T:
                start = time.perf_counter()
                try:
                    return fn()
                finally:
                    self.last = time.perf_counter() - start

            return run(timed, timeout=600.0)  # the originals take longer than 10 s

        engine.__dict__["run"] = timed_run


def station(folder: Path, work: Path, engine: Engine) -> StationRunner:
    settings = StationSettings(
        folder=folder,
        url="icecast://source:pw@127.0.0.1:9/bench",
        id="bench",
        state=work / "state.json",
        cache=work / "cache",
    )
    runner = StationRunner(settings, {}, engine=engine)
    runner._setup()  # the folder's first walk, as start() would; never connects
    runner.feed.refresh()
    return runner


def fill(folder: Path, n: int) -> None:
    folder.mkdir()
    old = time.time() - 3600  # settled: queued at once
    for i in range(n):
        path = folder / f"{i:05d}.mp3"
        path.touch()
        os.utime(path, (old, old))


def one_round(runner: StationRunner, timer: EngineTimer, i: int) -> dict[str, tuple[float, float]]:
    """A move, a remove and an enqueue (of the file removed): {edit: (engine s, call s)}."""
    names = [runner._relative(p) for p in runner.driver.queued()]
    middle, other = names[len(names) // 2], names[len(names) // 3 + i]
    calls: dict[str, Callable[[], Any]] = {
        "move": lambda: runner.move(middle, 0),
        "remove": lambda: runner.remove(other),
        "enqueue": lambda: runner.enqueue(other),
    }
    out = {}
    for edit in EDITS:
        start = time.perf_counter()
        calls[edit]()
        out[edit] = (timer.last, time.perf_counter() - start)
        runner.feed.refresh()  # the folder queue takes the edit in (a worker's part)
    return out


def measure(n: int, rounds: int, before: bool) -> dict[str, dict[str, tuple[float, float]]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fill(work / "music", n)
        engine = Engine().start()
        runner = station(work / "music", work, engine)
        try:
            timer = EngineTimer(engine)
            assert len(runner.driver.queued()) == n
            results: dict[str, dict[str, tuple[float, float]]] = {}
            after = [one_round(runner, timer, i) for i in range(rounds)]
            results["after"] = {
                e: (
                    statistics.median(r[e][0] for r in after),
                    statistics.median(r[e][1] for r in after),
                )
                for e in EDITS
            }
            if before:
                with originals(runner):
                    results["before"] = one_round(runner, timer, rounds)
            return results
        finally:
            engine.stop()
            runner.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="queue lengths")
    parser.add_argument("--rounds", type=int, default=5, help="edits of each kind, after")
    parser.add_argument("--no-before", action="store_true", help="skip the O(n²) originals")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # a line per queued file otherwise
    print("queue edits on a folder queue: ms on the engine's thread (whole API call)")
    print(f"{'files':>7} {'edit':>8} {'before':>20} {'after':>18}")
    for n in (int(s) for s in args.sizes.split(",")):
        results = measure(n, args.rounds, not args.no_before)
        for edit in EDITS:
            cells = []
            for which in ("before", "after"):
                if which not in results:
                    cells.append("-")
                    continue
                engine_s, call_s = results[which][edit]
                cells.append(f"{engine_s * 1000:.1f} ({call_s * 1000:.1f})")
            print(f"{n:>7} {edit:>8} {cells[0]:>20} {cells[1]:>18}", flush=True)
    python = sys.version.split()[0]
    print(f"after: median of {args.rounds} of each; before: one of each (Python {python})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
