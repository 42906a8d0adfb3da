"""The station loop in virtual time: a fake clock, a fake connection that
records when each byte was handed over, and synthetic files on a real disk."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.frames import END, Frame, FrameParser, header_for, parse_header, silent_frame
from pushsource.core.station import ICECAST_BLOCK, Idle, ListSource, Pacing, Retry, Station
from pushsource.core.target import IcecastTarget, StationInfo
from pushsource.errors import AuthenticationError, IcecastError, MountInUseError
from pushsource.workers.state import PlayState, StateKeeper, load_state
from pushsource.workers.tracks import Track
from tests.synth import Spec, id3v1, id3v2, make_frames

LEAD, BATCH = 0.5, 0.05
TARGET = IcecastTarget(host="127.0.0.1", port=8000, mount="/test", password="s3cret")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


class FakeConnection:
    """Records (time, bytes) of every chunk the station hands over."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.chunks: list[tuple[float, bytes]] = []
        self.headers: dict[str, str] = {}
        self.opened_at = clock.now

    def accepted(self) -> bool | None:
        return True

    def stream(self, chunks: Iterator[bytes], headers: dict[str, str]) -> int:
        self.headers = dict(headers)
        for chunk in chunks:
            self.chunks.append((self.clock.now, chunk))
        return sum(len(c) for _, c in self.chunks)

    def frames(self) -> list[tuple[float, Frame]]:
        """Every frame with the time it was handed over, parsed independently
        of the station; chunks must hold whole frames and nothing else."""
        stream = b"".join(chunk for _, chunk in self.chunks)
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


class FakeTitles:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.titles: list[tuple[float, str]] = []
        self.closed = False

    def set(self, title: str) -> None:
        self.titles.append((self.clock.now, title))

    def close(self, timeout: float = 2.0) -> None:
        self.closed = True


class Harness:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.connections: list[FakeConnection] = []
        self.titles: list[FakeTitles] = []

    def connect(self, target: IcecastTarget) -> FakeConnection:
        connection = FakeConnection(self.clock)
        self.connections.append(connection)
        return connection

    def make_titles(self, connection: object) -> FakeTitles:
        titles = FakeTitles(self.clock)
        self.titles.append(titles)
        return titles

    def station(self, source: object, *, once: bool = True, **options: Any) -> Station:
        return Station(
            TARGET,
            source,  # type: ignore[arg-type]
            StationInfo(name="Test FM"),
            once=once,
            pacing=Pacing(lead=LEAD, batch=BATCH),
            clock=self.clock,
            sleep=self.clock.sleep,
            connect=self.connect,
            titles=self.make_titles,
            **options,
        )


def write(path: Path, frames: list[bytes], before: bytes = b"", after: bytes = b"") -> bytes:
    path.write_bytes(before + b"".join(frames) + after)
    return b"".join(frames)


@pytest.fixture
def harness() -> Harness:
    return Harness(Clock())


def test_frames_go_out_on_an_absolute_schedule_across_tracks(
    tmp_path: Path, harness: Harness
) -> None:
    tracks = [
        write(tmp_path / "a.mp3", make_frames(120), before=id3v2(bytes(100))),
        write(
            tmp_path / "b.mp3",
            make_frames(90, Spec(version="2", bitrate_index=8), seed=2),
            after=id3v1(),
        ),
        write(tmp_path / "c.mp3", make_frames(70, Spec(rate_index=1, mono=True), seed=3)),
    ]
    start = harness.clock.now
    harness.station(ListSource(sorted(tmp_path.iterdir()))).run()

    [connection] = harness.connections
    frames = connection.frames()
    audio = b"".join(f.data for _, f in frames)
    assert audio.startswith(b"".join(tracks))

    # Frame k is due at t0 + (exact audio before k); it goes out no more than
    # LEAD early and, once the first burst is out, at most one batch after that.
    due = Fraction(0)
    t0 = connection.chunks[0][0]
    assert t0 == start
    for when, frame in frames:
        due_at = t0 + float(due)
        assert when >= due_at - LEAD - 1e-9
        assert when <= max(t0, due_at - LEAD + BATCH) + 1e-9
        due += Fraction(frame.header.samples, frame.header.sample_rate)
    # The connection stays open until the audio has played out in real time.
    assert harness.clock.now == pytest.approx(t0 + float(due))


