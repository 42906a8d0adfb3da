"""Drives one StationMachine on the engine: carries out its effects (sockets,
timers, worker jobs) and feeds it what happens. Everything here runs on the
engine's thread except the public control methods, which hop onto it."""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from pushsource.core import effects as fx
from pushsource.core.effects import Alt, Chunk, Cued, Span
from pushsource.core.live import Live
from pushsource.core.outputs import ALT_CHUNK, Loss, loss
from pushsource.core.station import Carried, Retry, StationMachine
from pushsource.engine.loop import Engine, Lane, current_station
from pushsource.engine.outputs import Output, OutputSpec
from pushsource.errors import AuthenticationError, IcecastError, PushsourceError, TrackError
from pushsource.workers.feed import CueResult, Feed
from pushsource.workers.folder import QueueEdit
from pushsource.workers.recorder import SetRecorder
from pushsource.workers.state import FileStamp, PlayState, Snapshot, StateKeeper

if TYPE_CHECKING:
    from pushsource.workers.icecast import IcecastTarget

log = logging.getLogger("pushsource")

#: A Send's titles: (byte of its data, title) where a track's first frame is.
Titled = tuple[tuple[int, str], ...]

#: How often the place in the current track is saved while it plays.
SAVE_EVERY = 5.0
#: Frames read with a track when it is cued: about 2 s (CHUNK_SECONDS).
CUE_FRAMES = 80


class Events(Protocol):
    """What a station tells the world (status pages, metrics). Called on the
    engine's thread: must be quick, must not block or raise."""

    def connection(self, state: str, error: str | None = None) -> None: ...
    def track_started(self, track: Cued) -> None: ...
    def track_ended(self, track: Cued, *, skipped: bool) -> None: ...
    def file_skipped(self, exc: TrackError) -> None: ...
    def live_title(self, live: Live, title: str) -> None: ...
    def sent(self, nbytes: int, frames: int, lead: float) -> None: ...
    def done(self, error: PushsourceError | None) -> None: ...


#: Tries of one admin title request, and the wait after the n-th failed one
#: (TITLE_BACKOFF * n s: Icecast may not have set the mount up yet).
TITLE_TRIES: Final = 5
TITLE_BACKOFF: Final = 0.2


class Titles:
    """Now-playing titles for one mount, sent on the workers: at most one
    request in flight; a title that comes meanwhile replaces any waiting.
    A failed request is tried again from a loop timer, not by a worker that
    sleeps: the ``net`` pool's workers only ever wait on the network."""

    def __init__(
        self,
        engine: Engine,
        send: Callable[[str, str, Callable[[], bool]], str | None],
        station: str = "",
    ) -> None:
        self._engine = engine
        self._station = station
        self._send = send  # (address, title, superseded) -> problem or None; blocks
        self._busy = False
        self._waiting: tuple[str, str] | None = None

    def set(self, address: str, title: str) -> None:
        if self._busy:
            self._waiting = (address, title)
            return
        self._try(address, title, 1)

    def _try(self, address: str, title: str, attempt: int) -> None:
        self._busy = True
        lane = Lane(self._engine, "titles", self._station)
        lane.submit(
            lambda: self._send(address, title, lambda: self._waiting is not None),
            lambda problem, exc: self._sent(address, title, attempt, problem, exc),
        )

    def _sent(
        self, address: str, title: str, attempt: int, problem: str | None, exc: BaseException | None
    ) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:  # a newer title: it goes instead, whatever this one did
            self._busy = False
            self.set(*waiting)
            return
        if exc is None and problem and attempt < TITLE_TRIES:
            # Still busy while the timer waits: a title asked meanwhile waits
            # for it, and then goes instead of this one.
            self._engine.loop.call_later(
                TITLE_BACKOFF * attempt, self._again, address, title, attempt
            )
            return
        self._busy = False
        if exc is not None:
            log.warning("could not set the title: %s", exc)
        elif problem:
            log.warning("could not set the title: %s", problem)

    def _again(self, address: str, title: str, attempt: int) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            address, title, attempt = *waiting, 0
        self._try(address, title, attempt + 1)


