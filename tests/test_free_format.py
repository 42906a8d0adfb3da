"""Free-format MP3 (bitrate index 0: the frame length is not in the header but
the distance to the next one): the parser finds its frames when asked to, and
the station converts such a file instead of skipping it.

Oracles: lame writes the file, sox decodes it (how many samples), and the
standard's formula (144 * bitrate / sample rate bytes a frame) gives the
lengths lame must have used."""

from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsource.core.frames import (
    END,
    NEED_DATA,
    Frame,
    FrameParser,
    FrameRun,
    Skipped,
    parse_header,
)
from pushsource.errors import FrameError, TrackError
from pushsource.ops.trial import tag_mp3
from pushsource.workers.tracks import read_info
from pushsource.workers.transcode import StationFormat, needs_transcoding
from tests.support.media import make_free_format, run_tool
from tests.synth import LAYER_BITS, VERSION_BITS, Spec, id3v1, id3v2, make_frames

Event = Frame | Skipped


def parse(data: bytes, size: int, *, runs: bool = False) -> list[Event]:
    """Every event of a free-format parser fed ``size`` bytes at a time; with
    ``runs``, from next_run() with each run split into its frames."""
    parser = FrameParser(free_format=True)
    events: list[Event] = []
    for chunk in [*(data[i : i + size] for i in range(0, len(data), size)), b""]:
        parser.feed(chunk)
        while True:
            event = parser.next_run(5) if runs else parser.next_event()
            if event is NEED_DATA:
                assert chunk, "NEED_DATA after the end of input"
                break
            if event is END:
                break
            if isinstance(event, FrameRun):
                frames = list(event.frames())
                assert event.count == len(frames) and event.data == b"".join(f.data for f in frames)
                events += frames
            else:
                assert isinstance(event, Frame | Skipped)
                events.append(event)
    return events


