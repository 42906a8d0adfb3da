"""Several outputs: the Reframer (an output in another format on the station's
timeline) and the driver's fan-out with fake sockets (one output's failure
never touches the others; the station goes off air only when none is on)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.effects import Alt, Chunk, Cued, Span
from pushsource.core.frames import header_for, parse_header, silent_frame
from pushsource.core.icy import METAINT, IcyWriter
from pushsource.core.outputs import Reframer, format_key
from pushsource.core.station import ICECAST_BLOCK, Pacing, StationMachine
from pushsource.core.target import IcecastTarget, StationInfo
from pushsource.engine.loop import Engine
from pushsource.engine.outputs import OutputSpec
from pushsource.engine.station import StationDriver
from pushsource.errors import AuthenticationError, IcecastError
from pushsource.workers.feed import Feed, ListSource
from pushsource.workers.tracks import skipped
from tests.support.listener import IcyDemuxer, parse_stream_title
from tests.synth import Spec, make_frames
from tests.test_engine import Recorder

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

STATION = header_for(44100, 2, 128)
LOW = header_for(22050, 1, 64)
LOW_SPEC = Spec(version="2", bitrate_index=8, rate_index=0, mono=True)  # 64 kbps 22.05 kHz


def alt_of(frames: list[bytes]) -> Alt:
    ends, size = [], 0
    for frame in frames:
        size += len(frame)
        ends.append(size)
    header = parse_header(frames[0])
    assert header is not None
    return Alt(b"".join(frames), ends, header)


def cued(alts: dict[str, Alt]) -> Cued:
    [frame] = make_frames(1)
    header = parse_header(frame)
    assert header is not None
    chunk = Chunk(frame, [len(frame)], 0, True)
    return Cued(None, Path("a.mp3"), "A", 10.0, 128, header, chunk, alts=alts)


KEY = format_key(22050, 1, 64)


def test_a_track_plays_from_its_first_frame_in_the_other_format() -> None:
    low = make_frames(200, LOW_SPEC)
    track = cued({KEY: alt_of(low)})
    reframer = Reframer(KEY, LOW)
    duration = LOW.duration
    data, count = reframer.frames([Span(track, 0.0, 10 * duration)])
    assert count == 10 and data == b"".join(low[:10])
    data, count = reframer.frames([Span(track, 10 * duration, 5 * duration)])
    assert count == 5 and data == b"".join(low[10:15])


def test_frames_follow_the_time_of_spans_of_another_frame_length() -> None:
    """The station's frames last 26.12 ms and the output's 26.12 ms at 22.05
    kHz; at 48 kHz they last 24 ms: the output's count follows the seconds."""
    out = header_for(48000, 2, 128)
    spec = Spec(version="1", bitrate_index=9, rate_index=1)  # 48 kHz
    frames = make_frames(400, spec)
    track = cued({"k": alt_of(frames)})
    reframer = Reframer("k", out)
    sent = 0
    at = 0.0
    for _ in range(30):  # 30 station batches of 4 frames
        seconds = 4 * STATION.duration
        _, count = reframer.frames([Span(track, at, seconds)])
        sent += count
        at += seconds
    assert sent == round(at / out.duration)


def test_a_rejoining_output_starts_at_the_stations_position() -> None:
    low = make_frames(400, LOW_SPEC)
    track = cued({KEY: alt_of(low)})
    reframer = Reframer(KEY, LOW)
    reframer.frames([Span(track, 0.0, 2 * LOW.duration)])
    # Off air for a while (no Sends to it), back at 5 s into the track.
    data, count = reframer.frames([Span(track, 5.0, 3 * LOW.duration)])
    first = round(5.0 / LOW.duration)
    assert data == b"".join(low[first : first + count]) and count == 3


def test_silence_for_silence_and_for_a_copy_that_is_short() -> None:
    low = make_frames(10, LOW_SPEC)
    track = cued({KEY: alt_of(low)})
    reframer = Reframer(KEY, LOW)
    quiet = silent_frame(LOW)
    data, count = reframer.frames([Span(None, 0.0, 2.5 * LOW.duration)])
    assert (data, count) == (quiet * 2, 2)  # half a frame owed
    data, count = reframer.frames([Span(None, 0.0, 0.5 * LOW.duration)])
    assert (data, count) == (quiet, 1)
    data, count = reframer.frames([Span(track, 0.0, 12 * LOW.duration)])
    assert data == b"".join(low) + quiet * 2 and count == 12


