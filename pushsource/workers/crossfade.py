"""Crossfades that re-encode only the join.

Everything a station sends is its files' own frames, byte for byte; at a
join, the last seconds of the outgoing track and the first of the incoming
one are decoded, mixed on an equal-power curve and encoded again in the
station's exact format, and those frames (a :class:`Join`) go out in place of
the frames they stand for. Done ahead of time on the workers, from frames the
station already holds: the outgoing track's last seconds are read ahead, the
incoming track's first chunk is in when it is cued.

Sample accounting, so that no sample is doubled or lost: a decoder's output
for a stream lags the encoder's input by the encoder's delay (LAME's tag says
how much, 576 samples unless it says otherwise) plus 529 samples of its own
filterbank. Everything here is counted in the outgoing track's decoded
samples from the first frame it was handed. The incoming track's first real
sample goes where the fade starts, so its frames must land on frame
boundaries: the fade's length moves by at most half a frame to make it so.
The encoder's own delay (libmp3lame: 1105 samples, read off PyAV) is met by
encoding from a few frames before the join and dropping the frames before it.

Both seams are clean for a decoder (the bit reservoir, see core/splice.py):
a frame's main data may start up to 511 bytes back in the frames before it.
The first encoded frame kept points into encoded frames that are dropped, and
the incoming track's first frame after the join points into its own frames
that are replaced. So the frame before each seam is re-headed at a higher
bitrate (bitrate may change from frame to frame: that is VBR) and carries,
after its own bytes, exactly the bytes the next frame's reservoir needs. No
frame is silenced and no sample moves.
"""

from __future__ import annotations

import array
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pushsource.core.effects import Alt, Join
from pushsource.core.frames import FrameHeader, MPEGVersion, parse_header
from pushsource.core.splice import (
    MAX_BEGIN_MPEG1,
    MAX_BEGIN_MPEG2,
    carrying,
    made_whole,
    main_data_begin,
    main_data_slot,
    silence_side_info,
)

if TYPE_CHECKING:
    import av
    from av.audio.frame import AudioFrame

log = logging.getLogger("pushsource.crossfade")

#: Frames decoded before the first one whose audio is used: the reservoir
#: (at most 511 bytes back), the MDCT overlap and the synthesis filterbank
#: settle within a few frames.
PREROLL: Final = 6
#: A decoder's own delay (ISO 11172-3's synthesis filterbank, as mpg123 and
#: FFmpeg decode): 528 + 1 samples.
DECODER_DELAY: Final = 529
#: LAME's encoder delay when a file's LAME tag does not say.
LAME_DELAY: Final = 576
#: A track whose last (first) second peaks below this ends (begins) in
#: silence: no fade there. -50 dBFS.
QUIET: Final = 10 ** (-50 / 20)


@dataclass(frozen=True, slots=True)
class NoJoin:
    """No crossfade at this change of track, and why (for the log)."""

    reason: str


def lame_delays(head: bytes) -> tuple[int, int] | None:
    """(encoder delay, padding) from the LAME tag in the first frame of a
    file (``head``: the file's first bytes from that frame on), or None."""
    header = parse_header(head)
    if header is None or header.layer != 3:
        return None
    # After the side info; LAME writes it there as if no CRC came first.
    for at in {header.side_info_at + header.side_info_size, 4 + header.side_info_size}:
        if head[at : at + 4] in (b"Xing", b"Info"):
            break
    else:
        return None
    flags = int.from_bytes(head[at + 4 : at + 8], "big")
    pos = at + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2) + 100 * bool(flags & 4)
    pos += 4 * bool(flags & 8)
    if head[pos : pos + 4] != b"LAME" or len(head) < pos + 24:
        return None
    three = int.from_bytes(head[pos + 21 : pos + 24], "big")
    return three >> 12, three & 0xFFF


