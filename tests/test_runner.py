"""A station's status and steering (what the control API calls), with a real
folder and real files but no server: the station is not started."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pushsource.engine.loop import Engine
from pushsource.errors import ControlError
from pushsource.ops.console import line
from pushsource.ops.control import ControlServer
from pushsource.ops.logs import JsonFormatter, PlainFormatter, StationFilter
from pushsource.ops.metrics import Metrics
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import OutputSettings, StationSettings
from tests.support.media import make_clean_mp3


def wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def music(tmp_path: Path) -> Path:
    folder = tmp_path / "music"
    folder.mkdir()
    an_hour_ago = time.time() - 3600
    for name in ("a", "b", "c", "d"):
        make_clean_mp3(folder / f"{name}.mp3", 0.3, freq=300)
        os.utime(folder / f"{name}.mp3", (an_hour_ago, an_hour_ago))
    return folder


@pytest.fixture
def runner(music: Path, tmp_path: Path) -> Iterator[StationRunner]:
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        name="Rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    # The folder's first walk, as start() would, but the station never connects.
    station._setup()
    station.feed.refresh()
    yield station
    engine.stop()
    station.close()


def queue_of(runner: StationRunner) -> list[str]:
    return [entry["file"] for entry in runner.status()["queue"]]


def test_status_before_anything_plays(runner: StationRunner) -> None:
    wait_for(lambda: len(queue_of(runner)) == 4)
    status = runner.status()
    assert status["id"] == "rock"
    assert status["name"] == "Rock"
    assert status["mount"] == "/rock"
    assert status["listen_url"] == "http://127.0.0.1:9/rock"
    assert status["connection"] == {
        "state": "starting",
        "reconnects": 0,
        "attempts": 0,
        "error": None,
        "down_since": None,  # not started yet: not down either
        "down_for": None,
    }
    assert status["now_playing"] is None
    assert queue_of(runner) == ["a.mp3", "b.mp3", "c.mp3", "d.mp3"]
    assert "pw" not in repr(runner)


def test_move_remove_enqueue(runner: StationRunner, music: Path) -> None:
    wait_for(lambda: len(queue_of(runner)) == 4)
    runner.move("d.mp3", 0)
    assert queue_of(runner)[0] == "d.mp3"
    # The station takes the first file; the folder queue keeps the order.
    taken = runner.feed.cue(None).track
    assert taken is not None and taken.path.name == "d.mp3"
    runner.feed.release(taken.handle)
    runner.move("c.mp3", 0)
    runner.remove("b.mp3")
    wait_for(lambda: queue_of(runner) == ["c.mp3", "a.mp3"])
    with pytest.raises(ControlError) as gone:
        runner.remove("b.mp3")
    assert gone.value.status == 404
    runner.enqueue("b.mp3")
    wait_for(lambda: queue_of(runner) == ["c.mp3", "a.mp3", "b.mp3"])
    with pytest.raises(ControlError) as twice:
        runner.enqueue("b.mp3")
    assert twice.value.status == 409
    with pytest.raises(ControlError) as outside:
        runner.enqueue("../music/a.mp3")
    assert outside.value.status == 400
    with pytest.raises(ControlError) as bad_index:
        runner.move("a.mp3", 7)
    assert bad_index.value.status == 400
    # What the station would get next follows the edits.
    got = [runner.feed.cue(None).track for _ in range(3)]
    assert [t.path.name if t else None for t in got] == ["c.mp3", "a.mp3", "b.mp3"]
    for track in got:
        assert track is not None
        runner.feed.release(track.handle)


def test_upload_lands_in_the_folder_and_is_queued(runner: StationRunner, music: Path) -> None:
    data = make_clean_mp3(music.parent / "new.mp3", 0.3, freq=500)
    name = runner.upload("new.mp3", io.BytesIO(data), len(data))
    assert name == "new.mp3"
    assert (music / "new.mp3").read_bytes() == data
    wait_for(lambda: "new.mp3" in queue_of(runner))
    assert [p.name for p in music.iterdir() if p.name.startswith(".")] == []
    for bad, status in (
        ("new.mp3", 409),
        ("../x.mp3", 400),
        (".hidden.mp3", 400),
        ("notes.txt", 400),
        ("", 400),
    ):
        with pytest.raises(ControlError) as caught:
            runner.upload(bad, io.BytesIO(data), len(data))
        assert caught.value.status == status, bad
    with pytest.raises(ControlError, match="ended early"):
        runner.upload("short.mp3", io.BytesIO(data[:100]), len(data))
    assert not (music / "short.mp3").exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_an_upload_gets_the_mode_the_umask_gives(
    runner: StationRunner, music: Path, umask: int, mode: int
) -> None:
    data = make_clean_mp3(music.parent / "new.mp3", 0.3, freq=500)
    old = os.umask(umask)
    try:
        runner.upload("new.mp3", io.BytesIO(data), len(data))
    finally:
        os.umask(old)
    assert (music / "new.mp3").stat().st_mode & 0o777 == mode  # not mkstemp's 0600


def test_an_upload_is_one_log_line(
    runner: StationRunner, music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_control import TOKEN, call

    caplog.set_level(logging.INFO, logger="pushsource")
    data = make_clean_mp3(music.parent / "new.mp3", 0.3, freq=500)
    with ControlServer(("127.0.0.1", 0), [runner], token=TOKEN) as server:
        server.start()
        status, _, _ = call(server, "PUT", "/api/stations/rock/files/up.mp3", data)
    assert status == 201
    told = [r.getMessage() for r in caplog.records if "up.mp3" in r.getMessage()]
    assert told == [f"station rock: uploaded up.mp3 ({len(data)} bytes) (from 127.0.0.1)"]


def test_each_control_action_is_one_line_naming_the_station_and_the_client(
    runner: StationRunner, music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_control import TOKEN, call

    wait_for(lambda: len(queue_of(runner)) == 4)
    caplog.set_level(logging.INFO, logger="pushsource")
    with ControlServer(("127.0.0.1", 0), [runner], token=TOKEN) as server:
        server.start()
        base = "/api/stations/rock"
        assert call(server, "POST", f"{base}/queue/move", {"file": "c.mp3", "index": 0})[0] == 200
        assert call(server, "POST", f"{base}/queue/remove", {"file": "b.mp3"})[0] == 200
        assert call(server, "POST", f"{base}/queue", {"file": "b.mp3"})[0] == 200
        assert call(server, "POST", f"{base}/queue", {"file": "nope.mp3"})[0] == 404
    told = [r for r in caplog.records if r.getMessage().startswith("station rock:")]
    assert [r.getMessage() for r in told] == [
        "station rock: moved c.mp3 to position 1 of the queue (from 127.0.0.1)",
        "station rock: removed b.mp3 from the queue (from 127.0.0.1)",
        "station rock: queued b.mp3 by hand (from 127.0.0.1)",
    ]  # a refused one is its answer's business, not a line
    fields = [(r.event, r.file, r.station, r.client) for r in told]  # type: ignore[attr-defined]
    assert fields == [
        ("queue_move", "c.mp3", "rock", "127.0.0.1"),
        ("queue_remove", "b.mp3", "rock", "127.0.0.1"),
        ("queue", "b.mp3", "rock", "127.0.0.1"),
    ]
    # With several stations the plain line does not name it twice; JSON has it as a field.
    StationFilter(["rock", "jazz"]).filter(told[2])
    assert (
        PlainFormatter(show_station=True)
        .format(told[2])
        .endswith("INFO station rock: queued b.mp3 by hand (from 127.0.0.1)")
    )
    entry = json.loads(JsonFormatter().format(told[2]))
    assert entry["station"] == "rock" and entry["event"] == "queue"
    assert entry["file"] == "b.mp3" and entry["client"] == "127.0.0.1"
    assert entry["mount"] == runner.target.mount


def test_conversion_times_are_kept_bounded_while_nobody_scrapes(runner: StationRunner) -> None:
    for n in range(5000):  # /metrics off: no scrape ever takes them
        runner.counters.conversions.append(n / 1000)
    kept = len(runner.counters.conversions)
    assert 0 < kept <= 1000, kept
    text = Metrics([runner]).render()[0].decode()
    assert f'pushsource_conversion_seconds_count{{station="rock"}} {kept:.1f}' in text
    assert not runner.counters.conversions  # a scrape takes what was kept


class _AddsWhileRead(dict[str, int]):
    """skipped_files as the cue lane may change it: a reason comes while the
    scrape goes through them."""

    def items(self) -> Iterator[tuple[str, int]]:  # type: ignore[override]
        view = super().items()
        for n, pair in enumerate(view):
            if n == 0:
                self["unreadable"] = 1
            yield pair


def test_a_scrape_reads_a_copy_of_the_skip_counts(runner: StationRunner) -> None:
    runner.counters.skipped_files = _AddsWhileRead({"gone": 1, "no_audio": 2})
    text = Metrics([runner]).render()[0].decode()  # before: RuntimeError, a 500
    assert 'pushsource_files_skipped_total{reason="no_audio",station="rock"} 2.0' in text


def test_metrics_render(runner: StationRunner) -> None:
    runner.sent(4000, 10, 0.45)
    runner.sent(4000, 10, 0.40)
    runner.counters.conversions.append(1.5)
    runner.connection("on air")
    runner.connection("reconnecting", "reset")
    body, content_type = Metrics([runner]).render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'pushsource_sent_bytes_total{station="rock"} 8000.0' in text
    assert 'pushsource_sent_frames_total{station="rock"} 20.0' in text
    assert 'pushsource_reconnects_total{station="rock"} 1.0' in text
    assert 'pushsource_lead_min_seconds{station="rock"} 0.4' in text
    assert 'pushsource_connection_state{state="reconnecting",station="rock"} 1.0' in text
    assert 'pushsource_conversion_seconds_count{station="rock"} 1.0' in text
    assert "pushsource_queue_length" in text
    # Listeners are not known yet (no status read): no sample, rather than a 0.
    assert "# TYPE pushsource_listeners gauge" in text
    assert 'pushsource_listeners{station="rock"}' not in text


def test_console_line() -> None:
    status = {
        "name": "Rock",
        "connection": {"state": "on air", "reconnects": 2},
        "now_playing": {"title": "Band - Song", "elapsed": 61.0, "duration": 122.0},
        "queue": [{"file": "x"}, {"file": "y"}],
    }
    text = line(status).plain
    assert text.startswith("Rock")
    assert "on air" in text
    assert "[" + "=" * 12 + "-" * 12 + "] 1:01/2:02 Band - Song" in text
    assert "(queue 2)" in text and "reconnects 2" in text
    assert "(queue 2, 1 listener)" in line({**status, "listeners": 1}).plain
    assert "(queue 2, 3 listeners)" in line({**status, "listeners": 3}).plain


def test_log_formats_name_the_station_and_hide_passwords() -> None:
    record = logging.LogRecord(
        "pushsource", logging.INFO, __file__, 1, "to %s", ("icecast://u:s3cr3t@h/m",), None
    )
    StationFilter(["MainThread"]).filter(record)
    assert record.station == "MainThread"  # type: ignore[attr-defined]
    plain = PlainFormatter(show_station=True).format(record)
    assert plain.endswith("INFO [MainThread] to icecast://u:***@h/m")
    entry = JsonFormatter().format(record)
    assert '"station": "MainThread"' in entry and "s3cr3t" not in entry


def test_json_lines_carry_the_fields_a_line_passes_and_plain_ones_do_not_change() -> None:
    fields = {
        "event": "track_start", "mount": "/rock", "title": "Band - Song", "file": "01.mp3",
        "error": "to icecast://u:s3cr3t@h/m failed", "unknown": "not a field",
    }  # fmt: skip
    record = logging.LogRecord(
        "pushsource", logging.INFO, __file__, 1, "playing %s", ("Band - Song",), None
    )
    record.__dict__.update(fields)
    entry = json.loads(JsonFormatter().format(record))
    assert {k: entry[k] for k in ("event", "mount", "title", "file")} == {
        "event": "track_start", "mount": "/rock", "title": "Band - Song", "file": "01.mp3",
    }  # fmt: skip
    assert entry["error"] == "to icecast://u:***@h/m failed"  # redacted like the message
    assert "unknown" not in entry
    assert PlainFormatter(show_station=False).format(record).endswith("INFO playing Band - Song")


def test_status_lists_unplayable_files_once_and_marks_skips(
    runner: StationRunner, music: Path
) -> None:
    from pushsource.errors import TrackError

    broken = music / "broken.mp3"
    broken.write_bytes(b"not audio at all")
    error = TrackError(broken, "no MPEG audio frames")
    runner.file_skipped(error)
    runner.file_skipped(error)  # refused again when its turn comes: listed once
    status = runner.status()
    assert [(u["file"], u["reason"]) for u in status["unplayable"]] == [
        ("broken.mp3", "no MPEG audio frames")
    ]
    assert status["format"] == {"bitrate": 128, "samplerate": 44100, "channels": 2}


def test_public_url_is_the_listen_url(music: Path, tmp_path: Path) -> None:
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@icecast:8000/rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        public_url="https://radio.example.org/rock",
    )
    engine = Engine().start()
    try:
        station = StationRunner(settings, {}, engine=engine)
        assert station.status()["listen_url"] == "https://radio.example.org/rock"
    finally:
        engine.stop()
        station.close()


def test_library_finds_files_by_every_word(runner: StationRunner, music: Path) -> None:
    wait_for(lambda: len(queue_of(runner)) == 4)
    (music / "Live Set").mkdir()
    make_clean_mp3(music / "Live Set" / "Encore.mp3", 0.3, freq=300)
    (music / "notes.txt").write_text("not audio", "utf-8")
    runner.remove("b.mp3")
    everything = runner.library()
    assert everything["total"] == 5
    # (whether the new file is queued yet depends on when the folder sees it settle)
    assert [(f["file"], f["queued"]) for f in everything["files"][:4]] == [
        ("a.mp3", True),
        ("b.mp3", False),
        ("c.mp3", True),
        ("d.mp3", True),
    ]
    assert [f["file"] for f in runner.library("set ENCORE")["files"]] == ["Live Set/Encore.mp3"]
    two = runner.library("", limit=2)
    assert [(f["file"], f["queued"]) for f in two["files"]] == [("a.mp3", True), ("b.mp3", False)]
    assert two["total"] == 5


def test_two_queue_edits_at_once_both_take_effect(runner: StationRunner) -> None:
    wait_for(lambda: len(queue_of(runner)) == 4)
    edits = [lambda: runner.move("d.mp3", 0), lambda: runner.remove("b.mp3")]
    barrier = threading.Barrier(len(edits))

    def edit(job: Callable[[], None]) -> None:
        barrier.wait()
        job()

    threads = [threading.Thread(target=edit, args=(job,)) for job in edits]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Each edit read the queue and wrote it back on the engine's thread, in
    # turn: neither undid the other.
    assert queue_of(runner) == ["d.mp3", "a.mp3", "c.mp3"]


# -- readings that tell the truth (issue 14) ------------------------------------


def test_reconnects_count_outages_not_attempts(runner: StationRunner) -> None:
    runner.connection("connecting")
    runner.connection("reconnecting", "refused")  # never on air: not a reconnect
    runner.connection("connecting")
    runner.connection("on air")
    for outage in range(2):
        runner.connection("reconnecting", "connection lost")
        for attempt in range(4 + outage):
            runner.connection("connecting")
            runner.connection("reconnecting", "refused")
            assert runner.status()["connection"]["attempts"] == attempt + 1
        runner.connection("connecting")
        runner.connection("on air")
    connection = runner.status()["connection"]
    assert connection["reconnects"] == 2 and connection["attempts"] == 0
    assert runner.counters.connect_failures == 1 + 4 + 5
    text = Metrics([runner]).render()[0].decode()
    assert 'pushsource_reconnects_total{station="rock"} 2.0' in text
    assert 'pushsource_connect_failures_total{station="rock"} 10.0' in text


def test_a_restart_shows_neither_played_files_as_queued_nor_an_empty_history(
    music: Path, tmp_path: Path
) -> None:
    from pushsource.workers.state import PlayState, save_state

    state = PlayState()
    for name in ("a", "c"):
        state.mark_played(music / f"{name}.mp3")
    state.history = [
        {"file": "c.mp3", "title": "c", "started": "2026-12-01T10:03:00Z", "gain_db": None},
        {"file": "a.mp3", "title": "a", "started": "2026-12-01T10:00:00Z", "gain_db": None},
    ]
    save_state(tmp_path / "state.json", state)
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    try:
        station._setup()
        station.feed.refresh()
        wait_for(lambda: len(queue_of(station)) == 2)
        assert queue_of(station) == ["b.mp3", "d.mp3"]
        assert station.queue_length == 2
        assert [h["file"] for h in station.status()["history"]] == ["c.mp3", "a.mp3"]
        # A file changed since it played plays again, and shows so.
        os.utime(music / "a.mp3", (time.time() - 1800, time.time() - 1800))
        station.feed.refresh()
        assert queue_of(station) == ["a.mp3", "b.mp3", "d.mp3"]
        # The file resumed is playing, not still to come.
        resumed = station.feed.cue((music / "b.mp3", 0))
        assert resumed.track is not None and resumed.resumed_one
        station.feed.release(resumed.track.handle)
        assert queue_of(station) == ["a.mp3", "d.mp3"]
        station.feed.refresh()
        assert queue_of(station) == ["a.mp3", "d.mp3"]
    finally:
        engine.stop()
        station.close()


def test_history_is_kept_in_the_state_file(runner: StationRunner, music: Path) -> None:
    from pushsource.workers.state import load_state

    result = runner.feed.cue(None)
    assert result.track is not None
    runner.track_started(result.track)
    runner.track_ended(result.track, skipped=True)
    runner.feed.release(result.track.handle)
    runner.close()  # saves the state a last time
    assert runner._keeper is not None
    [entry] = load_state(runner._keeper.path).history
    assert entry["file"] == "a.mp3" and entry["skipped"] is True


def test_metrics_know_when_the_track_playing_began_and_how_long_it_is(
    runner: StationRunner,
) -> None:
    import dataclasses
    import time

    result = runner.feed.cue(None)
    assert result.track is not None
    track = result.track
    counters = runner.counters
    assert counters.track_started is None and counters.track_duration is None
    before = time.time()
    runner.track_started(track)
    assert before <= counters.track_started <= time.time()  # type: ignore[operator]
    assert counters.track_duration == track.duration and track.duration
    runner.track_ended(track, skipped=False)
    assert counters.track_started is None and counters.track_duration is None
    # A track resumed 30 s in began, as far as an alert can tell, 30 s ago.
    resumed = dataclasses.replace(track, resumed=True, before=30.0)
    before = time.time()
    runner.track_started(resumed)
    assert before - 30.0 <= counters.track_started <= time.time() - 30.0  # type: ignore[operator]
    runner.track_ended(resumed, skipped=True)
    runner.feed.release(track.handle)


def test_elapsed_stands_still_off_air_and_goes_on_where_it_stopped(tmp_path: Path) -> None:
    """The station's machine and feed in virtual time (the Sim of test_station),
    its effects told to the runner as the engine would: what the status shows
    while on air, reconnecting, and on air again."""
    from pushsource.core import effects as fx
    from pushsource.errors import IcecastError
    from tests.support.sim import Sim

    folder = tmp_path / "music"
    folder.mkdir()
    make_clean_mp3(folder / "long.mp3", 12.0, freq=300)
    an_hour_ago = time.time() - 3600
    os.utime(folder / "long.mp3", (an_hour_ago, an_hour_ago))
    settings = StationSettings(
        folder=folder,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        idle="stop",
    )
    holder: list[Sim] = []
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine, clock=lambda: holder[0].now)
    station._setup()
    station.feed.refresh()
    down = IcecastError("cannot connect to 127.0.0.1:9: Connection refused")

    class Told(Sim):
        def apply(self, effects: list[fx.Effect]) -> None:
            for e in effects:
                sent = len(self.conns[-1].chunks) if self.conns else 0
                super().apply([e])
                match e:
                    case fx.Send(data, frames, lead) if len(self.conns[-1].chunks) > sent:
                        station.sent(len(data), frames, lead)  # not the one lost
                    case fx.Started(track):
                        station.track_started(track)
                    case fx.Ended(track, skipped):
                        station.track_ended(track, skipped=skipped)
                    case fx.State(state, error):
                        station.connection(state, error)

    # On air at once; dropped at the 30th batch (about 3 s in); down for ~3 s.
    sim = Told(
        station.driver.machine,
        station.feed,
        plan=lambda n: ("accept", 30) if n == 1 else down if n < 4 else "accept",
    )
    holder.append(sim)
    shown: list[tuple[float, str, float]] = []

    def look() -> None:
        status = station.status()
        if status["now_playing"] is not None:
            state = status["connection"]["state"]
            shown.append((sim.now, state, status["now_playing"]["elapsed"]))

    for n in range(60):
        sim.schedule(1000.0 + n * 0.25, look)
    sim.schedule(1015.0, lambda: sim.step(sim.machine.stop))
    try:
        sim.run()
    finally:
        engine.stop()
        station.close()
    on_air = [(t, e) for t, s, e in shown if s == "on air" and t < sim.conns[1].opened]
    assert len(on_air) > 5
    for t, elapsed in on_air:  # what listeners heard: no more than a batch off
        assert t - 1000.0 - 0.15 <= elapsed <= t - 1000.0 + 0.05
    away = [(t, e) for t, s, e in shown if s in ("reconnecting", "connecting")]
    assert len(away) >= 8  # ~3 s of it
    frozen = {e for _, e in away}
    assert len(frozen) == 1, away  # stands still
    [stopped_at] = frozen
    assert abs(stopped_at - (away[0][0] - 1000.0)) < 0.5
    back = [(t, e) for t, s, e in shown if s == "on air" and t > sim.conns[-1].opened]
    assert back
    t, elapsed = back[0]
    # It goes on from where the listeners were (plus, at most, the lead that
    # Icecast had taken), not from the time spent away.
    lead = station.settings.lead
    assert stopped_at <= elapsed <= stopped_at + lead + (t - sim.conns[-1].opened) + 0.1


def test_a_cue_says_when_files_still_settling_may_be_ready(music: Path, tmp_path: Path) -> None:
    """A file still being copied when a track is cued must show in the queue
    once it settled, not only at the next cue a whole track later: the cue
    says when to look again."""
    make_clean_mp3(music / "e.mp3", 0.3, freq=900)  # just written: still settling
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        settle=0.5,
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    try:
        station._setup()
        result = station.feed.cue(None)
        assert result.track is not None and result.track.path.name == "a.mp3"
        station.feed.release(result.track.handle)
        assert "e.mp3" not in queue_of(station)
        assert result.again is not None and 0 < result.again <= 0.5 + 0.1
        time.sleep(result.again)
        again = station.feed.refresh()
        while again is not None:  # (the folder may ask for a little longer)
            time.sleep(again)
            again = station.feed.refresh()
        assert queue_of(station) == ["b.mp3", "c.mp3", "d.mp3", "e.mp3"]
    finally:
        engine.stop()
        station.close()


# -- several outputs (issue 13): what operators see of each -------------------------


class CountingWatch:
    """A server watch's listener counts, as its status probe would have read them."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def listeners(self, mount: str) -> int | None:
        return self.counts.get(mount)


