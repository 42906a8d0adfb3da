"""The one engine of a process: an asyncio event loop on one thread that
paces every station and owns every source socket, and small fixed pools of
workers for whatever blocks: one for the stations' own work (reads, cues,
conversions, state saves), one for network calls (admin title requests,
which may retry for tens of seconds against a slow server), so a server that
is slow to answer titles never holds up a read the air waits for.

The thread count does not grow with the number of stations: one loop thread
plus the pools' threads (plus watchdog's observer and the control server,
when used).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
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

#: Workers: enough that a disk stalling for one station leaves others served.
WORKERS = 4
#: Workers for network calls (the stations' own work gets ``workers``).
NET_WORKERS = 4
#: Which pool a lane's jobs go to, by the lane's name; others go to "work".
LANE_POOLS: dict[str, str] = {"titles": "net"}


class Engine:
    """Start it, hand it work with :meth:`call` from any thread, stop it."""

    def __init__(self, *, workers: int = WORKERS) -> None:
        self.loop = asyncio.new_event_loop()
        sizes = {"work": workers, "net": NET_WORKERS}
        self.pools = {
            kind: concurrent.futures.ThreadPoolExecutor(
                max_workers=size, thread_name_prefix=f"pushsource-{kind}"
            )
            for kind, size in sizes.items()
        }
        self._thread = threading.Thread(target=self._run, name="pushsource-engine", daemon=True)
        self._started = False
        self._watches: dict[tuple[str, int, bool], Any] = {}

    def start(self) -> Engine:
        if not self._started:
            self._started = True
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


class Lane:
    """Jobs that must run one at a time, in order (one station's reads; its
    queue), on the pool for their kind (LANE_POOLS). Results come back on the
    engine's thread."""

    def __init__(self, engine: Engine, name: str, station: str = "") -> None:
        self._engine = engine
        self._name = name
        self._pool = engine.pools[LANE_POOLS.get(name, "work")]
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

        def run() -> Any:
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