@pytest.fixture(scope="module")
def lame_free(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("free") / "free.mp3"
    make_free_format(path, 3.0)
    return path


def test_lame_free_format_frames_are_what_sox_decodes(lame_free: Path) -> None:
    data = lame_free.read_bytes()
    events = parse(data, len(data))
    frames = [e for e in events if isinstance(e, Frame)]
    # lame's Info frame is free format too, and skipped like any other.
    assert [(e.what, e.offset) for e in events if isinstance(e, Skipped)] == [("xing", 0)]
    # sox decodes this many samples per channel: every frame is 1152 of them.
    pcm = run_tool("sox", lame_free, "-t", "s16", "-")
    assert len(frames) * 1152 == len(pcm) // 4, (len(frames), len(pcm) // 4)
    assert all(f.header.duration == 1152 / 44100 for f in frames)
    # Back to back to the end of the file, each as long as 400 kbps at 44.1 kHz
    # makes it (ISO 11172-3: 144 * bitrate / sample rate, plus the padding byte).
    base = 144 * 400_000 // 44100
    assert frames[0].offset == events[0].offset + events[0].length
    assert frames[-1].offset + len(frames[-1].data) == len(data)
    for frame, following in itertools.pairwise(frames):
        assert following.offset == frame.offset + len(frame.data)
    for frame in frames:
        assert frame.header.free_format and frame.data[2] >> 4 == 0
        assert len(frame.data) == base + frame.header.padding == frame.header.length
    assert {len(f.data) for f in frames} == {base, base + 1}  # padding both ways is covered


def test_lame_free_format_parses_the_same_however_it_is_cut(lame_free: Path) -> None:
    data = lame_free.read_bytes()
    at_once = parse(data, len(data))
    assert parse(data, 1) == at_once
    assert parse(data, 1000, runs=True) == at_once
    assert parse(data + b"\x00junk" * 3, 4096)[:-1] == at_once


def test_only_a_parser_asked_for_it_takes_free_format(lame_free: Path) -> None:
    # parse_header cannot know a free-format length: readers that walk frames
    # by it (gain, chunks, the harbor) keep getting no frame at all.
    data = lame_free.read_bytes()
    parser = FrameParser()
    parser.feed(data)
    parser.feed(b"")
    with pytest.raises(FrameError, match="no MPEG audio frame found"):
        while parser.next_event() is not END:
            pass
    assert parse_header(data) is None


# -- synthetic streams: every layer, and what may surround them ------------------


def free_frames(n: int, spec: Spec, size: int, seed: int = 3) -> list[bytes]:
    """Free-format frames of ``spec`` (its bitrate index ignored), ``size``
    bytes without padding; every third one padded (one slot: 4 bytes in Layer I)."""
    rng = random.Random(seed)
    frames = []
    for i in range(n):
        padding = int(i % 3 == 1)
        word = (
            (0x7FF << 21)
            | (VERSION_BITS[spec.version] << 19)
            | (LAYER_BITS[spec.layer] << 17)
            | ((0 if spec.crc else 1) << 16)
            | (spec.rate_index << 10)
            | (padding << 9)
            | (spec.channel_mode << 6)
        )
        slot = 4 if spec.layer == 1 else 1
        frames.append(struct.pack(">I", word) + rng.randbytes(size + padding * slot - 4))
    return frames


SPECS = {
    "mpeg1-l3": (Spec(), 1306),
    "mpeg1-l2-mono": (Spec(layer=2, mono=True), 700),
    "mpeg1-l1-crc": (Spec(layer=1, crc=True), 400),
    "mpeg2-l3-24k": (Spec(version="2", rate_index=1), 333),
    "mpeg25-l3-8k": (Spec(version="2.5", rate_index=2), 2880),
}


@pytest.mark.parametrize("name", SPECS)
def test_free_format_of_every_version_and_layer(name: str) -> None:
    spec, size = SPECS[name]
    frames = free_frames(12, spec, size)
    data = id3v2(bytes(30)) + b"".join(frames) + id3v1()
    events = parse(data, len(data))
    assert [e.data for e in events if isinstance(e, Frame)] == frames
    assert [e.what for e in events if isinstance(e, Skipped)] == ["id3v2", "id3v1"]
    assert parse(data, 1) == events
    assert parse(data, 7, runs=True) == events


def test_the_frame_length_is_kept_for_the_file() -> None:
    # After junk the sync is found again with the length learned first, and a
    # later stream of another length is learned anew.
    a = free_frames(6, Spec(), 500)
    b = free_frames(6, Spec(), 900, seed=4)
    data = b"".join(a) + b"junk" * 5 + b"".join(a) + b"".join(b)
    events = parse(data, len(data))
    assert [e.data for e in events if isinstance(e, Frame)] == a + a + b
    assert [e.what for e in events if isinstance(e, Skipped)] == ["junk"]


PARTS = [
    *free_frames(6, Spec(), 400),
    *free_frames(4, Spec(rate_index=1), 300, seed=5),
    *make_frames(4),
    id3v1(),
    id3v2(bytes(5)),
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(PARTS), st.binary(max_size=40)), max_size=25),
    st.integers(min_value=1, max_value=500),
)
def test_free_format_mixtures_parse_the_same_however_cut(parts: list[bytes], size: int) -> None:
    data = b"".join(parts)
    try:
        at_once = parse(data, max(len(data), 1))
    except FrameError as exc:
        assert exc.offset == len(data)
        with pytest.raises(FrameError):
            parse(data, size)
        return
    assert parse(data, size) == at_once
    assert parse(data, size, runs=True) == at_once
    end = 0
    for event in at_once:
        if isinstance(event, Frame):
            assert event.offset >= end and data[event.offset :].startswith(event.data)
            assert len(event.data) == event.header.length
            end = event.offset + len(event.data)


# -- the station: converted, with its title ---------------------------------------


def test_a_fixed_bitrate_frame_among_free_format_ones_ends_a_run() -> None:
    """Found by the mixture test above (1 run in hundreds): after a skipped
    frame of another sample rate, a run that began at a fixed-bitrate frame
    went on into free-format frames, which its frames() cannot size. Each run
    holds one kind; the frames are next_event()'s."""
    free, other_rate, fixed = PARTS[0], PARTS[6], PARTS[10]
    data = b"".join([free, free, free, other_rate, fixed, free, free])
    at_once = parse(data, len(data))
    assert [e.header.free_format if isinstance(e, Frame) else e.what for e in at_once] == [
        True, True, True, "junk", False, True, True,
    ]  # fmt: skip
    for size in (1, 7, 400, len(data)):
        assert parse(data, size, runs=True) == at_once


def test_a_free_format_mp3_is_converted_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "free.mp3"
    make_free_format(path, 1.0)
    tag_mp3(path, "Free Artist", "Free Title")
    # Same rate, channels and layer as the station, but no bitrate a player can
    # count on: converted to the station's.
    assert needs_transcoding(path, StationFormat()) is True
    assert needs_transcoding(path, StationFormat(), strict_bitrate=True) is True
    assert read_info(path).title == "Free Artist - Free Title"


def test_free_format_junk_named_mp3_is_still_refused(tmp_path: Path) -> None:
    # One free-format-looking header and nothing that confirms it.
    path = tmp_path / "fake.mp3"
    path.write_bytes(b"\xff\xfb\x00\x64" + bytes(5000))
    with pytest.raises(TrackError, match="no MPEG audio frame found"):
        needs_transcoding(path, StationFormat())
