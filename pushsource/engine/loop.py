"""The one engine of a process: an asyncio event loop on one thread that
paces every station and owns every source socket, and small fixed pools of
workers for whatever blocks, one pool per kind of work, so that no kind can
hold up another (the air's invariant: what the air waits for, a read of the
playing track, never queues behind a conversion, a folder walk, a save or a
title request):

- ``read``: reads of the frames on air (short: one per station in flight);
- ``cue``: opening the next track, looking at the folder;
- ``convert``: conversions and loudness measurement (seconds to minutes; a
  cue waits for its file's conversion here, never holding a ``cue`` worker);
- ``start``: a station's first walk of its folder, two stations at a time,
  so hundreds of stations starting at once never crowd the ones already on
  air (and one folder that hangs does not hold up every other start);
- ``save``: play-state saves (fsync);
- ``net``: network calls (admin title requests, which may retry for tens of
  seconds against a slow server);
- ``tags``: reading the tags of queued and library files for the status
  page's titles and lengths (one thread: never in a hurry).

The thread count does not grow with the number of stations: one loop thread
plus the pools' threads, each started when its pool first gets work (plus
watchdog's observer and the control server, when used).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import heapq
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("pushsource")

T = TypeVar("T")

#: The station the engine's thread or a worker is busy with, for log lines.
current_station: contextvars.ContextVar[str] = contextvars.ContextVar(
    "pushsource_station", default=""
)

#: Workers per pool. ``read``: enough that a disk stalling for one station
#: leaves others served. ``convert``: the cores are what converting needs;
#: more would only take them from the air. ``start``: two walks at a time.
POOLS: dict[str, int] = {
    "read": 4, "cue": 4, "convert": 2, "start": 2, "save": 2, "net": 4, "tags": 1
}  # fmt: skip
#: The most threads the pools may start, in all.
WORKERS = sum(POOLS.values())
#: Which pool a lane's jobs go to, by the lane's name; others go to "cue".
LANE_POOLS: dict[str, str] = {
    "read": "read",
    "cue": "cue",
    "convert": "convert",
    "mix": "convert",
    "start": "start",
    "state": "save",
    "titles": "net",
    "tags": "tags",
}
#: The grid of the engine's one timer for every station's wake-ups (the Ticker):
#: a wake-up is at most this late, and a station's batch that much larger.
TICK = 0.01
#: How long a thread holding the interpreter lock runs before one waiting
#: gets it (CPython's default is 5 ms). The engine's thread gives the lock up
#: at every send; with a worker busy in Python (a walk, a tag parse) it then
#: waited up to 5 ms to get it back, per send: hundreds of stations' sends
#: behind one busy worker stalled the air for seconds. 0.5 ms bounds that wait.
SWITCH_INTERVAL = 0.0005
#: The longest a worker waits, before its next job, for the Ticker's pass to
#: end (the pass is the air; see Engine.air_idle).
PASS_WAIT = 0.25


class Engine:
    """Start it, hand it work with :meth:`call` from any thread, stop it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pools = {
            kind: concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix=f"pushsource-{kind}"
            )
            for kind, size in POOLS.items()
        }
        #: Set while the Ticker is between passes. Workers start a job only
        #: then: the interpreter lock goes to whichever thread wants it, so
        #: with four workers parsing tags a pass of the air got a fifth of
        #: the CPU, and 1000 stations' sends, due together, came 200-400 ms
        #: late at a track change. A job already running goes on.
        self.air_idle = threading.Event()
        self.air_idle.set()
        self.ticker = Ticker(self.loop, gate=self.air_idle)
        self._thread = threading.Thread(target=self._run, name="pushsource-engine", daemon=True)
        self._started = False
        self._watches: dict[tuple[str, int, bool], Any] = {}

    def start(self) -> Engine:
        if not self._started:
            self._started = True
            if sys.getswitchinterval() > SWITCH_INTERVAL:
                sys.setswitchinterval(SWITCH_INTERVAL)
            self._thread.start()
        return self

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Run ``fn(*args)`` on the engine's thread soon. Any thread (a signal
        handler too); a stopped engine ignores it."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(fn, *args)

    def run(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the engine's thread and wait for its result (the
        control API's queue edits: atomic, in order). Re-raises its exception."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        self.call(run)
        return future.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and the workers (the stations should be done)."""
        if self._started and self._thread.is_alive():
            self.call(self.loop.stop)
            self._thread.join(timeout)
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    def watch_of(self, key: tuple[str, int, bool], make: Callable[[], Any]) -> Any:
        """One server watch per Icecast server, shared by its stations."""
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = make()
        return watch

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Cancel what is left (server watches), so close() finds nothing pending.
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class Wakeup:
    """One wake-up asked of a :class:`Ticker`; :meth:`cancel` takes it back."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Ticker:
    """One timer for every station's wake-ups: times are rounded up to a grid
    of ``grid`` seconds, and each grid point that anyone asked for wakes the
    loop once and runs all of them, in the order asked. With hundreds of
    stations that is one loop iteration per grid point instead of one timer
    (a heap entry, a handle, an iteration) per station per batch, and a
    station is never woken early (its frames would not be due yet)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        grid: float = TICK,
        gate: threading.Event | None = None,
    ) -> None:
        """``gate``: cleared for the time of each pass (Engine.air_idle)."""
        self._loop = loop
        self._grid = grid
        self._gate = gate
        self._slots: dict[int, list[Wakeup]] = {}
        self._heap: list[int] = []  # the slots with wake-ups, soonest first
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0
        self._running = 0  # the slot being run (0: none): later asks go after it

    def at(self, when: float, fn: Callable[[], object]) -> Wakeup:
        """Run ``fn()`` on the loop at the first grid point at or after ``when``."""
        slot = -int(-when // self._grid)  # ceil, without float surprises at the boundary
        if slot <= self._running:
            slot = self._running + 1
        wakeup = Wakeup(fn)
        wakeups = self._slots.get(slot)
        if wakeups is None:
            self._slots[slot] = [wakeup]
            heapq.heappush(self._heap, slot)
            if not self._running:  # a run arms the timer when it is done
                self._arm()
        else:
            wakeups.append(wakeup)
        return wakeup

    def _arm(self) -> None:
        """The timer at the soonest slot asked for."""
        first = self._heap[0]
        if self._timer is not None:
            if self._timer_slot <= first:
                return
            self._timer.cancel()
        self._timer_slot = first
        self._timer = self._loop.call_at(first * self._grid, self._run)

    def _run(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap, slots = self._heap, self._slots
        gate = self._gate
        if gate is not None:
            gate.clear()
        try:
            while heap and heap[0] * self._grid <= now + 1e-9:
                slot = heapq.heappop(heap)
                self._running = slot
                for wakeup in slots.pop(slot):
                    if not wakeup.cancelled:
                        wakeup.fn()
        finally:
            self._running = 0
            if gate is not None:
                gate.set()
            if heap:
                self._arm()


class Lane:
    """Jobs that must run one at a time, in order (one station's reads; its
    queue), on the pool for their kind (LANE_POOLS). Results come back on the
    engine's thread."""

    def __init__(self, engine: Engine, name: str, station: str = "") -> None:
        self._engine = engine
        self._name = name
        self._pool = engine.pools[LANE_POOLS.get(name, "cue")]
        self._station = station
        self._jobs: deque[tuple[Callable[[], Any], Callable[[Any, BaseException | None], None]]]
        self._jobs = deque()
        self._busy = False
        self.closed = False

    def submit(
        self, job: Callable[[], T], done: Callable[[T | None, BaseException | None], None]
    ) -> None:
        """On the engine's thread: run ``job`` on a worker after the jobs
        before it; then ``done(result, None)`` or ``done(None, exception)`` on
        the engine's thread."""
        self._jobs.append((job, done))
        if not self._busy:
            self._next()

    def _next(self) -> None:
        if not self._jobs:
            self._busy = False
            return
        self._busy = True
        job, done = self._jobs.popleft()
        loop = self._engine.loop

        def finished(future: concurrent.futures.Future[Any]) -> None:
            if future.cancelled():
                exc: BaseException | None = concurrent.futures.CancelledError()
            else:
                exc = future.exception()
            result = None if exc is not None else future.result()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._finished, done, result, exc)

        station = self._station
        idle = self._engine.air_idle

        def run() -> Any:
            idle.wait(PASS_WAIT)  # not while the air's pass runs
            current_station.set(station)  # the worker's own context, per job
            return job()

        try:
            future = self._pool.submit(run)
        except RuntimeError as exc:  # the pool is shut down: we are stopping
            self._busy = False
            done(None, exc)
            return
        future.add_done_callback(finished)

    def _finished(
        self, done: Callable[[Any, BaseException | None], None], result: Any, exc: Any
    ) -> None:
        token = current_station.set(self._station)
        try:
            done(result, exc)
        finally:
            current_station.reset(token)
            self._next()
