"""The engine with fake source sockets: one loop for many stations, nothing
on it waits for a disk, worker failures are supervised."""

from __future__ import annotations

import http.client
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.effects import Chunk
from pushsource.core.frames import header_for
from pushsource.core.station import Pacing, StationMachine
from pushsource.core.target import IcecastTarget, StationInfo
from pushsource.engine.loop import POOLS, WORKERS, Engine
from pushsource.engine.station import TITLE_BACKOFF, TITLE_TRIES, StationDriver, Titles
from pushsource.errors import PushsourceError
from pushsource.ops.control import ControlServer
from pushsource.workers.feed import Feed, ListSource
from pushsource.workers.folder import QueueEdit
from pushsource.workers.tracks import skipped
from tests.synth import make_frames

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

FORMAT = header_for(44100, 2, 128)


class FakeSocket:
    """Takes the source at once and records when each send came."""

    def __init__(self, loop: Any, target: IcecastTarget, events: Any) -> None:
        self._loop = loop
        self._events = events
        self.address = "127.0.0.1"
        self.buffered = self.unsent = 0
        self.titles_inside = False  # titles by admin request
        self.sends: list[tuple[float, int]] = []
        self.data = bytearray()
        self.closed = False

    def open(self, headers: dict[str, str]) -> None:
        self._loop.call_soon(self._events.accepted)

    def send(self, data: bytes) -> None:
        self.sends.append((time.monotonic(), len(data)))
        self.data += data

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Recorder:
    """The runner's side of the events."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.finished = threading.Event()
        self.error: PushsourceError | None = None

    def connection(self, state: str, error: str | None = None) -> None:
        self.states.append(state)

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

    def done(self, error: PushsourceError | None) -> None:
        self.error = error
        self.finished.set()


class SlowFeed(Feed):
    """A disk that stalls for ``stall`` s on every read after the first."""

    def __init__(self, *args: Any, stall: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall = stall
        self.stalled = threading.Event()
        self.reading = threading.Event()

    def read(self, track: object, frames: int) -> Chunk:
        self.reading.set()
        time.sleep(self.stall)
        self.stalled.set()
        return super().read(track, frames)


def station(
    engine: Engine,
    paths: list[Path],
    *,
    feed_class: type[Feed] = Feed,
    titles: Any = lambda address, title, superseded: None,
    prepare: Any = lambda p: None,
    start: Any = None,
    recorder: Recorder | None = None,
    **feed_options: Any,
) -> tuple[StationDriver, list[FakeSocket], Recorder, Feed]:
    sockets: list[FakeSocket] = []
    recorder = recorder or Recorder()

    def connect(loop: Any, target: IcecastTarget, events: Any) -> FakeSocket:
        sockets.append(FakeSocket(loop, target, events))
        return sockets[-1]

    feed = feed_class(
        ListSource(paths),
        resolve=lambda p: p,
        prepare=prepare,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=skipped,
        **feed_options,
    )
    machine = StationMachine(
        silence=FORMAT,
        headers=StationInfo().headers(128, 44100, 2),
        once=True,
        pacing=Pacing(lead=0.3, batch=0.1),
    )
    driver = StationDriver(
        engine,
        machine,
        feed,
        IcecastTarget(host="127.0.0.1", port=9, mount="/m", password="pw"),
        events=recorder,
        connect=connect,
        titles=titles,
        start=start,
    )
    return driver, sockets, recorder, feed


@pytest.fixture
def engine() -> Any:
    engine = Engine().start()
    yield engine
    engine.stop()


def test_a_stalled_disk_holds_up_no_other_station(tmp_path: Path, engine: Engine) -> None:
    for name, count in (("slow", 400), ("fast", 400)):
        (tmp_path / f"{name}.mp3").write_bytes(b"".join(make_frames(count)))
    slow, _, slow_events, slow_feed = station(
        engine, [tmp_path / "slow.mp3"], feed_class=SlowFeed, stall=1.5
    )
    fast, fast_sockets, _, _ = station(engine, [tmp_path / "fast.mp3"])
    slow.start()
    fast.start()
    assert isinstance(slow_feed, SlowFeed)
    assert slow_feed.reading.wait(10), "the slow station never read"
    began = time.monotonic()
    assert slow_feed.stalled.wait(10)
    ended = time.monotonic()
    # While a worker sat in the slow read, the other station kept its pace:
    # a send at least every batch (0.1 s, plus scheduling slack).
    [sock] = fast_sockets
    during = [t for t, _ in sock.sends if began <= t <= ended]
    assert len(during) >= (ended - began) / 0.1 * 0.6, (len(during), ended - began)
    times = [t for t, _ in sock.sends if t <= ended]
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.35
    slow.stop()
    fast.stop()
    assert slow_events.finished.wait(10)


def test_slow_title_requests_hold_up_no_station(tmp_path: Path, engine: Engine) -> None:
    """Title requests that hang (a slow server, 5 tries) fill no worker the
    stations' reads need: a station whose titles hang and one whose do not
    both keep their pace, and neither sends silence."""
    frames = make_frames(240)  # 6 s
    (tmp_path / "a.mp3").write_bytes(b"".join(frames))
    hanging = threading.Event()
    release = threading.Event()

    def hang(address: str, title: str, superseded: Any) -> None:
        hanging.set()
        release.wait(20)

    stations = [station(engine, [tmp_path / "a.mp3"], titles=hang) for _ in range(2 * POOLS["net"])]
    healthy, sockets, recorder, _ = station(engine, [tmp_path / "a.mp3"])
    try:
        for driver, *_ in stations:
            driver.start()
        assert hanging.wait(10)
        healthy.start()
        assert recorder.finished.wait(20), "the healthy station never finished"
        for _driver, socks, events, _ in stations:
            assert events.finished.wait(20)
            # Every frame of the file, then the closing silence: no gap of silence.
            assert bytes(socks[0].data).startswith(b"".join(frames))
        [sock] = sockets
        assert bytes(sock.data).startswith(b"".join(frames))
        times = [t for t, _ in sock.sends]
        assert max(b - a for a, b in itertools.pairwise(times)) < 0.35
    finally:
        release.set()


def test_threads_do_not_grow_with_stations(tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "a.mp3").write_bytes(b"".join(make_frames(200)))
    before = threading.active_count()
    drivers = [station(engine, [tmp_path / "a.mp3"]) for _ in range(60)]
    for driver, *_ in drivers:
        driver.start()
    deadline = time.monotonic() + 10
    while not all(sockets and sockets[0].sends for _, sockets, _, _ in drivers):
        assert time.monotonic() < deadline, "not every station went on air"
        time.sleep(0.05)
    # The engine's one thread was there before; at most the pools' workers came.
    assert threading.active_count() - before <= WORKERS
    for driver, *_ in drivers:
        driver.stop()
    for _, _, recorder, _ in drivers:
        assert recorder.finished.wait(10)


class BrokenFeed(Feed):
    def cue(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the worker")


def test_a_worker_that_raises_costs_one_line_and_the_station_goes_on(
    tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.mp3").write_bytes(b"".join(make_frames(20)))
    driver, _, recorder, _ = station(engine, [tmp_path / "a.mp3"], feed_class=BrokenFeed)
    with caplog.at_level(logging.ERROR, logger="pushsource"):
        driver.start()
        time.sleep(0.3)
        driver.stop()
        assert recorder.finished.wait(10), "a failed cue left the station hanging"
    lines = [r.getMessage() for r in caplog.records if "a bug in the worker" in r.getMessage()]
    assert len(lines) == 1 and "cueing the next file failed" in lines[0]
    assert recorder.error is None


def test_a_station_that_fails_to_start_says_failed(tmp_path: Path, engine: Engine) -> None:
    (tmp_path / "a.mp3").write_bytes(b"".join(make_frames(20)))
    sockets: list[FakeSocket] = []
    recorder = Recorder()
    feed = Feed(
        ListSource([]),
        resolve=lambda p: p,
        prepare=lambda p: None,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=skipped,
    )

    def start() -> None:
        raise PushsourceError("music folder /gone is not a directory")

    driver = StationDriver(
        engine,
        StationMachine(silence=FORMAT, headers={}, once=True),
        feed,
        IcecastTarget(host="127.0.0.1", port=9, mount="/m", password="pw"),
        events=recorder,
        connect=lambda *a: sockets.append(FakeSocket(*a)) or sockets[-1],
        titles=lambda *a: None,
        start=start,
    )
    driver.start()
    assert recorder.finished.wait(10)
    assert recorder.states[-1] == "failed"
    assert isinstance(recorder.error, PushsourceError) and "/gone" in str(recorder.error)
    assert not sockets


class Leads(Recorder):
    """Records how far ahead of real time each send left the station."""

    def __init__(self) -> None:
        super().__init__()
        self.leads: list[float] = []

    def sent(self, nbytes: int, frames: int, lead: float) -> None:
        self.leads.append(lead)


class Listed:
    """A station as ``/api/stations`` shows it: a full status (50 tracks of
    history, 20 queued), changed ten times a second."""

    def __init__(self, n: int) -> None:
        self.id = f"s{n}"

    @property
    def status_version(self) -> int:
        return int(time.monotonic() * 10)

    def status(self) -> dict[str, Any]:
        played = [
            {"file": f"{n}.mp3", "title": f"Artist - Title {n}", "started": "2026-12-06T17:00:00Z"}
            for n in range(50)
        ]
        return {
            "id": self.id,
            "name": self.id,
            "mount": f"/{self.id}",
            "connection": {"state": "on air", "reconnects": 0, "attempts": 0, "error": None},
            "now_playing": {"title": "Artist - Title", "file": "a.mp3", "elapsed": 1.5},
            "queue": [{"file": f"q{n}.mp3"} for n in range(20)],
            "history": played,
        }


def read_status(address: tuple[str, int], until: float, answered: list[int]) -> None:
    """GET /api/stations over one keep-alive connection until ``until``."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        while time.monotonic() < until:
            connection.request("GET", "/api/stations")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 and body.startswith(b'{"stations":'):
                answered.append(len(body))
    finally:
        connection.close()


