"""apply_gain (pushsource.core.gain) over synthetic frames and real lame frames:
only the global_gain bits (and a CRC) change, by the steps asked, clamped, gains
of 0 left alone; lengths and every other bit stay; a right CRC stays right.

The side information is read here field by field from the standards' tables,
independently of pushsource's offsets, and the CRC is computed bit by bit.
"""

from __future__ import annotations

import array
import math
import random
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsource.core.frames import END, NEED_DATA, FrameParser, FrameRun
from pushsource.core.gain import DB_PER_STEP, apply_gain
from tests.support.media import run_tool
from tests.synth import Spec, make_frame

# -- an independent reader of Layer III side information ------------------------


class _Bits:
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.pos = data, at * 8

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value


@dataclass(frozen=True)
class Layout:
    layer: int
    mpeg1: bool
    channels: int
    protected: bool


def layout(frame: bytes) -> Layout:
    version = (frame[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer = 4 - ((frame[1] >> 1) & 3)
    return Layout(layer, version == 3, 1 if frame[3] >> 6 == 3 else 2, not frame[1] & 1)


def side_info_end(frame: bytes) -> int:
    lay = layout(frame)
    size = (17 if lay.channels == 1 else 32) if lay.mpeg1 else (9 if lay.channels == 1 else 17)
    return (6 if lay.protected else 4) + size


def global_gains(frame: bytes) -> list[tuple[int, int]]:
    """(bit offset in the frame, value) of each global_gain, read through the
    whole side information field by field (ISO 11172-3 / 13818-3 2.4.1.7)."""
    lay = layout(frame)
    assert lay.layer == 3
    bits = _Bits(frame, 6 if lay.protected else 4)
    nch = lay.channels
    bits.read(9 if lay.mpeg1 else 8)  # main_data_begin
    bits.read((5 if nch == 1 else 3) if lay.mpeg1 else (1 if nch == 1 else 2))  # private_bits
    if lay.mpeg1:
        bits.read(4 * nch)  # scfsi
    gains = []
    for _granule in range(2 if lay.mpeg1 else 1):
        for _channel in range(nch):
            bits.read(12)  # part2_3_length
            bits.read(9)  # big_values
            gains.append((bits.pos, bits.read(8)))
            bits.read(4 if lay.mpeg1 else 9)  # scalefac_compress
            if bits.read(1):  # window_switching_flag
                bits.read(2 + 1 + 2 * 5 + 3 * 3)  # block_type, mixed, 2 tables, subblock gains
            else:
                bits.read(3 * 5 + 4 + 3)  # 3 tables, region0_count, region1_count
            bits.read(3 if lay.mpeg1 else 2)  # (preflag), scalefac_scale, count1table_select
    assert bits.pos == side_info_end(frame) * 8, "the side information is all read"
    return gains


def crc16(data: bytes) -> int:
    """MPEG audio's CRC-16, bit by bit: polynomial 0x8005, initial 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        for i in range(7, -1, -1):
            top = ((crc >> 15) ^ (byte >> i)) & 1
            crc = ((crc << 1) & 0xFFFF) ^ (0x8005 if top else 0)
    return crc


def crc_syndrome(frame: bytes) -> int:
    """0 for a protected Layer III frame whose CRC is right."""
    computed = crc16(frame[2:4] + frame[6 : side_info_end(frame)])
    return computed ^ int.from_bytes(frame[4:6], "big")


def with_right_crc(frame: bytes) -> bytes:
    out = bytearray(frame)
    out[4:6] = crc16(frame[2:4] + frame[6 : side_info_end(frame)]).to_bytes(2, "big")
    return bytes(out)


def expected_gain(old: int, steps: int) -> int:
    return 0 if old == 0 else min(255, max(0, old + steps))


def check(frames: list[bytes], out: bytes, steps: int) -> None:
    """The property, frame by frame."""
    assert len(out) == sum(map(len, frames))
    pos = 0
    for before in frames:
        after = out[pos : pos + len(before)]
        pos += len(before)
        lay = layout(before)
        if lay.layer != 3:
            assert after == before
            continue
        allowed = 0
        for bit, _ in global_gains(before):
            allowed |= 0xFF << (len(before) * 8 - bit - 8)
        if lay.protected:
            allowed |= 0xFFFF << ((len(before) - 6) * 8)
        changed = int.from_bytes(before, "big") ^ int.from_bytes(after, "big")
        assert changed & ~allowed == 0, "only global_gain bits and the CRC change"
        olds = [value for _, value in global_gains(before)]
        news = [value for _, value in global_gains(after)]
        assert news == [expected_gain(old, steps) for old in olds]
        if lay.protected:
            assert crc_syndrome(after) == crc_syndrome(before)


# -- synthetic frames -------------------------------------------------------------

specs = st.builds(
    Spec,
    version=st.sampled_from(["1", "2", "2.5"]),
    layer=st.just(3),
    bitrate_index=st.integers(1, 14),
    rate_index=st.integers(0, 2),
    crc=st.booleans(),
    mode=st.integers(0, 3),
)


@st.composite
def runs(draw: st.DrawFn) -> list[bytes]:
    spec = draw(specs)
    rng = random.Random(draw(st.integers(0, 2**32)))
    frames = []
    for _ in range(draw(st.integers(1, 6))):
        frame = make_frame(spec, padding=draw(st.integers(0, 1)), rng=rng)
        if spec.crc and draw(st.booleans()):
            frame = with_right_crc(frame)
        if draw(st.booleans()):  # a granule the encoder silenced: gain 0
            gains = global_gains(frame)
            bit, _ = gains[draw(st.integers(0, len(gains) - 1))]
            word = int.from_bytes(frame, "big") & ~(0xFF << (len(frame) * 8 - bit - 8))
            frame = word.to_bytes(len(frame), "big")
        frames.append(frame)
    return frames


@settings(max_examples=300)
@given(runs(), st.integers(-300, 300))
def test_synthetic_frames_change_only_in_global_gain(frames: list[bytes], steps: int) -> None:
    check(frames, apply_gain(b"".join(frames), steps), steps)


@given(runs(), st.integers(-300, 300).filter(bool))
def test_a_right_crc_stays_right(frames: list[bytes], steps: int) -> None:
    frames = [with_right_crc(f) if layout(f).protected else f for f in frames]
    out = apply_gain(b"".join(frames), steps)
    pos = 0
    for frame in frames:
        if layout(frame).protected:
            assert crc_syndrome(out[pos : pos + len(frame)]) == 0
        pos += len(frame)


def test_clamping_and_gain_zero_at_the_edges() -> None:
    frame = make_frame(Spec(mode=0), rng=random.Random(3))
    word = int.from_bytes(frame, "big")
    gains = global_gains(frame)
    for (bit, _), value in zip(gains, (0, 1, 254, 255), strict=True):
        shift = len(frame) * 8 - bit - 8
        word = (word & ~(0xFF << shift)) | (value << shift)
    frame = word.to_bytes(len(frame), "big")
    assert [v for _, v in global_gains(apply_gain(frame, 3))] == [0, 4, 255, 255]
    assert [v for _, v in global_gains(apply_gain(frame, -3))] == [0, 0, 251, 252]


def test_other_layers_pass_unchanged() -> None:
    layer2 = make_frame(Spec(layer=2, bitrate_index=10))
    layer1 = make_frame(Spec(layer=1, bitrate_index=4))
    layer3 = make_frame(Spec())
    out = apply_gain(layer2 + layer1 + layer3, 5)
    assert out[: len(layer2) + len(layer1)] == layer2 + layer1
    assert out[len(layer2) + len(layer1) :] != layer3
    check([layer2, layer1, layer3], out, 5)


def test_zero_steps_returns_the_data_itself() -> None:
    data = b"".join(make_frame(Spec(), rng=random.Random(n)) for n in range(3))
    assert apply_gain(data, 0) is data


@pytest.mark.parametrize(
    "data",
    [b"not a frame at all", make_frame(Spec())[:-1], make_frame(Spec()) + b"\xff\xfb"],
    ids=["junk", "cut frame", "cut header"],
)
def test_what_is_not_whole_frames_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        apply_gain(data, 2)


# -- real frames, made by lame at test time ---------------------------------------

#: name: (sample rate, channels, lame arguments)
LAME_KINDS = {
    "mpeg1-joint": (44100, 2, ["-b", "128"]),
    "mpeg1-stereo-crc": (48000, 2, ["-b", "160", "-m", "s", "-p"]),
    "mpeg1-dual": (32000, 2, ["-b", "96", "-m", "d"]),
    "mpeg1-mono-crc": (44100, 1, ["-b", "64", "-m", "m", "-p"]),
    "mpeg1-vbr": (44100, 2, ["-V", "2"]),
    "mpeg2-joint-crc": (22050, 2, ["-b", "64", "-p"]),
    "mpeg2-mono": (16000, 1, ["-b", "32", "-m", "m"]),
    "mpeg25-mono-crc": (11025, 1, ["-b", "24", "-m", "m", "-p"]),
    "mpeg25-stereo": (8000, 2, ["-b", "16", "-m", "s"]),
}


def lame_frames(path: Path, rate: int, channels: int, args: list[str], seconds: float) -> bytes:
    wav = path.with_suffix(".wav")
    run_tool(
        "sox", "-R", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", wav,
        "synth", str(seconds), "pinknoise", "vol", "0.1",
    )  # fmt: skip
    run_tool("lame", "--quiet", "-t", *args, wav, path)
    return path.read_bytes()


def split(data: bytes) -> list[bytes]:
    """The audio frames of an MP3 file, by pushsource's parser (tested elsewhere)."""
    parser = FrameParser()
    parser.feed(data)
    parser.feed(b"")
    frames = []
    while (event := parser.next_run()) is not END:
        assert event is not NEED_DATA
        if isinstance(event, FrameRun):
            frames += [frame.data for frame in event.frames()]
    return frames


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    folder = tmp_path_factory.mktemp("lame")
    made = {}
    for name, (rate, channels, args) in LAME_KINDS.items():
        data = lame_frames(folder / f"{name}.mp3", rate, channels, args, 1.0)
        made[name] = split(data)
        assert made[name], name
    return made


def test_real_frames_are_of_every_kind(real: dict[str, list[bytes]]) -> None:
    """The corpus below covers what it claims: versions, modes and CRCs."""
    kinds = set()
    for frames in real.values():
        lay = layout(frames[0])
        kinds.add((lay.mpeg1, frames[0][1] >> 3 & 3, frames[0][3] >> 6, lay.protected))
    assert {version for _, version, _, _ in kinds} == {3, 2, 0}
    assert {mode for _, _, mode, _ in kinds} == {0, 1, 2, 3}
    assert {protected for *_, protected in kinds} == {True, False}
    for name, frames in real.items():
        if "crc" in name:
            assert all(crc_syndrome(f) == 0 for f in frames), f"lame -p makes right CRCs ({name})"


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(LAME_KINDS)), st.integers(-260, 260))
def test_real_frames_change_only_in_global_gain(
    real: dict[str, list[bytes]], name: str, steps: int
) -> None:
    frames = real[name]
    check(frames, apply_gain(b"".join(frames), steps), steps)