def file_delays(path: Path) -> tuple[int, int] | None:
    """(encoder delay, padding) from the LAME tag of the MP3 file ``path``,
    or None (no tag, or unreadable). Does not raise."""
    try:
        with path.open("rb") as file:
            head = file.read(10)
            at = 0
            if head[:3] == b"ID3" and len(head) == 10:  # the tag's size: 4 x 7 bits
                at = 10 + int.from_bytes(bytes(b & 0x7F for b in head[6:10]), "big")
                at += 10 if head[5] & 0x10 else 0  # a footer
            file.seek(at)
            return lame_delays(file.read(2048))
    except OSError:
        return None


def build_join(
    outgoing: Sequence[tuple[int, bytes]],
    incoming: Sequence[tuple[int, bytes]],
    fade: float,
    *,
    bitrate: int,
    out_padding: int | None = None,
    in_delay: int | None = None,
    alts: Sequence[tuple[str, FrameHeader]] = (),
) -> Join | NoJoin:
    """The join from ``outgoing`` (its last frames, to its very end, as
        (file offset, frame) pairs) into ``incoming`` (its first frames), the two
        sounding together for about ``fade`` seconds; ``bitrate`` (kbps) is the
        station's; ``alts``: outputs in other formats (key, a frame header of
    theirs, its bitrate theirs), each of which gets the same join in its own
    frames (Join.alts), covering the same time. Does not raise for any frames;
    a NoJoin says why not."""
    import av  # here, not at start-up: PyAV takes about 40 ms to import

    try:
        return _build(outgoing, incoming, fade, bitrate, out_padding, in_delay, alts)
    except (av.FFmpegError, ValueError) as exc:
        return NoJoin(f"could not mix the join: {exc}")