def test_the_air_waits_for_no_other_work(tmp_path: Path, engine: Engine) -> None:
    """A healthy station keeps its lead and sends no silence while, on the
    same engine: 4 stations convert every file they play (2 s each, blocking,
    as libvlc does), a 10,000-file queue is moved, a disk stalls 1.5 s on
    every read, 40 stations start at once (a 20 ms walk in Python each), and
    32 keep-alive readers of ``/api/stations`` (300 stations' status) read
    the control server as fast as it answers."""
    frames = make_frames(240)  # 6 s
    (tmp_path / "a.mp3").write_bytes(b"".join(frames))
    for n in range(3):
        (tmp_path / f"c{n}.mp3").write_bytes(b"".join(make_frames(40)))
    conversions: list[set[Path]] = []

    def converter() -> dict[str, Any]:
        done: set[Path] = set()
        conversions.append(done)

        def convert(path: Path) -> None:
            if path not in done:
                time.sleep(2.0)
                done.add(path)

        return {"prepare": convert, "ready": done.__contains__}

    def walk() -> None:
        until = time.thread_time() + 0.02
        while time.thread_time() < until:
            pass

    converting = [
        station(engine, [tmp_path / f"c{n}.mp3" for n in range(3)], **converter()) for _ in range(4)
    ]
    big = [tmp_path / "a.mp3"] + [tmp_path / f"q{n}.mp3" for n in range(10_000)]
    queued, _, _, queued_feed = station(engine, big)
    stalled = station(engine, [tmp_path / "a.mp3"], feed_class=SlowFeed, stall=1.5)
    starting = [station(engine, [tmp_path / "a.mp3"], start=walk) for _ in range(40)]
    recorder = Leads()
    healthy, sockets, _, _ = station(engine, [tmp_path / "a.mp3"], recorder=recorder)
    others = [*converting, (queued,), stalled, *starting]
    control = ControlServer(
        ("127.0.0.1", 0),
        [Listed(n) for n in range(300)],
        token=None,
        air=engine.air_idle,
        max_connections=40,
        max_per_client=40,  # all 32 come from one address
    )
    answered: list[int] = []
    until = time.monotonic() + 8.0
    readers = [
        threading.Thread(target=read_status, args=(control.address, until, answered))
        for _ in range(32)
    ]
    try:
        control.start()
        for reader in readers:
            reader.start()
        healthy.start()
        for driver, *_ in others:
            driver.start()
        time.sleep(0.5)
        queued.edit(lambda paths: QueueEdit(order=tuple(reversed(paths[1:]))))
        assert queued_feed.queued()[:2] == [big[-1], big[-2]]
        assert recorder.finished.wait(30), "the healthy station never finished"
        [sock] = sockets
        # Every frame of its file, back to back: no silence before its end.
        assert bytes(sock.data).startswith(b"".join(frames))
        first = next(n for n, lead in enumerate(recorder.leads) if lead > 0)
        assert min(recorder.leads[first:]) > 0, "its sends fell behind real time"
        times = [t for t, _ in sock.sends]
        assert max(b - a for a, b in itertools.pairwise(times)) < 0.35
        # The other work did happen meanwhile.
        assert all(tmp_path / "c0.mp3" in done for done in conversions)
        assert len(answered) > 100, "the status readers were not answered"
    finally:
        for reader in readers:
            reader.join(15)
        control.close()
        for driver, *_ in others:
            driver.stop()