def test_a_track_without_a_copy_is_silence_and_closing_fills_a_block() -> None:
    reframer = Reframer(KEY, LOW)
    data, count = reframer.frames([Span(cued({}), 0.0, 3 * LOW.duration)])
    assert data == silent_frame(LOW) * 3 and count == 3
    assert len(reframer.closing()) > ICECAST_BLOCK


# -- the driver's fan-out, with fake sockets on the real engine


class Sock:
    """A source socket whose fate the test decides: ``plan`` says, for each
    attempt on that output, accept or fail with which error."""

    def __init__(self, loop: Any, target: IcecastTarget, events: Any, fate: Any) -> None:
        self.loop, self.target, self.events, self.fate = loop, target, events, fate
        self.address = "127.0.0.1"
        self.buffered = self.unsent = 0
        self.titles_inside = False  # titles by admin request
        self.sent = bytearray()
        self.closed = False

    def open(self, headers: dict[str, str]) -> None:
        self.headers = headers
        error = self.fate()
        if error is None:
            self.loop.call_soon(self.events.accepted)
        else:
            self.loop.call_soon(self.events.failed, error)

    def send(self, data: bytes) -> None:
        self.sent += data
        if self.titles_inside:
            self.wire += self.icy.wrap(data)

    def title(self, title: str, at: int = 0) -> None:
        assert self.titles_inside
        self.icy.title(title, at)

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def drop(self, error: IcecastError) -> None:
        """The server goes away (from any thread)."""
        self.loop.call_soon_threadsafe(self.events.failed, error)


class Fates:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: dict[str, list[IcecastError | None]] = {}
        self.sockets: dict[str, list[Sock]] = {}
        self.inside = False  # titles inside the stream (ICY), as SourceSocket(metaint=...)

    def connect(self, loop: Any, target: IcecastTarget, events: Any) -> Sock:
        mount = target.mount

        def fate() -> IcecastError | None:
            with self.lock:
                plan = self.errors.get(mount, [])
                return plan.pop(0) if plan else None

        sock = Sock(loop, target, events, fate)
        sock.titles_inside = self.inside
        sock.icy, sock.wire = IcyWriter(METAINT), bytearray()
        with self.lock:
            self.sockets.setdefault(mount, []).append(sock)
        return sock

    def last(self, mount: str) -> Sock:
        with self.lock:
            return self.sockets[mount][-1]

    def count(self, mount: str) -> int:
        with self.lock:
            return len(self.sockets.get(mount, []))


def two_outputs(
    engine: Engine,
    path: Path | list[Path],
    fates: Fates,
    titles: list[tuple[str, str]],
    low: Path | None = None,
) -> tuple[StationDriver, Recorder]:
    """A station on /a, with /b beside it: the same frames, or with ``low``
    (the track's copy at 64 kbps 22.05 kHz mono) in that format."""
    feed = Feed(
        ListSource(path if isinstance(path, list) else [path]),
        resolve=lambda p: p,
        prepare=lambda p: None,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=skipped,
        alternates=[(KEY, "64 kbps", lambda p: low)] if low is not None else [],
    )
    machine = StationMachine(
        silence=STATION,
        headers=StationInfo().headers(128, 44100, 2),
        once=True,
        pacing=Pacing(lead=0.3, batch=0.1),
    )

    def title_to(mount: str) -> Callable[..., None]:
        def send(address: str, title: str, superseded: Any) -> None:
            titles.append((mount, title))

        return send

    recorder = Recorder()
    second = IcecastTarget(host="127.0.0.2", port=9, mount="/b", password="pw")
    driver = StationDriver(
        engine,
        machine,
        feed,
        IcecastTarget(host="127.0.0.1", port=9, mount="/a", password="pw"),
        events=recorder,
        connect=fates.connect,
        titles=title_to("/a"),
        outputs=[
            OutputSpec(
                second,
                title_to("/b"),
                label="/b",
                reframer=Reframer(KEY, LOW) if low is not None else None,
            )
        ],
    )
    return driver, recorder