def _build(
    outgoing: Sequence[tuple[int, bytes]],
    incoming: Sequence[tuple[int, bytes]],
    fade: float,
    bitrate: int,
    out_padding: int | None,
    in_delay: int | None,
    alts: Sequence[tuple[str, FrameHeader]],
) -> Join | NoJoin:
    if not outgoing or not incoming:
        return NoJoin("no frames")
    header = parse_header(outgoing[0][1])
    first_in = parse_header(incoming[0][1])
    if header is None or first_in is None or header.layer != 3 or first_in.layer != 3:
        return NoJoin("not Layer III")
    if not header.continues(first_in):
        return NoJoin("the tracks differ in sample rate or channels")
    spf, rate = header.samples, header.sample_rate
    p = decode([f for _, f in outgoing], header)
    n = decode([f for _, f in incoming], header)
    if p is None or n is None:
        return NoJoin("a frame did not decode")
    held_out = len(outgoing) * spf
    p_end = held_out
    if out_padding is not None and out_padding >= DECODER_DELAY:
        p_end = held_out - out_padding + DECODER_DELAY
    start_n = (LAME_DELAY if in_delay is None else in_delay) + DECODER_DELAY
    if _peak(p, p_end - rate, p_end) < QUIET:
        return NoJoin("the outgoing track ends in silence")
    if _peak(n, start_n, start_n + rate) < QUIET:
        return NoJoin("the incoming track begins in silence")

    # The fade starts where the incoming track's first real sample lands on a
    # frame boundary of the incoming track: start_n + spf * m.
    target = fade * rate
    m = round((p_end - target - start_n) / spf)
    fade_at = start_n + spf * m
    length = p_end - fade_at
    enc_delay = _encoder_delay()
    lead = -(-enc_delay // spf) + 1  # encoded frames dropped before the join
    j = fade_at // spf - 1  # the first outgoing frame the encoded ones stand for
    t0 = (j - lead) * spf + enc_delay  # the decoded sample the encoding starts at
    if length <= 0 or j - 1 < PREROLL or t0 < PREROLL * spf:
        return NoJoin("too little of the outgoing track is held")
    k_stream = -(-p_end // spf) + 1  # the first frame after the join, in the stream
    k = k_stream - m  # the same frame in the incoming track
    end_n = start_n + (k_stream + 2) * spf - fade_at
    if k < 1 or end_n > len(n[0]):
        return NoJoin("too little of the incoming track is held")

    mixed = _mix(p, n, t0, fade_at, p_end, start_n, end_n, rate)
    packets = _encode(mixed, header, bitrate)
    kept = packets[lead : lead + k_stream - j]
    if len(kept) != k_stream - j:
        return NoJoin("the encoder gave too few frames")
    front = carrying(outgoing[j - 1][1], packets[:lead], kept[0])
    back = carrying(kept[-1], [f for _, f in incoming[:k]], incoming[k][1])
    if front is None or back is None:
        return NoJoin(f"no bitrate leaves room to splice cleanly at {bitrate} kbps")
    frames = [front, *kept[:-1], back]
    ends = tuple(_running(frames))
    mid = (fade_at + length // 2) // spf - (j - 1)
    # Other formats: the same mix, from the join's first frame to its last.
    span = ((j - 1) * spf - t0, k_stream * spf - t0)  # in the mix's samples
    converted = {}
    for key, like in alts:
        made = _alt_join(mixed, rate, span, like)
        if made is not None:
            converted[key] = made
    return Join(
        cut_at=outgoing[j - 1][0],
        data=b"".join(frames),
        ends=ends,
        resume_at=incoming[k][0],
        skip=k,
        title_at=max(0, min(len(frames) - 1, mid)),
        seconds=length / rate,
        alts=converted,
    )


def _alt_join(
    mixed: list[array.array[float]], rate: int, span: tuple[int, int], like: FrameHeader
) -> Alt | None:
    """The join in another format: ``mixed`` resampled and encoded like
    ``like``, the frames whose decoded samples cover ``span`` (samples of
    ``mixed``, at ``rate``), the first made whole (its reservoir moved into
    it: the output enters the join from another copy's frames)."""
    import av

    layout = "mono" if like.channels == 1 else "stereo"
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=like.sample_rate)
    converted = [array.array("f") for _ in range(like.channels)]
    source = "mono" if len(mixed) == 1 else "stereo"
    for frame in [*_frames(mixed, 0, len(mixed[0]), source, rate), None]:
        for out in resampler.resample(frame):
            _take(out, converted)
    packets = _encode(converted, like, like.bitrate)
    delay = _encoder_delay()
    ratio = like.sample_rate / rate
    first = round((span[0] * ratio + delay) / like.samples)
    count = round((span[1] - span[0]) * ratio / like.samples)
    kept = packets[first : first + count]
    if first < 1 or len(kept) != count:
        return None
    whole = made_whole(kept[0], packets[:first])
    if whole is None:
        return None
    kept[0] = whole
    return Alt(b"".join(kept), _running(kept), like)


def _running(frames: Sequence[bytes]) -> list[int]:
    out, total = [], 0
    for frame in frames:
        total += len(frame)
        out.append(total)
    return out


def decode(frames: Sequence[bytes], header: FrameHeader) -> list[array.array[float]] | None:
    """Each channel's samples, ``header.samples`` per frame, in order. Frames
    at the start whose reservoir lies before the first are decoded as
    silence (they are preroll), so every frame gives its samples."""
    import av

    decoder = av.CodecContext.create("mp3float", "r")
    channels = [array.array("f") for _ in range(header.channels)]
    have = 0
    for frame in frames:
        h = parse_header(frame)
        if h is None or len(frame) != h.length:
            return None
        if (main_data_begin(frame) or 0) > have:  # preroll: its reservoir is not here
            mended = bytearray(frame)
            most = MAX_BEGIN_MPEG1 if h.version is MPEGVersion.MPEG1 else MAX_BEGIN_MPEG2
            silence_side_info(mended, 0, min(have, most))
            frame = bytes(mended)
        have = min(have + main_data_slot(h), 1 << 16)
        got = 0
        for out in decoder.decode(av.Packet(frame)):  # type: ignore[attr-defined]
            got += _take(out, channels)
        if got != h.samples:
            return None
    return channels


def _take(frame: AudioFrame, channels: list[array.array[float]]) -> int:
    size = frame.samples * 4
    for plane, channel in zip(frame.planes, channels, strict=False):
        channel.frombytes(bytes(plane)[:size])
    return frame.samples


def _peak(channels: list[array.array[float]], start: int, stop: int) -> float:
    start, stop = max(0, start), max(0, stop)
    peak = 0.0
    for channel in channels:
        part = channel[start:stop]
        if part:
            peak = max(peak, max(part), -min(part))
    return peak


def _mix(
    p: list[array.array[float]],
    n: list[array.array[float]],
    t0: int,
    fade_at: int,
    p_end: int,
    start_n: int,
    end_n: int,
    rate: int,
) -> list[array.array[float]]:
    """The outgoing track from t0, the two together on an equal-power curve
    from fade_at to p_end, then the incoming track to end_n (its own count).
    FFmpeg's acrossfade does the sums (quarter-sine curves: cos out, sin in)."""
    import av
    from av.audio.frame import AudioFrame

    layout = "mono" if len(p) == 1 else "stereo"
    graph = av.filter.Graph()
    base = Fraction(1, rate)
    first = graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=base)
    second = graph.add_abuffer(format="fltp", sample_rate=rate, layout=layout, time_base=base)
    fade = graph.add("acrossfade", f"ns={p_end - fade_at}:c1=qsin:c2=qsin")
    sink = graph.add("abuffersink")
    first.link_to(fade, 0, 0)
    second.link_to(fade, 0, 1)
    fade.link_to(sink)
    graph.configure()
    for source, channels, start, stop in ((first, p, t0, p_end), (second, n, start_n, end_n)):
        for frame in _frames(channels, start, stop, layout, rate):
            source.push(frame)
        source.push(None)
    mixed = [array.array("f") for _ in p]
    while True:
        try:
            got = sink.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        assert isinstance(got, AudioFrame)
        _take(got, mixed)
    return mixed


def _frames(
    channels: list[array.array[float]], start: int, stop: int, layout: str, rate: int
) -> list[AudioFrame]:
    """Samples ``start`` to ``stop`` of each channel, as AudioFrames."""
    from av.audio.frame import AudioFrame

    out = []
    for at in range(start, stop, 4096):
        size = min(4096, stop - at)
        frame = AudioFrame(format="fltp", layout=layout, samples=size)
        for plane, channel in zip(frame.planes, channels, strict=False):
            plane.update(channel[at : at + size].tobytes())
        frame.sample_rate = rate
        frame.pts = at - start
        frame.time_base = Fraction(1, rate)
        out.append(frame)
    return out


def _encode(channels: list[array.array[float]], header: FrameHeader, bitrate: int) -> list[bytes]:
    """LAME frames of these samples in the format of ``header`` at ``bitrate``."""
    from av.audio.frame import AudioFrame

    encoder = _encoder(header, bitrate)
    spf = encoder.frame_size or header.samples
    layout = "mono" if header.channels == 1 else "stereo"
    total = len(channels[0])
    packets: list[bytes] = []
    for start in range(0, total, spf):
        frame = AudioFrame(format="fltp", layout=layout, samples=spf)
        for plane, channel in zip(frame.planes, channels, strict=False):
            part = channel[start : start + spf]
            if len(part) < spf:
                part.extend([0.0] * (spf - len(part)))
            plane.update(part.tobytes())
        frame.sample_rate = header.sample_rate
        frame.pts = start
        packets.extend(bytes(packet) for packet in encoder.encode(frame))
    packets.extend(bytes(packet) for packet in encoder.encode(None))
    return packets


def _encoder(header: FrameHeader, bitrate: int) -> av.AudioCodecContext:
    import av

    encoder = av.CodecContext.create("libmp3lame", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate = header.sample_rate
    encoder.layout = "mono" if header.channels == 1 else "stereo"
    encoder.format = "fltp"
    encoder.bit_rate = bitrate * 1000
    encoder.open()
    return encoder


def _encoder_delay() -> int:
    """Samples by which a decoder's output of libmp3lame's frames lags the
    encoder's input: LAME's delay and the decoder's (FFmpeg's libmp3lame
    reports it as initial_padding; tests/test_crossfade.py measures it)."""
    return LAME_DELAY + DECODER_DELAY