def test_a_failed_title_is_tried_again_from_a_timer_and_a_newer_one_goes_instead(
    engine: Engine,
) -> None:
    """Admin title requests: a failure is tried again later (TITLE_TRIES in
    all), from a loop timer: the worker that sent it is free meanwhile. A
    title asked while one is failing replaces it."""
    calls: list[tuple[str, float, str]] = []
    done = threading.Event()
    answers = {"A": ["refused", "refused", None], "B": ["refused"] * 9}

    a_asked = threading.Event()

    def send(address: str, title: str, superseded: Any) -> str | None:
        calls.append((title, time.monotonic(), threading.current_thread().name))
        if title == "B":
            a_asked.wait(5)  # B's request is in flight when A is asked
        problem = answers[title].pop(0)
        if title == "A" and problem is None:
            done.set()
        return problem

    titles = Titles(engine, send, "s")
    engine.call(titles.set, "127.0.0.1", "A")
    assert done.wait(5)
    tried = [(title, at) for title, at, _ in calls]
    assert [title for title, _ in tried] == ["A", "A", "A"]
    # 0.2 s, then 0.4 s between the tries: timers, not a worker asleep.
    assert tried[1][1] - tried[0][1] >= 0.19 and tried[2][1] - tried[1][1] >= 0.39
    calls.clear()

    # B fails; A, asked while B's request is out, goes instead of B's next try.
    answers["A"] = [None]
    done.clear()
    engine.call(titles.set, "127.0.0.1", "B")
    while not calls:
        time.sleep(0.01)
    engine.call(titles.set, "127.0.0.1", "A")
    engine.call(a_asked.set)  # after A's set() on the loop
    assert done.wait(5)
    time.sleep(TITLE_BACKOFF * TITLE_TRIES + 0.5)  # longer than B's tries would take
    assert [title for title, _, _ in calls] == ["B", "A"]


def test_a_title_that_never_goes_is_tried_title_tries_times(engine: Engine) -> None:
    calls: list[float] = []

    def send(address: str, title: str, superseded: Any) -> str | None:
        calls.append(time.monotonic())
        return "refused"

    titles = Titles(engine, send, "s")
    engine.call(titles.set, "127.0.0.1", "A")
    deadline = time.monotonic() + 10
    while len(calls) < TITLE_TRIES and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(TITLE_BACKOFF * TITLE_TRIES + 0.5)
    assert len(calls) == TITLE_TRIES