def wait_for(what: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def engine() -> Any:
    engine = Engine().start()
    yield engine
    engine.stop()


@pytest.fixture
def song(tmp_path: Path) -> tuple[Path, bytes]:
    audio = b"".join(make_frames(380))  # 10 s: room for a few reconnects
    path = tmp_path / "a.mp3"
    path.write_bytes(audio)
    return path, audio


def test_one_output_lost_and_back_the_other_plays_on(
    engine: Engine, song: tuple[Path, bytes]
) -> None:
    path, audio = song
    fates = Fates()
    titles: list[tuple[str, str]] = []
    driver, recorder = two_outputs(engine, path, fates, titles)
    driver.start()
    wait_for(lambda: fates.count("/a") and len(fates.last("/a").sent) > 20_000)
    # /b goes away and refuses twice (no answer): /a never notices.
    with fates.lock:
        fates.errors["/b"] = [IcecastError("refused"), IcecastError("refused")]
    fates.last("/b").drop(IcecastError("reset"))
    wait_for(lambda: fates.count("/b") == 4, 15)  # the first, then 3 attempts
    wait_for(lambda: driver.outputs[1].state == "on air")
    assert recorder.finished.wait(15)
    assert recorder.error is None
    [a] = fates.sockets["/a"]  # one connection throughout
    assert bytes(a.sent).startswith(audio)  # all of it, then the closing silence
    assert "reconnecting" not in recorder.states
    b = fates.sockets["/b"]
    assert bytes(b[0].sent) and audio.startswith(bytes(b[0].sent)[: len(b[0].sent) // 2])
    # Back, it rejoined at the station's position: a run from later in the
    # track, not the start again; and got the title again (Icecast wiped it).
    back = bytes(b[-1].sent)
    assert back and back[:2000] in audio[len(b[0].sent) - 2000 :]
    assert titles.count(("/b", "a")) == 2 and titles.count(("/a", "a")) == 1
    out = driver.outputs[1]
    assert out.reconnects == 1 and out.attempts == 0 and out.state == "off"


def test_the_station_goes_off_air_only_when_every_output_is(
    engine: Engine, song: tuple[Path, bytes]
) -> None:
    path, audio = song
    fates = Fates()
    driver, recorder = two_outputs(engine, path, fates, [])
    driver.start()
    wait_for(lambda: fates.count("/b") and len(fates.last("/b").sent) > 10_000)
    with fates.lock:
        fates.errors["/b"] = [IcecastError("down")] * 50
    fates.last("/b").drop(IcecastError("reset"))
    wait_for(lambda: driver.outputs[1].state == "reconnecting")
    assert "reconnecting" not in recorder.states
    fates.last("/a").drop(IcecastError("reset"))  # the last one on air
    wait_for(lambda: "reconnecting" in recorder.states)
    # The station comes back on /a; it goes on where it stopped.
    wait_for(lambda: fates.count("/a") == 2)
    assert recorder.finished.wait(20)
    first, again = (bytes(s.sent) for s in fates.sockets["/a"])
    assert audio.startswith(first) and audio.find(again[:4000]) == len(first)
    driver.stop()


def test_a_wrong_password_on_one_output_stops_that_output_only(
    engine: Engine, song: tuple[Path, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path, audio = song
    fates = Fates()
    fates.errors["/b"] = [AuthenticationError("authentication failed (401)", 401)]
    driver, recorder = two_outputs(engine, path, fates, [])
    driver.start()
    assert recorder.finished.wait(20)
    assert recorder.error is None
    assert bytes(fates.last("/a").sent).startswith(audio)
    assert fates.count("/b") == 1  # never again
    assert driver.outputs[1].state == "failed"
    assert "authentication failed" in (driver.outputs[1].error or "")


def test_every_output_refused_for_good_fails_the_station(
    engine: Engine, song: tuple[Path, bytes]
) -> None:
    path, _ = song
    fates = Fates()
    refused = AuthenticationError("authentication failed (401)", 401)
    fates.errors["/a"] = [refused]
    fates.errors["/b"] = [refused]
    driver, recorder = two_outputs(engine, path, fates, [])
    driver.start()
    assert recorder.finished.wait(10)
    assert isinstance(recorder.error, AuthenticationError)
    assert recorder.states[-1] == "failed"


def test_a_track_one_output_cannot_get_is_skipped_on_all_with_one_line(tmp_path: Path) -> None:
    from pushsource.errors import TrackError

    paths = []
    for name in ("bad", "good"):
        path = tmp_path / f"{name}.mp3"
        path.write_bytes(b"".join(make_frames(40)))
        paths.append(path)
    low = tmp_path / "good-64.mp3"
    low.write_bytes(b"".join(make_frames(40, LOW_SPEC)))

    def prepare(path: Path) -> Path:
        if path.name == "bad.mp3":
            raise TrackError(path, "libvlc could not decode it")
        return low

    lines: list[TrackError] = []
    feed = Feed(
        ListSource(paths),
        resolve=lambda p: p,
        prepare=lambda p: None,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lines.append,
        alternates=[(KEY, "64 kbps", prepare)],
    )
    result = feed.cue(None, chunk=10)
    assert result.track is not None and result.track.path == paths[1]
    alt = result.track.alts[KEY]
    assert alt.data == low.read_bytes() and len(alt.ends) == 40
    assert alt.header.sample_rate == 22050
    [line] = lines
    assert line.path == paths[0] and "(for the 64 kbps output)" in line.reason


def chunk_of(frames: list[bytes], last: bool) -> Chunk:
    ends, size = [], 0
    for frame in frames:
        size += len(frame)
        ends.append(size)
    return Chunk(b"".join(frames), ends, 0, last)


def test_a_copy_is_read_as_it_plays_and_forgotten_behind() -> None:
    low = make_frames(1000, LOW_SPEC)  # 26 s
    window = alt_of(low[:200])
    window.handle, window.last = "the open copy", False
    track = cued({KEY: window})
    reframer = Reframer(KEY, LOW)
    duration = LOW.duration
    data, count = reframer.frames([Span(track, 0.0, 40 * duration)])
    assert data == b"".join(low[:40]) and reframer.wanted() is None  # 4.2 s ahead
    data, count = reframer.frames([Span(track, 40 * duration, 60 * duration)])
    assert data == b"".join(low[40:100])
    assert reframer.wanted() is window  # 2.6 s left in: read the next chunk
    window.reading = True
    assert reframer.wanted() is None  # one read at a time
    window.add(chunk_of(low[200:400], last=False))
    assert not window.reading and window.loaded == 400
    data, count = reframer.frames([Span(track, 100 * duration, 200 * duration)])
    assert data == b"".join(low[100:300]) and count == 200
    # What was sent is forgotten, but for 2 s behind.
    assert window.first == 300 - round(2.0 / duration)
    assert len(window.data) == sum(map(len, low[window.first : 400]))


def test_a_copy_read_late_is_silence_on_time_then_its_frames_at_their_time() -> None:
    low = make_frames(600, LOW_SPEC)
    window = alt_of(low[:50])
    window.handle, window.last = "the open copy", False
    track = cued({KEY: window})
    reframer = Reframer(KEY, LOW)
    duration = LOW.duration
    data, count = reframer.frames([Span(track, 0.0, 80 * duration)])
    assert count == 80 and data == b"".join(low[:50]) + silent_frame(LOW) * 30
    assert reframer.late == 30
    window.add(chunk_of(low[50:300], last=True))
    data, count = reframer.frames([Span(track, 80 * duration, 10 * duration)])
    assert data == b"".join(low[80:90])  # where the station is, not where the read was


def test_a_resumed_tracks_copy_starts_about_where_the_station_goes_on(tmp_path: Path) -> None:
    from pushsource.workers.feed import read_alt
    from pushsource.workers.tracks import Track

    low = make_frames(800, LOW_SPEC)  # 21 s
    path = tmp_path / "low.mp3"
    path.write_bytes(b"".join(low))
    alt = read_alt(Track(path).open(), skip=10.0)
    first = round(9.0 / LOW.duration)  # a second early
    assert alt.first == first and not alt.last and alt.handle is not None
    assert alt.data.startswith(low[first]) and len(alt.ends) == round(6.0 / LOW.duration)
    # The station goes on 10 s in: the output's first frame is the one there.
    reframer = Reframer(KEY, LOW)
    data, _ = reframer.frames([Span(cued({KEY: alt}), 10.0, LOW.duration)])
    assert data == low[round(10.0 / LOW.duration)]
    assert isinstance(alt.handle, Track)
    alt.handle.close()


def test_a_converted_output_goes_on_where_the_station_does_after_an_outage(
    engine: Engine, song: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _ = song
    frames = make_frames(380, LOW_SPEC)  # as long as the song, frame for frame
    low = tmp_path / "low.mp3"
    low.write_bytes(b"".join(frames))
    fates = Fates()
    driver, recorder = two_outputs(engine, path, fates, [], low=low)
    driver.start()
    wait_for(lambda: fates.count("/b") and len(fates.last("/b").sent) > 40_000, 15)  # 5 s
    with fates.lock:
        fates.errors["/a"] = [IcecastError("down")]
    fates.last("/a").drop(IcecastError("reset"))
    wait_for(lambda: driver.outputs[0].state == "reconnecting")
    fates.last("/b").drop(IcecastError("reset"))  # none on air: the station rewinds
    wait_for(lambda: fates.count("/b") == 2 and len(fates.last("/b").sent) > 2000, 15)
    assert recorder.finished.wait(20)
    before, after = (bytes(sock.sent) for sock in fates.sockets["/b"])
    # Its own frames throughout, and after the outage on from where it was
    # (the machine goes on at the first frame not confirmed: here, all were).
    assert b"".join(frames).startswith(before)
    one = len(frames[0])
    at = b"".join(frames).find(after[: 2 * one])
    assert abs(at - len(before)) <= 3 * one, (at, len(before))
    assert after[: len(after) // 2] in b"".join(frames)


def test_a_skip_acts_on_every_output_and_they_carry_the_same_bytes(
    engine: Engine, tmp_path: Path
) -> None:
    first, second = tmp_path / "1.mp3", tmp_path / "2.mp3"
    one = b"".join(make_frames(380, seed=1))
    two = b"".join(make_frames(60, seed=2))
    first.write_bytes(one)
    second.write_bytes(two)
    fates = Fates()
    titles: list[tuple[str, str]] = []
    driver, recorder = two_outputs(engine, [first, second], fates, titles)
    driver.start()
    wait_for(lambda: fates.count("/b") and len(fates.last("/b").sent) > 20_000)
    driver.skip()
    assert recorder.finished.wait(15)
    a, b = (bytes(fates.last(mount).sent) for mount in ("/a", "/b"))
    assert a == b  # one timeline: the same frames on both, from the first
    cut = a.find(two[:2000])
    assert 20_000 <= cut < len(one) and a[:cut] == one[:cut]  # the first cut short on both
    assert a[cut:].startswith(two)
    assert [t for m, t in titles if m == "/a"] == [t for m, t in titles if m == "/b"] == ["1", "2"]


def test_titles_inside_the_stream_change_at_the_block_after_each_tracks_first_byte(
    engine: Engine, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.mp3", tmp_path / "b.mp3"
    first.write_bytes(b"".join(make_frames(60)))
    second.write_bytes(b"".join(make_frames(60)))
    fates = Fates()
    fates.inside = True
    admin: list[tuple[str, str]] = []
    driver, recorder = two_outputs(engine, [first, second], fates, admin)
    driver.start()
    assert recorder.finished.wait(15) and recorder.error is None
    assert admin == []  # no admin request at all: every title went inside
    for mount in ("/a", "/b"):
        [sock] = fates.sockets[mount]
        demuxer = IcyDemuxer(METAINT)
        audio, blocks = demuxer.feed(bytes(sock.wire))
        assert audio == bytes(sock.sent)  # byte-exact once the blocks are out
        titles = [(at, parse_stream_title(block)) for at, block in blocks]
        start_b = len(first.read_bytes())
        assert [t for _, t in titles] == ["a", "b"]
        assert titles[0][0] == METAINT  # the first block of the connection
        # b's title: in the first block at or after b's first byte, never before.
        assert start_b <= titles[1][0] < start_b + METAINT


def test_an_output_that_rejoins_gets_the_title_inside_its_new_stream(
    engine: Engine, song: tuple[Path, bytes]
) -> None:
    path, _ = song
    fates = Fates()
    fates.inside = True
    driver, recorder = two_outputs(engine, path, fates, [])
    driver.start()
    wait_for(lambda: fates.count("/b") and len(fates.last("/b").sent) > 20_000)
    fates.last("/b").drop(IcecastError("reset"))
    wait_for(lambda: fates.count("/b") == 2 and len(fates.last("/b").sent) > 2 * METAINT)
    back = fates.last("/b")
    _, blocks = IcyDemuxer(METAINT).feed(bytes(back.wire))
    assert [(at, parse_stream_title(b)) for at, b in blocks][:1] == [(METAINT, "a")]
    driver.stop()
    assert recorder.finished.wait(15)
