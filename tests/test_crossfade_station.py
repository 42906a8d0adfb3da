"""Crossfade in the station machine, in virtual time (the sim of
test_station.py carries out its effects, the real Feed reads real lame tones
and makes the joins): each track's own frames up to its join, the join, the
next track from where the join leaves it; the next title at the fade's
midpoint; a skip that fades out; an edit that takes the join back."""

from __future__ import annotations

import itertools
import logging
import subprocess
from pathlib import Path

import pytest

from pushsource.core import effects as fx
from pushsource.core.frames import parse_header
from pushsource.core.gain import gain_fields
from pushsource.core.station import SKIP_FADE
from pushsource.workers.feed import ListSource
from pushsource.workers.folder import QueueEdit
from tests.support.sim import FRAME, LEAD, make


def tone(path: Path, freq: int, seconds: float) -> bytes:
    """A lame MP3 with no tag frame: its bytes are exactly its frames."""
    wav = path.with_suffix(".wav")
    synth = ["synth", str(seconds), "sine", str(freq), "vol", "0.5"]
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", str(wav), *synth], check=True)
    subprocess.run(["lame", "--quiet", "-t", "-b", "128", str(wav), str(path)], check=True)
    wav.unlink()
    return path.read_bytes()


def joins(sim: object) -> list[fx.Join]:
    made = [join for _, join in sim.mixes]  # type: ignore[attr-defined]
    assert all(join is not None for join in made), made
    return made  # type: ignore[return-value]


def test_each_join_stands_for_the_frames_around_it_and_the_title_goes_at_its_midpoint(
    tmp_path: Path,
) -> None:
    a = tone(tmp_path / "a.mp3", 440, 10)
    b = tone(tmp_path / "b.mp3", 660, 10)
    c = tone(tmp_path / "c.mp3", 990, 10)
    sim = make(ListSource(sorted(tmp_path.glob("*.mp3"))), crossfade=3.0)
    sim.run()
    first, second = joins(sim)
    stream = sim.conns[0].stream()
    expected = (
        a[: first.cut_at]
        + first.data
        + b[first.resume_at : second.cut_at]
        + second.data
        + c[second.resume_at :]
    )
    assert stream.startswith(expected)
    assert set(stream[len(expected) :]) <= set(bytes(4096)) | set(
        stream[len(expected) : len(expected) + 4]
    )
    assert [t.path.name for t in sim.started] == ["a.mp3", "b.mp3", "c.mp3"]
    assert [(t.path.name, skipped) for t, skipped in sim.ended] == [
        ("a.mp3", False), ("b.mp3", False), ("c.mp3", False),
    ]  # fmt: skip
    # Each track is about 3 s shorter on air than alone (but the last).
    assert 3.0 - 0.03 <= first.seconds <= 3.0 + 0.03
    # The incoming title is set with the Send that holds the join's midpoint.
    start = len(a[: first.cut_at])
    mid = start + (first.ends[first.title_at - 1] if first.title_at else 0)
    titles = {title: (begin, end) for _, begin, end, title in sim.title_at}
    begin, end = titles["b"]
    assert begin <= mid < end, (begin, mid, end)
    # Frames went out on their schedule: never more than the lead ahead.
    t0, _ = sim.conns[0].chunks[0]
    sent = 0
    for when, chunk in sim.conns[0].chunks:
        sent += len(chunk)
        assert sent / 16_000 <= when - t0 + LEAD + 2 * FRAME + 0.1


