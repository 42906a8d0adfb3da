"""``/metrics`` in Prometheus' text format.

The stations count in plain integers on their own threads (a batch costs no
lock and no label lookup); a scrape reads them and writes the text itself,
line by line, as prometheus_client's generate_latest would (same names,
labels in the same order, same number format). Going through its Metric
objects cost 26 samples, each a dict of labels escaped and sorted again, per
station: 3.6-4.7 s a scrape with 10,000 stations. Only conversion times,
which are rare, go into a prometheus_client histogram; the process's own
series (``process_*``: memory, CPU, open files; ``python_*``) come from
prometheus_client's standard collectors.

Label values have no spaces (``state="on_air"``), so they can be matched
without quoting games in PromQL and Grafana.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from pushsource import __version__
from pushsource.engine.loop import PASS_WAIT
from pushsource.ops.runner import Counters, OutputReading, OutputWhere

STATES = ("starting", "connecting", "on air", "idle", "reconnecting", "stopped", "failed")
OUTPUT_STATES = ("off", "connecting", "on air", "reconnecting", "failed")
#: Stations read between two waits for the air's pass to end: a scrape of
#: 10,000 must not run while the stations send (it would take turns at the
#: interpreter lock with them), yet a few ms of it may.
AIR_CHUNK: Final = 100


class Observed(Protocol):
    id: str
    counters: Counters

    @property
    def queue_length(self) -> int: ...

    @property
    def connection_state(self) -> str: ...

    def output_readings(self) -> list[OutputReading]: ...


def _family(name: str, kind: str, doc: str) -> str:
    """The HELP and TYPE lines (a counter's name ends in _total, as
    generate_latest writes it)."""
    name = f"pushsource_{name}_total" if kind == "counter" else f"pushsource_{name}"
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


# In the order they are written.
_FAMILIES: Final = (
    _family("sent_bytes", "counter", "Audio bytes Icecast has taken, silence included"),
    _family("sent_frames", "counter", "MPEG frames Icecast has taken, silence included"),
    _family("tracks_played", "counter", "Tracks played to their end"),
    _family("tracks_skipped", "counter", "Tracks skipped by hand (control API, SIGUSR1)"),
    _family("reconnects", "counter", "Connections to Icecast that were on air and were lost"),
    _family(
        "connect_failures",
        "counter",
        "Connection attempts that failed (an outage may take several)",
    ),
    _family("files_skipped", "counter", "Files that could not be played, by reason"),
    _family("queue_length", "gauge", "Files waiting to play"),
    _family("lead_seconds", "gauge", "Audio sent ahead of real time after the last batch"),
    _family(
        "lead_min_seconds",
        "gauge",
        "The least lead since the last scrape (below 0: late, listeners may starve)",
    ),
    _family(
        "track_gain_db", "gauge", "The level change of the track playing (the loudness setting)"
    ),
    _family(
        "track_started_timestamp_seconds",
        "gauge",
        "When the track playing began, Unix time (a resumed one: as if played through)",
    ),
    _family("track_duration_seconds", "gauge", "How long the track playing is, when known"),
    _family(
        "silence_seconds",
        "gauge",
        "The run of digital silence going out, in seconds (0 while there is sound)",
    ),
    _family("connection_state", "gauge", "1 for the station's connection state"),
    _family(
        "listeners",
        "gauge",
        "Listeners on the station's mounts (all outputs), from Icecast's status",
    ),
    _family("live_connected", "gauge", "1 while a DJ is connected to the live input"),
    _family("live_seconds", "counter", "Seconds DJs have been connected to the live input"),
    # Each output (the station's own URL first) by station, mount and server:
    # one station may send the same mount to two servers.
    _family("output_info", "gauge", "1 for each output, its format in the labels"),
    _family("output_up", "gauge", "1 while the output is on air"),
    _family("output_state", "gauge", "1 for the output's connection state"),
    _family(
        "output_reconnects",
        "counter",
        "Times the output was on air and was lost while the station played",
    ),
    _family("output_failed_attempts", "gauge", "Failed attempts since the output was last on air"),
    _family("output_bytes_sent", "counter", "Audio bytes the output's server has taken"),
    _family(
        "output_listeners", "gauge", "Listeners on the output's mount, from its server's status"
    ),
)
(SENT, FRAMES, PLAYED, BY_HAND, RECONNECTS, FAILURES, SKIPPED, QUEUE, LEAD, LEAST, GAIN, STARTED,
 LENGTH, SILENCE, STATE, LISTENERS, LIVE_ON, LIVE_TIME, OUT_INFO, OUT_UP, OUT_STATE,
 OUT_RECONNECTS, OUT_ATTEMPTS, OUT_SENT, OUT_LISTENERS) = range(len(_FAMILIES))  # fmt: skip


_go_string: Callable[[float], str] = floatToGoString  # it has no annotations


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """floatToGoString's text; most values are small counts, written without it."""
    if type(value) is int and 0 <= value < 1_000_000:  # under 1e6, Go has no exponent
        return f"{value}.0"
    return _go_string(value)


