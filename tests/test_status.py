"""Status snapshots: readers share one build, a change or an action makes the
next read fresh, and no snapshot is served older than its interval."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pushsource.engine.loop import Engine
from pushsource.errors import ControlError
from pushsource.ops.control import ControlServer
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import StationSettings
from pushsource.ops.status import SnapshotCache
from tests.support.media import make_clean_mp3
from tests.test_control import TOKEN, call, call_json


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Station:
    """A station that says when its status changed (``status_version``) and
    counts how often its status was built."""

    def __init__(self, station_id: str) -> None:
        self._id = station_id
        self.title = "first"
        self.status_version = 0
        self.builds = 0
        self.skips = 0

    @property
    def id(self) -> str:
        return self._id

    def status(self) -> dict[str, Any]:
        self.builds += 1
        return {
            "id": self._id,
            "now_playing": {"title": self.title, "skips": self.skips},
            "queue": [{"file": "a.mp3"}],
            "unplayable": [],
        }

    def skip(self) -> None:
        self.skips += 1  # no version bump: the server's invalidation must show it

    def kick(self, ban_minutes: int = 0) -> None:
        raise ControlError("no live input", 404)

    def remove(self, file: str) -> None:
        raise ControlError("not queued", 404)

    def move(self, file: str, index: int) -> None:
        raise ControlError("not queued", 404)

    def enqueue(self, file: str) -> None:
        raise ControlError("not in the folder", 404)

    def library(self, query: str = "", limit: int = 100) -> dict[str, Any]:
        return {"files": [], "total": 0}

    def upload(self, filename: str, data: BinaryIO, length: int) -> str:
        raise ControlError("no uploads here", 409)


class CountingLock:
    """The cache's lock, counting who came to take it (so a test knows every
    reader waits on the build in progress, without sleeping)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self.arrived = 0

    def __enter__(self) -> None:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait_for(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.arrived >= count, timeout=30)


def test_concurrent_readers_share_one_build() -> None:
    cache = SnapshotCache(0.25, Clock())
    lock = CountingLock()
    cache._lock = lock  # type: ignore[assignment]
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        lock.wait_for(16)  # every reader is at the lock: none found a value kept
        return b"snapshot"

    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("k", 1, build))) for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [b"snapshot"] * 16
    assert len(builds) == 1


def test_a_new_version_or_an_invalidation_rebuilds_and_nothing_else_does() -> None:
    clock = Clock()
    cache = SnapshotCache(0.25, clock)
    built = iter(range(100))

    def build() -> int:
        return next(built)

    assert cache.get("k", 1, build) == 0
    assert cache.get("k", 1, build) == 0  # kept
    assert cache.get("other", 1, build) == 1  # another key: its own
    assert cache.get("k", 2, build) == 2  # the station changed
    assert cache.get("k", 2, build) == 2
    cache.invalidate()
    assert cache.get("k", 2, build) == 3
    assert cache.get("other", 1, build) == 4  # an invalidation is for every key
    assert cache.get("k", None, build) == 5  # no version: never kept
    assert cache.get("k", None, build) == 6


def test_no_snapshot_is_older_than_the_interval() -> None:
    clock = Clock()
    cache = SnapshotCache(0.25, clock)
    built = iter(range(100))

    def build() -> int:
        clock.now += 0.1  # a build takes time: its age counts from when it began
        return next(built)

    assert cache.get("k", 1, build) == 0  # began at 100.0
    clock.now = 100.249
    assert cache.get("k", 1, build) == 0
    clock.now = 100.25
    assert cache.get("k", 1, build) == 1


def test_interval_zero_builds_every_time() -> None:
    cache = SnapshotCache(0, Clock())
    built = iter(range(100))
    assert [cache.get("k", 1, lambda: next(built)) for _ in range(3)] == [0, 1, 2]


# --- through the server ---------------------------------------------------------------------


