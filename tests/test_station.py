"""The station step machine in virtual time: a sim carries out its effects at
once (the real Feed reads synthetic files on a real disk), connections are
fakes that record when each byte was handed over."""

from __future__ import annotations

import itertools
import logging
import random
from fractions import Fraction
from pathlib import Path

import pytest

from pushsource.core import effects as fx
from pushsource.core import station as core
from pushsource.core.frames import parse_header, silent_frame
from pushsource.core.icy import IcyWriter
from pushsource.core.station import ICECAST_BLOCK, Idle, Pacing, Retry
from pushsource.errors import AuthenticationError, IcecastError, MountInUseError, WrongServerError
from pushsource.workers.feed import ListSource
from pushsource.workers.folder import QueueEdit
from tests.support.sim import BATCH, FORMAT, FRAME, LEAD, Sim, TimedSource, make, write
from tests.synth import Spec, id3v1, id3v2, make_frames


def test_frames_go_out_on_an_absolute_schedule_across_tracks(tmp_path: Path) -> None:
    tracks = [
        write(tmp_path / "a.mp3", make_frames(120), before=id3v2(bytes(100))),
        write(tmp_path / "b.mp3", make_frames(90, Spec(bitrate_index=8), seed=2), after=id3v1()),
        write(tmp_path / "c.mp3", make_frames(70, Spec(rate_index=1, mono=True), seed=3)),
    ]
    sim = make(ListSource(sorted(tmp_path.iterdir())))
    start = sim.now
    sim.run()
    [conn] = sim.conns
    frames = conn.frames()
    audio = b"".join(f.data for _, f in frames)
    assert audio.startswith(b"".join(tracks))
    # Frame k is due at t0 + (exact audio before k); it goes out no more than
    # LEAD early and, once the first burst is out, at most one batch after that.
    due = Fraction(0)
    t0 = conn.chunks[0][0]
    assert t0 == start  # a file to play: on air at once
    for when, frame in frames:
        due_at = t0 + float(due)
        assert when >= due_at - LEAD - 1e-9
        assert when <= max(t0, due_at - LEAD + BATCH) + 1e-9
        due += Fraction(frame.header.samples, frame.header.sample_rate)
    # The connection stays open until the audio has played out in real time.
    assert conn.closed == pytest.approx(t0 + float(due))
    assert sim.finished == fx.Finished(None)


@pytest.mark.parametrize("metaint", [None, 1024, 999])
def test_each_send_completes_a_relay_block_on_the_wire(tmp_path: Path, metaint: int | None) -> None:
    """Icecast relays 1400-byte blocks of what it reads: each batch ends just
    past a block's end, so no block waits for the next batch. With titles
    inside the stream the blocks count the ICY bytes too (one a block, and a
    title's block where a track starts)."""
    paths = [tmp_path / "a.mp3", tmp_path / "b.mp3"]
    write(paths[0], make_frames(300))
    write(paths[1], make_frames(300))
    sim = make(ListSource(paths), pacing=Pacing(lead=LEAD, batch=0.1), metaint=metaint)
    sim.run()
    [conn] = sim.conns
    writer = IcyWriter(metaint) if metaint else None
    wire, ends = 0, []
    for call in conn.calls:
        if call[0] == "title" and writer is not None:
            writer.title(call[1])
        elif call[0] == "send":
            _, data, marks = call
            for at, title in marks:
                if writer is not None:
                    writer.title(title, at)
            wire += len(writer.wrap(data)) if writer is not None else len(data)
            ends.append(wire)
    assert len(ends) > 100
    # Past the first batches (the lead goes out at once) and before the close.
    late = [end % ICECAST_BLOCK for end in ends[10:-3]]
    slack = FORMAT.length + 2 * 80  # a frame, and an ICY block or two on the way
    assert max(late) < slack, sorted(late)[-5:]