def test_wakes_up_per_batch_not_per_frame(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "a.mp3", make_frames(400))  # about 10.4 s
    harness.station(ListSource([tmp_path / "a.mp3"])).run()
    [connection] = harness.connections
    seconds = 400 * 1152 / 44100
    # One hand-over per batch interval (plus the first burst and the close).
    assert len(connection.chunks) <= seconds / BATCH + 3
    assert len(connection.chunks) >= (seconds - LEAD) / (2 * BATCH)


def test_titles_follow_the_first_frame_sent_not_the_queue(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "01 one.mp3", make_frames(100))
    write(tmp_path / "02 two.mp3", make_frames(100, seed=5))
    harness.station(ListSource(sorted(tmp_path.iterdir()))).run()
    [connection], [titles] = harness.connections, harness.titles
    assert [t for _, t in titles.titles] == ["01 one", "02 two"]
    # Each title is set after the batch holding the track's first frame.
    first_of_two = next(
        when for when, chunk in connection.chunks if make_frames(1, seed=5)[0] in chunk
    )
    assert titles.titles[1][0] >= first_of_two
    assert titles.titles[1][0] - titles.titles[0][0] > 100 * 1152 / 44100 - LEAD - BATCH
    assert titles.closed


def test_clean_close_sends_a_block_of_silence_after_the_last_frame(
    tmp_path: Path, harness: Harness
) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(50))
    harness.station(ListSource([tmp_path / "a.mp3"])).run()
    [connection] = harness.connections
    stream = b"".join(chunk for _, chunk in connection.chunks)
    tail = stream[len(audio) :]
    assert stream.startswith(audio)
    assert len(tail) >= ICECAST_BLOCK
    header = parse_header(tail)
    assert header is not None and header.bitrate == 128 and header.sample_rate == 44100
    assert all(
        tail[i + 4 : i + header.length] == bytes(header.length - 4)
        for i in range(0, len(tail), header.length)
    )


def test_ice_headers_describe_the_stream(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "a.mp3", make_frames(20, Spec(version="2", bitrate_index=8)))
    harness.station(ListSource([tmp_path / "a.mp3"])).run()
    headers = harness.connections[0].headers
    assert headers["ice-name"] == "Test FM"
    assert headers["ice-public"] == "0"
    assert "samplerate=22050" in headers["ice-audio-info"]
    assert "channels=2" in headers["ice-audio-info"]


def test_bad_files_are_skipped_with_one_line_each(
    tmp_path: Path, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "01 empty.mp3").write_bytes(b"")
    (tmp_path / "02 text.mp3").write_text("this is not music\n" * 100)
    good = write(tmp_path / "03 good.mp3", make_frames(30))
    (tmp_path / "04 tag only.mp3").write_bytes(id3v2(bytes(500)))
    paths = [*sorted(tmp_path.iterdir()), tmp_path / "05 missing.mp3"]
    with caplog.at_level(logging.WARNING, logger="pushsource"):
        harness.station(ListSource(paths)).run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    for name in ("01 empty.mp3", "02 text.mp3", "04 tag only.mp3", "05 missing.mp3"):
        assert sum(name in w for w in warnings) == 1
    stream = b"".join(chunk for _, chunk in harness.connections[0].chunks)
    assert stream.startswith(good)


class TimedSource:
    """Files that arrive at given virtual times; waiting advances the clock."""

    def __init__(
        self, clock: Clock, arrivals: list[tuple[float, Path]], station: list[Station]
    ) -> None:
        self.clock = clock
        self.arrivals = sorted(arrivals)
        self.station = station

    def get(self, timeout: float | None = None) -> Path | None:
        if self.arrivals and self.arrivals[0][0] <= self.clock.now + (timeout or 0):
            when, path = self.arrivals.pop(0)
            self.clock.now = max(self.clock.now, when)
            return path
        if not self.arrivals:
            self.station[0].stop()
        self.clock.now += timeout or 0
        return None


def test_queue_running_dry_closes_cleanly_and_reconnects(tmp_path: Path, harness: Harness) -> None:
    a = write(tmp_path / "a.mp3", make_frames(100))  # 2.6 s
    b = write(tmp_path / "b.mp3", make_frames(100, seed=2))
    c = write(tmp_path / "c.mp3", make_frames(100, seed=3))
    start = harness.clock.now
    holder: list[Station] = []
    source = TimedSource(
        harness.clock,
        # b arrives while a plays: no gap; c arrives long after b ran out.
        [
            (start, tmp_path / "a.mp3"),
            (start + 1.0, tmp_path / "b.mp3"),
            (start + 20.0, tmp_path / "c.mp3"),
        ],
        holder,
    )
    station = harness.station(source, once=False, idle=Idle.STOP)
    holder.append(station)
    station.run()
    first, second = harness.connections
    stream1 = b"".join(chunk for _, chunk in first.chunks)
    stream2 = b"".join(chunk for _, chunk in second.chunks)
    assert stream1.startswith(a + b) and len(stream1) - len(a + b) >= ICECAST_BLOCK
    assert stream2.startswith(c)
    assert second.chunks[0][0] == pytest.approx(start + 20.0)
    assert station.played == [tmp_path / "a.mp3", tmp_path / "b.mp3", tmp_path / "c.mp3"]


