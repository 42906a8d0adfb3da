"""Near-silence: dither and hiss that decode to almost nothing.

Side information alone finds digital silence (pushsource.core.silence): every
granule's part2_3_length 0. The "silence" most tools write is not that: sox
dithers 16-bit output by default, so its silence is +-1 step of noise, and
lame codes it with Huffman data and gains like quiet music's (lame -b 128:
part2_3_length 513-941 bits, global_gain 129-138, as a -60 dBFS tone's). An
operator calls that dead air all the same.

So where a chunk's frames may be near-silence by their side info (in
MIN_QUIET of them or more, every global_gain at most QUIET_GAIN and no
Huffman table with linbits: 1-step dither codes at gains 131-138 with tables
up to 6; a -60 dBFS tone at 134-142 but with linbits tables, as a sine sweep's
quiet frames; music is higher: a -6 dBFS sine 138-144, pink noise at -40
dBFS 152-159, at -20 dBFS 166-172), the chunk is decoded here, on the
workers, and its frames whose samples all stay under QUIET_PEAK (-78 dBFS) count
as silence too. Measured peaks, lame -b 128, decoded by FFmpeg: digital silence
0; sox's dither -87 to -85 dBFS; a -80 dBFS tone -78 to -77 (sound, just); a -60 dBFS tone
-60. Other chunks are never decoded: music costs the gain check only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

from pushsource.core.frames import parse_header
from pushsource.core.gain import plan_of
from pushsource.core.splice import MAX_BEGIN_MPEG1, main_data_begin, main_data_slot

#: Frames with every global_gain at or under this may be near-silence.
QUIET_GAIN: Final = 137
#: A decoded frame whose samples all stay under this (2^-13: -78 dBFS, four
#: steps of 16 bits) is silence.
QUIET_PEAK: Final = 2.0**-13
#: Fewer quiet frames than this in a chunk are not
#: worth decoding (a run of silence under 0.2 s is not dead air).
MIN_QUIET: Final = 8

Runs = tuple[tuple[int, int], ...]


#: Frames of the chunk before handed along, for a chunk's first frames to
#: decode as they sound: their reservoir (at most 511 bytes) and overlap.
CONTEXT: Final = 8


def quiet_runs(data: bytes, ends: Sequence[int], silent: Runs, before: bytes = b"") -> Runs:
    """``silent`` (runs of digitally silent frames of the chunk ``data``,
    ``ends[i]`` where frame i ends) with the near-silent frames added;
    ``before``: the whole frames right before the chunk in its track, if any
    (see tail()). Does not raise: a frame that does not decode is sound."""
    count = len(ends)
    flags = [False] * count
    for start, stop in silent:
        flags[start:stop] = [True] * (stop - start)
    candidates = 0
    pos = 0
    for n, end in enumerate(ends):
        if not flags[n] and _quiet_gains(data, pos):
            candidates += 1
        pos = end
    if candidates < MIN_QUIET:
        return silent
    whole = before + data
    shift = len(before)
    all_ends = [*_ends(before), *(shift + end for end in ends)]
    context = len(all_ends) - count
    quiet = _quiet_frames(whole, all_ends)
    if quiet is None:
        return silent
    # Frames whose reservoir lies before what was decoded decode as silence
    # (crossfade.decode), and the frame after them without its overlap: none
    # of them is called near-silent. A track's first frame needs nothing.
    settled, held, pos = 0, 0, 0
    for n, end in enumerate(all_ends):
        if held >= MAX_BEGIN_MPEG1:
            break
        if (main_data_begin(whole, pos) or 0) > held:
            settled = n + 2
        header = parse_header(whole, pos)
        held += main_data_slot(header) if header is not None else MAX_BEGIN_MPEG1
        pos = end
    for n in range(max(0, settled - context), count):
        if quiet[context + n]:
            flags[n] = True
    runs: list[tuple[int, int]] = []
    start = -1
    for n, flag in enumerate(flags):
        if flag and start < 0:
            start = n
        elif not flag and start >= 0:
            runs.append((start, n))
            start = -1
    if start >= 0:
        runs.append((start, count))
    return tuple(runs)


def _quiet_gains(data: bytes, pos: int) -> bool:
    """Whether the Layer III frame at ``pos`` may be near-silence: every
    global_gain at most QUIET_GAIN (music's first is not: one read) and no
    big-values table with linbits (every quantized value under 16). Dither
    codes with small tables (lame -b 128: 6 at most); a quiet tone, a sweep,
    anything with one strong partial needs the linbits tables (16-31)."""
    plan = plan_of(data[pos : pos + 4])
    fields = plan.fields
    if not fields:
        return False
    for index, bit in fields:
        i = pos + index
        if ((data[i] << 8 | data[i + 1]) >> (8 - bit)) & 0xFF > QUIET_GAIN:
            return False
    # After global_gain: scalefac_compress (4 bits in MPEG-1, 9 in MPEG-2),
    # window_switching_flag, then 3 table_selects of 5 bits (2 after
    # block_type and mixed_block_flag when it is set).
    compress = 4 if plan.mdb_bits == 9 else 9
    for index, bit in fields:
        at = (pos + index) * 8 + bit + 8 + compress
        switching = _bits(data, at, 1)
        at += 1 + (3 if switching else 0)
        for k in range(2 if switching else 3):
            if _bits(data, at + 5 * k, 5) >= 16:
                return False
    return True


def _bits(data: bytes, at: int, count: int) -> int:
    """``count`` bits (at most 16) from bit ``at`` of ``data``."""
    i = at >> 3
    word = int.from_bytes(data[i : i + 3], "big")
    return (word >> (24 - count - (at & 7))) & ((1 << count) - 1)


def tail(data: bytes, ends: Sequence[int]) -> bytes:
    """The last CONTEXT frames of a chunk: ``before`` for the next one."""
    if not ends:
        return b""
    cut = ends[-CONTEXT - 1] if len(ends) > CONTEXT else 0
    return data[cut : ends[-1]]


def _ends(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        header = parse_header(data, pos)
        if header is None:
            break
        pos += header.length
        out.append(pos)
    return out


def _quiet_frames(data: bytes, ends: Sequence[int]) -> list[bool] | None:
    """Whether each frame decodes to samples all under QUIET_PEAK, or None."""
    import av  # only when a chunk may be near-silence

    from pushsource.workers.crossfade import decode

    header = parse_header(data)
    if header is None:
        return None
    frames = [data[start:end] for start, end in zip((0, *ends[:-1]), ends, strict=True)]
    try:
        channels = decode(frames, header)
    except (av.FFmpegError, ValueError):  # a frame FFmpeg cannot make sense of
        return None
    if channels is None:
        return None
    spf = header.samples
    out = []
    for n in range(len(frames)):
        # A float32 under 2^-13 has an exponent under 114: its top byte (sign
        # and 7 exponent bits) at most 56 but for the sign. Byte work, in C.
        out.append(
            all(
                not channel[n * spf : (n + 1) * spf].tobytes()[_TOP::4].translate(None, _QUIET_TOP)
                for channel in channels
            )
        )
    return out


#: Top bytes of the float32 samples under QUIET_PEAK, and where a native
#: float32 keeps its top byte.
_QUIET_TOP: Final = bytes(b for b in range(256) if b & 0x7F <= 56)
_TOP: Final = 3 if sys.byteorder == "little" else 0
