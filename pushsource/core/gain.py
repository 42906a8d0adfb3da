"""Lossless level changes: rewrite the ``global_gain`` of Layer III frames.

Every granule of every channel of a Layer III frame carries an 8-bit
``global_gain`` in its side information; the decoder scales that granule's
output by 2^(gain/4), so one step is 2^(1/4), 1.505 dB (ISO 11172-3
2.4.3.4.7.1; mp3gain's method). Adding the same number of steps to every
field turns a whole track up or down without decoding it, and nothing else in
the frame changes: its length, main data and every other bit stay as they
were. The CRC of a protected frame covers the side information and is
recomputed.

Side information (ISO 11172-3 2.4.1.7, ISO 13818-3 2.4.1.7), after the
4-byte header and the 16-bit CRC of a protected frame:

- MPEG-1: main_data_begin 9 bits, private_bits 5 (mono) or 3, scfsi 4 bits
  per channel, then two granules of 59 bits per channel, each starting
  part2_3_length 12, big_values 9, global_gain 8.
- MPEG-2 and 2.5: main_data_begin 8 bits, private_bits 1 (mono) or 2, then
  one granule of 63 bits per channel, laid out the same way at its start.

No file, socket or clock lives here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pushsource.core.frames import MPEGVersion, parse_header

__all__ = [
    "DB_PER_STEP",
    "MAX_GAIN",
    "PEAK_LIMIT",
    "apply_gain",
    "crc16",
    "frame_silent",
    "gain_fields",
    "plan_of",
    "silent_runs",
    "steps_for",
]

#: One global_gain step, in dB: 20 * log10(2 ** (1 / 4)).
DB_PER_STEP: Final = 1.5051499783199058
MAX_GAIN: Final = 255
_GAIN_AT: Final = 12 + 9  # global_gain's bit offset in a granule's side info


def gain_fields(word: bytes) -> tuple[int, ...] | None:
    """The bit offsets, from the start of the frame, of every global_gain field
    of a frame with this 4-byte header; None if it is not a Layer III header.
    Does not raise."""
    header = parse_header(word)
    if header is None or header.layer != 3:
        return None
    channels = header.channels
    at = header.side_info_at * 8
    if header.version is MPEGVersion.MPEG1:
        start = at + 9 + (5 if channels == 1 else 3) + 4 * channels
        blocks = [start + 59 * n for n in range(2 * channels)]  # granule-major
    else:
        start = at + 8 + (1 if channels == 1 else 2)
        blocks = [start + 63 * n for n in range(channels)]
    return tuple(block + _GAIN_AT for block in blocks)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to rewrite one kind of frame (one 4-byte header word)."""

    length: int
    fields: tuple[tuple[int, int], ...]  # (byte index, bit index in it); () if not Layer III
    crc_end: int  # where the CRC's cover ends (the side info's end); 0: no CRC
    #: (byte index, right shift) of each granule/channel block's part2_3_length:
    #: ``(frame[i] << 8 | frame[i + 1]) >> shift`` holds it in its low 12 bits.
    lengths: tuple[tuple[int, int], ...] = ()
    side_at: int = 0  # where the side info starts (after the header and CRC)
    mdb_bits: int = 0  # main_data_begin's width: 9 (MPEG-1), 8 (MPEG-2/2.5); 0: not Layer III
    room: int = 0  # bytes of main data the frame holds (its length less header, CRC, side info)


_plans: dict[bytes, _Plan] = {}


def _plan(word: bytes) -> _Plan:
    """Raises ValueError if ``word`` is no frame header."""
    header = parse_header(word)
    if header is None:
        raise ValueError(f"not an MPEG audio frame header: {word.hex()}")
    offsets = gain_fields(word) or ()
    fields = tuple((bit >> 3, bit & 7) for bit in offsets)
    crc_end = header.side_info_at + header.side_info_size if header.protected and fields else 0
    # part2_3_length is the first 12 bits of each block, _GAIN_AT bits before its gain.
    starts = (bit - _GAIN_AT for bit in offsets)
    lengths = tuple((start >> 3, 12 - (start & 7)) for start in starts)
    mdb_bits = (9 if header.version is MPEGVersion.MPEG1 else 8) if fields else 0
    room = header.length - header.side_info_at - header.side_info_size if fields else 0
    plan = _Plan(header.length, fields, crc_end, lengths, header.side_info_at, mdb_bits, room)
    if len(_plans) > 4096:  # only valid headers get here, and they are few
        _plans.clear()
    _plans[bytes(word)] = plan
    return plan


@functools.lru_cache(maxsize=64)
def _table(steps: int) -> bytes:
    """New global_gain by old one: ``steps`` added and clamped, 0 left at 0
    (a gain of 0 marks a granule the encoder silenced; keep it silent)."""
    return bytes([0] + [min(MAX_GAIN, max(0, g + steps)) for g in range(1, 256)])


def _crc_entry(byte: int) -> int:
    crc = byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ 0x8005 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