@pytest.fixture
def outputs_runner(music: Path, tmp_path: Path) -> Iterator[StationRunner]:
    """rock on its own URL, /rock-64 converted on the same server, /rock on a
    backup server: built, never connected (the outputs' states set by hand)."""
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        name="Rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        outputs=(
            OutputSettings(
                url="icecast://source:pw@127.0.0.1:9/rock-64",
                bitrate=64,
                samplerate=22050,
                channels=1,
            ),
            OutputSettings(url="icecast://source:other@backup:8000/rock"),
        ),
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    own, low, backup = station.driver.outputs
    own.state, own.bytes_sent = "on air", 48000
    low.state, low.bytes_sent, low.reconnects = "on air", 24000, 1
    backup.state, backup.error, backup.reconnects, backup.attempts = (
        "reconnecting", "connection refused", 3, 2
    )  # fmt: skip
    own.spec.watch = low.spec.watch = CountingWatch({"/rock": 5, "/rock-64": 2})
    backup.spec.watch = CountingWatch({})  # its status not read yet
    yield station
    engine.stop()
    station.close()


def test_metrics_have_each_output(outputs_runner: StationRunner) -> None:
    text = Metrics([outputs_runner]).render()[0].decode()
    own = 'mount="/rock",server="127.0.0.1:9",station="rock"'
    low = 'mount="/rock-64",server="127.0.0.1:9",station="rock"'
    backup = 'mount="/rock",server="backup:8000",station="rock"'
    assert f"pushsource_output_up{{{own}}} 1.0" in text
    assert f"pushsource_output_up{{{low}}} 1.0" in text
    assert f"pushsource_output_up{{{backup}}} 0.0" in text
    assert (
        'pushsource_output_state{mount="/rock",server="backup:8000",state="reconnecting",'
        'station="rock"} 1.0'
    ) in text
    assert (
        'pushsource_output_state{mount="/rock",server="backup:8000",state="on_air",'
        'station="rock"} 0.0'
    ) in text
    assert f"pushsource_output_reconnects_total{{{low}}} 1.0" in text
    assert f"pushsource_output_reconnects_total{{{backup}}} 3.0" in text
    assert f"pushsource_output_failed_attempts{{{backup}}} 2.0" in text
    assert f"pushsource_output_bytes_sent_total{{{own}}} 48000.0" in text
    assert f"pushsource_output_bytes_sent_total{{{low}}} 24000.0" in text
    assert f"pushsource_output_listeners{{{own}}} 5.0" in text
    assert f"pushsource_output_listeners{{{low}}} 2.0" in text
    # The backup's count is not known yet: no sample rather than a made-up 0.
    assert f"pushsource_output_listeners{{{backup}}}" not in text
    assert (
        'pushsource_output_info{bitrate="64",channels="1",converted="true",mount="/rock-64",'
        'samplerate="22050",server="127.0.0.1:9",station="rock"} 1.0'
    ) in text
    assert (
        'pushsource_output_info{bitrate="128",channels="2",converted="false",mount="/rock",'
        'samplerate="44100",server="backup:8000",station="rock"} 1.0'
    ) in text
    assert text.count("pushsource_output_info{") == 3


