"""Listeners over time: the series (virtual time), its bounds and its form in
the state file, a restart keeping it, the sampler, the runner's history
entries, and the API that serves it (GET /api/stations/ID/listeners,
GET /api/listeners)."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.listeners import EVERY, KEPT, ListenerSeries, SeriesView, total
from pushsource.ops.control import ControlServer
from pushsource.ops.listeners import ListenerSampler, ListenerViews
from pushsource.ops.runner import StationRunner
from pushsource.workers.state import PlayState, StateKeeper, load_state, save_state
from tests.test_control import FakeStation, call, call_json, serve
from tests.test_runner import music, runner  # noqa: F401  (fixtures)

T0 = 1_800_000_000.0  # a Unix time on a minute boundary (T0 % 60 == 0)


def counts_of(series: ListenerSeries) -> list[int | None]:
    view = series.view()
    return [v - 1 if v else None for v in view.samples]


# --- the series ---------------------------------------------------------------------------


def test_a_sample_a_minute_keeping_the_minutes_highest() -> None:
    series = ListenerSeries()
    series.add(T0 + 1, 3)
    series.add(T0 + 20, 7)  # same minute: the higher count stays
    series.add(T0 + 40, 5)
    series.add(T0 + 61, 2)
    assert series.view().start == int(T0 // EVERY)
    assert counts_of(series) == [7, 2]


def test_an_unknown_count_is_not_zero() -> None:
    series = ListenerSeries()
    series.add(T0, None)
    series.add(T0 + 60, 0)
    series.add(T0 + 120, None)
    series.add(T0 + 130, 0)  # a known 0 replaces the minute's unknown
    assert counts_of(series) == [None, 0, 0]
    # minutes nobody sampled (the process was down) are unknown, not 0
    series.add(T0 + 5 * 60, 4)
    assert counts_of(series) == [None, 0, 0, None, None, 4]


def test_the_series_keeps_a_week_at_most() -> None:
    series = ListenerSeries()
    for minute in range(KEPT + 30):
        series.add(T0 + minute * EVERY, minute % 100)
    view = series.view()
    assert len(view.samples) == KEPT
    assert view.start == int(T0 // EVERY) + 30
    assert counts_of(series)[-1] == (KEPT + 29) % 100
    # a gap longer than the week leaves only the new sample
    series.add(T0 + (3 * KEPT) * EVERY, 9)
    assert counts_of(series) == [9]
    assert view.samples.itemsize == 2  # two bytes a minute


def test_the_clock_going_back_changes_nothing_kept() -> None:
    series = ListenerSeries()
    series.add(T0 + 120, 5)
    series.add(T0, 50)
    assert counts_of(series) == [5]


def test_counts_beyond_two_bytes_are_capped() -> None:
    series = ListenerSeries()
    series.add(T0, 10**6)
    series.add(T0 + 60, -3)
    assert counts_of(series) == [0xFFFE, 0]


def test_a_readers_view_is_not_torn_by_a_new_minute() -> None:
    series = ListenerSeries()
    series.add(T0, 1)
    before = series.view()
    series.add(T0 + 60, 2)
    assert list(before.samples) == [2] and series.view() is not before


def test_window_pads_unknown_and_total_sums_known_counts() -> None:
    first = int(T0 // EVERY)
    a = SeriesView(first + 1, ListenerSeries().view().samples)
    one = ListenerSeries()
    one.add(T0 + 60, 2)
    one.add(T0 + 120, None)
    two = ListenerSeries()
    two.add(T0 + 120, 0)
    two.add(T0 + 180, 5)
    windows = [s.view().window(first, first + 5) for s in (one, two)]
    assert [list(w) for w in windows] == [[0, 3, 0, 0, 0], [0, 0, 1, 6, 0]]
    assert total(windows, 5) == [None, 2, 0, 5, None]
    assert list(a.window(first, first + 2)) == [0, 0]


# --- the state file -----------------------------------------------------------------------


def test_the_series_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = PlayState()
    for minute in range(KEPT):
        state.listeners.add(T0 + minute * EVERY, None if minute % 7 == 0 else minute % 40)
    keeper = StateKeeper(path, state)
    keeper.changed()
    keeper.save_now()
    # a week of a station's counts stays small on disk
    assert path.stat().st_size < 12_000
    loaded = load_state(path)
    assert loaded.listeners.view() == state.listeners.view()
    # a new sample after the restart goes on from the saved week
    loaded.listeners.add(T0 + KEPT * EVERY, 1)
    assert counts_of(loaded.listeners)[-2:] == [(KEPT - 1) % 40, 1]


def test_the_listeners_are_encoded_again_only_when_they_change(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = PlayState()
    state.listeners.add(T0, 4)
    keeper = StateKeeper(path, state)
    keeper.changed()
    keeper.save_now()
    encoded = keeper._encoder._listeners
    state.queue = ["/music/a.mp3"]  # not the listeners: their text is reused
    keeper.changed()
    keeper.save_now()
    assert keeper._encoder._listeners is encoded
    state.listeners.add(T0 + 60, 5)
    keeper.changed()
    keeper.save_now()
    assert keeper._encoder._listeners is not encoded
    assert counts_of(load_state(path).listeners) == [4, 5]


def test_a_state_file_without_listeners_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = PlayState().to_json()
    del data["listeners"]
    path.write_text(json.dumps(data))
    assert load_state(path).listeners.view().samples.tolist() == []


@pytest.mark.parametrize(
    "bad",
    [
        "nonsense",
        {"every": 30, "start": 1, "samples": ""},
        {"every": 60, "start": -1, "samples": ""},
        {"every": 60, "start": 1, "samples": "!!!"},
        {"every": 60, "start": 1, "samples": base64.b64encode(b"not zlib").decode()},
        {"every": 60, "start": 1, "samples": base64.b64encode(zlib.compress(b"odd")).decode()},
    ],
)
def test_bad_listeners_lose_only_the_listeners(tmp_path: Path, bad: Any) -> None:
    path = tmp_path / "state.json"
    state = PlayState(queue=["/music/a.mp3"])
    data = state.to_json()
    data["listeners"] = bad
    path.write_text(json.dumps(data))
    loaded = load_state(path)
    assert loaded.queue == ["/music/a.mp3"]
    assert len(loaded.listeners.view().samples) == 0


def test_a_packed_bomb_inflates_no_further_than_a_week() -> None:
    packed = base64.b64encode(zlib.compress(bytes(100 * KEPT * 2))).decode()
    series = ListenerSeries.from_json({"every": 60, "start": 10, "samples": packed})
    assert len(series.view().samples) <= KEPT


def test_history_entries_keep_their_listener_counts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    entry = {"file": "a.mp3", "title": "A", "started": "2026-12-01T10:00:00Z", "gain_db": None}
    state = PlayState(
        history=[
            {**entry, "listeners_start": 3, "listeners_end": None},
            {**entry, "listeners_start": 2, "listeners_end": 4, "skipped": True},
        ]
    )
    save_state(path, state)
    loaded = load_state(path).history
    assert loaded[0]["listeners_start"] == 3 and loaded[0]["listeners_end"] is None
    assert loaded[1]["listeners_start"] == 2 and loaded[1]["listeners_end"] == 4


# --- the sampler and the station ----------------------------------------------------------


class Counted:
    def __init__(self, station_id: str, count: int | None) -> None:
        self.id = station_id
        self.count = count
        self.listener_series = ListenerSeries()
        self.fail = False

    def sample_listeners(self, now: float) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.listener_series.add(now, self.count)


def test_the_sampler_samples_every_station_and_survives_one_failing() -> None:
    now = [T0]
    good, bad = Counted("good", 2), Counted("bad", 1)
    bad.fail = True
    sampler = ListenerSampler([bad, good], clock=lambda: now[0])
    sampler.sample()
    now[0] += 60
    good.count = None
    sampler.sample()
    assert counts_of(good.listener_series) == [2, None]


def test_the_sampler_thread_takes_a_last_sample_when_stopped() -> None:
    station = Counted("s", 1)
    sampler = ListenerSampler([station], every=3600)
    sampler.start()
    sampler.stop()
    assert counts_of(station.listener_series)[-1:] == [1]


def _status_page(mount: str, listeners: int) -> bytes:
    source = {"listenurl": f"http://127.0.0.1:9{mount}", "listeners": listeners}
    return json.dumps({"icestats": {"source": source}}).encode()


def test_a_station_samples_its_watch_and_notes_listeners_in_its_history(
    runner: StationRunner,  # noqa: F811
) -> None:
    watch = runner.driver.outputs[0].spec.watch
    assert watch is not None
    runner.sample_listeners(T0)  # nothing read yet: not known
    watch._read = (200, _status_page("/rock", 3))
    runner.sample_listeners(T0 + 60)
    result = runner.feed.cue(None)
    assert result.track is not None
    runner.track_started(result.track)
    watch._read = (200, _status_page("/rock", 5))
    runner.sample_listeners(T0 + 120)
    runner.track_ended(result.track, skipped=False)
    runner.feed.release(result.track.handle)
    [entry] = runner.status()["history"]
    assert (entry["listeners_start"], entry["listeners_end"]) == (3, 5)
    runner.close()  # saves the state a last time
    assert runner._keeper is not None
    loaded = load_state(runner._keeper.path)
    assert counts_of(loaded.listeners) == [None, 3, 5]
    assert (loaded.history[0]["listeners_start"], loaded.history[0]["listeners_end"]) == (3, 5)


# --- the API ------------------------------------------------------------------------------


class Listened(FakeStation):
    def __init__(self, station_id: str, folder: Path) -> None:
        super().__init__(station_id, folder)
        self.listener_series = ListenerSeries()


@pytest.fixture
def listened(tmp_path: Path) -> tuple[ControlServer, Listened, Listened, list[float]]:
    rock, jazz = Listened("rock", tmp_path), Listened("jazz", tmp_path)
    for minute, (r, j) in enumerate([(1, None), (4, 2), (None, 3), (2, 0)]):
        rock.listener_series.add(T0 + minute * EVERY, r)
        jazz.listener_series.add(T0 + minute * EVERY, j)
    now = [T0 + 3 * EVERY + 30]
    server = serve([rock, jazz, FakeStation("plain", tmp_path)])
    server.listener_views = ListenerViews(clock=lambda: now[0])
    return server, rock, jazz, now


def test_api_serves_a_stations_series(listened: Any) -> None:
    server, rock, _, now = listened
    with server:
        status, body = call_json(server, "GET", "/api/stations/rock/listeners?hours=1")
        assert status == 200
        assert body["id"] == "rock" and body["every"] == 60
        assert body["end"] == T0 + 4 * EVERY  # the window ends with the current minute
        assert body["start"] == body["end"] - 3600
        assert len(body["samples"]) == 60
        assert body["samples"][-4:] == [1, 4, None, 2]
        assert body["samples"][0] is None  # before the series: unknown, not 0
        assert body["peak"] == {"listeners": 4, "at": T0 + EVERY}
        assert body["current"] == 2
        # a new sample shows at once (the answer kept is stale then)
        rock.listener_series.add(now[0], 9)
        _, body = call_json(server, "GET", "/api/stations/rock/listeners?hours=1")
        assert body["current"] == 9 and body["peak"]["listeners"] == 9
        # the default window is the whole week kept
        _, body = call_json(server, "GET", "/api/stations/rock/listeners")
        assert len(body["samples"]) == KEPT


def test_api_buckets_by_their_peak(listened: Any) -> None:
    server, *_ = listened
    with server:
        _, body = call_json(server, "GET", "/api/stations/rock/listeners?hours=1&step=2")
        assert body["every"] == 120 and len(body["samples"]) == 30
        assert body["samples"][-2:] == [4, 2]


def test_api_serves_the_total_and_every_station(listened: Any) -> None:
    server, *_ = listened
    with server:
        status, body = call_json(server, "GET", "/api/listeners?hours=1&step=1")
        assert status == 200
        assert body["total"]["samples"][-4:] == [1, 6, 3, 2]
        assert body["total"]["peak"] == {"listeners": 6, "at": T0 + EVERY}
        assert body["total"]["current"] == 2
        assert [s["id"] for s in body["stations"]] == ["rock", "jazz", "plain"]
        assert body["stations"][1]["samples"][-4:] == [None, 2, 3, 0]
        assert body["stations"][2] == {
            "id": "plain",
            "samples": None,
            "peak": None,
            "current": None,
        }
        # by default the overview's sparklines: 24 hours, a point per 10
        # minutes (on fixed minutes), each the peak of its minutes
        _, body = call_json(server, "GET", "/api/listeners")
        assert body["every"] == 600 and body["start"] % 600 == 0
        assert len(body["total"]["samples"]) == 145  # 1444 minutes: the last 4 so far
        assert body["total"]["samples"][-2:] == [None, 6]
        assert body["stations"][0]["samples"][-1] == 4


def test_api_refuses_bad_windows_and_unknown_stations(listened: Any) -> None:
    server, *_ = listened
    with server:
        # every station's week a point a minute is too much to serve at once
        for query in ("hours=0", "hours=169", "step=0", "step=x", "hours=-1", "hours=168&step=1"):
            assert call_json(server, "GET", f"/api/listeners?{query}")[0] == 400, query
        assert call_json(server, "GET", "/api/stations/nope/listeners")[0] == 404
        assert call_json(server, "GET", "/api/stations/plain/listeners")[0] == 404
        status, response, _ = call(server, "POST", "/api/listeners")
        assert status == 405 and response.getheader("Allow") == "GET, HEAD"


def test_a_track_change_reads_no_watch(
    runner: StationRunner,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """track_started/track_ended run on the engine's thread: they take the
    sampler's last count (an attribute), and never parse a status page."""
    watch = runner.driver.outputs[0].spec.watch
    assert watch is not None
    watch._read = (200, _status_page("/rock", 4))
    runner.sample_listeners(T0)
    asked: list[str] = []
    monkeypatch.setattr(watch, "listeners", lambda mount: asked.append(mount))
    result = runner.feed.cue(None)
    assert result.track is not None
    runner.track_started(result.track)
    runner.track_ended(result.track, skipped=True)
    runner.feed.release(result.track.handle)
    assert asked == []
    [entry] = runner.status()["history"][:1]
    assert (entry["listeners_start"], entry["listeners_end"]) == (4, 4)