@pytest.fixture
def stations() -> list[Station]:
    return [Station(f"s{n}") for n in range(3)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(stations: list[Station], clock: Clock) -> Iterator[ControlServer]:
    metrics_built: list[int] = []

    def metrics() -> tuple[bytes, str]:
        metrics_built.append(1)
        return f"pushsource_builds {len(metrics_built)}\n".encode(), "text/plain"

    with ControlServer(
        ("127.0.0.1", 0), stations, token=TOKEN, metrics=metrics, clock=clock
    ) as running:
        running.start()
        yield running


def test_concurrent_api_readers_cause_one_build(
    server: ControlServer, stations: list[Station]
) -> None:
    lock = CountingLock()
    server.snapshots._lock = lock  # type: ignore[assignment]
    first = stations[0]
    plain = first.status

    def held() -> dict[str, Any]:
        lock.wait_for(12)  # the 11 other readers wait for this build
        return plain()

    first.status = held  # type: ignore[method-assign]
    results: list[Any] = []

    def read() -> None:
        results.append(call_json(server, "GET", "/api/stations/s0", token=None))

    threads = [threading.Thread(target=read) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 12 and all(status == 200 for status, _ in results)
    assert all(body == results[0][1] for _, body in results)
    assert first.builds == 1


def test_the_list_and_each_station_are_kept_until_a_change(
    server: ControlServer, stations: list[Station], clock: Clock
) -> None:
    for _ in range(3):
        assert call_json(server, "GET", "/api/stations", token=None)[0] == 200
        assert call_json(server, "GET", "/api/stations?summary=1", token=None)[0] == 200
        assert call_json(server, "GET", "/api/stations/s1", token=None)[0] == 200
        assert call(server, "GET", "/", token=None)[0] == 200
    # Full and summary once each; /api/stations/s1 and the page reuse them.
    assert [s.builds for s in stations] == [2, 2, 2]
    stations[1].title = "second"  # not said: the snapshot stays until it ages
    _, body = call_json(server, "GET", "/api/stations/s1", token=None)
    assert body["now_playing"]["title"] == "first"
    stations[1].status_version += 1  # said: the next read has it, the others are kept
    _, body = call_json(server, "GET", "/api/stations", token=None)
    assert [s["now_playing"]["title"] for s in body["stations"]] == ["first", "second", "first"]
    assert [s.builds for s in stations] == [2, 3, 2]
    clock.now += 0.25  # aged: every station is built again
    call_json(server, "GET", "/api/stations", token=None)
    assert [s.builds for s in stations] == [3, 4, 3]


def test_an_action_shows_in_the_next_read(server: ControlServer, stations: list[Station]) -> None:
    _, body = call_json(server, "GET", "/api/stations?summary=1", token=None)
    assert body["stations"][0]["now_playing"]["skips"] == 0
    status, body = call_json(server, "POST", "/api/stations/s0/skip")
    assert status == 200 and body["now_playing"]["skips"] == 1
    _, body = call_json(server, "GET", "/api/stations?summary=1", token=None)
    assert body["stations"][0]["now_playing"]["skips"] == 1
    _, body = call_json(server, "GET", "/api/stations/s0", token=None)
    assert body["now_playing"]["skips"] == 1


def test_metrics_are_kept_like_the_status(
    server: ControlServer, stations: list[Station], clock: Clock
) -> None:
    def scrape() -> bytes:
        return call(server, "GET", "/metrics", token=None)[2]

    assert scrape() == scrape() == b"pushsource_builds 1\n"
    stations[2].status_version += 1
    assert scrape() == b"pushsource_builds 2\n"
    clock.now += 0.25
    assert scrape() == b"pushsource_builds 3\n"


def test_stations_without_a_version_are_read_every_time() -> None:
    station = Station("plain")
    del station.status_version
    with ControlServer(("127.0.0.1", 0), [station], token=None) as server:
        server.start()
        for _ in range(3):
            call_json(server, "GET", "/api/stations", token=None)
    assert station.builds == 3


# --- a real station's events ----------------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[StationRunner]:
    """A real station with four files queued; it never connects."""
    music = tmp_path / "music"
    music.mkdir()
    an_hour_ago = time.time() - 3600  # settled: queued at the first walk
    for name in ("a", "b", "c", "d"):
        make_clean_mp3(music / f"{name}.mp3", 0.3, freq=300)
        os.utime(music / f"{name}.mp3", (an_hour_ago, an_hour_ago))
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    station._setup()  # the folder's first walk, as start() would
    station.feed.refresh()
    yield station
    engine.stop()
    station.close()


def test_a_station_event_shows_in_the_next_read_however_young_the_snapshot(
    runner: StationRunner, clock: Clock
) -> None:
    """The clock stands still: only the runner's own change can make the read fresh."""
    with ControlServer(("127.0.0.1", 0), [runner], token=TOKEN, clock=clock) as server:
        server.start()

        def read() -> Any:
            return call_json(server, "GET", "/api/stations?summary=1", token=None)[1]["stations"][0]

        runner.connection("on air")
        assert read()["connection"]["state"] == "on air"
        assert read()["queue_length"] == 4
        runner.connection("reconnecting", "connection refused")
        connection = read()["connection"]
        assert {k: connection[k] for k in ("state", "reconnects", "attempts", "error")} == {
            "state": "reconnecting",
            "reconnects": 1,
            "attempts": 0,
            "error": "connection refused",
        }
        assert connection["down_since"] is not None  # the outage began now
        runner.move("d.mp3", 0)  # from Python, not the API: the runner says it changed
        _, body = call_json(server, "GET", "/api/stations/rock", token=None)
        assert [item["file"] for item in body["queue"]] == ["d.mp3", "a.mp3", "b.mp3", "c.mp3"]