def test_stop_ends_with_silence_after_the_batch_in_flight(tmp_path: Path, harness: Harness) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(400))
    station = harness.station(ListSource([tmp_path / "a.mp3"]))
    clock = harness.clock

    def sleep(seconds: float) -> None:
        clock.now += seconds
        if clock.now > 1003.0:
            station.stop()

    station._sleep = sleep  # stop arrives during a sleep, as from a signal
    station.run()
    [connection] = harness.connections
    stream = b"".join(chunk for _, chunk in connection.chunks)
    sent = connection.frames()
    real = [f for _, f in sent if any(f.data[4:])]
    assert 0 < len(real) < 400
    assert audio.startswith(b"".join(f.data for f in real))
    assert len(stream) - sum(len(f.data) for f in real) >= ICECAST_BLOCK


# -- reconnecting ---------------------------------------------------------------


class DroppingConnection(FakeConnection):
    """Takes ``keep`` chunks, then fails like a reset: the chunk it took last
    never counts as sent (the station is not asked for the next one)."""

    def __init__(self, clock: Clock, keep: int) -> None:
        super().__init__(clock)
        self.keep = keep

    def stream(self, chunks: Iterator[bytes], headers: dict[str, str]) -> int:
        for n, chunk in enumerate(chunks, 1):
            if n == self.keep:
                raise IcecastError("connection to 127.0.0.1:8000 lost")
            self.chunks.append((self.clock.now, chunk))
        return 0


def test_a_dropped_connection_resumes_at_the_first_unsent_frame(
    tmp_path: Path, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(150))
    b = write(tmp_path / "b.mp3", make_frames(60, seed=2))
    made: list[FakeConnection] = []

    def connect(target: IcecastTarget) -> FakeConnection:
        made.append(
            DroppingConnection(harness.clock, 40) if not made else FakeConnection(harness.clock)
        )
        return made[-1]

    harness.connect = connect  # type: ignore[method-assign]
    station = harness.station(ListSource(sorted(tmp_path.iterdir())))
    with caplog.at_level(logging.INFO, logger="pushsource"):
        station.run()
    first, second = made
    sent1 = b"".join(chunk for _, chunk in first.chunks)
    sent2 = b"".join(chunk for _, chunk in second.chunks)
    assert (sent1 + sent2).startswith(a + b)  # nothing lost, nothing twice
    assert 0 < len(sent1) < len(a)
    # The new connection starts a fresh schedule: its first burst is the lead,
    # not a catch-up for the time spent reconnecting.
    burst = len(second.chunks[0][1]) // 417
    assert burst * 1152 / 44100 <= LEAD + 1152 / 44100
    assert second.chunks[0][0] - first.chunks[-1][0] >= 0.5  # the backoff delay
    titles = [t for titles in harness.titles for _, t in titles.titles]
    assert titles == ["a", "a", "b"]  # the title is set again after the reconnect
    assert any("resuming a" in r.getMessage() for r in caplog.records)
    assert station.played == [tmp_path / "a.mp3", tmp_path / "b.mp3"]


def test_backoff_grows_and_gives_up_at_the_limit(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "a.mp3", make_frames(20))
    attempts: list[float] = []

    def refuse(target: IcecastTarget) -> FakeConnection:
        attempts.append(harness.clock.now)
        raise IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")

    harness.connect = refuse  # type: ignore[method-assign]
    station = Station(
        TARGET,
        ListSource([tmp_path / "a.mp3"]),
        StationInfo(),
        once=True,
        retry=Retry(first=1.0, cap=4.0, limit=5),
        clock=harness.clock,
        sleep=harness.clock.sleep,
        connect=harness.connect,
        titles=harness.make_titles,
    )
    with pytest.raises(IcecastError, match="giving up after 6 attempts: cannot connect"):
        station.run()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 6
    assert 0.5 <= gaps[0] <= 1.0  # the first retry comes within a second
    for n, gap in enumerate(gaps, 1):
        base = min(4.0, 2 ** (n - 1))
        assert base / 2 <= gap <= base  # jittered, doubling, capped


