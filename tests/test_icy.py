"""ICY titles inside the stream: the blocks, where they go, and counting back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsource.core.icy import BLOCK_LIMIT, TITLE_LIMIT, IcyWriter, icy_block, icy_title
from tests.support.listener import IcyDemuxer, parse_stream_title


def demux(wire: bytes, interval: int) -> tuple[bytes, list[tuple[int, str | None]]]:
    """What a listener (and Icecast) reads out of wire bytes."""
    demuxer = IcyDemuxer(interval)
    audio, blocks = demuxer.feed(wire)
    return audio, [(at, parse_stream_title(block)) for at, block in blocks]


def test_a_block_is_streamtitle_padded_to_16_bytes_and_no_change_is_one_zero_byte() -> None:
    assert icy_block(None) == b"\x00"
    block = icy_block("Sigur Rós - 東京")
    text = "StreamTitle='Sigur Rós - 東京';".encode()
    assert block[0] == len(text) // 16 + 1 and len(block) == 1 + block[0] * 16
    assert block[1:] == text.ljust(block[0] * 16, b"\x00")


def test_a_block_always_ends_with_a_nul() -> None:
    # Icecast 2.4.4 and 2.5 drop a block's last byte: a title of exactly 16k
    # bytes with its quotes would lose its ";" and never show.
    text = b"StreamTitle='Mono - MP3 48 kHz';"
    assert len(text) == 32
    block = icy_block("Mono - MP3 48 kHz")
    assert block[0] == 3 and block[1:] == text + bytes(16)
    for n in range(1, 80):
        block = icy_block("x" * n)
        assert block[-1] == 0 and len(block) == 1 + block[0] * 16


def test_what_cannot_travel_is_escaped_or_cut_between_characters() -> None:
    # A title ends at its first "';" on every server: that quote changes, and
    # so does one that would open another field (as for admin titles).
    assert icy_title("Rock';n'roll") == "Rock\u2019;n'roll".encode()
    assert icy_title("x';StreamUrl='http://evil/';") == (
        "x\u2019;StreamUrl=\u2019http://evil/\u2019;".encode()
    )
    assert icy_title("'Live'; Don't Stop") == "'Live\u2019; Don't Stop".encode()
    assert icy_title("a\r\nb\x00c\x7fd") == b"a  b c d"  # one space each, as for admin titles
    long = "東" * 2000  # 6000 bytes of 3-byte characters
    cut = icy_title(long).decode()
    assert len(cut.encode()) <= TITLE_LIMIT and cut == "東" * (len(cut) - 1) + "\u2026"
    assert len(icy_block(long)) <= 1 + BLOCK_LIMIT
    assert parse_stream_title(icy_block(long)[1:]) == cut
    assert icy_title("a" * TITLE_LIMIT) == b"a" * TITLE_LIMIT  # what fits stays whole


def test_titles_land_in_the_first_block_at_or_after_their_byte() -> None:
    writer = IcyWriter(100)
    writer.title("one")  # from the first byte: the first block
    wire = writer.wrap(bytes(250))
    writer.title("two", at=30)  # byte 280: the block at 300
    wire += writer.wrap(bytes(100))
    writer.title("two", at=0)  # the same again: no new block
    wire += writer.wrap(bytes(300))
    audio, blocks = demux(wire, 100)
    assert audio == bytes(650)
    assert blocks == [(100, "one"), (300, "two")]


def test_a_title_superseded_before_its_block_never_travels() -> None:
    writer = IcyWriter(100)
    writer.title("old", at=10)
    writer.title("new", at=20)
    writer.title("newer", at=20)  # same byte: replaces it
    _, blocks = demux(writer.wrap(bytes(100)), 100)
    assert blocks == [(100, "newer")]


def test_the_same_title_again_after_another_travels_again() -> None:
    writer = IcyWriter(10)
    wire = b""
    for title in ("a", "b", "a"):
        writer.title(title)
        wire += writer.wrap(bytes(10))
    assert [t for _, t in demux(wire, 10)[1]] == ["a", "b", "a"]


@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=12),
    titles=st.lists(st.tuples(st.integers(0, 12), st.text(max_size=40)), max_size=6),
    interval=st.integers(3, 300),  # at most 2,800 blocks: all remembered
    cut=st.floats(0, 1),
)
def test_audio_in_maps_any_count_of_wire_bytes_back_to_audio(
    sizes: list[int], titles: list[tuple[int, str]], interval: int, cut: float
) -> None:
    writer = IcyWriter(interval)
    audio = bytes(range(256)) * 30
    sent = b""
    wire = b""
    for n, size in enumerate(sizes):
        for when, title in titles:
            if when == n:
                writer.title(title)
        chunk = audio[len(sent) : len(sent) + size]
        sent += chunk
        wire += writer.wrap(chunk)
    assert writer.audio == len(sent)
    assert writer.audio_in(len(wire)) == len(sent)
    taken = int(len(wire) * cut)
    got, _ = demux(wire[:taken], interval)
    assert writer.audio_in(taken) == len(got)  # a block cut short holds no audio
    assert demux(wire, interval)[0] == sent  # byte-exact for every listener


def test_a_bad_interval_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        IcyWriter(0)


@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=12),
    titles=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3000), st.text(max_size=40))),
    interval=st.integers(1, 2000),
)
def test_advance_counts_the_wire_exactly_as_wrap_makes_it(
    sizes: list[int], titles: list[tuple[int, int, str]], interval: int
) -> None:
    writer, meter = IcyWriter(interval), IcyWriter(interval)
    wire = 0
    for n, size in enumerate(sizes):
        for when, at, title in titles:
            if when == n:
                writer.title(title, at)
                meter.title(title, at)
        wire += len(writer.wrap(bytes(size)))
        meter.advance(size)
        assert meter.wire == wire == writer.wire and meter.audio == writer.audio