def decode(mp3: bytes, tmp_path: Path, name: str) -> tuple[str, array.array[int]]:
    """ffmpeg's complaints (CRCs checked) and its 16-bit samples."""
    source, target = tmp_path / f"{name}.mp3", tmp_path / f"{name}.wav"
    source.write_bytes(mp3)
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-err_detect", "crccheck", "-i", source, "-y", target],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with wave.open(str(target), "rb") as decoded:
        samples = array.array("h", decoded.readframes(decoded.getnframes()))
    return done.stderr, samples


def rms_db(samples: array.array[int]) -> float:
    return 10 * math.log10(sum(s * s for s in samples) / len(samples))


@pytest.mark.parametrize("name", ["mpeg1-stereo-crc", "mpeg2-joint-crc", "mpeg25-mono-crc"])
@pytest.mark.parametrize("steps", [-4, 3])
def test_a_decoder_hears_the_steps_and_accepts_the_crcs(
    real: dict[str, list[bytes]], tmp_path: Path, name: str, steps: int
) -> None:
    data = b"".join(real[name])
    errors, before = decode(data, tmp_path, "before")
    assert errors == ""
    errors, after = decode(apply_gain(data, steps), tmp_path, "after")
    assert "CRC" not in errors, errors
    assert len(after) == len(before)
    assert rms_db(after) - rms_db(before) == pytest.approx(steps * DB_PER_STEP, abs=0.05)
    # And the check can fail: one gain bit changed without its CRC is caught.
    frame = bytearray(real[name][5])
    bit, _ = global_gains(bytes(frame))[0]
    frame[bit // 8] ^= 0x80 >> (bit % 8)
    errors, _ = decode(b"".join(real[name][:5]) + bytes(frame), tmp_path, "broken")
    assert "CRC mismatch" in errors


@given(st.binary(max_size=3000), st.integers(-20, 20).filter(bool))
def test_anything_else_is_refused_or_kept_in_length(data: bytes, steps: int) -> None:
    """Whatever the bytes, only ValueError may escape, and never a change of length."""
    try:
        out = apply_gain(data, steps)
    except ValueError:
        return
    assert len(out) == len(data)
