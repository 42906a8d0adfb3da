"""The crossfade join builder (workers/crossfade.py) on real lame frames:
what goes around a join is the tracks' own frames, what a decoder makes of
the spliced stream is the outgoing track, then both, then the incoming track
sample for sample, and neither mpg123 nor ffmpeg finds fault with it."""

from __future__ import annotations

import array
import math
import subprocess
from pathlib import Path

import av
import pytest

from pushsource.core.effects import Join
from pushsource.core.frames import parse_header
from pushsource.core.splice import main_data_begin, main_data_slot
from pushsource.workers.crossfade import (
    DECODER_DELAY,
    LAME_DELAY,
    NoJoin,
    build_join,
    file_delays,
    lame_delays,
)

Frames = list[tuple[int, bytes]]


def _mp3(
    path: Path,
    freq: int,
    seconds: float = 6.0,
    *,
    rate: int = 44100,
    bitrate: int = 128,
    extra: tuple[str, ...] = (),
    silent: bool = False,
) -> Path:
    wav = path.with_suffix(".wav")
    tone = ["synth", str(seconds), "sine", str(freq), "vol", "0.0" if silent else "0.5"]
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "2", str(wav), *tone], check=True)
    args = ["lame", "--quiet", "-b", str(bitrate), *extra, str(wav), str(path)]
    subprocess.run(args, check=True)
    return path


def _frames(path: Path) -> tuple[Frames, tuple[int, int] | None]:
    """A file's audio frames (file offset, bytes), without its LAME tag frame."""
    data = path.read_bytes()
    pos, out = 0, []
    while pos + 4 <= len(data):
        header = parse_header(data, pos)
        if header is None:
            break
        out.append((pos, data[pos : pos + header.length]))
        pos += header.length
    delays = lame_delays(out[0][1])
    return (out[1:] if delays is not None else out), delays


def _decode(frames: list[bytes]) -> array.array[float]:
    """The left channel a decoder makes of these frames, from a fresh start."""
    decoder = av.CodecContext.create("mp3float", "r")
    out = array.array("f")
    for frame in frames:
        for decoded in decoder.decode(av.Packet(frame)):  # type: ignore[attr-defined]
            out.frombytes(bytes(decoded.planes[0])[: decoded.samples * 4])
    return out


def _splice(outgoing: Frames, incoming: Frames, join: Join) -> list[bytes]:
    cut = next(n for n, (offset, _) in enumerate(outgoing) if offset == join.cut_at)
    assert incoming[join.skip][0] == join.resume_at
    frames = [frame for _, frame in outgoing[:cut]]
    start = 0
    for end in join.ends:
        frames.append(join.data[start:end])
        start = end
    return frames + [frame for _, frame in incoming[join.skip :]]