def _label(state: str) -> str:
    """A state as a label value: no spaces ("on air" -> "on_air")."""
    return state.replace(" ", "_")


#: Which build this is, as Prometheus' *_build_info convention has it.
_BUILD_INFO: Final = (
    "# HELP pushsource_build_info The pushsource version running (always 1)\n"
    "# TYPE pushsource_build_info gauge\n"
    f'pushsource_build_info{{version="{__version__}"}} 1.0\n'
)


def _state_lines(heads: list[str], names: Sequence[str]) -> dict[str | None, str]:
    """The lines of a state gauge by the state it is in (None: one not named, all 0)."""
    return {
        now: "".join(
            f"{head}{'1.0' if now == name else '0.0'}\n"
            for head, name in zip(heads, names, strict=True)
        )
        for now in (*names, None)
    }


class _OutputText:
    """An output's label text, made once (the labels never change)."""

    def __init__(self, station: str, where: OutputWhere) -> None:
        self.where = where
        mount, server = f'mount="{_escape(where.mount)}"', f'server="{_escape(where.server)}"'
        at = f"{mount},{server}"
        self.at = f'{{{at},station="{station}"}} '
        converted = "true" if where.converted else "false"
        # Labels in the order of their names, as generate_latest sorts them.
        self.info = (
            f'pushsource_output_info{{bitrate="{where.bitrate}",channels="{where.channels}",'
            f'converted="{converted}",{mount},samplerate="{where.samplerate}",{server},'
            f'station="{station}"}} 1.0\n'
        )
        self.states = _state_lines(
            [
                f'pushsource_output_state{{{at},state="{_label(name)}",station="{station}"}} '
                for name in OUTPUT_STATES
            ],
            OUTPUT_STATES,
        )


class _StationText:
    """A station's label text, made once."""

    def __init__(self, station_id: str) -> None:
        self.id = station_id
        self.escaped = _escape(station_id)
        self.label = f'{{station="{self.escaped}"}} '
        self.states = _state_lines(
            [
                f'pushsource_connection_state{{state="{_label(n)}",station="{self.escaped}"}} '
                for n in STATES
            ],
            STATES,
        )
        self.outputs: list[_OutputText] = []

    def output(self, n: int, where: OutputWhere) -> _OutputText:
        """The text of output ``n``, made again only if its labels are new."""
        outputs = self.outputs
        if n < len(outputs) and outputs[n].where is where:
            return outputs[n]
        text = _OutputText(self.escaped, where)
        if n < len(outputs):
            outputs[n] = text
        else:
            outputs.append(text)
        return text