def test_wakes_up_per_batch_not_per_frame(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(400))  # about 10.4 s
    sim = make(ListSource([tmp_path / "a.mp3"]))
    sim.run()
    [conn] = sim.conns
    seconds = 400 * FRAME
    assert len(conn.chunks) <= seconds / BATCH + 3
    assert len(conn.chunks) >= (seconds - LEAD) / (2 * BATCH)
    assert sim.wakes <= seconds / BATCH + 10


def test_titles_follow_the_first_frame_sent_not_the_queue(tmp_path: Path) -> None:
    write(tmp_path / "01 one.mp3", make_frames(100))
    write(tmp_path / "02 two.mp3", make_frames(100, seed=5))
    sim = make(ListSource(sorted(tmp_path.iterdir())))
    sim.run()
    [conn] = sim.conns
    assert [t for _, t in sim.titles] == ["01 one", "02 two"]
    first_of_two = next(when for when, chunk in conn.chunks if make_frames(1, seed=5)[0] in chunk)
    assert sim.titles[1][0] == first_of_two  # with the batch holding its first frame
    assert sim.titles[1][0] - sim.titles[0][0] > 100 * FRAME - LEAD - BATCH


def test_clean_close_sends_a_block_of_silence_after_the_last_frame(tmp_path: Path) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(50))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    sim.run()
    stream = sim.conns[0].stream()
    tail = stream[len(audio) :]
    assert stream.startswith(audio)
    assert len(tail) >= ICECAST_BLOCK
    header = parse_header(tail)
    assert header is not None and header.bitrate == 128 and header.sample_rate == 44100
    assert tail == silent_frame(header) * (len(tail) // header.length)


def test_ice_headers_describe_the_stream(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(20))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    sim.run()
    headers = sim.conns[0].headers
    assert headers["ice-name"] == "Test FM"
    assert headers["ice-public"] == "0"
    assert headers["ice-audio-info"] == "bitrate=128;samplerate=44100;channels=2"


def test_bad_files_are_skipped_with_one_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "01 empty.mp3").write_bytes(b"")
    (tmp_path / "02 text.mp3").write_text("this is not music\n" * 100)
    good = write(tmp_path / "03 good.mp3", make_frames(30))
    (tmp_path / "04 tag only.mp3").write_bytes(id3v2(bytes(500)))
    paths = [*sorted(tmp_path.iterdir()), tmp_path / "05 missing.mp3"]
    with caplog.at_level(logging.WARNING, logger="pushsource"):
        make(ListSource(paths)).run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    for name in ("01 empty.mp3", "02 text.mp3", "04 tag only.mp3", "05 missing.mp3"):
        assert sum(name in w for w in warnings) == 1
    assert not any("good" in w for w in warnings)
    assert good  # and it played: the next test's stream check covers the bytes


