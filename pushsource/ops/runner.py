"""Stations at work: each built from its settings, run on the engine,
watched (status, history, counters) and steered (skip, queue edits, uploads).

Several stations share one process; one that fails (a wrong password, a server
gone for good) says why and stops, and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple
from urllib.parse import quote

from pushsource.core.effects import Cued
from pushsource.core.icy import METAINT
from pushsource.core.listeners import ListenerSeries
from pushsource.core.live import Interrupted, Live
from pushsource.core.station import Idle, Pacing, Retry, StationMachine
from pushsource.core.target import IcecastTarget, StationInfo, redact
from pushsource.engine.loop import Engine, Lane
from pushsource.engine.outputs import Output
from pushsource.engine.station import StationDriver
from pushsource.errors import ConfigError, ControlError, PushsourceError, TrackError
from pushsource.ops.build import build_outputs, connector, titles_for, watch_of
from pushsource.ops.config import default_id
from pushsource.ops.settings import (
    StationSettings,
    output_format,
    resolve_target,
)
from pushsource.workers.catalog import Catalog
from pushsource.workers.feed import Feed, ListSource, TrackSource
from pushsource.workers.folder import (
    AUDIO_EXTENSIONS,
    FolderQueue,
    QueueEdit,
    inside,
    is_eligible,
    playable,
    scan,
    twin,
    upload_name_ok,
)
from pushsource.workers.recorder import Recording, RecordTemplate, RecordWriter, SetRecorder
from pushsource.workers.state import (
    FileStamp,
    PlayState,
    PositionFile,
    StateKeeper,
    check_state_path,
    default_state_path,
    go_on_from,
    load_state,
    position_path,
)
from pushsource.workers.tracks import TrackInfo, skipped
from pushsource.workers.transcode import Resolver, StationFormat, Transcoder, default_cache_dir

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from pushsource.workers.loudness import Leveller

log = logging.getLogger("pushsource")

HISTORY: int = 50
#: Queued files whose titles and lengths come from the tags (the rest show
#: their names), and how many of them every status build has read: the
#: overview builds every station's status, so the rest are read only when a
#: station's view asks for its library (as it does when it opens).
QUEUE_TITLES: int = 50
QUEUE_TITLES_ALWAYS: int = 5
#: Uploads land under a hidden name that the folder ignores, then move into place.
_UPLOAD_PREFIX = ".pushsource-upload-"
#: Conversion times kept for the next scrape (a scrape every few seconds sees them all).
CONVERSIONS_KEPT = 1000


def _new_part(folder: Path) -> tuple[int, str]:
    """A new hidden ``.part`` file in ``folder``, open for writing, with the mode
    any file the operator drops in gets (0666 less the umask: 0644 usually),
    where mkstemp's 0600 would hide it from a server's other users. Raises OSError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        path = os.path.join(folder, f"{_UPLOAD_PREFIX}{secrets.token_hex(8)}.part")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free upload name in {folder}")


@dataclass
class Counters:
    """What a station did, for /metrics; plain numbers, added on the engine's
    thread (no lock: only it writes; readers take a snapshot)."""

    bytes_sent: int = 0
    frames_sent: int = 0
    tracks_played: int = 0
    tracks_skipped_by_hand: int = 0
    reconnects: int = 0  # outages: connections that were on air and were lost
    connect_failures: int = 0  # connection attempts that failed (an outage may take many)
    lead: float = 0.0  # seconds of audio sent ahead of real time, after the last batch
    min_lead: float | None = None  # the least seen since the last scrape
    skipped_files: dict[str, int] = field(default_factory=dict)  # by reason
    #: Seconds, not yet scraped; the latest only: with /metrics off nobody takes them.
    conversions: deque[float] = field(default_factory=lambda: deque(maxlen=CONVERSIONS_KEPT))
    track_gain_db: float | None = None  # the level change of the track playing (loudness on)
    #: The track playing: when it began (Unix time; a resumed track's audio
    #: before counts as played then) and how long it is (None: not known).
    track_started: float | None = None
    track_duration: float | None = None


@dataclass(frozen=True)
class OutputWhere:
    """An output's fixed labels for /metrics: where it goes, in which format."""

    mount: str
    server: str
    bitrate: int
    samplerate: int
    channels: int
    converted: bool


class OutputReading(NamedTuple):
    """An output as /metrics reads it: its labels and its numbers now."""

    where: OutputWhere
    state: str
    reconnects: int
    attempts: int
    bytes_sent: int
    listeners: int | None  # None: not known


@dataclass(frozen=True)
class _Playing:
    track: Cued
    file: str
    title: str
    duration: float | None
    bitrate: int
    gain_db: float | None
    gain_note: str = ""


