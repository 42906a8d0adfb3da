"""The station machine in virtual time: :class:`Sim` carries out its effects at
once, as the engine's StationDriver does in real time (the real Feed reads
files on a real disk); connections are fakes that record when each byte was
handed over. The tests of the machine (test_station, test_live, test_silence,
test_crossfade_station, test_station_splice) all run on it."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushsource.core import effects as fx
from pushsource.core.frames import END, Frame, FrameParser, header_for
from pushsource.core.station import Idle, Pacing, Retry, StationMachine
from pushsource.errors import IcecastError
from pushsource.workers.feed import Feed, ListSource
from pushsource.workers.icecast import StationInfo
from pushsource.workers.tracks import skipped

LEAD, BATCH = 0.5, 0.05
FORMAT = header_for(44100, 2, 128)
FRAME = 1152 / 44100


@dataclass
class Conn:
    """One fake source connection."""

    opened: float
    headers: dict[str, str]
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    closed: float | None = None
    #: What a driver does on this connection, in order: ("send", data, the
    #: Send's title marks) and ("title", title) for each SetTitle.
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def stream(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def frames(self) -> list[tuple[float, Frame]]:
        """Every frame with the time it was handed over, parsed independently
        of the station; chunks must hold whole frames and nothing else."""
        stream = self.stream()
        starts, at = [], 0
        for when, chunk in self.chunks:
            starts.append((at, when))
            at += len(chunk)
        parser = FrameParser()
        parser.feed(stream)
        parser.feed(b"")
        out = []
        while (event := parser.next_event()) is not END:
            assert isinstance(event, Frame), f"not a frame in the stream: {event}"
            when = max(w for start, w in starts if start <= event.offset)
            out.append((when, event))
        offsets = {f.offset for _, f in out}
        assert all(start in offsets for start, _ in starts), "a chunk splits a frame"
        assert sum(len(f.data) for _, f in out) == len(stream)
        return out


#: What a connection attempt does: accept, raise at connect, or accept and
#: drop on its n-th send (that send never reaching the kernel).
Plan = Callable[[int], "str | IcecastError | tuple[str, int]"]


class Sim:
    """The engine in virtual time."""

    def __init__(self, machine: StationMachine, feed: Feed, plan: Plan | None = None) -> None:
        self.now = 1000.0
        self.machine = machine
        self.feed = feed
        self.plan: Plan = plan or (lambda n: "accept")
        self.wake: float | None = None
        self.pending: deque[Callable[[], list[fx.Effect]]] = deque()
        self.at: list[tuple[float, int, Callable[[], object]]] = []  # outside events
        self.conns: list[Conn] = []
        self.attempts: list[float] = []
        self.titles: list[tuple[float, str]] = []
        # Per title: (connection, where in its stream the last Send before it began and ended).
        self.title_at: list[tuple[int, int, int, str]] = []
        self.states: list[tuple[float, str]] = []
        self.started: list[fx.Cued] = []
        self.ended: list[tuple[fx.Cued, bool]] = []
        self.finished: fx.Finished | None = None
        self.wakes = 0
        self._drop_at: int | None = None
        self.mixes: list[tuple[fx.Mix, fx.Join | None]] = []  # crossfade: asked, answered
        self.reopen_delay = 0.0  # how long a cue to go on in a file takes (a disk, a busy lane)

    def schedule(self, when: float, action: Callable[[], object]) -> None:
        self.at.append((when, len(self.at), action))
        self.at.sort()

    def run(self, limit: float = 3600.0) -> fx.Finished:
        self.apply(self.machine.start(self.now))
        end = self.now + limit
        while self.finished is None:
            if self.pending:
                self.apply(self.pending.popleft()())
                continue
            times = [t for t, _, _ in self.at[:1]] + ([self.wake] if self.wake is not None else [])
            if not times:
                raise AssertionError("the machine is stuck: nothing to wait for")
            when = min(times)
            assert when <= end, "ran out of virtual time"
            self.now = max(self.now, when)
            if self.at and self.at[0][0] <= self.now:
                _, _, action = self.at.pop(0)
                action()
            else:
                self.wake = None
                self.wakes += 1
                self.apply(self.machine.tick(self.now))
        return self.finished

    def step(self, event: Callable[..., list[fx.Effect]], *args: Any) -> None:
        self.pending.append(lambda: event(self.now, *args))

    def apply(self, effects: list[fx.Effect]) -> None:
        m, now = self.machine, self.now
        for e in effects:
            match e:
                case fx.Send(data=data, titles=marks):
                    conn = self.conns[-1]
                    conn.calls.append(("send", data, marks))
                    if self._drop_at is not None and len(conn.chunks) + 1 >= self._drop_at:
                        self._drop_at = None
                        error = IcecastError("connection to 127.0.0.1:8000 lost")
                        self.step(m.failed, error, len(data))
                    else:
                        conn.chunks.append((now, data))
                case fx.Wake(at):
                    self.wake = at
                case fx.Cue(resume):
                    r = self.feed.cue(resume, last=m.last_started, chunk=m.cue_frames(160))
                    answer = lambda r=r: m.cued(  # noqa: E731
                        self.now, r.track, end=r.end, resumed_one=r.resumed_one
                    )
                    if self.reopen_delay and resume is not None:
                        delay = self.reopen_delay
                        self.schedule(now + delay, lambda a=answer: self.pending.append(a))
                    else:
                        self.pending.append(answer)
                case fx.Mix():
                    join = self.feed.mix(e, m.station_format.bitrate)
                    self.mixes.append((e, join))
                    self.step(m.joined, e.out_track, e.in_track, join)
                case fx.Read(handle, frames):
                    chunk = self.feed.read(handle, frames)
                    self.step(m.read, handle, chunk)
                case fx.Release(handle):
                    self.feed.release(handle)
                case fx.Connect(headers):
                    self.attempts.append(now)
                    what = self.plan(len(self.attempts))
                    self.conns.append(Conn(now, headers))
                    if isinstance(what, IcecastError):
                        self.step(m.failed, what)
                    else:
                        if isinstance(what, tuple):
                            self._drop_at = what[1]
                        self.step(m.accepted)
                case fx.Close():
                    self.conns[-1].closed = now
                    self.step(m.closed)
                case fx.SetTitle(title):
                    self.titles.append((now, title))
                    if self.conns:
                        self.conns[-1].calls.append(("title", title))
                        sent = sum(len(d) for _, d in self.conns[-1].chunks)
                        last = len(self.conns[-1].chunks[-1][1]) if self.conns[-1].chunks else 0
                        self.title_at.append((len(self.conns) - 1, sent - last, sent, title))
                case fx.Started(track):
                    self.started.append(track)
                case fx.Ended(track, was_skipped):
                    self.ended.append((track, was_skipped))
                case fx.State(state):
                    self.states.append((now, state))
                case fx.Finished():
                    self.finished = e


class TimedSource(ListSource):
    """Files that arrive at given virtual times."""

    def __init__(self, sim: Callable[[], Sim], arrivals: list[tuple[float, Path]]) -> None:
        super().__init__([])
        self._sim = sim
        self.arrivals = sorted(arrivals)

    def get(self, timeout: float | None = None) -> Path | None:
        if self.arrivals and self.arrivals[0][0] <= self._sim().now:
            return self.arrivals.pop(0)[1]
        return super().get(timeout)

    def exhausted(self) -> bool:
        return False


def make(
    source: ListSource,
    *,
    once: bool = True,
    idle: Idle = Idle.SILENCE,
    retry: Retry = Retry(),  # noqa: B008 (frozen)
    plan: Plan | None = None,
    library: list[Path] | None = None,
    shuffle: bool = False,
    rng: random.Random | None = None,
    resume: list[tuple[Path, int]] | None = None,
    played: set[Path] | None = None,
    pacing: Pacing = Pacing(lead=LEAD, batch=BATCH),  # noqa: B008 (frozen)
    metaint: int | None = None,
    crossfade: float = 0.0,
    listen_url: str = "",
) -> Sim:
    done = played if played is not None else set()
    feed = Feed(
        source,
        resolve=lambda p: p,
        prepare=lambda p: None,
        was_played=lambda p: p in done,
        mark_played=done.add,
        unplayable=skipped,
        library=(lambda: library) if library is not None else None,
        shuffle=shuffle,
        rng=rng,
    )
    machine = StationMachine(
        silence=FORMAT,
        headers=StationInfo(name="Test FM").headers(128, 44100, 2),
        name="Test FM",
        once=once,
        idle=idle,
        pacing=pacing,
        retry=retry,
        resume=resume or [],
        rng=rng,
        metaint=metaint,
        crossfade=crossfade,
        listen_url=listen_url,
        mount="/test" if listen_url else "",
    )
    return Sim(machine, feed, plan)


def write(path: Path, frames: list[bytes], before: bytes = b"", after: bytes = b"") -> bytes:
    path.write_bytes(before + b"".join(frames) + after)
    return b"".join(frames)