def test_queue_running_dry_closes_cleanly_and_reconnects(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mp3", make_frames(100))  # 2.6 s
    b = write(tmp_path / "b.mp3", make_frames(100, seed=2))
    c = write(tmp_path / "c.mp3", make_frames(100, seed=3))
    holder: list[Sim] = []
    start = 1000.0
    source = TimedSource(
        lambda: holder[0],
        # b arrives while a plays: no gap; c arrives long after b ran out.
        [
            (start, tmp_path / "a.mp3"),
            (start + 1.0, tmp_path / "b.mp3"),
            (start + 20.0, tmp_path / "c.mp3"),
        ],
    )
    sim = make(source, once=False, idle=Idle.STOP)
    holder.append(sim)
    for t in (start + 1.0, start + 20.0):
        sim.schedule(t, lambda: sim.step(sim.machine.news))
    sim.schedule(start + 30.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    first, second = sim.conns
    assert first.stream().startswith(a + b) and len(first.stream()) - len(a + b) >= ICECAST_BLOCK
    assert second.stream().startswith(c)
    assert second.chunks[0][0] == pytest.approx(start + 20.0)
    assert sim.machine.played == [tmp_path / "a.mp3", tmp_path / "b.mp3", tmp_path / "c.mp3"]
    assert "idle" in [s for _, s in sim.states]


def test_stop_ends_with_silence_after_the_batch_in_flight(tmp_path: Path) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(400))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    sim.schedule(1003.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    [conn] = sim.conns
    real = [f for _, f in conn.frames() if any(f.data[4:])]
    assert 0 < len(real) < 400
    assert audio.startswith(b"".join(f.data for f in real))
    assert len(conn.stream()) - sum(len(f.data) for f in real) >= ICECAST_BLOCK
    assert conn.closed is not None and conn.closed <= 1003.0 + LEAD + BATCH
    assert sim.ended == []  # stopped part-way: not played to its end


# -- reconnecting ---------------------------------------------------------------


def test_a_dropped_connection_resumes_at_the_first_unsent_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(150))
    b = write(tmp_path / "b.mp3", make_frames(60, seed=2))
    sim = make(
        ListSource(sorted(tmp_path.iterdir())),
        plan=lambda n: ("accept", 40) if n == 1 else "accept",
    )
    with caplog.at_level(logging.INFO, logger="pushsource"):
        sim.run()
    first, second = sim.conns
    sent1, sent2 = first.stream(), second.stream()
    assert (sent1 + sent2).startswith(a + b)  # nothing lost, nothing twice
    assert 0 < len(sent1) < len(a)
    # The new connection starts a fresh schedule: its first burst is the lead,
    # not a catch-up for the time spent reconnecting.
    burst = len(second.chunks[0][1]) // 417
    assert burst * FRAME <= LEAD + FRAME
    assert second.chunks[0][0] - first.chunks[-1][0] >= 0.5  # the retry delay
    assert [t for _, t in sim.titles] == ["a", "a", "b"]  # set again after the reconnect
    assert any("resuming a" in r.getMessage() for r in caplog.records)
    assert sim.machine.played == [tmp_path / "a.mp3", tmp_path / "b.mp3"]


@pytest.mark.parametrize("reopen_delay", [0.0, 0.3, 0.9, 2.0])
def test_back_on_air_after_a_drop_the_track_goes_on_without_silence_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reopen_delay: float
) -> None:
    """The track reopens during the backoff (or, slow, the stream waits for it):
    its frames are the first on the new connection, with no false "queue empty"."""
    a = write(tmp_path / "a.mp3", make_frames(300))
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        once=False,  # on air with silence between files: back on air at once
        plan=lambda n: ("accept", 40) if n == 1 else "accept",
    )
    sim.reopen_delay = reopen_delay
    sim.schedule(1020.0, lambda: sim.step(sim.machine.stop))
    with caplog.at_level(logging.INFO, logger="pushsource"):
        sim.run()
    first, second = sim.conns
    assert (first.stream() + second.stream()).startswith(a)  # no silence in between
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("resuming a") for line in lines), lines
    assert not any("queue empty" in line for line in lines[:-1]), lines  # but at the end


def test_a_track_slow_to_reopen_gets_silence_after_a_while_not_a_false_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = write(tmp_path / "a.mp3", make_frames(300))
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        once=False,  # on air with silence between files: back on air at once
        plan=lambda n: ("accept", 40) if n == 1 else "accept",
    )
    sim.reopen_delay = 4.0  # slower than the backoff and the wait together
    sim.schedule(1020.0, lambda: sim.step(sim.machine.stop))
    with caplog.at_level(logging.INFO, logger="pushsource"):
        sim.run()
    first, second = sim.conns
    silence = silent_frame(parse_header(a[:4]))
    stream = second.stream()
    assert stream.startswith(silence)  # Icecast must not drop the source meanwhile
    while stream.startswith(silence):
        stream = stream[len(silence) :]
    assert stream.startswith(a[len(first.stream()) :])
    gap = second.chunks[0][0] - second.opened
    assert core.REOPEN_WAIT <= gap < core.REOPEN_WAIT + 0.2
    lines = [r.getMessage() for r in caplog.records]
    assert not any("queue empty" in line for line in lines[:-1]), lines


