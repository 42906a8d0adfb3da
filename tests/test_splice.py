"""Splice-clean cuts (pushsource.core.splice) over real lame frames.

The fixtures are pink noise, which keeps lame's bit reservoir full: almost
every frame's main data starts hundreds of bytes back, in the frames before
it. A stream that starts (or goes on) at a frame in the middle of such a track
has frames pointing into bytes that were never sent; after Splicer.cut() and
repair() none does, exactly those frames were silenced, and every other byte
is as it was. mpg123 and ffmpeg decode the repaired streams without a word,
and mpg123 fails on the same streams unrepaired.

main_data_begin, slots and CRCs are read here from the bits, not by the code
under test (tests.support.media.reservoir_begin, tests.test_gain.crc_syndrome).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pushsource.core.frames import header_for, silent_frame
from pushsource.core.splice import (
    Splicer,
    main_data_begin,
    main_data_slot,
    silence_side_info,
)
from tests.support.media import decoder_errors, make_noise_mp3, reservoir_begin, walk_mpeg_frames
from tests.test_gain import crc_syndrome


@dataclass(frozen=True)
class Track:
    name: str
    frames: list[bytes]
    protected: bool
    mpeg1: bool

    def side_info(self, frame: bytes) -> tuple[int, int]:
        """Where a frame's side information starts and ends."""
        at = 6 if self.protected else 4
        mono = (frame[3] >> 6) == 3
        size = (17 if mono else 32) if self.mpeg1 else (9 if mono else 17)
        return at, at + size

    def slot(self, frame: bytes) -> int:
        return len(frame) - self.side_info(frame)[1]

    @property
    def largest(self) -> int:
        return 511 if self.mpeg1 else 255


def _frames(data: bytes) -> list[bytes]:
    walked, end = walk_mpeg_frames(data)
    assert end == len(data), "lame -t writes nothing but frames"
    return [data[pos : pos + header.length] for pos, header in walked]


_KINDS = {
    "128k": dict(lame_args=("-b", "128")),
    "crc": dict(lame_args=("-b", "128", "-p")),
    "mpeg2": dict(samplerate=22050, lame_args=("-b", "64")),
}


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Track]:
    directory = tmp_path_factory.mktemp("splice")
    out = {}
    for name, kind in _KINDS.items():
        data = make_noise_mp3(directory / f"{name}.mp3", 3.0, **kind)  # type: ignore[arg-type]
        frames = _frames(data)
        out[name] = Track(name, frames, name == "crc", name != "mpeg2")
    return out


@pytest.fixture(params=list(_KINDS))
def track(request: pytest.FixtureRequest, tracks: dict[str, Track]) -> Track:
    return tracks[request.param]


def test_the_fixtures_lean_on_the_reservoir(track: Track) -> None:
    begins = [reservoir_begin(f, 0) for f in track.frames]
    assert begins[0] == 0
    assert sum(b > 0 for b in begins) > 0.9 * len(begins)
    # Many reach back beyond the frame before: a cut needs more than one frame mended.
    assert sum(b > track.slot(f) for b, f in zip(begins, track.frames, strict=True)) >= 3
    assert (track.frames[0][1] & 1 == 0) is track.protected
    if track.protected:
        assert all(crc_syndrome(f) == 0 for f in track.frames)


def test_main_data_begin_and_slot_read_the_bits(track: Track) -> None:
    from pushsource.core.frames import parse_header

    stream = b"".join(track.frames)
    pos = 0
    for frame in track.frames:
        assert main_data_begin(stream, pos) == reservoir_begin(frame, 0)
        header = parse_header(frame)
        assert header is not None
        assert main_data_slot(header) == track.slot(frame)
        pos += len(frame)
    assert main_data_begin(b"\x00" * 40, 0) is None
    assert main_data_begin(stream[:5], 0) is None  # side info cut off


def _check_repaired(track: Track, before: list[bytes], after: bytes) -> int:
    """That ``after`` is ``before`` (frames sent after a cut) repaired: the
    same frame lengths, each frame that pointed back past the cut silenced
    (side info zero but main_data_begin, which points at the bytes sent since
    the cut), every other byte as it was. Returns how many were silenced."""
    frames = _frames(after)
    assert [len(f) for f in frames] == [len(f) for f in before]
    got, silenced = 0, 0
    for old, new in zip(before, frames, strict=True):
        at, end = track.side_info(old)
        begin = reservoir_begin(new, 0)
        assert begin <= got, "no frame may point before the cut"
        if got >= track.largest or reservoir_begin(old, 0) <= got:
            assert new == old
        else:
            silenced += 1
            assert begin == got
            assert new[:at] == old[:at] or track.protected  # the CRC changes
            assert new[:4] == old[:4]
            assert new[end:] == old[end:], "its main data stays: the reservoir of the next"
            rest = int.from_bytes(new[at:end], "big") & ~(0x1FF if track.mpeg1 else 0xFF) << (
                8 * (end - at) - (9 if track.mpeg1 else 8)
            )
            assert rest == 0, "every other side info field is zero"
        if track.protected:
            assert crc_syndrome(new) == 0
        got += track.slot(old)
    return silenced