def test_a_wrong_password_is_not_retried(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "a.mp3", make_frames(20))

    def deny(target: IcecastTarget) -> FakeConnection:
        raise AuthenticationError("authentication failed for source user on /test", 401)

    harness.connect = deny  # type: ignore[method-assign]
    station = harness.station(ListSource([tmp_path / "a.mp3"]))
    start = harness.clock.now
    with pytest.raises(AuthenticationError):
        station.run()
    assert harness.clock.now == start


def test_skip_ends_the_track_and_marks_it_played(tmp_path: Path, harness: Harness) -> None:
    write(tmp_path / "a.mp3", make_frames(300))
    b = write(tmp_path / "b.mp3", make_frames(40, seed=2))
    station = harness.station(ListSource(sorted(tmp_path.iterdir())))
    clock = harness.clock
    start = clock.now

    def sleep(seconds: float) -> None:
        clock.now += seconds
        if start + 2.0 <= clock.now < start + 2.0 + seconds:
            station.skip()

    station._sleep = sleep
    station.run()
    stream = b"".join(chunk for _, chunk in harness.connections[0].chunks)
    assert b in stream
    assert stream.index(b) < 300 * 417 // 2  # b came early: a was cut short
    assert station._state.was_played(tmp_path / "a.mp3")


def test_state_survives_a_restart_without_replaying(tmp_path: Path, harness: Harness) -> None:
    music = tmp_path / "music"
    music.mkdir()
    write(music / "a.mp3", make_frames(30))
    write(music / "b.mp3", make_frames(30, seed=2))
    path = tmp_path / "state.json"
    keeper = StateKeeper(path, load_state(path))
    first = harness.station(ListSource([music / "a.mp3"]), keeper=keeper)
    first.run()
    saved = load_state(path)
    assert saved.was_played(music / "a.mp3") and saved.current is None
    # The next run is offered both files and plays only the new one.
    second = harness.station(
        ListSource([music / "a.mp3", music / "b.mp3"]), keeper=StateKeeper(path, saved)
    )
    second.run()
    assert second.played == [music / "b.mp3"]
    # A file copied again with new content plays again.
    write(music / "a.mp3", make_frames(31, seed=9))
    third = harness.station(
        ListSource([music / "a.mp3"]), keeper=StateKeeper(path, load_state(path))
    )
    third.run()
    assert third.played == [music / "a.mp3"]


def test_the_state_says_where_a_track_was(tmp_path: Path, harness: Harness) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(300))
    path = tmp_path / "state.json"
    station = Station(
        TARGET,
        ListSource([tmp_path / "a.mp3"]),
        StationInfo(),
        once=True,
        clock=harness.clock,
        sleep=harness.clock.sleep,
        connect=harness.connect,
        titles=harness.make_titles,
        keeper=StateKeeper(path, PlayState(), interval=1.0),
    )
    clock = harness.clock
    start = clock.now
    offsets: list[int] = []

    def sleep(seconds: float) -> None:
        clock.now += seconds
        if clock.now > start + 3.0 and not offsets:
            offsets.append(load_state(path).current_offset)

    station._sleep = sleep
    station.run()
    # Part-way through, the saved offset is a frame boundary inside the track,
    # at most the lead plus the save interval behind what was sent.
    [offset] = offsets
    boundaries = {sum(len(f) for f in make_frames(300)[:k]) for k in range(300)}
    assert offset in boundaries and 0 < offset < len(audio)
    first = Track(tmp_path / "a.mp3").open(offset).first
    assert first.offset == offset and audio[offset:].startswith(first.data)


# -- idle policies ---------------------------------------------------------------