def test_a_server_that_is_down_is_tried_about_once_a_second(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(20))
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    sim = make(ListSource([tmp_path / "a.mp3"]), retry=Retry(limit=8), plan=lambda n: down)
    finished = sim.run()
    assert finished.error is not None and "giving up after 9 attempts" in str(finished.error)
    gaps = [b - a for a, b in itertools.pairwise(sim.attempts)]
    assert len(sim.attempts) == 9
    # However long the outage: back within a second of the server, not 30 s.
    assert all(0.8 <= gap <= 1.0 for gap in gaps)


def test_refusals_back_off_and_give_up_at_the_limit(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(20))
    refused = MountInUseError("mountpoint /test is in use", 403)
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        retry=Retry(first=1.0, cap=4.0, limit=5),
        plan=lambda n: refused,
    )
    finished = sim.run()
    assert finished.error is not None and "giving up after 6 attempts" in str(finished.error)
    gaps = [b - a for a, b in itertools.pairwise(sim.attempts)]
    assert len(sim.attempts) == 6
    for n, gap in enumerate(gaps, 1):
        base = min(4.0, 2 ** (n - 1))
        assert base / 2 <= gap <= base  # jittered, doubling, capped
    assert all(not c.chunks for c in sim.conns)  # nothing counts as sent before the 200


def test_a_drop_right_after_acceptance_counts_as_a_failed_attempt(tmp_path: Path) -> None:
    audio = write(tmp_path / "a.mp3", make_frames(400))
    sim = make(ListSource([tmp_path / "a.mp3"]), retry=Retry(limit=3), plan=lambda n: ("x", 2))
    finished = sim.run()
    assert finished.error is not None and "giving up after 4 attempts" in str(finished.error)
    # Each kept its first burst; the send that failed goes again on the next one.
    streams = [c.stream() for c in sim.conns]
    assert all(streams) and audio.startswith(b"".join(streams))


def test_a_wrong_password_is_not_retried(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(20))
    deny = AuthenticationError("authentication failed for source user on /test", 401)
    sim = make(ListSource([tmp_path / "a.mp3"]), plan=lambda n: deny)
    finished = sim.run()
    assert isinstance(finished.error, AuthenticationError)
    assert sim.attempts == [1000.0]
    assert sim.states[-1][1] == "failed"


def test_skip_ends_the_track_and_it_counts_as_skipped(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(300))
    b = write(tmp_path / "b.mp3", make_frames(40, seed=2))
    sim = make(ListSource(sorted(tmp_path.iterdir())))
    sim.schedule(1002.0, lambda: sim.step(sim.machine.skip))
    sim.run()
    stream = sim.conns[0].stream()
    assert b in stream
    assert stream.index(b) < 300 * 417 // 2  # b came early: a was cut short
    assert [(t.path.name, s) for t, s in sim.ended] == [("a.mp3", True), ("b.mp3", False)]
    # b went out within a batch (and the lead) of the skip.
    first_b = next(when for when, chunk in sim.conns[0].chunks if b[:417] in chunk)
    assert first_b <= 1002.0 + BATCH + 1e-6


def test_resume_entries_go_first_and_a_finished_one_is_done(tmp_path: Path) -> None:
    frames_a = make_frames(100)
    a = write(tmp_path / "a.mp3", frames_a)
    b = write(tmp_path / "b.mp3", make_frames(30, seed=2))
    done: set[Path] = set()
    at = sum(len(f) for f in frames_a[:60])
    sim = make(
        ListSource([tmp_path / "b.mp3"]),
        resume=[(tmp_path / "a.mp3", at), (tmp_path / "b.mp3", len(b))],
        played=done,
    )
    sim.run()
    stream = sim.conns[0].stream()
    # a goes on where it was; b had been sent to its end: done, not played again.
    assert stream.startswith(a[at:]) and b[:417] not in stream
    assert tmp_path / "b.mp3" in done
    assert [t.path.name for t in sim.started] == ["a.mp3"] and sim.started[0].resumed


# -- idle policies ---------------------------------------------------------------