class Saver:
    """The play state saved on a worker: at most one save in flight, and a
    save after it when anything changed meanwhile (a change counter, so no
    change is missed). Each save writes the snapshot taken on the engine's
    thread with the change, never the live state a worker would read torn."""

    def __init__(self, engine: Engine, keeper: StateKeeper, station: str = "") -> None:
        self.keeper = keeper
        self._lane = Lane(engine, "state", station)
        self._changes = 0
        self._saved = 0
        self._busy = False
        self._snap: Snapshot | None = None

    def changed(self, snap: Snapshot) -> None:
        self._changes += 1
        self._snap = snap
        if not self._busy:
            self._save()

    def _save(self) -> None:
        self._busy = True
        at, snap = self._changes, self._snap
        self.keeper.changed()
        self._lane.submit(lambda: self.keeper.save_now(snap), lambda _r, exc: self._done(at, exc))

    def _done(self, at: int, exc: BaseException | None) -> None:
        self._busy = False
        if exc is not None:
            log.warning("saving the play state failed: %s", exc)
        self._saved = at
        if self._changes > self._saved:
            self._save()

    @property
    def busy(self) -> bool:
        return self._busy


@dataclass
class Adopted:
    """A source connection the old image of an upgrade in place handed over
    (ops.handover), for the station's own output: the socket, its ICY place
    (see SourceSocket.adopt) and where the station's clock and bytes are."""

    sock: socket.socket
    phase: int
    title: str | None
    titles: list[tuple[int, str]]
    carried: Carried
    #: Frames the old image's clock has not reached yet: (when due, bytes),
    #: sent before anything of the station's, each within ``lead`` of its time.
    rest: list[tuple[float, bytes]]
    lead: float