class Metrics:
    """The metrics of a process's stations; :meth:`render` is the /metrics body.

    ``air``: the engine's Engine.air_idle; the scrape reads the stations
    between the air's passes, AIR_CHUNK at a time (None: at once)."""

    def __init__(self, stations: Sequence[Observed], air: threading.Event | None = None) -> None:
        self.registry = CollectorRegistry()
        # The process's memory, CPU and open files, the interpreter's version
        # and its collector: what every Prometheus client exports.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._stations = stations
        self._air = air
        self._text: dict[int, _StationText] = {}  # by id(station): the stations stay
        self._conversion = Histogram(
            "pushsource_conversion_seconds",
            "Time to convert a file to the station format",
            ["station"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )

    def render(self) -> tuple[bytes, str]:
        lines: list[list[str]] = [[] for _ in _FAMILIES]
        stations = self._stations
        for start in range(0, len(stations), AIR_CHUNK):
            if self._air is not None:
                self._air.wait(PASS_WAIT)
            for station in stations[start : start + AIR_CHUNK]:
                self._station(station, lines)
        for station in stations:  # conversions done since the last scrape
            done = station.counters.conversions
            while done:
                self._conversion.labels(station.id).observe(done.popleft())
        text = "".join(
            f"{head}{''.join(body)}" for head, body in zip(_FAMILIES, lines, strict=True)
        )
        body = _BUILD_INFO + text
        return body.encode() + generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _labels(self, station: Observed) -> _StationText:
        text = self._text.get(id(station))
        if text is None or text.id != station.id:
            text = self._text[id(station)] = _StationText(station.id)
        return text

    def _station(self, station: Observed, lines: list[list[str]]) -> None:
        text = self._labels(station)
        label = text.label
        c = station.counters
        lines[SENT].append(f"pushsource_sent_bytes_total{label}{_number(c.bytes_sent)}\n")
        lines[FRAMES].append(f"pushsource_sent_frames_total{label}{_number(c.frames_sent)}\n")
        lines[PLAYED].append(f"pushsource_tracks_played_total{label}{_number(c.tracks_played)}\n")
        lines[BY_HAND].append(
            f"pushsource_tracks_skipped_total{label}{_number(c.tracks_skipped_by_hand)}\n"
        )
        lines[RECONNECTS].append(f"pushsource_reconnects_total{label}{_number(c.reconnects)}\n")
        lines[FAILURES].append(
            f"pushsource_connect_failures_total{label}{_number(c.connect_failures)}\n"
        )
        # A copy: the cue lane may add a reason while the scrape reads.
        for reason, count in sorted(c.skipped_files.copy().items()):
            lines[SKIPPED].append(
                f'pushsource_files_skipped_total{{reason="{_escape(reason)}",'
                f'station="{text.escaped}"}} {_number(count)}\n'
            )
        lines[QUEUE].append(f"pushsource_queue_length{label}{_number(station.queue_length)}\n")
        lead, least = c.lead, c.min_lead
        lines[LEAD].append(f"pushsource_lead_seconds{label}{_number(lead)}\n")
        lines[LEAST].append(
            f"pushsource_lead_min_seconds{label}{_number(lead if least is None else least)}\n"
        )
        c.min_lead = None
        gain = c.track_gain_db
        if gain is not None:
            lines[GAIN].append(f"pushsource_track_gain_db{label}{_number(gain)}\n")
        started, length = c.track_started, c.track_duration
        if started is not None:  # no track playing: no sample
            lines[STARTED].append(
                f"pushsource_track_started_timestamp_seconds{label}{_number(started)}\n"
            )
        if length is not None:
            lines[LENGTH].append(f"pushsource_track_duration_seconds{label}{_number(length)}\n")
        quiet: Any = getattr(station, "silence_seconds", None)  # None: not counted
        if quiet is not None:
            lines[SILENCE].append(f"pushsource_silence_seconds{label}{_number(quiet)}\n")
        now = station.connection_state
        states = text.states
        lines[STATE].append(states.get(now) or states[None])
        live: Any = getattr(station, "live_input", None)  # None: no live input
        if live is not None:
            on = "1.0" if live.dj is not None else "0.0"
            lines[LIVE_ON].append(f"pushsource_live_connected{label}{on}\n")
            lines[LIVE_TIME].append(
                f"pushsource_live_seconds_total{label}{_number(live.live_seconds())}\n"
            )
        heard: list[int] = []
        for n, output in enumerate(station.output_readings()):
            out = text.output(n, output.where)
            at, state = out.at, output.state
            lines[OUT_INFO].append(out.info)
            up = "1.0" if state == "on air" else "0.0"
            lines[OUT_UP].append(f"pushsource_output_up{at}{up}\n")
            lines[OUT_STATE].append(out.states.get(state) or out.states[None])
            lines[OUT_RECONNECTS].append(
                f"pushsource_output_reconnects_total{at}{_number(output.reconnects)}\n"
            )
            lines[OUT_ATTEMPTS].append(
                f"pushsource_output_failed_attempts{at}{_number(output.attempts)}\n"
            )
            lines[OUT_SENT].append(
                f"pushsource_output_bytes_sent_total{at}{_number(output.bytes_sent)}\n"
            )
            if output.listeners is not None:  # not known: no sample
                heard.append(output.listeners)
                lines[OUT_LISTENERS].append(
                    f"pushsource_output_listeners{at}{_number(output.listeners)}\n"
                )
        if heard:  # the mounts' sum; not known: no sample rather than a made-up 0
            lines[LISTENERS].append(f"pushsource_listeners{label}{_number(sum(heard))}\n")