def test_idle_silence_keeps_the_mount_alive_until_a_file_arrives(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mp3", make_frames(100))  # 2.6 s
    b = write(tmp_path / "b.mp3", make_frames(50, seed=2))
    holder: list[Sim] = []
    arrival = 1010.0
    source = TimedSource(
        lambda: holder[0], [(1000.0, tmp_path / "a.mp3"), (arrival, tmp_path / "b.mp3")]
    )
    sim = make(source, once=False, idle=Idle.SILENCE)
    holder.append(sim)
    sim.schedule(arrival, lambda: sim.step(sim.machine.news))
    sim.schedule(1015.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    assert stream.startswith(a)
    gap = stream[len(a) : stream.index(b)]
    silence = silent_frame(FORMAT)
    assert gap == silence * (len(gap) // len(silence))
    idle_seconds = len(gap) // 417 * FRAME
    assert arrival - 1000 - 2.62 - BATCH <= idle_seconds <= arrival - 1000 - 2.6 + LEAD + BATCH
    first_b = next(when for when, chunk in conn.chunks if b[:417] in chunk)
    assert first_b <= arrival + BATCH + FRAME
    assert [t for _, t in sim.titles] == ["a", "Test FM", "b", "Test FM"]


def test_a_station_with_nothing_to_play_goes_on_air_with_silence(tmp_path: Path) -> None:
    a = write(tmp_path / "a.mp3", make_frames(40))
    holder: list[Sim] = []
    source = TimedSource(lambda: holder[0], [(1005.0, tmp_path / "a.mp3")])
    sim = make(source, once=False, idle=Idle.SILENCE)
    holder.append(sim)
    sim.schedule(1005.0, lambda: sim.step(sim.machine.news))
    sim.schedule(1010.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    [conn] = sim.conns
    assert conn.chunks[0][0] == pytest.approx(1001.0)  # after the grace for a first file
    stream = conn.stream()
    silence = silent_frame(FORMAT)
    assert stream.index(a) > 0 and stream[: stream.index(a)] == silence * (stream.index(a) // 417)


def test_idle_loop_replays_the_library_and_new_files_come_first(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        write(tmp_path / f"{name}.mp3", make_frames(100, seed=seed))
    write(tmp_path / "new.mp3", make_frames(30, seed=3))
    holder: list[Sim] = []
    source = TimedSource(
        lambda: holder[0], [(1000.0, tmp_path / "a.mp3"), (1006.0, tmp_path / "new.mp3")]
    )
    library = [tmp_path / "a.mp3", tmp_path / "b.mp3"]
    sim = make(source, once=False, idle=Idle.LOOP, library=library)
    holder.append(sim)
    sim.schedule(1006.0, lambda: sim.step(sim.machine.news))
    sim.schedule(1009.5, lambda: sim.step(sim.machine.stop))
    sim.run()
    titles = [t for _, t in sim.titles]
    # The hand-over to the loop does not play a (which just played) twice in a row.
    assert titles[:3] == ["a", "b", "new"] or titles[:4] == ["a", "b", "a", "new"]
    assert all(x != y for x, y in itertools.pairwise(titles))


def test_shuffled_loop_never_repeats_a_track_at_once(tmp_path: Path) -> None:
    library = []
    for n in range(4):
        write(tmp_path / f"{n}.mp3", make_frames(10, seed=n))
        library.append(tmp_path / f"{n}.mp3")
    holder: list[Sim] = []
    source = TimedSource(lambda: holder[0], [(1000.0, library[0])])
    sim = make(
        source, once=False, idle=Idle.LOOP, library=library, shuffle=True, rng=random.Random(4)
    )
    holder.append(sim)
    sim.schedule(1060.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    played = [t for _, t in sim.titles]
    assert len(played) > 20
    assert all(x != y for x, y in itertools.pairwise(played))
    assert set(played) == {"0", "1", "2", "3"}


# -- the engine's answers --------------------------------------------------------


def test_late_frames_get_silence_and_the_track_goes_on(tmp_path: Path) -> None:
    """A disk that stalls: the reads' answers come seconds late. The station
    sends silence rather than let Icecast drop the mount, then goes on."""
    audio = write(tmp_path / "a.mp3", make_frames(600))  # 15.7 s
    sim = make(ListSource([tmp_path / "a.mp3"]))
    real = sim.apply
    delayed = []

    def apply(effects: list[fx.Effect]) -> None:
        keep = []
        for e in effects:
            if isinstance(e, fx.Read) and not delayed:
                delayed.append(e)
                chunk = sim.feed.read(e.handle, e.frames)
                sim.schedule(
                    sim.now + 6.0, lambda h=e.handle, c=chunk: sim.step(sim.machine.read, h, c)
                )
            else:
                keep.append(e)
        real(keep)

    sim.apply = apply  # type: ignore[method-assign]
    sim.run()
    frames = sim.conns[0].frames()
    real_frames = [f for _, f in frames if any(f.data[4:])]
    assert b"".join(f.data for f in real_frames) == audio  # nothing lost
    # No gap at the listener longer than the lead plus the starvation margin.
    times = [w for w, _ in frames]
    assert max(b - a for a, b in itertools.pairwise(times)) <= core.STARVED + LEAD + BATCH


def test_an_edit_gives_back_the_cued_track(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(40))  # ~1 s: b is cued almost at once
    write(tmp_path / "b.mp3", make_frames(40, seed=2))
    write(tmp_path / "c.mp3", make_frames(40, seed=3))
    source = ListSource(sorted(tmp_path.iterdir()))
    sim = make(source)

    def edit() -> None:
        cued = sim.machine.cued_path()
        assert cued == tmp_path / "b.mp3"
        order = (tmp_path / "c.mp3", cued)
        sim.feed.edit(QueueEdit(order, front=(cued,)))
        sim.step(sim.machine.uncue)

    sim.schedule(1000.2, edit)
    sim.run()
    assert [t.path.name for t in sim.started] == ["a.mp3", "c.mp3", "b.mp3"]


# -- what the status shows (issue 14) ---------------------------------------------


def test_elapsed_is_the_audio_sent_and_goes_on_after_an_outage_where_it_stopped(
    tmp_path: Path,
) -> None:
    frames = make_frames(600)  # 15.7 s
    write(tmp_path / "a.mp3", frames)
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: ("accept", 60) if n == 1 else down if n < 4 else "accept",
    )
    samples: list[tuple[float, float | None, fx.Phase]] = []

    def sample() -> None:
        samples.append((sim.now, sim.machine.elapsed(), sim.machine.phase))

    for n in range(80):
        sim.schedule(1000.0 + n * 0.25, sample)
    sim.run()
    first, *_, last = sim.conns
    # Before the drop: the audio sent, never more than the lead ahead of the clock.
    for now, elapsed, phase in samples:
        if phase is fx.Phase.ON_AIR and now < first.chunks[-1][0]:
            assert elapsed is not None
            assert now - 1000.0 - BATCH <= elapsed <= now - 1000.0 + LEAD + FRAME
    # Off air nothing counts on: the track reopened during the backoff stands
    # where it will go on (or nothing plays before it reopens).
    off = [elapsed for _, elapsed, phase in samples if phase is fx.Phase.BACKOFF]
    assert off and len({e for e in off if e is not None}) <= 1
    assert off[-1] == pytest.approx(sim.started[-1].before)
    # Back on air, the resumed track counts from the frame it goes on at,
    # exactly (the machine's own count), not from the time spent away.
    resumed = sim.started[-1]
    assert resumed.resumed
    at = resumed.chunk.offset
    ends = list(itertools.accumulate(len(f) for f in frames))
    assert at in ends  # a frame boundary
    assert resumed.before == pytest.approx((ends.index(at) + 1) * FRAME)
    assert 1.0 < resumed.before < len(first.stream()) / 417 * FRAME + 1e-9
    after = [(t, e) for t, e, phase in samples if phase is fx.Phase.ON_AIR and t > last.opened]
    assert after
    now, elapsed = after[0]
    assert elapsed is not None
    assert resumed.before <= elapsed <= resumed.before + (now - last.opened) + LEAD + FRAME


def test_a_track_resumed_after_a_restart_estimates_its_elapsed_past_the_tags(
    tmp_path: Path,
) -> None:
    frames = make_frames(300)
    write(tmp_path / "a.mp3", frames, before=id3v2(bytes(100_000)))  # 6 s at 128 kbps
    at = 100_010 + sum(len(f) for f in frames[:200])
    sim = make(ListSource([]), resume=[(tmp_path / "a.mp3", at)])
    result = sim.feed.cue((tmp_path / "a.mp3", at), chunk=10)
    assert result.track is not None and result.track.resumed
    assert result.track.before == pytest.approx(200 * FRAME, rel=0.01)
    sim.feed.release(result.track.handle)


def test_the_loop_does_not_replay_a_track_the_queue_just_played(tmp_path: Path) -> None:
    library = []
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.mp3", make_frames(10, seed=ord(name)))
        library.append(tmp_path / f"{name}.mp3")
    holder: list[Sim] = []
    source = TimedSource(lambda: holder[0], [])  # a folder: never exhausted
    sim = make(source, once=False, idle=Idle.LOOP, library=library)
    holder.append(sim)
    feed = sim.feed
    got: list[str] = []

    def cue(last: Path | None) -> Path:
        result = feed.cue(None, last=last, chunk=5)
        assert result.track is not None
        feed.release(result.track.handle)
        got.append(result.track.path.name)
        return result.track.path

    last = cue(None)  # the loop: a (b and c to come in this cycle)
    source.edit(QueueEdit((), enqueue=(tmp_path / "b.mp3",)))  # b queued by hand
    last = cue(last)  # b, from the queue
    last = cue(last)  # the loop again: not b at once
    last = cue(last)
    assert got[:2] == ["a.mp3", "b.mp3"]
    assert all(x != y for x, y in itertools.pairwise(got)), got


def test_the_loop_does_not_replay_the_track_resumed_after_a_restart(tmp_path: Path) -> None:
    frames = make_frames(100)
    write(tmp_path / "y.mp3", frames)
    write(tmp_path / "z.mp3", make_frames(100, seed=2))
    library = [tmp_path / "y.mp3", tmp_path / "z.mp3"]
    holder: list[Sim] = []
    sim = make(
        TimedSource(lambda: holder[0], []),
        once=False,
        idle=Idle.LOOP,
        library=library,
        resume=[(tmp_path / "y.mp3", sum(len(f) for f in frames[:50]))],
    )
    holder.append(sim)
    sim.schedule(1008.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    titles = [t for _, t in sim.titles]
    assert titles[:2] == ["y", "z"], titles
    assert all(x != y for x, y in itertools.pairwise(titles)), titles


def test_a_long_outage_says_so_once_a_minute_and_once_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.mp3", make_frames(400))
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    # On air, dropped after a few batches, then down for about 200 attempts (three
    # minutes and more at about one a second), then back.
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: ("accept", 5) if n == 1 else down if n <= 200 else "accept",
    )
    with caplog.at_level(logging.DEBUG, logger="pushsource"):
        sim.run()
    warnings = [(r.created, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    said = [m for _, m in warnings if "reconnecting in" in m]
    back = [m for _, m in warnings if m.startswith("on air at")]
    assert len(sim.attempts) > 200
    outage = sim.attempts[200] - sim.attempts[1]
    # The drop, then one line a minute (it counts the attempts), not one per attempt.
    assert "lost" in said[0] and "still failing" not in said[0]
    assert 1 <= len(said) - 1 <= outage // core.FAIL_LOG_EVERY
    counted = [int(m.split("still failing: ")[1].split()[0]) for m in said[1:]]
    assert all(50 <= n <= 75 for n in counted), said
    assert len(back) == 1 and "again after" in back[0] and "200 failed attempts" in back[0], back
    # Each attempt is a debug line (--verbose): at the default level a station
    # says nothing more about the outage than those lines.
    info = [r for r in caplog.records if r.levelno == logging.INFO and "(attempt" in r.getMessage()]
    assert info == []
    debug = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "(attempt" in r.getMessage()
    ]
    assert len(debug) + len(said) == 200


def test_the_outage_lines_start_again_with_the_next_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.mp3", make_frames(2000))
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    outages = {2, 3, 4, 6, 7}  # two outages, each with its first line and its way back
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: down if n in outages else ("accept", 100) if n < 8 else "accept",
    )
    with caplog.at_level(logging.WARNING, logger="pushsource"):
        sim.run()
    lines = [r.getMessage() for r in caplog.records]
    # Each outage: its drop (the refusals after it within the minute are info), its way back.
    assert sum("lost; reconnecting in" in m for m in lines) == 2, lines
    assert not any("refused" in m for m in lines), lines
    assert sum(m.startswith("on air at the server again after") for m in lines) == 2, lines


URL = "http://127.0.0.1:8000/test"


def test_a_40_s_outage_is_three_lines_at_the_default_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.mp3", make_frames(3000))
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    # On air, dropped, refused about 40 times (40 s), back.
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: ("accept", 50) if n == 1 else down if n <= 41 else "accept",
        listen_url=URL,
    )
    sim.schedule(1000.0 + 70, lambda: sim.step(sim.machine.stop))
    with caplog.at_level(logging.INFO, logger="pushsource"):
        sim.run()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert lines[0] == f"on air at {URL}", lines
    assert sim.attempts[41] - sim.attempts[1] >= 30  # an outage of about 40 s
    outage = lines[lines.index(next(m for m in lines if "lost" in m)) :]
    outage = [m for m in outage if not m.startswith("skipping")]
    # The drop, the way back (where it is on air), where the music goes on: no
    # line per attempt, no "queue empty" before the track that was playing.
    assert len(outage) == 3, outage
    assert outage[0].startswith("connection to 127.0.0.1:8000 lost; reconnecting in"), outage
    assert outage[1].startswith(f"on air at {URL} again after "), outage
    assert "(41 failed attempts)" in outage[1], outage
    assert outage[2].startswith("resuming a at about"), outage
    assert not any("queue empty" in m for m in lines), lines


def test_an_idle_station_says_queue_empty_once_not_again_after_a_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "b.mp3", make_frames(100))  # 2.6 s, then silence
    down = IcecastError("cannot connect to 127.0.0.1:8000: Connection refused")
    holder: list[Sim] = []
    sim = make(
        TimedSource(lambda: holder[0], [(0.0, tmp_path / "b.mp3")]),
        once=False,
        plan=lambda n: ("accept", 200) if n == 1 else down if n <= 10 else "accept",
        listen_url=URL,
    )
    holder.append(sim)
    sim.schedule(1000.0 + 40, lambda: sim.step(sim.machine.stop))
    with caplog.at_level(logging.INFO, logger="pushsource"):
        sim.run()
    lines = [r.getMessage() for r in caplog.records]
    assert len(sim.conns) == 11  # it did reconnect, idle
    assert sum("again after" in m for m in lines) == 1, lines
    assert sum(m.startswith("queue empty") for m in lines) == 1, lines


def test_a_server_that_is_not_icecast_ends_the_station_at_once(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(600))
    wrong = WrongServerError("not an Icecast server: 127.0.0.1:8000 answered 404 Not Found", 404)
    sim = make(ListSource([tmp_path / "a.mp3"]), plan=lambda n: wrong)
    finished = sim.run()
    assert finished.error is wrong and len(sim.attempts) == 1
    assert sim.states[-1][1] == "failed"
    # Where Icecast took the source before in this run, it is something in the
    # way for a while (a proxy's page during a deploy): retried, not the end.
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: ("accept", 20) if n == 1 else wrong if n <= 3 else "accept",
    )
    finished = sim.run()
    assert finished.error is None and len(sim.attempts) == 4