def test_console_line_shows_each_output(outputs_runner: StationRunner) -> None:
    text = line(outputs_runner.status()).plain
    assert "  /rock on air · /rock-64 on air (1) · backup:8000/rock reconnecting (3)" in text
    assert "\n" not in text
    # One output (the station's own URL): nothing more than before.
    alone = {**outputs_runner.status(), "outputs": outputs_runner.status()["outputs"][:1]}
    assert "·" not in line(alone).plain


def test_api_serves_each_output(outputs_runner: StationRunner) -> None:
    from tests.test_control import call_json

    with ControlServer(("127.0.0.1", 0), [outputs_runner], token=None) as server:
        server.start()
        for path in ("/api/stations/rock", "/api/stations?summary=1"):
            status, body = call_json(server, "GET", path)
            assert status == 200
            station = body if "id" in body else body["stations"][0]
            outputs = station["outputs"]
            assert [(o["mount"], o["server"], o["state"]) for o in outputs] == [
                ("/rock", "127.0.0.1:9", "on air"),
                ("/rock-64", "127.0.0.1:9", "on air"),
                ("/rock", "backup:8000", "reconnecting"),
            ], path
            assert outputs[1]["format"] == {"bitrate": 64, "samplerate": 22050, "channels": 1}
            assert outputs[1]["converted"] and not outputs[0]["converted"]
            assert [o["listeners"] for o in outputs] == [5, 2, None]
            assert [o["listeners_note"] for o in outputs] == [None, None, "not on air"]
            assert station["listeners_note"] is None  # known: nothing to explain
            assert station["listeners"] == 7  # the station's: every output's it knows
            assert outputs[2]["error"] == "connection refused"
            assert outputs[2]["reconnects"] == 3
            assert "other" not in json.dumps(body) and "pw" not in json.dumps(body)


