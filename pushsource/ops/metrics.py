"""``/metrics`` in Prometheus' text format.

The stations count in plain integers on their own threads (a batch costs no
lock and no label lookup); a custom collector reads them at scrape time, as
exporters do. Only conversion times, which are rare, go into a histogram.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pushsource.ops.runner import Counters

STATES = ("starting", "connecting", "on air", "idle", "reconnecting", "stopped", "failed")
OUTPUT_STATES = ("off", "connecting", "on air", "reconnecting", "failed")


class Observed(Protocol):
    id: str
    counters: Counters

    @property
    def queue_length(self) -> int: ...

    @property
    def connection_state(self) -> str: ...

    @property
    def listeners(self) -> int | None: ...

    def outputs_status(self) -> list[dict[str, Any]]: ...


class _StationCollector:
    def __init__(self, stations: Sequence[Observed]) -> None:
        self._stations = stations

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"pushsource_{name}", doc, labels=["station"])

        def gauge(name: str, doc: str, labels: Sequence[str] = ("station",)) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"pushsource_{name}", doc, labels=list(labels))

        sent = counter("sent_bytes", "Audio bytes Icecast has taken, silence included")
        frames = counter("sent_frames", "MPEG frames Icecast has taken, silence included")
        played = counter("tracks_played", "Tracks played to their end")
        by_hand = counter("tracks_skipped", "Tracks skipped by hand (control API, SIGUSR1)")
        reconnects = counter("reconnects", "Connections to Icecast that were on air and were lost")
        failures = counter(
            "connect_failures", "Connection attempts that failed (an outage may take several)"
        )
        skipped = CounterMetricFamily(
            "pushsource_files_skipped",
            "Files that could not be played, by reason",
            labels=["station", "reason"],
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
        state = gauge(
            "connection_state", "1 for the station's connection state", ("station", "state")
        )
        listeners = gauge(
            "listeners", "Listeners on the station's mounts (all outputs), from Icecast's status"
        )
        live_on = gauge("live_connected", "1 while a DJ is connected to the live input")
        live_time = counter("live_seconds", "Seconds DJs have been connected to the live input")
        # Each output (the station's own URL first) by station, mount and
        # server: one station may send the same mount to two servers.
        where = ("station", "mount", "server")
        out_info = gauge(
            "output_info",
            "1 for each output, its format in the labels",
            (*where, "bitrate", "samplerate", "channels", "converted"),
        )
        out_up = gauge("output_up", "1 while the output is on air", where)
        out_state = gauge("output_state", "1 for the output's connection state", (*where, "state"))
        out_reconnects = CounterMetricFamily(
            "pushsource_output_reconnects",
            "Times the output was on air and was lost while the station played",
            labels=list(where),
        )
        out_attempts = gauge(
            "output_failed_attempts", "Failed attempts since the output was last on air", where
        )
        out_sent = CounterMetricFamily(
            "pushsource_output_bytes_sent", "Audio bytes the output's server has taken",
            labels=list(where),
        )  # fmt: skip
        out_listeners = gauge(
            "output_listeners", "Listeners on the output's mount, from its server's status", where
        )
        for station in self._stations:
            live = getattr(station, "live_input", None)  # None: no live input
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
            # A copy: the cue lane may add a reason while the scrape reads.
            for reason, count in sorted(c.skipped_files.copy().items()):
                skipped.add_metric([station.id, reason], count)
            queue.add_metric(label, station.queue_length)
            lead.add_metric(label, c.lead)
            least.add_metric(label, c.lead if c.min_lead is None else c.min_lead)
            c.min_lead = None
            if c.track_gain_db is not None:
                gain.add_metric(label, c.track_gain_db)
            heard = station.listeners
            if heard is not None:  # not known: no sample rather than a made-up 0
                listeners.add_metric(label, heard)
            now = station.connection_state
            for name in STATES:
                state.add_metric([station.id, name], 1.0 if now == name else 0.0)
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
                    out_state.add_metric([*at, name], 1.0 if output["state"] == name else 0.0)
                out_reconnects.add_metric(at, output["reconnects"])
                out_attempts.add_metric(at, output["attempts"])
                out_sent.add_metric(at, output["bytes_sent"])
                if output["listeners"] is not None:  # not known: no sample
                    out_listeners.add_metric(at, output["listeners"])
        yield from (
            sent, frames, played, by_hand, reconnects, failures, skipped, queue, lead, least,
            gain, state, listeners, live_on, live_time, out_info, out_up, out_state,
            out_reconnects, out_attempts, out_sent, out_listeners,
        )  # fmt: skip


class Metrics:
    """The registry for a process's stations; :meth:`render` is the /metrics body."""

    def __init__(self, stations: Sequence[Observed]) -> None:
        self.registry = CollectorRegistry()
        self._stations = stations
        self.registry.register(_StationCollector(stations))
        self._conversion = Histogram(
            "pushsource_conversion_seconds",
            "Time to convert a file to the station format",
            ["station"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def render(self) -> tuple[bytes, str]:
        for station in self._stations:  # conversions done since the last scrape
            done = station.counters.conversions
            while done:
                self._conversion.labels(station.id).observe(done.popleft())
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
