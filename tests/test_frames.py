"""The frame parser, on synthetic streams built bit by bit here (independent of
the parser's own tables). Every case runs three ways, like h11's readers: the
whole input at once, byte by byte, and with trailing junk after it."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsource.core.frames import (
    END,
    NEED_DATA,
    Frame,
    FrameParser,
    FrameRun,
    MPEGVersion,
    Skipped,
    parse_header,
    silent_frame,
)
from pushsource.errors import FrameError
from tests.synth import (
    Spec,
    apev2,
    id3v1,
    id3v2,
    lyrics3v2,
    make_frames,
    vbri_frame,
    xing_frame,
)

# -- running the parser three ways -------------------------------------------


def events_of(data: bytes, chunks: Callable[[bytes], list[bytes]]) -> list[Frame | Skipped]:
    parser = FrameParser()
    events: list[Frame | Skipped] = []
    for chunk in [*chunks(data), b""]:
        parser.feed(chunk)
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                assert chunk, "NEED_DATA after the end of input"
                break
            if event is END:
                break
            assert isinstance(event, Frame | Skipped)
            events.append(event)
    return events


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def audio_of(events: list[Frame | Skipped]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Frame))


TRAILING_JUNK = b"\x00\x01junk\xff\x00" * 3


@pytest.fixture(params=["whole", "bytewise", "trailing-junk"])
def parse(request: pytest.FixtureRequest) -> Callable[[bytes], list[Frame | Skipped]]:
    if request.param == "whole":
        return lambda data: events_of(data, whole)
    if request.param == "bytewise":
        return lambda data: events_of(data, bytewise)

    def with_junk(data: bytes) -> list[Frame | Skipped]:
        events = events_of(data + TRAILING_JUNK, whole)
        tail = events.pop()  # the junk is reported, and nothing else changes
        if tail.what == "cut frame":  # ...unless a cut frame swallows it
            assert isinstance(tail, Skipped)
            assert tail.offset + tail.length == len(data) + len(TRAILING_JUNK)
            return [*events, Skipped(tail.offset, tail.length - len(TRAILING_JUNK), tail.what)]
        assert tail == Skipped(len(data), len(TRAILING_JUNK), "junk")
        return events

    return with_junk


def kinds(events: list[Frame | Skipped]) -> list[str]:
    return ["frame" if isinstance(e, Frame) else e.what for e in events]


# -- cases ------------------------------------------------------------------

SPECS = {
    "mpeg1-l3-44k": Spec(),
    "mpeg1-l3-48k-mono": Spec(rate_index=1, mono=True),
    "mpeg1-l3-crc": Spec(crc=True),
    "mpeg2-l3-22k": Spec(version="2", bitrate_index=8),
    "mpeg25-l3-8k": Spec(version="2.5", bitrate_index=4, rate_index=2),
    "mpeg1-l2": Spec(layer=2, bitrate_index=10),
    "mpeg2-l2": Spec(version="2", layer=2, bitrate_index=8),
    "mpeg1-l1": Spec(layer=1, bitrate_index=4),
}


@pytest.mark.parametrize("name", SPECS)
def test_plain_frames_of_every_version_and_layer(name: str, parse: Callable) -> None:
    frames = make_frames(12, SPECS[name])
    events = parse(b"".join(frames))
    assert [e.data for e in events] == frames
    assert all(isinstance(e, Frame) for e in events)


@pytest.mark.parametrize(
    ("name", "samples", "rate"),
    [
        ("mpeg1-l3-44k", 1152, 44100),
        ("mpeg2-l3-22k", 576, 22050),
        ("mpeg25-l3-8k", 576, 8000),
        ("mpeg1-l2", 1152, 44100),
        ("mpeg2-l2", 1152, 22050),
        ("mpeg1-l1", 384, 44100),
    ],
)
def test_frame_durations(name: str, samples: int, rate: int) -> None:
    frame = make_frames(1, SPECS[name])[0]
    header = parse_header(frame)
    assert header is not None
    assert (header.samples, header.sample_rate) == (samples, rate)
    assert header.length == len(frame)


FRAMES = make_frames(10)
AUDIO = b"".join(FRAMES)
FAKE_SYNC_ART = b"\x89PNG" + b"".join(make_frames(6, seed=99)) + bytes(3000)  # frames inside a tag

CASES: dict[str, tuple[bytes, list[str]]] = {
    "id3v2.4 with big picture holding frames": (
        id3v2(b"APIC" + FAKE_SYNC_ART) + AUDIO,
        ["id3v2"] + ["frame"] * 10,
    ),
    "id3v2.4 with footer": (
        id3v2(b"TIT2" + bytes(40), flags=0x10) + AUDIO,
        ["id3v2"] + ["frame"] * 10,
    ),
    "id3v2.3 unsynchronised": (
        id3v2(b"TIT2\xff\x00\xe0" + bytes(20), 3, 0x80) + AUDIO,
        ["id3v2"] + ["frame"] * 10,
    ),
    "id3v2.2": (id3v2(b"TT2" + bytes(30), 2) + AUDIO, ["id3v2"] + ["frame"] * 10),
    "id3v1 at the end": (AUDIO + id3v1(), ["frame"] * 10 + ["id3v1"]),
    "enhanced id3v1": (AUDIO + b"TAG+" + bytes(223) + id3v1(), ["frame"] * 10 + ["id3v1", "id3v1"]),
    "apev2 at the end": (AUDIO + apev2(), ["frame"] * 10 + ["apev2"]),
    "apev2 then id3v1": (AUDIO + apev2() + id3v1(), ["frame"] * 10 + ["apev2", "id3v1"]),
    "lyrics3v2 and id3v1": (AUDIO + lyrics3v2() + id3v1(), ["frame"] * 10 + ["lyrics3", "id3v1"]),
    "xing frame first": (xing_frame() + AUDIO, ["xing"] + ["frame"] * 10),
    "info frame first": (
        id3v2(bytes(20)) + xing_frame(magic=b"Info") + AUDIO,
        ["id3v2", "xing"] + ["frame"] * 10,
    ),
    "vbri frame first": (vbri_frame() + AUDIO, ["vbri"] + ["frame"] * 10),
    "junk before the first frame": (
        b"\xff\xfb\x00junk\xff" + FRAMES[0][:300] + AUDIO,
        ["junk"] + ["frame"] * 10,
    ),
    "truncated last frame": (AUDIO + FRAMES[0][:200], ["frame"] * 10 + ["cut frame"]),
    "tags everywhere": (
        id3v2(bytes(10)) + AUDIO + id3v2(bytes(10), 3) + AUDIO + apev2() + id3v1(),
        ["id3v2"] + ["frame"] * 10 + ["id3v2"] + ["frame"] * 10 + ["apev2", "id3v1"],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_tags_headers_and_junk_are_skipped(name: str, parse: Callable) -> None:
    data, expected = CASES[name]
    events = parse(data)
    assert kinds(events) == expected
    for event in events:  # offsets point at the very bytes reported
        if isinstance(event, Frame):
            assert data[event.offset : event.offset + len(event.data)] == event.data
    assert audio_of(events) in (AUDIO, AUDIO * 2)


def test_two_frame_file_is_trusted_only_when_nothing_follows() -> None:
    two = FRAMES[0] + FRAMES[1]
    assert audio_of(events_of(two, whole)) == two
    assert audio_of(events_of(two, bytewise)) == two
    assert audio_of(events_of(two + id3v1(), whole)) == two
    with pytest.raises(FrameError):  # two headers then junk: not enough evidence
        events_of(two + TRAILING_JUNK, whole)


def test_truncated_frame_cut_by_a_tag_is_dropped() -> None:
    # A file cut mid-frame, then tagged: the last "frame" would swallow the tag.
    data = AUDIO + FRAMES[0][:300] + id3v1()
    events = events_of(data, whole)
    assert audio_of(events) == AUDIO
    assert "cut frame" in kinds(events)


def test_frames_around_inserted_junk_survive() -> None:
    data = b"".join(FRAMES[:5]) + b"\x00\x13\x37" * 50 + b"".join(FRAMES[5:])
    assert audio_of(events_of(data, whole)) == AUDIO


def test_sample_rate_change_midway_resyncs() -> None:
    other = make_frames(6, Spec(rate_index=1), seed=3)
    data = AUDIO + b"".join(other)
    events = events_of(data, whole)
    assert audio_of(events) == AUDIO + b"".join(other)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world, this is not an mp3\n" * 20,
        b"\xff" * 500,
        FRAMES[0],
        id3v2(b"APIC" + FAKE_SYNC_ART),
    ],
    ids=["empty", "text", "all-ff", "one-frame", "tag-only"],
)
def test_no_audio_raises_frame_error_with_offset(data: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        events_of(data, whole)
    assert caught.value.offset == len(data)
    assert f"at byte {len(data)}" in str(caught.value)


def test_header_validation_rejects_reserved_values() -> None:
    good = make_frames(1)[0]
    assert parse_header(good) is not None
    word = struct.unpack(">I", good[:4])[0]
    for bad in (
        word & ~(0xF << 12),  # free-format bitrate
        word | (0xF << 12),  # bitrate index 15
        word | (3 << 10),  # sample rate index 3
        (word & ~(3 << 19)) | (1 << 19),  # reserved version
        word & ~(3 << 17),  # reserved layer
        word | 2,  # reserved emphasis
    ):
        assert parse_header(struct.pack(">I", bad)) is None


@pytest.mark.parametrize("name", SPECS)
def test_silent_frame_matches_its_model(name: str) -> None:
    model = parse_header(make_frames(1, SPECS[name])[0])
    assert model is not None
    silence = silent_frame(model)
    header = parse_header(silence)
    assert header is not None
    assert header.continues(model) and header.bitrate == model.bitrate
    assert len(silence) == header.length and not any(silence[4:])
    assert header.version is model.version


def test_feed_after_end_is_a_usage_error() -> None:
    parser = FrameParser()
    parser.feed(b"")
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_mpeg_versions_are_named() -> None:
    header = parse_header(make_frames(1, SPECS["mpeg25-l3-8k"])[0])
    assert header is not None and header.version is MPEGVersion.MPEG25


# -- properties ---------------------------------------------------------------


def check_consistent(data: bytes, events: list[Frame | Skipped]) -> None:
    end = 0
    for event in events:
        if isinstance(event, Frame):
            assert event.offset >= end
            assert data[event.offset : event.offset + len(event.data)] == event.data
            assert event.header == parse_header(event.data)
            end = event.offset + len(event.data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes_raise_nothing_but_frame_error(data: bytes, size: int) -> None:
    def chunked(d: bytes) -> list[bytes]:
        return [d[i : i + size] for i in range(0, len(d), size)]

    try:
        events = events_of(data, chunked)
    except FrameError as exc:
        assert exc.offset == len(data)
        return
    check_consistent(data, events)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FRAMES),
            st.sampled_from([id3v1(), apev2(), lyrics3v2(), id3v2(bytes(5)), xing_frame()]),
            st.binary(max_size=40),
        ),
        max_size=25,
    ),
    st.integers(min_value=1, max_value=500),
)
def test_mixed_streams_parse_the_same_however_they_are_cut(parts: list[bytes], size: int) -> None:
    data = b"".join(parts)

    def chunked(d: bytes) -> list[bytes]:
        return [d[i : i + size] for i in range(0, len(d), size)]

    try:
        at_once = events_of(data, whole)
    except FrameError:
        with pytest.raises(FrameError):
            events_of(data, chunked)
        return
    assert events_of(data, chunked) == at_once
    check_consistent(data, at_once)


# -- the fast path: next_run() gives exactly next_event()'s frames ------------


def runs_of(
    data: bytes, chunks: Callable[[bytes], list[bytes]], limit: int = 1 << 30
) -> list[Frame | Skipped]:
    """The events of next_run(), each run split into its frames; checks that
    every run is what it says it is."""
    parser = FrameParser()
    events: list[Frame | Skipped] = []
    for chunk in [*chunks(data), b""]:
        parser.feed(chunk)
        while True:
            event = parser.next_run(limit)
            if event is NEED_DATA:
                assert chunk, "NEED_DATA after the end of input"
                break
            if event is END:
                break
            if isinstance(event, Skipped):
                events.append(event)
                continue
            assert isinstance(event, FrameRun)
            frames = list(event.frames())
            assert 1 <= event.count == len(frames) <= limit
            assert (event.header, event.last) == (frames[0].header, frames[-1].header)
            assert all(event.header.continues(f.header) for f in frames)
            assert event.end == frames[-1].offset + len(frames[-1].data)
            assert event.samples == sum(f.header.samples for f in frames)
            events += frames
    return events


def same_as_strict(data: bytes, chunks: Callable[[bytes], list[bytes]], limit: int) -> None:
    try:
        strict = events_of(data, chunks)
    except FrameError as exc:
        with pytest.raises(FrameError) as caught:
            runs_of(data, chunks, limit)
        assert caught.value.offset == exc.offset
        return
    assert runs_of(data, chunks, limit) == strict


@pytest.mark.parametrize("limit", [1, 2, 7, 1 << 30])
@pytest.mark.parametrize("name", CASES)
def test_runs_give_the_strict_frames_and_skips(name: str, limit: int) -> None:
    data, _ = CASES[name]
    for chunks in (whole, bytewise):
        same_as_strict(data, chunks, limit)


@pytest.mark.parametrize("name", SPECS)
def test_runs_of_every_version_and_layer(name: str) -> None:
    frames = make_frames(40, SPECS[name])
    same_as_strict(b"".join(frames), whole, 1 << 30)
    parser = FrameParser()
    parser.feed(b"".join(frames))
    parser.feed(b"")
    first, rest = parser.next_run(), parser.next_run()  # the sync, then the fast path
    assert isinstance(first, FrameRun) and isinstance(rest, FrameRun)
    assert first.count + rest.count == 39  # the last frame waits for what follows it


def test_an_info_magic_inside_audio_goes_the_strict_way() -> None:
    # Frames whose side info spells "Xing" where an info frame has it: the
    # strict parser skips them, so runs must stop there too.
    frames = make_frames(12)
    at = 4 + 32
    fake = frames[5][:at] + b"Xing" + frames[5][at + 4 :]
    vbri = frames[8][:36] + b"VBRI" + frames[8][40:]
    data = b"".join([*frames[:5], fake, *frames[6:8], vbri, *frames[9:]])
    events = runs_of(data, whole)
    assert kinds(events) == ["frame"] * 5 + ["xing"] + ["frame"] * 2 + ["vbri"] + ["frame"] * 3
    same_as_strict(data, whole, 1 << 30)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FRAMES),
            st.sampled_from(make_frames(4, Spec(rate_index=1), seed=5)),
            st.sampled_from([id3v1(), apev2(), lyrics3v2(), id3v2(bytes(5)), xing_frame()]),
            st.binary(max_size=40),
        ),
        max_size=40,
    ),
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=12),
)
def test_runs_match_the_strict_parser_however_cut(
    parts: list[bytes], size: int, limit: int
) -> None:
    def chunked(d: bytes) -> list[bytes]:
        return [d[i : i + size] for i in range(0, len(d), size)]

    data = b"".join(parts)
    same_as_strict(data, chunked, limit)
    same_as_strict(data, whole, 1 << 30)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_runs_of_random_bytes_match_the_strict_parser(data: bytes, size: int) -> None:
    same_as_strict(
        AUDIO + data + AUDIO, lambda d: [d[i : i + size] for i in range(0, len(d), size)], 3
    )