@pytest.fixture
def live_station(music: Path, tmp_path: Path) -> Iterator[tuple[StationRunner, Engine]]:
    """A station with a live input, not started: a test feeds its machine."""
    from pushsource.ops.settings import LiveSettings

    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        live=LiveSettings(("127.0.0.1", 0), "/live", (("alice", "pw"),)),
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    yield station, engine
    engine.stop()
    station.close()


def test_a_djs_set_is_what_the_status_says_is_on_air(
    live_station: tuple[StationRunner, Engine],
) -> None:
    from pushsource.core.frames import parse_header
    from tests.synth import make_frames

    station, engine = live_station
    machine = station.driver.machine
    now = engine.loop.time()
    # Connected, no audio yet: nothing aired, no history entry, skip still acts.
    machine.live_start(now, "alice")
    assert station.live_input is not None and station.live_input.on_session is None
    status = station.status()
    assert status["live"]["on_air"] is False and status["history"] == []
    frames = make_frames(40, seed=5)
    header = parse_header(frames[0])
    assert header is not None
    machine.live_audio(now, header, frames)
    live = machine.live
    assert live is not None and live.on_air
    station.live_title(live, "Alice - Tune")  # as the engine does when it goes on air
    station.live_title(live, "Alice - Tune")  # set again on a new connection: once
    status = station.status()
    playing = status["now_playing"]
    assert playing["title"] == "Alice - Tune" and playing["live"] == "alice"
    assert playing["elapsed"] >= 0 and playing["duration"] is None
    on = status["live"]
    assert on["on_air"] is True and on["user"] == "alice" and on["title"] == "Alice - Tune"
    assert on["since"].endswith("Z") and "T" in on["since"]  # ISO, like the history's
    assert on["frames_in"] == 40
    assert on["format"] == {
        "bitrate": header.bitrate,
        "samplerate": header.sample_rate,
        "channels": header.channels,
    }
    [entry] = status["history"]
    assert entry["title"] == "Alice - Tune" and entry["live"] == "alice"
    station.live_title(live, "Alice - Next")
    assert [e["title"] for e in station.status()["history"]] == ["Alice - Next", "Alice - Tune"]
    # Skip would do nothing to the DJ: refused, with the reason.
    with pytest.raises(ControlError) as refused:
        station.skip()
    assert refused.value.status == 409 and "alice is live" in str(refused.value)