@pytest.mark.parametrize("at", [17, 40, 63])
def test_a_cut_silences_exactly_the_frames_that_point_past_it(track: Track, at: int) -> None:
    tail = track.frames[at:]
    splicer = Splicer()
    assert not splicer.open
    splicer.cut()
    # Sent in runs of a few frames, as the station does: the count carries over.
    runs = [b"".join(tail[i : i + 3]) for i in range(0, len(tail), 3)]
    repaired = b"".join(splicer.repair(run) for run in runs)
    silenced = _check_repaired(track, tail, repaired)
    assert silenced >= 1
    assert splicer.silenced == silenced
    assert not splicer.open, "closed once the largest main_data_begin is covered"
    # Closed: the next run is returned as it is, not looked at.
    run = b"".join(tail[:3])
    assert splicer.repair(run) is run


def test_without_a_cut_nothing_is_looked_at(tracks: dict[str, Track]) -> None:
    splicer = Splicer()
    data = b"".join(tracks["128k"].frames[30:40])
    assert splicer.repair(data) is data
    splicer.cut()
    splicer.cut()  # a second cut starts the count again
    assert splicer.repair(data) != data


def test_a_track_from_its_first_frame_needs_nothing(track: Track) -> None:
    splicer = Splicer()
    splicer.cut()
    data = b"".join(track.frames[:20])
    assert splicer.repair(data) is data
    assert splicer.silenced == 0


def test_machine_silence_points_nowhere() -> None:
    for rate, channels, bitrate in ((44100, 2, 128), (22050, 1, 32), (8000, 2, 64)):
        frame = silent_frame(header_for(rate, channels, bitrate))
        assert reservoir_begin(frame, 0) == 0
        splicer = Splicer()
        splicer.cut()
        assert splicer.repair(frame * 3) == frame * 3


def test_frames_it_cannot_walk_end_the_check(tracks: dict[str, Track]) -> None:
    splicer = Splicer()
    splicer.cut()
    junk = b"\x00" * 50 + b"".join(tracks["128k"].frames[30:33])
    assert splicer.repair(junk) is junk
    assert not splicer.open
    # Layer II has no reservoir: it passes untouched.
    layer2 = bytearray(silent_frame(header_for(44100, 2, 128)))
    layer2[1] = (layer2[1] & ~0x06) | 0x04
    splicer.cut()
    assert splicer.repair(bytes(layer2) * 2) == bytes(layer2) * 2


def test_silence_side_info(tracks: dict[str, Track]) -> None:
    frame = tracks["crc"].frames[50]
    buf = bytearray(b"xx" + frame)
    silence_side_info(buf, 2)
    assert reservoir_begin(bytes(buf), 2) == 0
    assert crc_syndrome(bytes(buf[2:])) == 0
    assert buf[2 + 6 + 32 :] == frame[6 + 32 :]
    silence_side_info(buf, 2, 511)
    assert reservoir_begin(bytes(buf), 2) == 511
    assert crc_syndrome(bytes(buf[2:])) == 0
    with pytest.raises(ValueError):
        silence_side_info(buf, 2, 512)
    with pytest.raises(ValueError):
        silence_side_info(bytearray(40), 0)


def _decode(directory: Path, name: str, data: bytes) -> str:
    path = directory / f"{name}.mp3"
    path.write_bytes(data)
    return decoder_errors(path)


@pytest.mark.parametrize("at", [25, 52])
def test_decoders_take_the_repaired_cut(track: Track, at: int, tmp_path: Path) -> None:
    """Silence, then the track from the middle (the machine's "frames late"
    silence, a DJ's first frames, a resume); and the track's first seconds,
    then the track from elsewhere (a jump)."""
    from pushsource.core.frames import parse_header

    header = parse_header(track.frames[0])
    assert header is not None
    silence = silent_frame(header) * 20
    tail = b"".join(track.frames[at:])
    jump = b"".join(track.frames[: at // 2])
    for name, head in (("silence", silence), ("jump", jump)):
        splicer = Splicer()
        splicer.cut()
        fixed = head + splicer.repair(tail)
        assert _decode(tmp_path, f"{name}-fixed", fixed) == ""
    # Proof that the check can fail: the same cut unrepaired.
    noisy = _decode(tmp_path, "silence-raw", silence + tail)
    if track.name == "128k":
        assert "dequantization failed" in noisy


def test_decoders_fail_on_a_cut_left_as_it_is(tracks: dict[str, Track], tmp_path: Path) -> None:
    """At several cut points: without repair mpg123 fails on most, with it on none."""
    track = tracks["128k"]
    header_frame = track.frames[0]
    from pushsource.core.frames import parse_header

    header = parse_header(header_frame)
    assert header is not None
    silence = silent_frame(header) * 20
    failed = 0
    for at in range(20, 80, 12):
        tail = b"".join(track.frames[at:])
        failed += _decode(tmp_path, f"raw-{at}", silence + tail) != ""
        splicer = Splicer()
        splicer.cut()
        assert _decode(tmp_path, f"fixed-{at}", silence + splicer.repair(tail)) == ""
    assert failed >= 3
