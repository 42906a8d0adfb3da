"""A converted copy's window (Alt) forgets sent frames without copying the
window on every Send: the same frames come out as with the copy-per-trim
window it replaced (benchmarks.send keeps that one as the reference)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.send import LOW, STATION, OldAlt, OldReframer, chunk_of, copy_frames
from pushsource.core.effects import Alt, Chunk, Cued, Span
from pushsource.core.outputs import Reframer

FRAMES = copy_frames(600 * LOW.duration)  # distinct bytes per frame
KEY = "low"

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 60)),
        st.tuples(st.just("trim"), st.integers(-20, 700)),
    ),
    max_size=60,
)


def alts(per: int, last: bool) -> tuple[Alt, OldAlt]:
    chunk = chunk_of(FRAMES[:per], last)
    return (
        Alt(chunk.data, list(chunk.ends), LOW, handle="copy", last=last),
        OldAlt(chunk.data, list(chunk.ends), LOW, handle="copy", last=last),
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 80), ops)
def test_the_window_is_the_old_one_after_any_adds_and_trims(
    per: int, steps: list[tuple[str, int]]
) -> None:
    new, old = alts(per, last=False)
    read = per
    for op, n in steps:
        if op == "add":
            chunk = chunk_of(FRAMES[read : read + n], last=False) if n else Chunk(b"", [], 0, False)
            read += n
            new.add(chunk)
            old.add(chunk)
        else:
            new.trim(new.first + n if n < 0 else n)
            old.trim(old.first + n if n < 0 else n)
        assert (new.first, new.loaded) == (old.first, old.loaded)
        assert new.data == old.data and new.ends == list(old.ends)
        if new.loaded > new.first:  # any stretch of the window, from the buffer
            assert new.between(new.first, new.loaded) == b"".join(FRAMES[new.first : new.loaded])
            mid = (new.first + new.loaded) // 2 + 1
            assert new.between(mid - 1, mid) == FRAMES[mid - 1]


spans = st.lists(
    st.tuples(
        st.sampled_from(["on", "on", "on", "jump", "silence", "next"]),
        st.integers(1, 12),  # station frames in the span
        st.floats(-3.0, 3.0),  # where a jump goes, seconds from here
    ),
    min_size=1,
    max_size=120,
)


class Side:
    """One reframer and the copy it plays, read in chunks as it asks."""

    def __init__(self, make: type[Alt] | type[OldAlt], reframer: Reframer, per: int) -> None:
        self.make, self.reframer, self.per = make, reframer, per
        self.next_track()

    def next_track(self) -> None:
        chunk = chunk_of(FRAMES[: self.per], last=self.per >= len(FRAMES))
        self.alt = self.make(chunk.data, list(chunk.ends), LOW, handle="copy", last=chunk.last)
        first = Chunk(FRAMES[0], [len(FRAMES[0])], 0, True)
        alts = {KEY: self.alt}
        self.track = Cued(None, Path("a.mp3"), "A", None, 128, STATION, first, alts=alts)  # type: ignore[arg-type]
        self.read = self.per

    def send(self, spans: list[Span], more: int) -> tuple[bytes, int, int]:
        data, count = self.reframer.frames(spans)
        if self.reframer.wanted() is self.alt:  # the workers' read, done at once
            nxt = FRAMES[self.read : self.read + more]
            self.read += len(nxt)
            self.alt.add(chunk_of(nxt, last=self.read >= len(FRAMES)))
        return data, count, self.reframer.late


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 300), spans, st.integers(1, 4))
def test_a_reframer_sends_the_same_bytes_as_with_the_old_window(
    per: int, steps: list[tuple[str, int, float]], spans_per_send: int
) -> None:
    """Random Sends (on, rewinds and skips ahead, silence, another track),
    the copy read in chunks as the reframer asks: byte for byte the same."""
    new, old = Side(Alt, Reframer(KEY, LOW), per), Side(OldAlt, OldReframer(KEY, LOW), per)
    at = 0.0
    for n, (kind, frames, jump) in enumerate(steps):
        seconds = frames * STATION.duration
        if kind == "jump":
            at = max(0.0, at + jump)
        elif kind == "next":  # another track: a fresh copy of the same frames
            at = 0.0
            new.next_track()
            old.next_track()
        outs = []
        for side in (new, old):
            track = None if kind == "silence" else side.track
            one = [Span(track, at + i * seconds, seconds) for i in range(spans_per_send)]
            outs.append(side.send(one, 40 + n % 50))
        assert outs[0] == outs[1]
        at += spans_per_send * seconds
    assert new.alt.first == old.alt.first and new.alt.loaded == old.alt.loaded


def test_a_window_read_whole_keeps_at_most_twice_what_it_holds() -> None:
    """All in (no more chunks to compact it): trims still let the sent part go."""
    chunk = chunk_of(FRAMES, last=True)
    alt = Alt(chunk.data, list(chunk.ends), LOW, last=True)
    whole = len(chunk.data)
    for before in range(0, len(FRAMES) + 1, 3):
        alt.trim(before)
        kept = len(alt.data)
        held = len(alt.between(alt.first, alt.loaded)) if alt.loaded > alt.first else 0
        assert held == kept
        assert len(alt._buf) <= max(2 * kept + LOW.length, 0) or len(alt._buf) == whole
    assert alt.first == len(FRAMES) and len(alt._buf) < whole
