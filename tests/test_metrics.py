"""/metrics written by hand: the same bytes prometheus_client wrote, at a
bounded cost per station, and read between the air's passes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pushsource import __version__
from pushsource.engine.loop import Engine
from pushsource.ops.metrics import AIR_CHUNK, OUTPUT_STATES, STATES, Metrics
from pushsource.ops.runner import Counters, OutputReading, OutputWhere, StationRunner
from pushsource.ops.settings import OutputSettings, StationSettings
from tests.support.media import make_clean_mp3


class _Reference:
    """The renderer /metrics had before (prometheus_client's families, fed
    from each station's status), kept as the oracle for the bytes."""

    def __init__(self, stations: Sequence[StationRunner]) -> None:
        self.registry = CollectorRegistry()
        self._stations = stations
        self.registry.register(self)
        self._conversion = Histogram(
            "pushsource_conversion_seconds",
            "Time to convert a file to the station format",
            ["station"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def render(self) -> bytes:
        for station in self._stations:
            done = station.counters.conversions
            while done:
                self._conversion.labels(station.id).observe(done.popleft())
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, labels: Sequence[str] = ("station",)) -> Any:
            return CounterMetricFamily(f"pushsource_{name}", doc, labels=list(labels))

        def gauge(name: str, doc: str, labels: Sequence[str] = ("station",)) -> Any:
            return GaugeMetricFamily(f"pushsource_{name}", doc, labels=list(labels))

        where = ("station", "mount", "server")
        sent = counter("sent_bytes", "Audio bytes Icecast has taken, silence included")
        frames = counter("sent_frames", "MPEG frames Icecast has taken, silence included")
        played = counter("tracks_played", "Tracks played to their end")
        by_hand = counter("tracks_skipped", "Tracks skipped by hand (control API, SIGUSR1)")
        reconnects = counter("reconnects", "Connections to Icecast that were on air and were lost")
        failures = counter(
            "connect_failures", "Connection attempts that failed (an outage may take several)"
        )
        skipped = counter(
            "files_skipped", "Files that could not be played, by reason", ("station", "reason")
        )
        queue = gauge("queue_length", "Files waiting to play")
        lead = gauge("lead_seconds", "Audio sent ahead of real time after the last batch")
        least = gauge(
            "lead_min_seconds",
            "The least lead since the last scrape (below 0: late, listeners may starve)",
        )
        gain = gauge(
            "track_gain_db", "The level change of the track playing (the loudness setting)"
        )
        started = gauge(
            "track_started_timestamp_seconds",
            "When the track playing began, Unix time (a resumed one: as if played through)",
        )
        length = gauge("track_duration_seconds", "How long the track playing is, when known")
        build = GaugeMetricFamily(
            "pushsource_build_info",
            "The pushsource version running (always 1)",
            labels=["version"],
        )
        build.add_metric([__version__], 1.0)
        silence = gauge(
            "silence_seconds",
            "The run of digital silence going out, in seconds (0 while there is sound)",
        )
        state = gauge(
            "connection_state", "1 for the station's connection state", ("station", "state")
        )
        listeners = gauge(
            "listeners", "Listeners on the station's mounts (all outputs), from Icecast's status"
        )
        live_on = gauge("live_connected", "1 while a DJ is connected to the live input")
        live_time = counter("live_seconds", "Seconds DJs have been connected to the live input")
        out_info = gauge(
            "output_info",
            "1 for each output, its format in the labels",
            (*where, "bitrate", "samplerate", "channels", "converted"),
        )
        out_up = gauge("output_up", "1 while the output is on air", where)
        out_state = gauge("output_state", "1 for the output's connection state", (*where, "state"))
        out_reconnects = counter(
            "output_reconnects",
            "Times the output was on air and was lost while the station played",
            where,
        )
        out_attempts = gauge(
            "output_failed_attempts", "Failed attempts since the output was last on air", where
        )
        out_sent = counter("output_bytes_sent", "Audio bytes the output's server has taken", where)
        out_listeners = gauge(
            "output_listeners", "Listeners on the output's mount, from its server's status", where
        )
        for station in self._stations:
            live = station.live_input
            if live is not None:
                live_on.add_metric([station.id], 1.0 if live.dj is not None else 0.0)
                live_time.add_metric([station.id], live.live_seconds())
            c = station.counters
            label = [station.id]
            sent.add_metric(label, c.bytes_sent)
            frames.add_metric(label, c.frames_sent)
            played.add_metric(label, c.tracks_played)
            by_hand.add_metric(label, c.tracks_skipped_by_hand)
            reconnects.add_metric(label, c.reconnects)
            failures.add_metric(label, c.connect_failures)
            for reason, count in sorted(c.skipped_files.copy().items()):
                skipped.add_metric([station.id, reason], count)
            queue.add_metric(label, len(station.driver.queued()))
            lead.add_metric(label, c.lead)
            least.add_metric(label, c.lead if c.min_lead is None else c.min_lead)
            c.min_lead = None
            if c.track_gain_db is not None:
                gain.add_metric(label, c.track_gain_db)
            if c.track_started is not None:
                started.add_metric(label, c.track_started)
            if c.track_duration is not None:
                length.add_metric(label, c.track_duration)
            silence.add_metric(label, station.silence_seconds)
            if station.listeners is not None:
                listeners.add_metric(label, station.listeners)
            now = station.connection_state
            for name in STATES:
                state.add_metric([station.id, name.replace(" ", "_")], 1.0 if now == name else 0.0)
            for output in station.outputs_status():
                at = [station.id, output["mount"], output["server"]]
                f = output["format"]
                out_info.add_metric(
                    [*at, str(f["bitrate"]), str(f["samplerate"]), str(f["channels"]),
                     "true" if output["converted"] else "false"],
                    1.0,
                )  # fmt: skip
                out_up.add_metric(at, 1.0 if output["state"] == "on air" else 0.0)
                for name in OUTPUT_STATES:
                    out_state.add_metric(
                        [*at, name.replace(" ", "_")], 1.0 if output["state"] == name else 0.0
                    )
                out_reconnects.add_metric(at, output["reconnects"])
                out_attempts.add_metric(at, output["attempts"])
                out_sent.add_metric(at, output["bytes_sent"])
                if output["listeners"] is not None:
                    out_listeners.add_metric(at, output["listeners"])
        yield from (
            build, sent, frames, played, by_hand, reconnects, failures, skipped, queue, lead,
            least, gain, started, length, silence, state, listeners, live_on, live_time,
            out_info, out_up, out_state, out_reconnects, out_attempts, out_sent, out_listeners,
        )  # fmt: skip


class CountingWatch:
    """A server watch's listener counts; counts the lookups."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked = 0

    def listeners(self, mount: str) -> int | None:
        self.asked += 1
        return self.counts.get(mount)


@pytest.fixture
def stations(tmp_path: Path) -> Iterator[list[StationRunner]]:
    """Twelve stations, built and never started, each in another state: three
    outputs (one converted, one on a backup server), listeners known for some,
    skips, a live input, odd characters in ids and mounts, large counts."""
    music = tmp_path / "music"
    music.mkdir()
    for name in ("a", "b", "c"):
        make_clean_mp3(music / f"{name}.mp3", 0.3, freq=300)
    engine = Engine()  # not started: nothing runs but the scrapes
    runners = []
    for n in range(12):
        settings = StationSettings(
            folder=music,
            url=f"icecast://source:pw@127.0.0.1:9/rock{n}%22x%5Cy",
            id=f"rock{n}",
            name=f"Rock {n}",
            once=True,
            cache=tmp_path / "cache",
            outputs=(
                OutputSettings(
                    url=f"icecast://source:pw@127.0.0.1:9/rock{n}-64",
                    bitrate=64,
                    samplerate=22050,
                    channels=1,
                ),
                OutputSettings(url=f"icecast://source:other@[::1]:8000/rock{n}"),
            ),
        )
        runner = StationRunner(settings, {}, engine=engine)
        runner.feed.refresh()
        own, low, backup = runner.driver.outputs
        own.state, low.state = STATES[n % len(STATES)], OUTPUT_STATES[n % len(OUTPUT_STATES)]
        backup.state = "gone"  # a state the gauge does not name: every sample 0
        own.bytes_sent, low.reconnects, backup.attempts = 48000 * 10**n, n, 2 * n
        if n % 3:
            watch = CountingWatch({own.target.mount: n, low.target.mount: 2})
            own.spec.watch = low.spec.watch = watch
            backup.spec.watch = CountingWatch({})
        runner._state = STATES[n % len(STATES)]
        runner.sent(417 * 10**n, 10 * n, 0.45 - n / 10)
        runner.counters.tracks_played = n
        runner.counters.skipped_files.update({"no_audio": n, 'odd"\\\nreason': 1} if n % 2 else {})
        runner.counters.track_gain_db = -3.25 * n if n % 4 else None
        runner.counters.track_started = 1_765_000_000.25 + n if n % 3 else None
        runner.counters.track_duration = 180.5 * n if n % 2 else None
        if n % 5 == 1:
            dj = object() if n > 5 else None
            runner.live_input = SimpleNamespace(dj=dj, live_seconds=lambda n=n: 12.5 * n)
        if n == 11:
            runner.id = 'odd"\\id'
        runners.append(runner)
    yield runners
    for runner in runners:
        runner.close()
    engine.stop()


def _created(text: bytes) -> bytes:
    """The histograms' creation times (each renderer's own clock) left out."""
    return re.sub(rb"(_created\{[^}]*\}) \S+", rb"\1 T", text)


def _own(text: bytes) -> bytes:
    """pushsource's series only: the process's and the interpreter's (from
    prometheus_client's collectors, which move between two scrapes) left out."""
    lines = text.splitlines(keepends=True)
    return b"".join(
        line for line in lines if not re.match(rb"(# (HELP|TYPE) )?(process|python)_", line)
    )


def test_the_text_is_what_prometheus_client_wrote(stations: list[StationRunner]) -> None:
    reference, metrics = _Reference(stations), Metrics(stations)
    for scrape in range(3):
        for n, runner in enumerate(stations):  # each renderer reads the same values
            runner.counters.min_lead = -0.125 * n if scrape < 2 else None
            runner.counters.conversions.extend([0.3 * n, 42.0] if n % 2 else [])
        old = reference.render()
        for n, runner in enumerate(stations):
            runner.counters.min_lead = -0.125 * n if scrape < 2 else None
            runner.counters.conversions.extend([0.3 * n, 42.0] if n % 2 else [])
        new, _ = metrics.render()
        assert b"pushsource_conversion_seconds_created" in new
        assert b'converted="true"' in new and b"e+12" in new  # the cases are met
        assert b'reason="odd\\"\\\\\\nreason"' in new and b'station="odd\\"\\\\id"' in new
        assert _created(_own(new)) == _created(old)
        assert b'state="on_air"' in new and b'state="on air"' not in new
        for series in (
            b"process_resident_memory_bytes ",
            b"process_cpu_seconds_total ",
            b"process_open_fds ",
            b"process_start_time_seconds ",
            b"python_info{",
            b'pushsource_build_info{version="' + __version__.encode() + b'"} 1.0',
            b'pushsource_track_started_timestamp_seconds{station="rock1"} 1.76500000125e+09',
            b'pushsource_track_duration_seconds{station="rock1"} 180.5',
        ):
            assert b"\n" + series in new, series


def test_a_scrape_does_not_build_the_status(stations: list[StationRunner]) -> None:
    """Per station, a scrape reads counters and attributes: no status, no
    outputs' status, no copy of the queue, one listeners lookup per output
    (before: every station's outputs_status() and a copy of its queue, and the
    listeners looked up twice)."""
    built = {"status": 0, "outputs_status": 0, "queued": 0}
    for runner in stations:
        for name, owner in (("status", runner), ("outputs_status", runner)):
            plain = getattr(owner, name)

            def counted(*args: Any, plain: Any = plain, name: str = name) -> Any:
                built[name] += 1
                return plain(*args)

            setattr(owner, name, counted)
        queued = runner.feed.queued

        def counted_queue(queued: Any = queued) -> Any:
            built["queued"] += 1
            return queued()

        runner.feed.queued = counted_queue  # type: ignore[method-assign]
    outputs = [o for r in stations for o in r.driver.outputs]
    watches = {id(o.spec.watch): o.spec.watch for o in outputs}
    counting = [w for w in watches.values() if isinstance(w, CountingWatch)]
    for watch in counting:
        watch.asked = 0
    Metrics(stations).render()
    assert built == {"status": 0, "outputs_status": 0, "queued": 0}
    watched = sum(isinstance(o.spec.watch, CountingWatch) for o in outputs)
    assert sum(w.asked for w in counting) == watched > 0


class _Air:
    """Engine.air_idle as the scrape sees it: each wait noted in ``log``."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def wait(self, timeout: float | None = None) -> bool:
        self.log.append("wait")
        return True


class _Station:
    """Just what a scrape reads; notes each station read in ``log``."""

    def __init__(self, n: int, log: list[str]) -> None:
        self.id = f"s{n}"
        self.counters = Counters()
        self.queue_length = 0
        self._log = log
        self._where = OutputWhere(f"/s{n}", "127.0.0.1:9", 128, 44100, 2, False)

    @property
    def connection_state(self) -> str:
        self._log.append("read")
        return "connecting"

    def output_readings(self) -> list[OutputReading]:
        return [OutputReading(self._where, "connecting", 0, 0, 0, None)]


def test_a_scrape_reads_the_stations_between_the_air_s_passes() -> None:
    log: list[str] = []
    count = 2 * AIR_CHUNK + 7
    stations = [_Station(n, log) for n in range(count)]
    Metrics(stations, _Air(log)).render()  # type: ignore[arg-type]
    chunks = [AIR_CHUNK, AIR_CHUNK, 7]
    assert log == [step for size in chunks for step in ["wait", *["read"] * size]]


def test_a_station_whose_outputs_change_gets_new_labels() -> None:
    station = _Station(0, [])
    metrics = Metrics([station])
    assert b'mount="/s0"' in metrics.render()[0]
    station._where = OutputWhere("/other", "127.0.0.1:9", 128, 44100, 2, False)
    text = metrics.render()[0]
    assert b'mount="/other"' in text and b'mount="/s0"' not in text