def test_a_kick_in_the_grace_ends_it_now_and_refuses_the_user(
    live_station: tuple[StationRunner, Engine],
) -> None:
    from pushsource.core.frames import parse_header
    from tests.synth import make_frames

    station, engine = live_station
    machine = station.driver.machine
    frames = make_frames(40, seed=5)
    header = parse_header(frames[0])
    assert header is not None

    def dj_came_and_left() -> None:
        now = engine.loop.time()
        machine.live_start(now, "alice")
        machine.live_audio(now, header, frames)
        machine.live_end(now)

    engine.run(dj_came_and_left)
    assert machine.live is not None and machine.live.on_air  # the grace: still on air
    station.kick(10)
    assert machine.live is None  # the folder's again, not after the grace
    live_input = station.live_input
    assert live_input is not None and "alice" in live_input.banned
    with pytest.raises(ControlError) as nobody:
        station.kick()
    assert nobody.value.status == 409


def test_a_track_a_set_cut_and_skipped_is_marked_skipped_under_the_djs_titles(
    live_station: tuple[StationRunner, Engine],
) -> None:
    from pushsource.core.live import Live

    station, _engine = live_station
    station._setup()
    station.feed.refresh()
    result = station.feed.cue(None)
    assert result.track is not None
    station.track_started(result.track)
    live = Live("alice", on_air=True)
    station.live_title(live, "Alice - Tune")
    station.track_ended(result.track, skipped=True)  # interrupted = "skip"
    history = station.status()["history"]
    assert [(e["title"], e.get("skipped")) for e in history] == [
        ("Alice - Tune", None),
        (result.track.title, True),
    ]
    # Bob within alice's grace (the machine goes on with the same Live): his set.
    live.user = "bob"
    station.live_title(live, "Live: bob")
    assert station.status()["history"][0] | {"started": ""} == {
        "file": "",
        "title": "Live: bob",
        "started": "",
        "live": "bob",
    }
    station.feed.release(result.track.handle)
