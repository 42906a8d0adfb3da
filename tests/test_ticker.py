"""The engine's one timer for every station's wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time

from pushsource.engine.loop import Engine, Lane, Ticker


def test_wakeups_run_at_their_grid_point_in_order_never_early() -> None:
    loop = asyncio.new_event_loop()
    try:
        ticker = Ticker(loop, grid=0.02)
        ran: list[tuple[str, float]] = []
        # On a grid point: the grid is absolute, so from any other start "a"
        # and "b" could fall on either side of one.
        start = (int(loop.time() / 0.02) + 2) * 0.02
        # Asked out of order; two share a grid point; one is taken back.
        for name, delay in (("c", 0.105), ("a", 0.031), ("b", 0.033), ("x", 0.05)):
            wakeup = ticker.at(start + delay, lambda n=name: ran.append((n, loop.time())))
            if name == "x":
                wakeup.cancel()
        loop.call_at(start + 0.2, loop.stop)
        loop.run_forever()
        assert [name for name, _ in ran] == ["a", "b", "c"]
        asked = {"a": 0.031, "b": 0.033, "c": 0.105}
        for name, at in ran:
            assert at >= start + asked[name], name  # never early
        # "a" and "b" ran in the same pass: at the grid point after 0.033.
        assert abs(ran[0][1] - ran[1][1]) < 0.005
    finally:
        loop.close()


def test_a_wakeup_asked_while_running_goes_to_a_later_pass() -> None:
    loop = asyncio.new_event_loop()
    try:
        ticker = Ticker(loop, grid=0.01)
        passes: list[float] = []

        def again() -> None:
            passes.append(loop.time())
            if len(passes) < 3:
                ticker.at(loop.time() - 1.0, again)  # already due: still not this pass

        ticker.at(loop.time(), again)
        loop.call_later(0.2, loop.stop)
        loop.run_forever()
        assert len(passes) == 3
        assert passes[0] < passes[1] < passes[2]
    finally:
        loop.close()


def test_a_later_wakeup_asked_while_running_does_not_delay_an_earlier_one() -> None:
    """A station woken asks for its next wake-up, later than another's that is
    already waiting: the other still runs at its own grid point."""
    loop = asyncio.new_event_loop()
    try:
        ticker = Ticker(loop, grid=0.01)
        start = loop.time()
        ran: dict[str, float] = {}

        def first() -> None:
            ran["first"] = loop.time()
            ticker.at(start + 0.5, lambda: ran.setdefault("late", loop.time()))

        ticker.at(start + 0.02, first)
        ticker.at(start + 0.1, lambda: ran.setdefault("second", loop.time()))
        loop.call_at(start + 0.7, loop.stop)
        loop.run_forever()
        assert set(ran) == {"first", "second", "late"}
        assert start + 0.1 <= ran["second"] < start + 0.15, ran["second"] - start
        assert ran["late"] >= start + 0.5
    finally:
        loop.close()


def test_no_worker_job_starts_while_a_pass_of_the_air_runs() -> None:
    """Workers start jobs only between the Ticker's passes: the interpreter
    lock is not fair, so the air's pass would otherwise share it with every
    busy worker. A job asked for during a pass runs once the pass is over."""
    engine = Engine().start()
    try:
        lane = Lane(engine, "cue")
        seen: dict[str, float] = {}
        done = threading.Event()

        def job() -> None:
            seen["job"] = time.monotonic()
            seen["gate"] = float(engine.air_idle.is_set())

        def a_pass() -> None:
            lane.submit(job, lambda _r, _e: done.set())
            time.sleep(0.1)  # gives the lock up: a worker could run now
            seen["pass_end"] = time.monotonic()

        engine.call(lambda: engine.ticker.at(engine.loop.time(), a_pass))
        assert done.wait(5)
        assert seen["job"] >= seen["pass_end"]
        assert seen["gate"] == 1.0
        assert engine.air_idle.is_set()  # set again after the pass
    finally:
        engine.stop()