class StationDriver:
    def __init__(
        self,
        engine: Engine,
        machine: StationMachine,
        feed: Feed,
        target: IcecastTarget,
        *,
        events: Events,
        connect: Callable[..., Any],
        titles: Callable[[str, str, Callable[[], bool]], str | None],
        keeper: StateKeeper | None = None,
        watch: Any = None,
        start: Callable[[], object] | None = None,
        name: str = "",
        outputs: Sequence[OutputSpec] = (),
        retry: Retry | None = None,
        recorder: SetRecorder | None = None,
    ) -> None:
        """``target``, ``titles`` and ``watch`` are the station's own output;
        ``outputs`` the others (``[[station.output]]``); ``recorder`` records
        DJ sets (the batches that went out during each)."""
        self.name = name  # the station's id, for log lines
        self._engine = engine
        self._loop = engine.loop
        self._ticker = engine.ticker
        self.machine = machine
        self._feed = feed
        self.target = target
        self._events = events
        self._connect = connect  # (loop, target, source events) -> SourceSocket
        first = OutputSpec(target, titles, watch)
        self.outputs = [Output(n, spec) for n, spec in enumerate((first, *outputs))]
        self._titles = [Titles(engine, spec.titles, name) for spec in (first, *outputs)]
        self._retry = retry or Retry()  # for one output's own reconnects
        self._headers: dict[str, str] = {}
        self._up = False  # the station is on air (some output took it)
        self._title: str | None = None  # the title in force
        # The Sends whose audio is still ahead of real time (the lead): an
        # output that joins late gets them, so it starts where the others are.
        self._ahead: deque[tuple[bytes, tuple[Span, ...], Titled, float]] = deque()
        self._saver = Saver(engine, keeper, name) if keeper is not None else None
        self._state: PlayState | None = keeper.state if keeper is not None else None
        self._positions = keeper.positions if keeper is not None else None
        self._on_start = start  # blocking set-up (the folder's first walk), on the start lane
        self._cue_lane = Lane(engine, "cue", name)
        self._read_lane = Lane(engine, "read", name)
        self._convert_lane = Lane(engine, "convert", name)
        self._mix_lane = Lane(engine, "mix", name)  # crossfade joins: the convert pool
        self._cue_frames = machine.cue_frames(CUE_FRAMES)
        self._cue_asked: tuple[tuple[Path, int] | None, Path | None] = (None, None)
        self._timer: Any = None
        self._last_save = 0.0
        self._done = False
        self.error: PushsourceError | None = None
        self.recorder = recorder
        #: An upgrade in place: the handed-over connection, asked for once at
        #: the station's first connect (None then: it connects as usual).
        self.carry: Callable[[], Adopted | None] | None = None
        self._carried = False  # the connection on air is the old image's
        self._held = False  # hold(): an upgrade in place is under way
        self._rest: deque[tuple[float, bytes]] = deque()  # Adopted.rest, still to go
        self._own_yet = True  # a carried connection has had the machine's own frames
        self._rest_lead = 0.0

    # -- control, from any thread

    @property
    def saving(self) -> bool:
        """A play-state save is in flight (a reload waits for the last one)."""
        return self._saver is not None and self._saver.busy

    def start(self) -> None:
        self._engine.call(self._start)

    def skip(self) -> None:
        self._engine.call(self._step, self.machine.skip)

    def hold(self) -> bool:
        """An upgrade in place, on the engine's thread: the machine hears
        nothing more, so nothing more goes out (the new image goes on).
        Returns whether it was running."""
        if self._done:
            return False
        self._done = self._held = True
        return True

    def let_go(self, *, reconnect: bool = False) -> None:
        """Undo :meth:`hold` (the upgrade did not happen), on the engine's
        thread; ``reconnect``: over a new connection (the old one's bytes
        went on without the machine). Does nothing unless held."""
        if not self._held:
            return
        self._done = self._held = False
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if reconnect and self.outputs[0].sock is not None:
            error = IcecastError("restart failed: connecting again")
            self._lost(self.outputs[0], error, self.outputs[0].drop())
            return
        self._wake()

    def stop(self) -> None:
        self._engine.call(self._step, self.machine.stop)

    def news(self) -> None:
        """The folder saw an event (watchdog's thread)."""
        self._engine.call(self._refresh)

    def changed(self) -> None:
        """The play state changed outside the station (the control API)."""
        self._engine.call(self._state_changed)

    def edit(self, make: Callable[[list[Path]], QueueEdit]) -> None:
        """Edit the queue atomically: ``make(queued)`` gets what will play next
        (the cued track first) and returns the edit; applied on the engine's
        thread, so two edits at once both take effect."""

        def apply() -> None:
            cued = self.machine.cued_path()
            queued = ([cued] if cued is not None else []) + self._feed.queued()
            edit = make(queued)
            if cued is not None:  # back to the source, then wherever the edit puts it
                edit = edit._replace(front=(cued, *edit.front))
            self._feed.edit(edit)
            if cued is not None:
                self._step(self.machine.uncue)
            self._step(self.machine.news)
            self._state_changed()

        self._engine.run(apply)

    def queued(self) -> list[Path]:
        cued = self.machine.cued_path()
        return ([cued] if cued is not None else []) + self._feed.queued()

    def queue_length(self) -> int:
        """len(queued()), without the copy."""
        return (self.machine.cued_path() is not None) + self._feed.queue_length()

    # -- live input (the harbor calls this on the engine's thread)

    def live(self, event: Callable[..., list[fx.Effect]], *args: Any) -> None:
        """Feed the machine a live_* event (a DJ connected, sent frames or a title, left)."""
        self._step(event, *args)

    # -- on the engine's thread

    def _start(self) -> None:
        if self._on_start is not None:
            # Handed over by a restart in place, its frames in memory are
            # running out meanwhile (the bridge child sends them): its first
            # walk goes on the cue pool too, not only the start pool's two.
            lane = "start" if self.carry is None or self._start_turn() else "start-handed"
            Lane(self._engine, lane, self.name).submit(self._on_start, self._started)
        else:
            self._started(None, None)

    _turns = 0

    @classmethod
    def _start_turn(cls) -> bool:
        """Every third station handed over starts on the start pool, the
        others on the cue pool (two workers and four)."""
        cls._turns += 1
        return cls._turns % 3 == 0

    def _started(self, _result: object, exc: BaseException | None) -> None:
        if exc is not None:
            error = exc if isinstance(exc, PushsourceError) else None
            if error is None:
                log.error("station stopped by an internal error: %r", exc)
                error = PushsourceError(f"station stopped by an internal error: {exc!r}")
            self.error = error
            self._events.connection("failed", str(error))
            self._finish()
            return
        self._step(self.machine.start)

    def _step(self, event: Callable[..., list[fx.Effect]], *args: Any) -> None:
        if self._done:
            return
        token = current_station.set(self.name)
        try:
            effects = event(self._loop.time(), *args)
            for effect in effects:
                self._do(effect)
            if self.recorder is not None and self.recorder.current is not None:
                live = self.machine.live  # the set goes on through an outage, not past its end
                on = live is not None and live.on_air
                self.recorder.check(live if on else None, live.user if on and live else None)
        except Exception as exc:  # a bug must not take the other stations down
            log.exception("station %s stopped by an internal error", self.target.mount)
            self.error = PushsourceError(f"station stopped by an internal error: {exc!r}")
            self._events.connection("failed", str(self.error))
            self._abort()
            self._finish()
        finally:
            current_station.reset(token)

    def _do(self, effect: fx.Effect) -> None:
        # The batch's two effects first, without a match's lookups.
        if type(effect) is fx.Send:
            self._send(effect.data, effect.frames, effect.lead, effect.spans, effect.titles)
            return
        if type(effect) is fx.Wake:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._ticker.at(effect.at, self._wake)
            return
        match effect:
            case fx.Read(handle, frames):
                self._read_lane.submit(
                    lambda: self._feed.read(handle, frames),
                    lambda chunk, exc: self._read_done(handle, chunk, exc),
                )
            case fx.Cue(resume):
                self._cue_asked = (resume, self.machine.last_started)
                self._cue()
            case fx.Mix():
                mix, bitrate = effect, self.machine.station_format.bitrate
                self._mix_lane.submit(
                    lambda: self._feed.mix(mix, bitrate),
                    lambda join, _exc: self._step(
                        lambda now: self.machine.joined(now, mix.out_track, mix.in_track, join)
                    ),
                )
            case fx.Release(handle):
                self._read_lane.submit(lambda: self._feed.release(handle), _ignore)
            case fx.SetTitle(title):
                self._title = title
                live = self.machine.live
                if live is not None and live.on_air:  # a DJ's title, on air with their audio
                    self._events.live_title(live, title)
                    if self.recorder is not None:
                        self.recorder.title(live, title)
                for output in self.outputs:
                    if output.on_air:
                        self._set_title(output, title)
            case fx.Started(track):
                self._events.track_started(track)
                if self._state is not None:
                    state = self._state
                    state.current, state.current_stamp = str(track.path), track.stamp  # type: ignore[assignment]
                    state.current_offset = track.chunk.offset
                if self._positions is not None:
                    stamp = track.stamp if isinstance(track.stamp, FileStamp) else None
                    self._positions.track(str(track.path), stamp, track.chunk.offset)
                self._state_changed()
                self._convert_lane.submit(self._feed.prepare_next, _ignore)
            case fx.Ended(track, skipped):
                self._events.track_ended(track, skipped=skipped)
                if self._state is not None:
                    state = self._state
                    state.mark_played(track.path, track.stamp)  # type: ignore[arg-type]
                    if state.current == str(track.path):
                        state.current, state.current_offset, state.current_stamp = None, 0, None
                        if self._positions is not None:
                            self._positions.track(None, None)
                self._state_changed()
            case fx.State(state_name, error):
                self._events.connection(state_name, error)
            case fx.Connect(headers):
                self._open(headers)
            case fx.Close():
                self._up = False
                for output in self.outputs:
                    output.cancel_timer()
                    sock, output.sock = output.sock, None
                    output.stop_watching()
                    if sock is not None:
                        if output.reframer is not None and output.state == "on air":
                            sock.send(output.reframer.closing())
                        sock.close()
                    if not output.dead:
                        output.set_state("off")
                self._loop.call_soon(self._step, self.machine.closed)
            case fx.Finished(error):
                self.error = error
                self._abort()
                self._finish()

    def _wake(self) -> None:
        self._timer = None
        self._step(self.machine.tick)

    @property
    def settling(self) -> bool:
        """A connection handed over by the old image of a restart in place
        is not taken back yet, or still sends that image's frames, or none of
        its own yet."""
        if self.carry is not None and not self._done:
            return True  # handed over, not taken back yet
        return self._up and (self._carried or bool(self._rest) or not self._own_yet)

    def _send(
        self, data: bytes, frames: int, lead: float, spans: tuple[Span, ...], titles: Titled
    ) -> None:
        if not self._up:
            return
        self._own_yet = True
        now = self._loop.time()
        ahead = self._ahead
        while ahead and ahead[0][3] <= now:
            ahead.popleft()
        if len(self.outputs) > 1:
            ahead.append((data, spans, titles, now + lead))
        for output in self.outputs:
            if output.on_air:
                self._send_one(output, data, spans, titles)
        self._events.sent(len(data), frames, lead)
        if self.recorder is not None:
            airing = self.machine.airing  # the batch is a set's: it went out, so it is recorded
            self.recorder.sent(airing, airing.user if airing else None, data, frames)
        if self._positions is not None and (position := self.machine.position()) is not None:
            self._positions.at(position[1])  # a kill -9 repeats this batch at most
        if now - self._last_save >= SAVE_EVERY:
            self._last_save = now
            self._state_changed()

    def _send_rest(self, sock: Any, *, every: bool = False) -> None:
        """The old image's frames still to go on a carried connection, as
        they come due (``every``: all of them, before the station's own)."""
        rest = self._rest
        if not rest or sock is not self.outputs[0].sock:
            rest.clear()
            return
        bound = self._loop.time() + self._rest_lead
        parts = []
        while rest and (every or rest[0][0] <= bound):
            parts.append(rest.popleft()[1])
        if parts:
            sock.send(b"".join(parts))
        if rest:
            self._ticker.at(rest[0][0] - self._rest_lead, lambda: self._send_rest(sock))

    def _send_one(
        self, output: Output, data: bytes, spans: tuple[Span, ...], titles: Titled = ()
    ) -> None:
        sock = output.sock
        if self._rest and output.number == 0:
            self._send_rest(sock, every=True)
        if sock is not None:
            reframer = output.reframer
            payload = data if reframer is None else reframer.frames(spans)[0]
            if output.splicer.open:
                payload = output.splicer.repair(payload)
            if titles and sock.titles_inside:
                # At its track's first byte; another format's bytes are its
                # own, so there at the start of this Send (the same batch).
                for at, title in titles:
                    sock.title(title, at if reframer is None else 0)
            if reframer is not None:
                if (alt := reframer.wanted()) is not None:
                    self._read_alt(alt)
                if reframer.late > output.late_said:  # a line, not one per batch
                    log.warning(
                        "output %s: its converted copy is late: %d frames of silence so far",
                        output.label,
                        reframer.late,
                    )
                    output.late_said = reframer.late + round(60 / reframer.frame_seconds)
            if payload:
                sock.send(payload)
                output.bytes_sent += len(payload)
            if not sock.writable():
                # Icecast is not reading: hold no more than the high-water mark.
                unsent = output.drop()
                where = f"{output.target.host}:{output.target.port}"
                error = IcecastError(
                    f"connection to {where} lost: Icecast is not reading "
                    f"({unsent // 1024} KiB unsent)"
                )
                self._loop.call_soon(self._lost, output, error, unsent)

    def _read_alt(self, alt: Alt) -> None:
        """More of a track's copy in another output's format, on the read lane."""
        alt.reading = True
        handle, frames = alt.handle, max(1, round(ALT_CHUNK / alt.header.duration))

        def done(chunk: Chunk | None, exc: BaseException | None) -> None:
            if exc is not None or chunk is None:
                if exc is not None and not self._done:
                    log.error("station %s: reading a converted copy failed: %r", self.name, exc)
                chunk = Chunk(b"", [], 0, True)  # silence for the rest of it
            alt.add(chunk)

        self._read_lane.submit(lambda: self._feed.read(handle, frames), done)

    def _open(self, headers: dict[str, str]) -> None:
        """The station goes on air: every output that may, at once."""
        self._headers = headers
        self._ahead.clear()
        for output in self.outputs:
            output.cancel_timer()
            if not output.dead and output.sock is None:
                self._open_one(output)
        if not any(output.sock is not None for output in self.outputs):
            # Every output is refused for good (the machine hears the first's error).
            first = self.outputs[0]
            error = AuthenticationError(first.error or "every output was refused")
            self._loop.call_soon(self._step, self.machine.failed, error, 0)

    def _open_one(self, output: Output) -> None:
        output.timer = None
        handler = _SocketEvents(self, output)
        headers = {**self._headers, **output.spec.headers}
        carry, adopted = self.carry, None
        if carry is not None and output.number == 0:
            self.carry = None
            adopted = carry()
        output.sock = sock = self._connect(self._loop, output.target, handler)
        handler.sock = sock
        output.set_state("connecting")
        if adopted is None:
            sock.open(headers)
            return
        self._carried = True
        self._own_yet = False
        self._rest = deque(adopted.rest)
        self._rest_lead = adopted.lead
        self.machine.carry_on(adopted.carried)
        sock.adopt(adopted.sock, phase=adopted.phase, title=adopted.title, titles=adopted.titles)

    def _accepted(self, output: Output, sock: Any) -> None:
        if sock is not output.sock:
            return
        output.address = sock.address
        came_back = output.accepted(self._loop.time())
        if self._carried:  # the old image's connection: its listeners have every byte
            self._carried = False
            self._send_rest(sock)
        else:  # a new connection: its listeners have no byte before its first one.
            output.splicer.cut()
        if output.reframer is not None:
            output.reframer.cut()
        watch = output.spec.watch
        if watch is not None and output.unwatch is None:
            # Its own mount and credentials: its listeners, where the status page has none.
            output.unwatch = watch.watch(lambda reason: self._hung(output, reason), output.target)
        if not self._up:
            self._up = True
            for other in self.outputs:  # failed while the station connected: on their own now
                if other.sock is None and other.last_error is not None and not other.dead:
                    self._reconnect_later(other, other.last_error)
            self._step(self.machine.accepted)
            return
        # Rejoining a station on air: its title again (Icecast wiped it), and
        # the next frames; the station's audio goes on where it is.
        if came_back:
            log.info("output %s is on air again", output.label, extra={"event": "output_on_air"})
        output.said = None
        now = self._loop.time()
        if self._title is not None:  # the server has none for a new source
            self._set_title(output, self._title)
        for data, spans, titles, end in list(self._ahead):
            if end > now and output.on_air:
                self._send_one(output, data, spans, titles)

    def _set_title(self, output: Output, title: str) -> None:
        """The title from now on, on one output that is on air: inside its
        stream, else by an admin request (on a worker)."""
        sock = output.sock
        if sock is not None and sock.titles_inside:
            log.debug("title inside the stream on %s: %s", output.label, title)
            sock.title(title)
        elif output.address is not None:
            self._titles[output.number].set(output.address, title)

    def _failed(self, output: Output, sock: Any, error: IcecastError) -> None:
        if sock is not output.sock:
            return
        if self._carried:  # the carried connection was lost before it was ours
            self._carried = False
            self.machine.carry_on(None)
        self._rest.clear()
        self._lost(output, error, output.drop())

    def _hung(self, output: Output, reason: str) -> None:
        output.unwatch = None
        if output.sock is None:
            return
        where = f"{output.target.host}:{output.target.port}"
        log.warning("Icecast does not answer (%s): dropping the connection to %s", reason, where)
        error = IcecastError(f"{where} stopped answering; dropped the connection")
        self._lost(output, error, output.drop())

    def _lost(self, output: Output, error: IcecastError, unsent: int) -> None:
        """One output's connection failed or dropped (``unsent``: bytes the
        kernel never took); core.outputs says what that means."""
        if self._done:
            return
        was_on_air = output.lost(self._loop.time(), error)
        alive = [o for o in self.outputs if o is not output and o.sock is not None]
        on_air = any(o.on_air for o in alive)
        if output.refused and len(self.outputs) > 1 and any(not o.dead for o in self.outputs):
            # The others go on: its one line now (the last one refused is the
            # station's failure, said once by the runner).
            log.error("output %s stopped: %s", output.label, error)
        if self._up and was_on_air and on_air:
            output.reconnects += 1
        what = loss(
            outputs=len(self.outputs),
            up=self._up,
            others_on_air=on_air,
            others_connected=bool(alive),
        )
        if what is Loss.STATION:
            self._up = False
            self._step(self.machine.failed, error, unsent)
            return
        if what is Loss.ALONE:
            self._reconnect_later(output, error)
            return
        if what is Loss.WAIT:
            return  # the station is still connecting elsewhere; it retries this one then
        # None on air: the station goes off air and goes on where it stopped.
        self._up = False
        for other in self.outputs:
            other.cancel_timer()
            if other.sock is not None:
                other.drop()
                if not other.dead:
                    other.set_state("reconnecting", str(error))
        live = [o for o in self.outputs if not o.dead]
        if not live:
            first = next((o for o in self.outputs if o.error), output)
            error = AuthenticationError(first.error or str(error))
        elif isinstance(error, AuthenticationError):
            error = IcecastError(f"output {output.label}: {error}")
        if output.reframer is not None:
            unsent = 0  # its bytes are not the station's: go on from what was sent
        self._step(self.machine.failed, error, unsent)

    def _reconnect_later(self, output: Output, error: IcecastError) -> None:
        """While the station plays on elsewhere: this one tries again on its own."""
        delay = output.next_try(self._loop.time(), error, self._retry)
        if delay is None:
            return
        output.cancel_timer()
        output.timer = self._loop.call_later(delay, self._retry_one, output)

    def _retry_one(self, output: Output) -> None:
        output.timer = None
        if self._done or not self._up or output.sock is not None or output.dead:
            return
        self._open_one(output)

    def _cue(self) -> None:
        resume, last = self._cue_asked
        self._cue_lane.submit(
            lambda: self._feed.cue(resume, last=last, chunk=self._cue_frames), self._cue_done
        )

    def _cue_done(self, result: CueResult | None, exc: BaseException | None) -> None:
        if result is not None and result.prepare is not None and exc is None:
            # Its file must be converted first: on the convert lane, so no
            # cue worker waits for it; then the same cue again.
            path = result.prepare
            self._convert_lane.submit(
                lambda: self._feed.prepare(path),
                lambda _r, _exc: None if self._done else self._cue(),
            )
            return
        if exc is not None or result is None:
            if exc is not None and not self._done:
                log.error("station %s: cueing the next file failed: %r", self.target.mount, exc)
            self._step(self.machine.cued, None)
            return
        if result.resumed_one:
            self._state_changed()
        end, resumed_one = result.end, result.resumed_one
        self._step(
            lambda now, track: self.machine.cued(now, track, end=end, resumed_one=resumed_one),
            result.track,
        )
        if result.again is not None and not self._done:
            self._loop.call_later(result.again, self._refresh)

    def _read_done(self, handle: object, chunk: Chunk | None, exc: BaseException | None) -> None:
        if exc is not None or chunk is None:
            if exc is not None and not self._done:
                log.error("station %s: reading frames failed: %r", self.target.mount, exc)
            chunk = Chunk(b"", [], 0, True)  # ends the track
        self._step(self.machine.read, handle, chunk)

    def _refresh(self) -> None:
        if self._done:
            return

        cued = self.machine.cued_track

        def look() -> tuple[float | None, bool]:
            # A cued file deleted or rewritten since it was opened must not play.
            changed = cued is not None and FileStamp.of(cued.path) != cued.stamp
            return self._feed.refresh(), changed

        def refreshed(result: tuple[float | None, bool] | None, exc: BaseException | None) -> None:
            if exc is not None or result is None:
                return
            again, changed = result
            if changed and cued is not None and self.machine.cued_track is cued:
                log.info("%s changed since it was cued: not playing that version", cued.path)
                self._step(self.machine.uncue)
            self._step(self.machine.news, bool(self._feed.queued()))
            if again is not None and not self._done:
                self._loop.call_later(again, self._refresh)

        self._cue_lane.submit(look, refreshed)

    def _state_changed(self) -> None:
        saver, state = self._saver, self._state
        if saver is None or state is None:
            return
        position = self.machine.position()
        if position is not None and state.current == str(position[0]):
            state.current_offset = position[1]
        pending = [path for path, _ in self.machine.pending()]
        queue = pending + self._feed.queued()
        state.queue = [str(path) for path in queue if str(path) != state.current]
        saver.changed(state.snapshot())

    def _abort(self) -> None:
        self._up = False
        for output in self.outputs:
            output.cancel_timer()
            output.drop()

    def _finish(self) -> None:
        if self._done:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state_changed()
        self._done = True
        if self.recorder is not None:
            self.recorder.close()
        self._events.done(self.error)


class _SocketEvents:
    """A SourceSocket's callbacks, tied to the socket they came from."""

    def __init__(self, driver: StationDriver, output: Output) -> None:
        self._driver = driver
        self._output = output
        self.sock: Any = None

    def accepted(self) -> None:
        self._driver._accepted(self._output, self.sock)

    def failed(self, error: IcecastError) -> None:
        self._driver._failed(self._output, self.sock, error)


def _ignore(_result: object, _exc: BaseException | None) -> None:
    pass