_CRC_TABLE: Final = tuple(_crc_entry(byte) for byte in range(256))


def crc16(data: bytes | bytearray) -> int:
    """CRC-16 of MPEG audio: polynomial 0x8005, MSB first, initial 0xFFFF."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def apply_gain(data: bytes, steps: int) -> bytes:
    """``data`` (whole MPEG audio frames, a FrameRun's) with ``steps`` added to
    the global_gain of every granule and channel of every Layer III frame,
    clamped to 0..255, gains of 0 left alone, and the CRC of protected frames
    made to match. Other frames pass unchanged; ``steps == 0`` returns ``data``
    itself. Raises ValueError if ``data`` is not a run of whole frames."""
    if steps == 0:
        return data
    table = _table(steps)
    out = bytearray(data)
    size = len(out)
    plans = _plans
    pos = 0
    while pos < size:
        word = data[pos : pos + 4]
        plan = plans.get(word) or _plan(word)
        end = pos + plan.length
        if end > size:
            raise ValueError(
                f"the frame at byte {pos} runs past the end of the data ({size} bytes)"
            )
        crc_end = plan.crc_end
        before = out[pos + 2 : pos + crc_end] if crc_end else b""
        for index, bit in plan.fields:
            i = pos + index
            if bit == 0:
                out[i] = table[out[i]]
                continue
            shift = 8 - bit
            window = (out[i] << 8) | out[i + 1]
            gain = (window >> shift) & 0xFF
            change = gain ^ table[gain]
            if change:
                window ^= change << shift
                out[i] = window >> 8
                out[i + 1] = window & 0xFF
        if crc_end:
            # The CRC covers header bytes 2-3 and the side info. It is affine
            # over GF(2), so adding the change keeps a right CRC right and a
            # wrong one (a damaged frame) exactly as wrong as it was.
            stored = (out[pos + 4] << 8) | out[pos + 5]
            stored ^= crc16(before) ^ crc16(out[pos + 2 : pos + crc_end])
            out[pos + 4] = stored >> 8
            out[pos + 5] = stored & 0xFF
        pos = end
    return bytes(out)


#: The highest sample peak a positive gain may lead to: just under full scale,
#: so that no decoder's 16-bit output reaches 32767.
PEAK_LIMIT: Final = 10 ** (-0.1 / 20)


def steps_for(gain_db: float, peak: float | None) -> int:
    """Whole global_gain steps nearest to ``gain_db``; a positive gain no
    more than keeps ``peak`` (linear, 1.0 is full scale) at or under
    PEAK_LIMIT, and none at all when the peak is unknown (None, not finite,
    or 0 and below: no sound peaks there, so such a peak says nothing).
    Does not raise."""
    if not math.isfinite(gain_db):
        return 0
    steps = round(gain_db / DB_PER_STEP)
    if steps > 0:
        if peak is None or not math.isfinite(peak) or peak <= 0:
            return 0
        # peak * 2^(steps/4) <= PEAK_LIMIT; a little slack for float rounding.
        room = math.floor(4 * math.log2(PEAK_LIMIT / peak) + 1e-9)
        steps = max(0, min(steps, room))
    return steps


def plan_of(word: bytes) -> _Plan:
    """The (cached) layout of a frame with this 4-byte header. Raises
    ValueError if ``word`` is no frame header."""
    return _plans.get(word) or _plan(word)


def frame_silent(data: bytes, pos: int = 0) -> bool:
    """Whether the frame at ``pos`` is digital silence: Layer III with a
    part2_3_length of 0 in every granule of every channel (no Huffman data:
    every spectral value is 0). Raises ValueError if no frame header is there."""
    word = data[pos : pos + 4]
    plan = _plans.get(word) or _plan(word)
    lengths = plan.lengths
    if not lengths:
        return False
    for index, shift in lengths:
        i = pos + index
        if ((data[i] << 16 | data[i + 1] << 8 | data[i + 2]) >> shift) & 0xFFF:
            return False
    return True


def silent_runs(data: bytes, ends: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """The digital silence among whole frames (``ends[i]``: where frame i ends
    in ``data``): runs ``(start, stop)`` of frame indexes, stop excluded, in
    order. () when every frame has sound. Raises ValueError on a bad frame."""
    runs: list[tuple[int, int]] = []
    plans = _plans
    start = -1
    pos = 0
    for n, end in enumerate(ends):
        word = data[pos : pos + 4]
        lengths = (plans.get(word) or _plan(word)).lengths
        quiet = bool(lengths)
        for index, shift in lengths:
            i = pos + index
            if ((data[i] << 16 | data[i + 1] << 8 | data[i + 2]) >> shift) & 0xFFF:
                quiet = False
                break
        if quiet:
            if start < 0:
                start = n
        elif start >= 0:
            runs.append((start, n))
            start = -1
        pos = end
    if start >= 0:
        runs.append((start, len(ends)))
    return tuple(runs)