class StationRunner:
    """One station from its settings. Construction checks everything it can
    without connecting (raises ConfigError); :meth:`start` starts it."""

    def __init__(
        self,
        settings: StationSettings,
        environ: Mapping[str, str],
        *,
        engine: Engine,
        observer: BaseObserver | None = None,
        clock: Any = time.monotonic,
        announce_errors: bool = True,
    ) -> None:
        self._announce_errors = announce_errors  # log the error that stops the station
        self.settings = settings
        self.target: IcecastTarget = resolve_target(settings, environ)
        self.id = settings.id or default_id(self.target.mount)
        self.counters = Counters()
        self.error: PushsourceError | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "starting"
        self._last_error: str | None = None
        self._playing: _Playing | None = None
        # What the station sent last: (track, seconds of it sent, when those
        # are all heard); elapsed is read from it, and stands still off air.
        self._heard: tuple[Cued, float, float] | None = None
        self._off_air_since: float | None = None
        self._down_since: str | None = None  # _off_air_since as a wall-clock time, for the page
        self._attempts = 0  # failed attempts since the station was last on air
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._unplayable: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._set: _Set | None = None  # the DJ's set on air (or the last one)
        self._recording: Recording | None = None  # the set's file, once open
        #: Bumped after each change to what status() says, but for elapsed
        #: times and counters: readers keep its serialized status until then.
        self.status_version = 0
        # Queued paths as inside() resolved them, each once (on a control
        # thread): an edit compares them without a syscall per queued file.
        self._real: dict[Path, Path | None] = {}

        folder = settings.folder
        if not folder.is_dir():
            raise ConfigError(f"music folder {folder} is not a directory")
        self.folder = folder.resolve()
        if settings.max_retries is not None and settings.max_retries < 0:
            raise ConfigError("--max-retries must be 0 or more")
        fmt = StationFormat(settings.samplerate, settings.channels, settings.bitrate)
        key = f"{self.target.host}:{self.target.port}{self.target.mount}"
        cache = settings.cache or default_cache_dir(key)
        self._transcoder = Transcoder(cache, fmt)
        self._leveller: Leveller | None = None
        if settings.loudness is not None:  # imported only then: start-up time
            from pushsource.workers.loudness import Leveller

            self._leveller = Leveller(settings.loudness, cache / "loudness")
        resolver = Resolver(
            fmt,
            self._transcoder,
            strict_bitrate=settings.strict_bitrate,
            converted=self.counters.conversions.append,
            leveller=self._leveller,
        )
        self.info = StationInfo(
            name=settings.name,
            description=settings.description,
            genre=settings.genre,
            url=settings.station_url,
            public=settings.public,
        )
        self._queue: FolderQueue | None = None
        keeper: StateKeeper | None = None
        resume: list[tuple[Path, int]] = []
        self._order: list[Path] = []
        source: TrackSource
        if settings.once:
            paths = scan(folder)
            if not paths:
                log.warning("nothing to play in %s", folder)
            source = ListSource(paths)
            played = PlayState()
        else:
            keeper, resume = _restore(settings.state, self.target, self.folder)
            self._order = [Path(p) for p in keeper.state.queue]
            self._queue = queue = FolderQueue(folder, settle=settings.settle, observer=observer)
            source = queue
            played = keeper.state
        self._keeper = keeper
        self._played = played
        #: Listeners at the sampler's last look (ListenerSampler, not the
        #: engine's thread): what a history entry records at a track's start
        #: and end, an attribute read on the engine's thread.
        self._listeners_now: int | None = None
        self._history.extend(dict(entry) for entry in played.history)  # from the last run
        # More outputs: each other format gets each track converted once, ahead.
        built = build_outputs(
            settings, environ, self.target, fmt, cache, engine, self.counters.conversions.append
        )
        outputs, alternates, alt_ready = built.outputs, built.alternates, built.ready
        self._alt_transcoders = built.transcoders
        self.output_settings = settings.outputs
        idle = Idle(settings.idle)
        looping = idle is Idle.LOOP and not settings.once
        self.feed = Feed(
            source,
            resolve=resolver.resolve,
            prepare=resolver.prepare,
            was_played=played.was_played,
            mark_played=played.mark_played,
            unplayable=self.file_skipped,
            library=(lambda: scan(self.folder)) if looping else None,
            shuffle=settings.shuffle,
            gain=resolver.gain,
            alternates=alternates,
            ready=lambda path: resolver.ready(path) and all(ready(path) for ready in alt_ready),
            trim=settings.trim_silence,
        )
        self._catalog = Catalog()  # titles and lengths for the queue, library, up next
        self._tags_lane = Lane(engine, "tags", self.id)
        self._tags_busy = False
        fmt_header = fmt.header()
        inside = settings.titles == "stream"
        machine = StationMachine(
            silence=fmt_header,
            headers=self.info.headers(fmt.bitrate, fmt.sample_rate, fmt.channels),
            name=self.info.name or "",
            once=settings.once,
            idle=idle,
            pacing=Pacing(lead=settings.lead, batch=min(settings.batch, settings.lead)),
            retry=Retry(limit=settings.max_retries),
            resume=resume,
            crossfade=settings.crossfade,
            # The station's own output carries ICY blocks: the pacing counts them.
            metaint=METAINT if inside and self.target.protocol == "icecast" else None,
            silence_alarm=settings.silence_alarm,
            listen_url=redact(self.listen_url()),
            mount=self.target.mount,
            **_live_options(settings),
        )
        self._engine = engine
        timeout = settings.timeout
        target = self.target
        self._watch = watch_of(engine, target)
        self.driver = StationDriver(
            engine,
            machine,
            self.feed,
            target,
            events=self,
            connect=connector(timeout, titles_inside=inside),
            titles=titles_for(target, timeout),
            keeper=keeper,
            watch=self._watch,
            start=self._setup,
            name=self.id,
            outputs=outputs,
            retry=Retry(limit=settings.max_retries),
        )
        self._done = threading.Event()
        self.live_input, self._harbor = self._live_input(settings, engine, machine, fmt)
        self.driver.recorder = self._set_recorder(settings, engine, fmt_header)
        # Once (/metrics keeps its label text while the object is the same),
        # from outputs_status(): the labels are the status' own values.
        self._where = [
            OutputWhere(
                o["mount"], o["server"], o["format"]["bitrate"], o["format"]["samplerate"],
                o["format"]["channels"], o["converted"],
            )
            for o in self.outputs_status()
        ]  # fmt: skip

    def _live_input(
        self, settings: StationSettings, engine: Engine, machine: StationMachine, fmt: Any
    ) -> tuple[Any, Any]:
        """The station's live input on its listen address's harbor (shared), if any."""
        live = settings.live
        if live is None:
            return None, None
        from pushsource.engine.harbor import LiveInput

        harbor = harbor_of(engine, live.listen)
        live_input = LiveInput(
            station=self.id,
            mount=live.mount or self.target.mount,
            users=dict(live.users),
            sample_rate=fmt.sample_rate,
            channels=fmt.channels,
            machine=machine,
            step=self.driver.live,
            bitrate=fmt.bitrate,
            convert=live.convert,
        )
        harbor.add(live_input)
        return live_input, harbor

    def _set_recorder(
        self, settings: StationSettings, engine: Engine, fmt: Any
    ) -> SetRecorder | None:
        """DJ sets recorded (``record`` in [station.live]), on the process's one
        record writer; None when not asked for."""
        live = settings.live
        self._record_writer: RecordWriter | None = None
        if live is None or live.record is None:
            return None
        template = RecordTemplate(live.record)
        for user, _password in live.users:
            # A set written into the music folder would be queued and played.
            where = Path(os.path.realpath(template.render(self.id, user, 0.0).parent))
            if where.is_relative_to(self.folder):
                raise ConfigError(
                    f"the record path {live.record} puts {user}'s sets in the music folder "
                    f"{self.folder}, which would play them: record them elsewhere"
                )
        writer = engine.watch_of(("record writer", 0, False), lambda: RecordWriter(engine.air_idle))
        self._record_writer = writer
        return SetRecorder(
            template,
            self.id,
            writer,
            frame_seconds=fmt.duration,
            bytes_per_second=fmt.bitrate * 1000 / 8,
            call=engine.call,
            events=self,
            default_title=live.title,
        )

    def __repr__(self) -> str:
        return f"StationRunner({self.id!r}, {str(self.target)!r})"

    # -- a reload (ops.fleet)

    def leave_harbor(self) -> None:
        """Take the live input off its (shared) harbor, hanging up on a DJ
        still connected to it: the harbor's other stations go on."""
        live, harbor = self.live_input, self._harbor
        if live is None or harbor is None:
            return

        self._engine.run(lambda: harbor.remove(live))

    def settle_saves(self, timeout: float) -> None:
        """Wait (a reload's thread) for a play-state save the station had in
        flight: the last one, from close(), must land after it, since the
        station's next run starts from that file."""
        deadline = time.monotonic() + timeout
        while self.driver.saving and time.monotonic() < deadline:
            time.sleep(0.01)

    def take_live_users(self, settings: StationSettings) -> None:
        """A reload changed only ``[station.live]``'s users: the next logins
        are checked against them (a DJ on air now stays); nothing else moves."""
        live = self.live_input
        if live is not None and settings.live is not None:
            users = dict(settings.live.users)

            def take() -> None:
                live.users = users

            self._engine.run(take)
        self.settings = settings
        self._changed()

    @property
    def harbor(self) -> Any:
        """The harbor (live input listener) the station is on, shared; None without one."""
        return self._harbor

    # -- running

    def start(self) -> None:
        """Start watching the folder and streaming, on the engine."""
        if self._harbor is not None:
            self._harbor.start()
        self.driver.start()

    def stop(self) -> None:
        """Stop cleanly (safe in a signal handler)."""
        self.driver.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the station to end; returns whether it has."""
        return self._done.wait(timeout)

    def close(self, *, harbor: bool = True) -> None:
        """Once the station has ended (the engine stopped, or a reload took
        the station away): stop watching, take its live input off the harbor
        (with ``harbor``, the harbor closes with its last: a reload closes
        the harbors no station listens on itself, once the new ones are on),
        save the state a last time."""
        if self._queue is not None:
            self._queue.stop()
        if self._harbor is not None:
            self.leave_harbor()
            if harbor and not self._harbor.inputs:
                self._harbor.close()
        if self._record_writer is not None:  # the sets' files closed and tagged
            self._record_writer.close()
        self._transcoder.close()
        for transcoder in self._alt_transcoders:
            transcoder.close()
        if self._leveller is not None:
            self._leveller.close()
        if self._keeper is not None:
            self._keeper.changed()
            self._keeper.save_now()
            if self._keeper.positions is not None:
                self._keeper.positions.close()

    def _setup(self) -> None:
        """On a worker, before the first cue: the folder's first walk."""
        if self._queue is not None:
            self._queue.on_event = self._folder_news
            self._queue.start(order=self._order)
            root = self._queue.root
            with contextlib.suppress(Exception):  # tidying the cache must never stop the music
                files = scan(root)
                self._transcoder.prune(files)
                for transcoder in self._alt_transcoders:
                    transcoder.prune(files)
                if self._leveller is not None:
                    self._leveller.prune()

    def _folder_news(self) -> None:
        """The folder saw an event (watchdog's thread): the queue changes on the
        engine's thread, so the status changes after that, in the same order."""
        self.driver.news()
        self._engine.call(self._changed)

    def _changed(self) -> None:
        self.status_version += 1

    def done(self, error: PushsourceError | None) -> None:
        if error is not None:
            self.error = error
            if self._announce_errors:
                log.error("%s", error)
        self._changed()
        self._done.set()

    # -- Events (on the station's threads)

    def connection(self, state: str, error: str | None = None) -> None:
        with self._lock:
            was, self._state = self._state, state
            self._last_error = error if state in ("reconnecting", "failed") else None
            if state == "reconnecting":
                if was == "on air":  # an outage; the attempts after it are not more
                    self.counters.reconnects += 1
                else:
                    self.counters.connect_failures += 1
                    self._attempts += 1
            elif state == "on air":
                self._attempts = 0
            if state == "on air":
                self._off_air_since = self._down_since = None
            elif self._off_air_since is None:
                self._off_air_since = self._clock()
                self._down_since = _now()
            self._changed()

    def live_title(self, live: Live, title: str) -> None:
        """A DJ's title went on air with their audio (the first one with their
        first frame): the set and the history have it (``file`` empty, ``live``
        the user). A DJ refused, or who never sent audio, gets no entry."""
        with self._lock:
            dj_set = self._set
            # A new set: a new DJ, or another one back within the last one's grace.
            if dj_set is None or dj_set.live is not live or dj_set.user != live.user:
                dj_set = self._set = _Set(live, live.user, _now(), self._clock())
                rec = self._recording
                if rec is not None and rec.live is live and rec.user == live.user:
                    dj_set.recording = self._recording_fields(rec)
            elif dj_set.title == title:  # set again on a new connection: the same entry
                return
            dj_set.title = title
            entry = {"file": "", "title": title, "started": _now(), "live": dj_set.user}
            entry.update(dj_set.recording)
            dj_set.entries.append(entry)
            self._history.appendleft(entry)
            self._keep_history()
            self._changed()

    # -- a DJ's set recorded (issue 22; on the engine's thread)

    def recording_opened(self, rec: Recording) -> None:
        """The set's file is open: its history entries link to it."""
        with self._lock:
            self._recording = rec
            dj_set = self._set
            if dj_set is not None and dj_set.live is rec.live and dj_set.user == rec.user:
                dj_set.recording = self._recording_fields(rec)
                for entry in dj_set.entries:
                    entry.update(dj_set.recording)
                self._keep_history()
                self._changed()

    def recording_ended(self, rec: Recording) -> None:
        if self._recording is rec:
            self._recording = None

    def _recording_fields(self, rec: Recording) -> dict[str, str]:
        recorder = self.driver.recorder
        if rec.final is None or recorder is None:
            return {}
        name = recorder.template.name_of(rec.final)
        return {"recording": str(rec.final), "recording_url": self._recording_url(name)}

    def _recording_url(self, name: str) -> str:
        return f"/api/stations/{quote(self.id, safe='')}/recordings/{quote(name, safe='')}"

    def recording_file(self, name: str) -> Path | None:
        """The file of a set this station recorded, by its name in the API
        (GET /api/stations/ID/recordings/NAME): one its history links to,
        under the record path's folder; None for anything else."""
        recorder = self.driver.recorder
        if recorder is None:
            return None
        url = self._recording_url(name)
        with self._lock:
            found = next(
                (e["recording"] for e in self._history if e.get("recording_url") == url), None
            )
        if not isinstance(found, str):
            return None
        path = Path(found)
        root = Path(os.path.realpath(recorder.template.root))
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(root):  # moved, or a link put there since
            return None
        return path

    def track_started(self, track: Cued) -> None:
        playing = _Playing(
            track=track,
            file=self._relative(track.path),
            title=track.title,
            duration=track.duration,
            bitrate=track.bitrate,
            gain_db=_rounded(track.gain_db),
            gain_note=track.gain_note,
        )
        # Its tags were read to open it: the queue and library show them from now.
        self._catalog.put(track.path, TrackInfo(track.title, track.duration, track.bitrate))
        counters = self.counters
        counters.track_gain_db = playing.gain_db
        counters.track_started = time.time() - track.before
        counters.track_duration = track.duration
        with self._lock:
            self._playing = playing
            if not track.resumed:
                self._history.appendleft(
                    {
                        "file": playing.file,
                        "title": playing.title,
                        "started": _now(),
                        "gain_db": playing.gain_db,
                        "duration": _seconds(playing.duration),
                        "listeners_start": self._listeners_now,
                    }
                )
                self._keep_history()
            self._changed()

    def track_ended(self, track: Cued, *, skipped: bool) -> None:
        counters = self.counters
        if skipped:
            counters.tracks_skipped_by_hand += 1
        else:
            counters.tracks_played += 1
        with self._lock:
            if self._playing is not None and self._playing.track is track:
                # Its entry: the newest but for a DJ's titles (a set cut it).
                ended = next((e for e in self._history if not e.get("live")), None)
                if ended is not None and ended["file"] == self._playing.file:
                    ended["listeners_end"] = self._listeners_now
                    if skipped:
                        ended["skipped"] = True
                    self._keep_history()
                self._playing = None
                counters.track_gain_db = counters.track_started = counters.track_duration = None
            self._changed()

    def file_skipped(self, exc: TrackError) -> None:
        if skipped(exc):
            reason = _reason_kind(exc.reason)
            files = self.counters.skipped_files
            files[reason] = files.get(reason, 0) + 1
            entry = {"file": self._relative(exc.path), "reason": exc.reason, "at": _now()}
            with self._lock:
                self._unplayable.appendleft(entry)
                self._changed()

    def sent(self, nbytes: int, frames: int, lead: float) -> None:
        # On the engine's thread, right after the machine made the batch.
        machine = self.driver.machine
        track, seconds = machine.playing, machine.elapsed()
        if track is not None and seconds is not None:
            self._heard = (track, seconds, self._clock() + max(0.0, lead))
        counters = self.counters
        counters.bytes_sent += nbytes
        counters.frames_sent += frames
        counters.lead = lead
        if counters.min_lead is None or lead < counters.min_lead:
            counters.min_lead = lead

    # -- status (any thread)

    @property
    def connection_state(self) -> str:
        with self._lock:
            return self._state

    @property
    def queue_length(self) -> int:
        return self.driver.queue_length()

    @property
    def silence_seconds(self) -> float:
        """The run of digital silence going out (0 while there is sound): one
        attribute of the machine read, from any thread."""
        return self.driver.machine.dead_air.seconds(self._engine.loop.time())

    @property
    def listeners(self) -> int | None:
        """Listeners on the station's mounts (every output's), from the server
        watches' status probes (every FULL_EVERY-th probe reads the counts);
        None while none is known."""
        counts = [
            output.spec.watch.listeners(output.target.mount)
            for output in self.driver.outputs
            if output.spec.watch is not None
        ]
        known = [count for count in counts if count is not None]
        return sum(known) if known else None

    @property
    def listeners_note(self) -> str | None:
        """Why ``listeners`` is None, in a few words (each output's reason,
        once); None when it is known."""
        return None if self.listeners is not None else self._listeners_notes()

    # -- listeners over time (the sampler's thread; see ops/listeners.py)

    @property
    def listener_series(self) -> ListenerSeries:
        """Listeners a sample a minute, kept in the play state across restarts."""
        return self._played.listeners

    def sample_listeners(self, now: float) -> None:
        """Read the listeners (the watches' last counts: no I/O) into the
        series and for the next history entry. ``now``: Unix time."""
        count = self.listeners
        self._listeners_now = count
        self._played.listeners.add(now, count)

    def _listeners_notes(self) -> str:
        notes = dict.fromkeys(_listeners_note(output) for output in self.driver.outputs)
        return "; ".join(notes)

    def status(self) -> dict[str, Any]:
        with self._lock:
            playing, state, error = self._playing, self._state, self._last_error
            off_air_since, attempts = self._off_air_since, self._attempts
            down_since = self._down_since
            history = [dict(item) for item in self._history]
            unplayable = list(self._unplayable)
        heard = self._heard
        now_playing = None
        if playing is not None:
            if heard is not None and heard[0] is playing.track:
                # The audio sent, less what is still ahead of real time; off air
                # the clock stops where the listeners' audio did.
                now = off_air_since if off_air_since is not None else self._clock()
                elapsed = max(0.0, heard[1] - max(0.0, heard[2] - now))
            else:
                elapsed = playing.track.before
            if playing.duration is not None:
                elapsed = min(elapsed, playing.duration)
            now_playing = {
                "title": playing.title,
                "file": playing.file,
                "elapsed": round(elapsed, 2),
                "duration": None if playing.duration is None else round(playing.duration, 2),
                "bitrate": playing.bitrate,
                "gain_db": playing.gain_db,
                "gain_note": playing.gain_note or None,
            }
        queue, up_next = self._coming()
        target = self.target
        host = f"[{target.host}]" if ":" in target.host else target.host
        listeners = self.listeners  # once: the note must agree with it
        now_playing = self._set_playing(now_playing, playing.track if playing else None)
        return {
            "id": self.id,
            "name": self.info.name or self.id,
            "mount": target.mount,
            "server": f"{host}:{target.port}",
            "listen_url": self.listen_url(),
            "listeners": listeners,
            "listeners_note": None if listeners is not None else self._listeners_notes(),
            "format": {
                "bitrate": self.settings.bitrate,
                "samplerate": self.settings.samplerate,
                "channels": self.settings.channels,
            },
            "connection": {
                "state": state,
                "reconnects": self.counters.reconnects,
                "attempts": attempts,
                "error": error,
                "down_since": down_since,
                "down_for": None
                if off_air_since is None
                else round(max(0.0, self._clock() - off_air_since), 1),
            },
            "now_playing": now_playing,
            "queue": queue,
            "up_next": up_next,
            "idle": "end" if self.settings.once else self.settings.idle,
            "history": history,
            "unplayable": unplayable,
            "live": self._live_status(),
            "outputs": self.outputs_status(),
            "silence": self._silence_status(),
        }

    def listen_url(self) -> str:
        """Where listeners hear the station: its public URL, else the server's."""
        target = self.target
        host = f"[{target.host}]" if ":" in target.host else target.host
        scheme = "https" if target.tls else "http"
        return self.settings.public_url or f"{scheme}://{host}:{target.port}{target.mount}"

    def _silence_status(self) -> dict[str, Any]:
        """Dead air: the run of silence going out, and whether it is long
        enough for the alarm (``silence_alarm`` seconds; 0: never)."""
        air = self.driver.machine.dead_air
        seconds = air.seconds(self._engine.loop.time())
        return {
            "seconds": round(seconds, 1),
            "alarm": air.warned,
            "alarm_after": self.settings.silence_alarm,
            "trim": self.settings.trim_silence,
        }

    def outputs_status(self) -> list[dict[str, Any]]:
        """Every output, the station's own URL first: where, its format, its
        connection and listeners (attributes the engine's thread sets, each
        read once)."""
        out = []
        formats = [(self.settings.bitrate, self.settings.samplerate, self.settings.channels)]
        formats += [output_format(self.settings, o) for o in self.output_settings]
        publics = [self.settings.public_url] + [o.public_url for o in self.output_settings]
        for output, (bitrate, rate, channels), public in zip(
            self.driver.outputs, formats, publics, strict=True
        ):
            target = output.target
            host = f"[{target.host}]" if ":" in target.host else target.host
            scheme = "https" if target.tls else "http"
            watch = output.spec.watch
            listeners = watch.listeners(target.mount) if watch is not None else None
            out.append(
                {
                    "mount": target.mount,
                    "server": f"{host}:{target.port}",
                    "listen_url": public or f"{scheme}://{host}:{target.port}{target.mount}",
                    "format": {"bitrate": bitrate, "samplerate": rate, "channels": channels},
                    "converted": output.reframer is not None,
                    "state": output.state,
                    "error": output.error,
                    "reconnects": output.reconnects,
                    "attempts": output.attempts,
                    "bytes_sent": output.bytes_sent,
                    "listeners": listeners,
                    "listeners_note": None if listeners is not None else _listeners_note(output),
                }
            )
        return out

    def output_readings(self) -> list[OutputReading]:
        """Each output as outputs_status() has it, but only what /metrics
        shows and no dict or string built: a scrape reads every station."""
        readings = []
        for where, output in zip(self._where, self.driver.outputs, strict=True):
            watch = output.spec.watch
            listeners = watch.listeners(output.target.mount) if watch is not None else None
            readings.append(
                OutputReading(
                    where, output.state, output.reconnects, output.attempts,
                    output.bytes_sent, listeners,
                )
            )  # fmt: skip
        return readings

    def _live_status(self) -> dict[str, Any] | None:
        """The live input: who is connected, bytes in, and the set on air if
        one is (read across threads: each value is one attribute, fine for a
        status page)."""
        live = self.live_input
        if live is None:
            return None
        dj = live.dj
        status: dict[str, Any] = {
            "mount": live.mount,
            "user": dj._user if dj is not None else None,
            "since": _iso(live.since) if dj is not None and live.since is not None else None,
            "bytes_in": live.bytes_in if dj is not None else 0,
            "input": live.input_format if dj is not None else None,
            "on_air": False,
        }
        on = self._on_air_set()
        if on is not None:
            dj_set, machine_live = on
            header = machine_live.header
            status.update(
                user=dj_set.user,
                since=dj_set.since,
                on_air=True,
                title=dj_set.title,
                seconds=round(max(0.0, self._clock() - dj_set.since_clock), 1),
                frames_in=machine_live.received,
                connected=dj is not None,
                format=None
                if header is None
                else {
                    "bitrate": header.bitrate,
                    "samplerate": header.sample_rate,
                    "channels": header.channels,
                },
            )
        return status

    # -- a DJ's set (issue 22): what is on air is theirs, the folder's track waits

    def _on_air_set(self) -> tuple[_Set, Live] | None:
        """The DJ's set if their audio is on air now (the machine's live, one
        attribute read across threads), with the machine's view of it."""
        machine_live = self.driver.machine.live
        dj_set = self._set
        if machine_live is None or not machine_live.on_air:
            return None
        if dj_set is None or dj_set.live is not machine_live:
            return None  # on air a moment before its first title: within a batch
        return dj_set, machine_live

    def _set_playing(
        self, folder: dict[str, Any] | None, track: Cued | None
    ) -> dict[str, Any] | None:
        """Now playing during a set: the DJ's title, the set's time; the
        folder's track it cut under ``interrupted`` (paused, or skipped when
        the folder takes back)."""
        on = self._on_air_set()
        if on is None:
            return folder
        dj_set, machine_live = on
        cut = machine_live.cut
        interrupted = None
        if folder is not None and cut is not None and track is cut:
            live = self.settings.live
            skips = live is not None and Interrupted(live.interrupted) is Interrupted.SKIP
            interrupted = {**folder, "state": "skipped" if skips else "paused"}
        header = machine_live.header
        return {
            "title": dj_set.title,
            "file": "",
            "elapsed": round(max(0.0, self._clock() - dj_set.since_clock), 2),
            "duration": None,
            "bitrate": header.bitrate if header is not None else None,
            "gain_db": None,
            "gain_note": None,
            "live": dj_set.user,
            "interrupted": interrupted,
        }

    def _keep_history(self) -> None:
        """Into the play state (under the lock), saved with it: the history
        survives a restart. A new list each time: a save may be reading the old."""
        self._played.history = list(map(dict, self._history))

    # -- what is coming (issue 23): the queue and up next with their titles

    def _coming(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The queue ({file, title, duration}; the first QUEUE_TITLES from the
        tags as read so far, the first QUEUE_TITLES_ALWAYS asked for) and up
        next ({file, title, duration, source: "queue" or "loop"}, None:
        nothing), from what the station and its feed hold now: no file is
        opened here."""
        cued = self.driver.machine.cued_track
        paths = self.driver.queued()
        known: list[TrackInfo | None] = []
        if paths:
            ahead = paths[:QUEUE_TITLES]
            opened = cued is not None and ahead[0] == cued.path
            if cued is not None and opened:  # its tags were read to open it
                known = [TrackInfo(cued.title, cued.duration, cued.bitrate)]
            known += self._catalog.lookup(ahead[opened:QUEUE_TITLES_ALWAYS])
            known += self._catalog.lookup(ahead[QUEUE_TITLES_ALWAYS:], want=False)
        queue = [
            {"file": self._relative(path), **_info_fields(known[n] if n < len(known) else None)}
            for n, path in enumerate(paths)
        ]
        up_next: dict[str, Any] | None = None
        if queue:
            looped = cued is not None and paths[0] == cued.path and cued.looped
            if looped:  # the loop's next, cued ahead: listed first, but not queued by anyone
                queue[0]["loop"] = True
            up_next = {**queue[0], "source": "loop" if looped else "queue"}
            up_next.pop("loop", None)
        else:
            path = self.feed.loop_next()
            if path is not None:
                (info,) = self._catalog.lookup([path])
                up_next = {"file": self._relative(path), **_info_fields(info), "source": "loop"}
        self._want_tags()
        return queue, up_next

    def _want_tags(self) -> None:
        """Files wait for their tags: have a worker read them (one job at a
        time per station, a batch each), off the engine's thread."""
        with self._lock:
            if self._tags_busy or not self._catalog.wanted:
                return
            self._tags_busy = True
        self._engine.call(self._read_tags)

    def _read_tags(self) -> None:
        # On the engine's thread: only the hand-over to the tags pool.
        self._tags_lane.submit(self._catalog.read_some, self._tags_read)

    def _tags_read(self, read: bool | None, exc: BaseException | None) -> None:
        if read:
            self._changed()  # the status shows them
        with self._lock:
            more = exc is None and self._catalog.wanted
            self._tags_busy = bool(more)
        if more:
            self._read_tags()

    # -- steering (any thread); ControlError on requests that cannot be done

    def skip(self) -> None:
        live = self.driver.machine.live
        if live is not None and live.on_air:  # skip acts on the folder's track, which waits
            raise ControlError(
                f"{live.user} is live: skip acts on the folder's tracks; "
                "kick the DJ to end their set",
                409,
            )
        self.driver.skip()

    def kick(self, ban_minutes: int = 0) -> None:
        """Hang up on the DJ live now; the folder takes back at once. Their
        user may not go live again for ``ban_minutes``."""
        live = self.live_input
        if live is None:
            raise ControlError("this station has no live input", 404)
        if self._engine.run(lambda: live.kick(ban_minutes * 60.0)) is None:
            raise ControlError("no DJ is connected", 409)

    def rescan(self) -> None:
        """Walk the folder again (SIGHUP); safe in a signal handler."""
        if self._queue is not None:
            self._queue.rescan()

    def remove(self, file: str) -> None:
        path = self._queued(file)

        def make(queued: list[Path]) -> QueueEdit:
            if path not in queued:
                raise ControlError(f"{file} is not in the queue", 404)
            self._played.mark_played(path)  # removed by hand: not back after a restart
            return QueueEdit(tuple(p for p in queued if p != path), remove=(path,))

        self.driver.edit(make)
        self._changed()

    def move(self, file: str, index: int) -> None:
        path = self._queued(file)

        def make(queued: list[Path]) -> QueueEdit:
            if path not in queued:
                raise ControlError(f"{file} is not in the queue", 404)
            order = [p for p in queued if p != path]
            if not 0 <= index <= len(order):
                raise ControlError(f"index {index} is out of range 0..{len(order)}", 400)
            order.insert(index, path)
            return QueueEdit(tuple(order))

        self.driver.edit(make)
        self._changed()

    def enqueue(self, file: str) -> None:
        path = playable(self.folder, self._in_folder(file))
        if path is None:  # the same answer for a link out of the folder and for nothing
            raise ControlError(f"no such file in the folder: {file}", 404)

        real = self._resolved(self.driver.queued())

        def make(queued: list[Path]) -> QueueEdit:
            # Under another name, too. Resolved above, off the engine's thread;
            # only a file queued since then is resolved here.
            if any((real[p] if p in real else inside(self.folder, p)) == path for p in queued):
                raise ControlError(f"{file} is queued already", 409)
            self._played.forget(path)  # asked for by hand: it may play again
            return QueueEdit((*queued, path), enqueue=(path,))

        self.driver.edit(make)
        self._changed()

    def library(self, query: str = "", limit: int = 100) -> dict[str, Any]:
        """The folder's playable files whose path holds every word of query
        (any case), in name order, at most limit: {files: [{file, queued}],
        total}."""
        words = query.casefold().split()
        queued = {self._relative(path) for path in self.driver.queued()}
        found = [
            rel
            for rel in (self._relative(path) for path in scan(self.folder))
            if all(word in rel.casefold() for word in words)
        ]
        shown = found[:limit]
        infos = self._catalog.lookup(self.folder / rel for rel in shown)
        self._catalog.lookup(self.driver.queued()[:QUEUE_TITLES])  # the view's queue
        self._want_tags()
        return {
            "files": [
                {"file": rel, "queued": rel in queued, **_info_fields(info)}
                for rel, info in zip(shown, infos, strict=True)
            ],
            "total": len(found),
        }

    def upload(self, filename: str, data: BinaryIO, length: int) -> str:
        """Save an uploaded file into the folder, where the folder queue finds
        it like any other (the folder stays the one source of truth)."""
        name = PurePosixPath(filename).name
        if name != filename or not name or name.startswith(".") or "\\" in name:
            raise ControlError(f"not a plain file name: {filename!r}", 400)
        if not is_eligible(PurePosixPath(name), AUDIO_EXTENSIONS):
            raise ControlError(f"not an audio file name the folder plays: {filename!r}", 400)
        if not upload_name_ok(name):
            raise ControlError(f"not a plain file name: {filename!r}", 400)
        final = self.folder / name
        if final.exists() or final.is_symlink() or twin(self.folder, name):
            raise ControlError(f"{name} exists already in the folder", 409)
        fd, temp = _new_part(self.folder)
        try:
            with os.fdopen(fd, "wb") as out:
                left = length
                while left > 0:
                    chunk = data.read(min(left, 1 << 16))
                    if not chunk:
                        raise ControlError(f"upload of {name} ended early", 400)
                    out.write(chunk)
                    left -= len(chunk)
            os.link(temp, final)  # fails if the name was taken meanwhile: no overwrite
        except FileExistsError:
            raise ControlError(f"{name} exists already in the folder", 409) from None
        except OSError as exc:
            raise ControlError(f"cannot save {name}: {exc.strerror or exc}", 409) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        return name  # the control server logs it, naming the station

    # -- helpers

    def _relative(self, path: Path) -> str:
        # The queue's paths are under the resolved folder already: no file
        # system call here (this runs on the engine's thread too).
        try:
            return path.relative_to(self.folder).as_posix()
        except ValueError:
            return path.name

    def _in_folder(self, file: str) -> Path:
        rel = PurePosixPath(file)
        if not file or rel.is_absolute() or ".." in rel.parts:
            raise ControlError(f"not a file of the folder: {file!r}", 400)
        return self.folder / rel

    def _queued(self, file: str) -> Path:
        wanted = inside(self.folder, self._in_folder(file))
        if wanted is not None:
            for path, real in self._resolved(self.driver.queued()).items():
                if real == wanted:
                    return path
        raise ControlError(f"{file} is not in the queue", 404)

    def _resolved(self, queued: list[Path]) -> dict[Path, Path | None]:
        """``inside(folder, path)`` for each queued path (in queue order),
        resolved when first seen: the folder queue leaves links out, so a
        queued path's resolution does not change while it waits."""
        known = self._real
        real = {p: known[p] if p in known else inside(self.folder, p) for p in queued}
        self._real = real  # what left the queue is forgotten
        return real


def _live_options(settings: StationSettings) -> dict[str, Any]:
    live = settings.live
    if live is None:
        return {}
    return {
        "grace": live.grace,
        "interrupted": Interrupted(live.interrupted),
        "live_title": live.title,
    }


def _listeners_note(output: Output) -> str:
    """Why an output's listeners are not known, for the API."""
    watch = output.spec.watch
    if watch is None:
        return "its server is not watched"
    if not output.on_air:
        return "not on air"
    return str(watch.listeners_note(output.target.mount) or "not read yet")


def _seconds(duration: float | None) -> float | None:
    return None if duration is None else round(duration, 2)


def _info_fields(info: TrackInfo | None) -> dict[str, Any]:
    """A file's title and length for the API (None: its tags not read yet)."""
    if info is None:
        return {"title": None, "duration": None}
    return {"title": info.title, "duration": _seconds(info.duration)}


def _rounded(gain_db: float | None) -> float | None:
    return None if gain_db is None else round(gain_db, 2)


@dataclass
class _Set:
    """A DJ's set as the status shows it (set on the engine's thread)."""

    live: Live  # the machine's, for this set (a new one is a new set)
    user: str
    since: str  # ISO, like the history's
    since_clock: float
    title: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)  # its history entries
    recording: dict[str, str] = field(default_factory=dict)  # their recording fields


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso(when: float) -> str:
    """A Unix time as _now() has it."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reason_kind(reason: str) -> str:
    """A short, fixed label for a skip reason (metric labels must not be free text)."""
    text = reason.casefold()
    for needle, kind in (
        ("gone", "gone"),
        ("directory", "not_a_file"),
        ("permission", "unreadable"),
        ("cannot read", "unreadable"),
        ("convert", "conversion_failed"),
        ("libvlc", "conversion_failed"),
        ("decode", "conversion_failed"),
        ("frame", "no_audio"),
        ("empty", "no_audio"),
        ("mpeg", "no_audio"),
    ):
        if needle in text:
            return kind
    return "other"


def _restore(
    path: Path | None, target: IcecastTarget, folder: Path
) -> tuple[StateKeeper, list[tuple[Path, int]]]:
    """Load the play state; where the last run was part-way through a track
    that is still the same file, go on from there. Raises ConfigError for a
    state path that is a directory or inside the music folder."""
    if path is None:
        path = default_state_path(f"{target.host}:{target.port}{target.mount}")
    check_state_path(path, folder)
    state = load_state(path)
    log.debug("play state in %s", path)
    positions = PositionFile.open(position_path(path))
    if positions is not None and go_on_from(state, positions.read()):
        log.debug("play state: the position file is newer: %s", state.current)
    state.queue = _of_folder(folder, state.queue, path)
    resume: list[tuple[Path, int]] = []
    if state.current is not None and _of_folder(folder, [state.current], path):
        current = Path(state.current)
        if state.current_stamp is not None and FileStamp.of(current) == state.current_stamp:
            resume.append((current, state.current_offset))
    return StateKeeper(path, state, interval=5.0, positions=positions), resume


def _of_folder(folder: Path, paths: list[str], state: Path) -> list[str]:
    """The state file's paths that name playable files of the folder; one line for the rest."""
    kept = [p for p in paths if playable(folder, Path(p)) is not None and not Path(p).is_symlink()]
    if len(kept) < len(paths):
        log.warning(
            "state file %s: left out %d files that are not playable files of %s",
            state,
            len(paths) - len(kept),
            folder,
        )
    return kept


def harbor_of(engine: Engine, listen: tuple[str, int]) -> Any:
    """The harbor (live input server) on ``listen``, one per address, shared
    by the stations there; made on first use, not started."""
    from pushsource.engine.harbor import Harbor

    host, port = listen
    key = (f"harbor {host}", port, False)  # one per listen address, like server watches
    return engine.watch_of(key, lambda: Harbor(engine, host, port))


def build_runners(
    stations: Sequence[StationSettings],
    environ: Mapping[str, str],
    *,
    engine: Engine,
    observer: BaseObserver | None = None,
    announce_errors: bool = True,
) -> list[StationRunner]:
    """Every station built (and so checked) before any starts. Raises ConfigError,
    naming the station when there are several."""
    runners = []
    for settings in stations:
        try:
            runners.append(
                StationRunner(
                    settings,
                    environ,
                    engine=engine,
                    observer=observer,
                    announce_errors=announce_errors,
                )
            )
        except ConfigError as exc:
            if len(stations) == 1:
                raise
            label = settings.id or settings.name or str(settings.folder)
            raise ConfigError(f"station {label}: {exc}") from None
    return runners