def _errors(tmp_path: Path, frames: list[bytes]) -> str:
    path = tmp_path / "spliced.mp3"
    path.write_bytes(b"".join(frames))
    ffmpeg = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    mpg123 = subprocess.run(
        ["mpg123", "-t", str(path)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    complaints = [
        line
        for line in mpg123.stderr.splitlines()
        if "error" in line.lower() or "fail" in line.lower()
    ]
    return ffmpeg.stderr + "\n".join(complaints)


def _amplitude(pcm: array.array[float], start: int, freq: int, rate: int = 44100) -> float:
    window = rate // 20
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for value in pcm[start : start + window]:
        s1, s2 = value + coeff * s1 - s2, s1
    return 2 * math.sqrt(max(0.0, s1 * s1 + s2 * s2 - coeff * s1 * s2)) / window


def test_libmp3lame_output_lags_its_input_by_lames_delay_and_a_decoders() -> None:
    """The encoder delay build_join counts on, measured on a click."""
    encoder = av.CodecContext.create("libmp3lame", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate, encoder.layout, encoder.format = 44100, "mono", "fltp"
    encoder.bit_rate = 128000
    encoder.open()
    signal = array.array("f", bytes(4 * 1152 * 40))
    signal[10_000] = 0.9
    packets = []
    for start in range(0, len(signal), 1152):
        frame = av.AudioFrame(format="fltp", layout="mono", samples=1152)
        frame.planes[0].update(signal[start : start + 1152].tobytes())
        frame.sample_rate, frame.pts = 44100, start
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    packets += [bytes(packet) for packet in encoder.encode(None)]
    decoded = _decode(packets)
    peak = max(range(len(decoded)), key=lambda n: abs(decoded[n]))
    assert peak - 10_000 == LAME_DELAY + DECODER_DELAY


@pytest.mark.parametrize(
    ("rate", "bitrate", "extra"),
    [(44100, 128, ()), (44100, 128, ("-t",)), (22050, 64, ()), (44100, 128, ("-p",))],
    ids=["lame-tag", "no-tag", "mpeg2", "crc"],
)
def test_a_join_is_the_outgoing_track_then_both_then_the_incoming_one(
    tmp_path: Path, rate: int, bitrate: int, extra: tuple[str, ...]
) -> None:
    a, a_delays = _frames(_mp3(tmp_path / "a.mp3", 440, rate=rate, bitrate=bitrate, extra=extra))
    b, b_delays = _frames(_mp3(tmp_path / "b.mp3", 660, rate=rate, bitrate=bitrate, extra=extra))
    assert (a_delays is None) == ("-t" in extra)
    assert any((main_data_begin(f) or 0) > 0 for _, f in b[1:])
    spf = parse_header(a[0][1]).samples  # type: ignore[union-attr]
    tail = a[-round(4.5 * rate / spf) :]  # what a station holds: the last 4.5 s
    join = build_join(
        tail,
        b[: round(4.0 * rate / spf)],
        3.0,
        bitrate=bitrate,
        out_padding=a_delays[1] if a_delays else None,
        in_delay=b_delays[0] if b_delays else None,
    )
    assert isinstance(join, Join), join
    assert abs(join.seconds - 3.0) <= spf / rate / 2 + 1e-9
    spliced = _splice(a, b, join)
    assert _errors(tmp_path, spliced) == ""

    cut = next(n for n, (offset, _) in enumerate(a) if offset == join.cut_at)
    heard = _decode(spliced)
    alone_a, alone_b = _decode([f for _, f in a]), _decode([f for _, f in b])
    # The outgoing track's own frames decode to its own samples up to the join;
    assert heard[: cut * spf] == alone_a[: cut * spf]
    # two frames after the join (the filterbank's memory: one granule per
    # frame in MPEG-2), the incoming track's, exactly.
    after = cut + len(join.ends) + 2
    assert heard[after * spf :] == alone_b[(join.skip + 2) * spf :]
    # In between: the one falling, the other rising, both at the midpoint.
    mid = (cut + join.title_at) * spf
    early, late = (cut + 2) * spf, (cut + len(join.ends) - 4) * spf
    assert _amplitude(heard, early, 440, rate) > 0.3 > _amplitude(heard, early, 660, rate)
    assert _amplitude(heard, late, 660, rate) > 0.3 > _amplitude(heard, late, 440, rate)
    assert min(_amplitude(heard, mid, 440, rate), _amplitude(heard, mid, 660, rate)) > 0.25
    # Equal power: the level holds through the fade.
    for at in range(cut * spf, after * spf, rate // 20):
        level = math.sqrt(sum(v * v for v in heard[at : at + 1000]) / 1000)
        assert 0.3 < level < 0.45, f"level {level:.3f} at {at / rate:.2f} s"
    # Frames the join re-headed to carry its seams' reservoirs: a higher
    # bitrate, same format; everything else in the join is the station's.
    headers = [parse_header(join.data, start) for start in (0, *join.ends[:-1])]
    assert all(h is not None and h.sample_rate == rate for h in headers)
    assert headers[0].bitrate >= bitrate  # type: ignore[union-attr]
    if "-p" in extra:  # CRCs were made to match: ffmpeg checks them on request
        path = tmp_path / "spliced.mp3"
        command = ["ffmpeg", "-v", "error", "-err_detect", "crccheck", "-i", str(path)]
        checked = subprocess.run(
            [*command, "-f", "null", "-"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert checked.stderr == ""


def test_no_join_where_a_track_ends_or_begins_in_silence(tmp_path: Path) -> None:
    tone, _ = _frames(_mp3(tmp_path / "tone.mp3", 440))
    quiet, _ = _frames(_mp3(tmp_path / "quiet.mp3", 440, silent=True))
    ends_quiet = build_join(quiet[-170:], tone[:160], 3.0, bitrate=128)
    begins_quiet = build_join(tone[-170:], quiet[:160], 3.0, bitrate=128)
    assert isinstance(ends_quiet, NoJoin) and "ends in silence" in ends_quiet.reason
    assert isinstance(begins_quiet, NoJoin) and "begins in silence" in begins_quiet.reason


def test_no_join_with_too_little_held_or_another_format(tmp_path: Path) -> None:
    a, _ = _frames(_mp3(tmp_path / "a.mp3", 440))
    b, _ = _frames(_mp3(tmp_path / "b.mp3", 660))
    low, _ = _frames(_mp3(tmp_path / "low.mp3", 660, rate=22050, bitrate=64))
    short_out = build_join(a[-100:], b[:160], 3.0, bitrate=128)
    short_in = build_join(a[-170:], b[:100], 3.0, bitrate=128)
    other = build_join(a[-170:], low[:160], 3.0, bitrate=128)
    assert isinstance(short_out, NoJoin) and "outgoing" in short_out.reason
    assert isinstance(short_in, NoJoin) and "incoming" in short_in.reason
    assert isinstance(other, NoJoin) and "sample rate" in other.reason
    assert isinstance(build_join([], b, 3.0, bitrate=128), NoJoin)


def test_the_lame_tag_gives_delay_and_padding(tmp_path: Path) -> None:
    path = _mp3(tmp_path / "tagged.mp3", 440, seconds=1.0)
    delays = file_delays(path)
    assert delays is not None and delays[0] == LAME_DELAY
    frames, _ = _frames(path)
    # delay + samples + padding fill the frames exactly (LAME's own sum).
    assert delays[0] + 44100 + delays[1] == len(frames) * 1152
    assert file_delays(_mp3(tmp_path / "untagged.mp3", 440, seconds=1.0, extra=("-t",))) is None
    assert file_delays(tmp_path / "missing.mp3") is None


def test_main_data_begin_and_slot_read_the_side_info(tmp_path: Path) -> None:
    frames, _ = _frames(_mp3(tmp_path / "a.mp3", 440, seconds=1.0))
    first = parse_header(frames[0][1])
    assert first is not None
    assert main_data_begin(frames[0][1]) == 0  # nothing before the first
    assert main_data_slot(first) == first.length - 4 - 32
    assert max(main_data_begin(f) or 0 for _, f in frames) <= 511


@pytest.mark.parametrize(
    ("rate", "channels", "bitrate"), [(44100, 2, 128), (22050, 1, 64)], ids=["mpeg1", "mpeg2-mono"]
)
def test_a_frame_made_whole_decodes_as_it_did_with_nothing_before_it(
    tmp_path: Path, rate: int, channels: int, bitrate: int
) -> None:
    """Where an output enters a copy after a cut (the end of a join, a
    rejoin), its first frame takes in the reservoir it had in the frames
    before it: it may hold the start of the next frame's data too (a frame
    whose own data ends before its own slot: common at 64 kbps)."""
    from pushsource.core.splice import made_whole

    wav, mp3 = tmp_path / "noise.wav", tmp_path / "noise.mp3"
    synth = ["synth", "4", "pinknoise", "vol", "0.4"]
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", str(channels), str(wav), *synth], check=True
    )
    subprocess.run(["lame", "--quiet", "-b", str(bitrate), str(wav), str(mp3)], check=True)
    frames = [f for _, f in _frames(mp3)[0]]
    spf = parse_header(frames[0]).samples  # type: ignore[union-attr]
    original = _decode(frames)
    tried = 0
    for at in range(20, len(frames) - 20, 9):
        if (main_data_begin(frames[at]) or 0) < 100:
            continue
        whole = made_whole(frames[at], frames[at - 8 : at])
        assert whole is not None
        header = parse_header(whole)
        assert header is not None and main_data_begin(whole) == 0
        assert header.bitrate > bitrate  # re-headed: room for what it took in
        after = [whole, *frames[at + 1 : at + 12]]
        # From two frames after it on (it has no MDCT overlap before it, and
        # with one granule a frame the filterbank remembers into the next),
        # the same samples as in the whole file; no decoder complaint.
        assert _decode(after)[2 * spf :] == original[(at + 2) * spf : (at + 12) * spf]
        assert _errors(tmp_path, after) == "", at
        tried += 1
    assert tried >= 5
    # Without the move, a decoder misses data it needs.
    at = next(n for n in range(20, len(frames)) if (main_data_begin(frames[n]) or 0) > 100)
    cut = _decode(frames[at : at + 3])
    assert cut[spf : 2 * spf] != original[(at + 1) * spf : (at + 2) * spf]


def test_outputs_in_other_formats_get_the_same_join_in_their_own_frames(tmp_path: Path) -> None:
    from pushsource.core.frames import header_for

    a, _ = _frames(_mp3(tmp_path / "a.mp3", 440))
    b, _ = _frames(_mp3(tmp_path / "b.mp3", 660))
    low = header_for(22050, 1, 64)
    join = build_join(a[-170:], b[:160], 3.0, bitrate=128, alts=[("64k-22050-1", low)])
    assert isinstance(join, Join), join
    alt = join.alts["64k-22050-1"]
    headers = [parse_header(alt.data, start) for start in (0, *alt.ends[:-1])]
    assert all(h is not None and h.sample_rate == 22050 and h.channels == 1 for h in headers)
    # The same time as the join in the station's format, to a frame.
    assert abs(len(alt.ends) * 576 / 22050 - len(join.ends) * 1152 / 44100) <= 576 / 22050
    frames = [alt.data[start:end] for start, end in zip((0, *alt.ends[:-1]), alt.ends, strict=True)]
    assert _errors(tmp_path, frames) == ""
    heard = _decode(frames)
    quarter = len(heard) // 4
    assert _amplitude(heard, 1000, 440, 22050) > 0.3 > _amplitude(heard, 1000, 660, 22050)
    assert _amplitude(heard, len(heard) - 2000, 660, 22050) > 0.3
    assert min(_amplitude(heard, 2 * quarter, f, 22050) for f in (440, 660)) > 0.2