def test_a_skip_with_crossfade_fades_the_track_out_then_the_next_starts_at_its_top(
    tmp_path: Path,
) -> None:
    a = tone(tmp_path / "a.mp3", 440, 10)
    b = tone(tmp_path / "b.mp3", 660, 10)
    sim = make(ListSource(sorted(tmp_path.glob("*.mp3"))), crossfade=3.0)
    sim.schedule(1003.0, lambda: sim.step(sim.machine.skip))  # a's join into b is made
    sim.run()
    stream = sim.conns[0].stream()
    at = stream.index(b[:4000])
    played = stream[:at]
    # a's frames, the last SKIP_FADE of them turned down step by step.
    fields = gain_fields(a[:4])
    assert fields is not None
    frames, pos = [], 0
    while pos < len(played):
        header = parse_header(played, pos)
        assert header is not None
        frames.append(played[pos : pos + header.length])
        pos += header.length
    fading = round(SKIP_FADE / FRAME)
    assert b"".join(frames[:-fading]) == a[: len(b"".join(frames[:-fading]))]

    def gain(frame: bytes) -> int:
        bit = fields[0]  # type: ignore[index]
        word = int.from_bytes(frame[bit // 8 : bit // 8 + 2], "big")
        return (word >> (8 - bit % 8)) & 0xFF

    original = [gain(f) for f in frames[-fading - 1 :]]
    turned = [gain(f) for f in frames[-fading:]]
    assert turned == sorted(turned, reverse=True) and turned[-1] <= original[0] - 25
    assert stream[at:].startswith(b)  # b from its very first frame, whole
    assert [(t.path.name, s) for t, s in sim.ended] == [("a.mp3", True), ("b.mp3", False)]
    assert len(sim.mixes) == 1  # a's join into b was made, then given up for the skip


def test_an_edit_after_the_join_was_made_lets_the_track_play_to_its_end(tmp_path: Path) -> None:
    a = tone(tmp_path / "a.mp3", 440, 10)
    tone(tmp_path / "b.mp3", 660, 10)
    c = tone(tmp_path / "c.mp3", 990, 10)
    source = ListSource(sorted(tmp_path.glob("*.mp3")))
    sim = make(source, crossfade=3.0)

    def edit() -> None:
        assert sim.mixes, "the join was not asked for yet"
        cued = sim.machine.cued_path()
        assert cued == tmp_path / "b.mp3"
        sim.feed.edit(QueueEdit((tmp_path / "c.mp3", cued), front=(tmp_path / "c.mp3",)))
        sim.step(sim.machine.uncue)

    sim.schedule(1002.5, edit)  # after the join into b came, long before it is due
    sim.run()
    stream = sim.conns[0].stream()
    names = [t.path.name for t in sim.started]
    assert names[:2] == ["a.mp3", "c.mp3"]
    joined = [join for mix, join in sim.mixes if mix.in_track.path.name == "c.mp3"]
    assert joined and joined[0] is not None
    # a up to the join into c (asked for after the edit), nothing of the join into b.
    assert stream.startswith(a[: joined[0].cut_at] + joined[0].data + c[joined[0].resume_at : 4000])


def test_no_crossfade_at_a_track_shorter_than_three_fades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = tone(tmp_path / "a.mp3", 440, 10)
    b = tone(tmp_path / "b.mp3", 660, 5)
    caplog.set_level(logging.INFO, "pushsource")
    sim = make(ListSource(sorted(tmp_path.glob("*.mp3"))), crossfade=3.0)
    sim.run()
    assert sim.conns[0].stream().startswith(a + b)
    assert "no crossfade at b: shorter than three fades" in caplog.text


def test_a_connection_lost_during_the_join_goes_on_with_the_incoming_track_from_its_top(
    tmp_path: Path,
) -> None:
    a = tone(tmp_path / "a.mp3", 440, 10)
    b = tone(tmp_path / "b.mp3", 660, 10)
    files = sorted(tmp_path.glob("*.mp3"))
    clean = make(ListSource(files), crossfade=3.0)
    clean.run()
    (join,) = joins(clean)
    totals = itertools.accumulate(len(chunk) for _, chunk in clean.conns[0].chunks)
    middle = join.cut_at + len(join.data) // 2
    n = next(n for n, total in enumerate(totals) if total > middle)  # the Send holding it
    sim = make(
        ListSource(files), crossfade=3.0, plan=lambda k: ("accept", n + 1) if k == 1 else "accept"
    )
    sim.run()
    assert len(sim.conns) == 2
    first, second = sim.conns[0].stream(), sim.conns[1].stream()
    assert first.startswith(a[: join.cut_at] + join.data[:1000])
    assert second.startswith(b[:4000])  # b again from its top, no join half-heard
    assert [(t.path.name, skipped) for t, skipped in sim.ended][-1] == ("b.mp3", False)


def test_after_a_track_too_short_to_fade_the_next_joins_fade_again(tmp_path: Path) -> None:
    tone(tmp_path / "a.mp3", 440, 10)
    tone(tmp_path / "b.mp3", 660, 5)  # too short: no join into it nor out of it
    tone(tmp_path / "c.mp3", 990, 10)
    tone(tmp_path / "d.mp3", 550, 10)
    sim = make(ListSource(sorted(tmp_path.glob("*.mp3"))), crossfade=3.0)
    sim.run()
    made = [(mix.out_track.path.name, mix.in_track.path.name) for mix, _ in sim.mixes]
    assert made == [("c.mp3", "d.mp3")], made
    assert all(join is not None for _, join in sim.mixes)