def test_idle_silence_keeps_the_mount_alive_until_a_file_arrives(
    tmp_path: Path, harness: Harness
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(100))  # 2.6 s
    b = write(tmp_path / "b.mp3", make_frames(50, seed=2))
    start = harness.clock.now
    holder: list[Station] = []
    arrival = start + 10.0
    source = TimedSource(
        harness.clock, [(start, tmp_path / "a.mp3"), (arrival, tmp_path / "b.mp3")], holder
    )
    station = harness.station(source, once=False, idle=Idle.SILENCE)
    holder.append(station)
    station.run()
    [connection], [titles] = harness.connections, harness.titles
    stream = b"".join(chunk for _, chunk in connection.chunks)
    assert stream.startswith(a)
    gap = stream[len(a) : stream.index(b)]
    # Silent frames fill the gap in real time: about 7.4 s of them, no more.
    frames = [f for _, f in connection.frames()]
    silent = [f for f in frames if not any(f.data[4:])]
    assert gap == b"".join(f.data for f in silent[: len(gap) // 417])
    idle_seconds = len(gap) // 417 * 1152 / 44100
    assert arrival - start - 2.62 - BATCH <= idle_seconds <= arrival - start - 2.6 + LEAD + BATCH
    # b goes out within one batch of its arrival.
    first_b = next(when for when, chunk in connection.chunks if b[:417] in chunk)
    assert first_b <= arrival + BATCH + 1152 / 44100  # wake-ups fall on frame boundaries
    assert [t for _, t in titles.titles] == ["a", "Test FM", "b"]


def test_idle_loop_replays_the_library_and_new_files_come_first(
    tmp_path: Path, harness: Harness
) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        write(tmp_path / f"{name}.mp3", make_frames(100, seed=seed))
    write(tmp_path / "new.mp3", make_frames(30, seed=3))
    start = harness.clock.now
    holder: list[Station] = []
    source = TimedSource(
        harness.clock,
        [(start, tmp_path / "a.mp3"), (start + 6.0, tmp_path / "new.mp3")],
        holder,
    )
    library = [tmp_path / "a.mp3", tmp_path / "b.mp3"]
    station = harness.station(source, once=False, idle=Idle.LOOP, library=lambda: library)
    holder.append(station)
    station.run()
    [titles] = harness.titles
    assert [t for _, t in titles.titles] == ["a", "a", "b", "new"]


def test_shuffled_loop_never_repeats_a_track_at_once(tmp_path: Path, harness: Harness) -> None:
    library = []
    for n in range(4):
        write(tmp_path / f"{n}.mp3", make_frames(10, seed=n))
        library.append(tmp_path / f"{n}.mp3")
    holder: list[Station] = []

    class Quiet(TimedSource):
        def get(self, timeout: float | None = None) -> Path | None:
            if self.clock.now > 1000.0 + 60:
                self.station[0].stop()
            return super().get(timeout) if self.arrivals else None

    source = Quiet(harness.clock, [(harness.clock.now, library[0])], holder)
    station = harness.station(
        source,
        once=False,
        idle=Idle.LOOP,
        library=lambda: library,
        shuffle=True,
        rng=random.Random(4),
    )
    holder.append(station)
    station.run()
    played = [t for _, t in harness.titles[0].titles]
    assert len(played) > 20
    assert all(x != y for x, y in itertools.pairwise(played))
    assert set(played) == {"0", "1", "2", "3"}


class RefusingConnection(FakeConnection):
    """Takes the first batch, then Icecast's answer turns out to be a refusal."""

    def accepted(self) -> bool | None:
        return False if self.chunks else None

    def stream(self, chunks: Iterator[bytes], headers: dict[str, str]) -> int:
        for chunk in chunks:
            self.chunks.append((self.clock.now, chunk))
        raise MountInUseError("mountpoint /test is in use", 403)


def test_a_refused_connection_counts_nothing_as_sent(
    tmp_path: Path, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(60), before=id3v2(bytes(300)))
    made: list[FakeConnection] = []

    def connect(target: IcecastTarget) -> FakeConnection:
        cls = RefusingConnection if len(made) < 3 else FakeConnection
        made.append(cls(harness.clock))
        return made[-1]

    harness.connect = connect  # type: ignore[method-assign]
    attempts: list[float] = []
    station = harness.station(ListSource([tmp_path / "a.mp3"]))
    real_sleep = station._sleep

    def sleep(seconds: float) -> None:
        if seconds >= 0.5:
            attempts.append(seconds)
        real_sleep(seconds)

    station._sleep = sleep
    with caplog.at_level(logging.INFO, logger="pushsource"):
        station.run()
    refused, accepted = made[:3], made[3]
    assert all(len(c.chunks) == 1 for c in refused)  # one batch each, then the answer
    assert b"".join(chunk for _, chunk in accepted.chunks).startswith(a)  # from the top
    assert [t for titles in harness.titles for _, t in titles.titles] == ["a"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("playing a") for m in messages) == 1
    assert not any(m.startswith("resuming") for m in messages)
    # Refusals are failures: the backoff grows (1, 2, 4 s bases, jittered).
    assert len(attempts) == 3 and attempts[2] > attempts[0]


def test_a_station_with_nothing_to_play_goes_on_air_with_silence(
    tmp_path: Path, harness: Harness
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(40))
    start = harness.clock.now
    holder: list[Station] = []
    source = TimedSource(harness.clock, [(start + 5.0, tmp_path / "a.mp3")], holder)
    station = harness.station(
        source, once=False, idle=Idle.SILENCE, silence=header_for(44100, 2, 128)
    )
    holder.append(station)
    station.run()
    [connection], [titles] = harness.connections, harness.titles
    # On air after the grace for a first file, silent until a arrives.
    assert connection.chunks[0][0] == pytest.approx(start + 1.0)
    stream = b"".join(chunk for _, chunk in connection.chunks)
    silence = silent_frame(header_for(44100, 2, 128))
    assert stream.index(a) > 0 and stream[: stream.index(a)] == silence * (stream.index(a) // 417)
    assert [t for _, t in titles.titles] == ["Test FM", "a"]
    assert connection.headers["ice-audio-info"] == "bitrate=128;samplerate=44100;channels=2"


def test_batches_end_on_icecast_blocks_when_a_block_fits_in_a_batch(
    tmp_path: Path, harness: Harness
) -> None:
    # 128 kbps: a 1400-byte relay block is 87.5 ms of audio, less than a 0.1 s
    # batch, so each wake-up completes a block (listeners get it at once) and
    # no frame waits more than a batch past the time it may go.
    write(tmp_path / "a.mp3", make_frames(400))
    station = harness.station(ListSource([tmp_path / "a.mp3"]))
    station._pacing = Pacing(lead=LEAD, batch=0.1)
    station.run()
    [connection] = harness.connections
    totals = list(itertools.accumulate(len(chunk) for _, chunk in connection.chunks))
    blocks = [total // ICECAST_BLOCK for total in totals]
    assert all(b > a for a, b in itertools.pairwise(blocks[:-3]))  # the close aside
    seconds = 400 * 1152 / 44100
    assert len(connection.chunks) <= seconds / 0.0875 + 3
    due, t0 = Fraction(0), connection.chunks[0][0]
    for when, frame in connection.frames():
        assert t0 + float(due) - LEAD - 1e-9 <= when <= max(t0, t0 + float(due) - LEAD + 0.1) + 1e-9
        due += Fraction(frame.header.samples, frame.header.sample_rate)


def test_a_longer_batch_wakes_once_per_whole_blocks_that_fit(
    tmp_path: Path, harness: Harness
) -> None:
    # --batch 0.25 at 128 kbps: two 87.5 ms blocks fit, so a wake-up comes
    # every two blocks (less CPU), and never more than a batch late.
    write(tmp_path / "a.mp3", make_frames(400))
    station = harness.station(ListSource([tmp_path / "a.mp3"]))
    station._pacing = Pacing(lead=LEAD, batch=0.25)
    station.run()
    [connection] = harness.connections
    totals = list(itertools.accumulate(len(chunk) for _, chunk in connection.chunks))
    blocks = [total // ICECAST_BLOCK for total in totals]
    steps = [b - a for a, b in itertools.pairwise(blocks[1:-3])]  # first and the close aside
    assert steps and all(step == 2 for step in steps), steps
    due, t0 = Fraction(0), connection.chunks[0][0]
    for when, frame in connection.frames():
        assert when <= max(t0, t0 + float(due) - LEAD + 0.25) + 1e-9
        due += Fraction(frame.header.samples, frame.header.sample_rate)


def test_going_on_at_the_end_of_a_file_is_no_skip(
    tmp_path: Path, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # A break right after a track's last frame went out leaves its end (and
    # any trailing tag) as the place to go on: that is a track done, not a
    # broken file.
    a = write(tmp_path / "a.mp3", make_frames(30), after=b"TAG" + bytes(125))
    b = write(tmp_path / "b.mp3", make_frames(30, seed=2))
    station = Station(
        TARGET,
        ListSource([tmp_path / "b.mp3"]),
        StationInfo(),
        once=True,
        clock=harness.clock,
        sleep=harness.clock.sleep,
        connect=harness.connect,
        titles=harness.make_titles,
        resume=[(tmp_path / "a.mp3", len(a))],
    )
    with caplog.at_level(logging.DEBUG, logger="pushsource"):
        station.run()
    [connection] = harness.connections
    assert b"".join(chunk for _, chunk in connection.chunks).startswith(b)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert station.played == [tmp_path / "b.mp3"]
