"""Splice-clean cuts: no Layer III frame on air points into bytes the
listener did not get.

A Layer III frame's main data need not sit in the frame itself: its side
information starts with ``main_data_begin`` (MPEG-1: 9 bits, MPEG-2 and 2.5:
8 bits), how many bytes before the frame's own main-data slot its main data
starts, in the slots of the frames before it (the bit reservoir; ISO 11172-3
2.4.1.7, 2.4.3.4.3). Where a stream switches source or position (a DJ takes
over, a track goes on mid-way, real frames follow inserted silence, a new
connection), the first frames after the switch may point back into bytes that
never went out: a decoder fails on them ("dequantization failed") or plays
whatever the bytes before the switch were.

:class:`Splicer` mends that. After :meth:`Splicer.cut` it counts the
main-data bytes sent since the cut; each frame whose main_data_begin exceeds
that count gets side information that decodes to silence (every field 0: a
granule with part2_3_length 0 is all zeros), the CRC of a protected frame made
right again, its length and main-data bytes left as they were: they are the
reservoir of the frames after it.

Its main_data_begin becomes the count itself rather than 0: it reads nothing
there, but decoders keep only the reservoir the last frame reached back to
(mpg123 copies the previous frame's main data, main_data_begin bytes before
it included; ffmpeg keeps what the last frame left unread), so a 0 would
shrink the reservoir of the frames after it to one frame's slot, and the next
one reaching further fails ("dequantization failed"), though its bytes went
out. Pointing at all the bytes sent since the cut keeps them. Once the count
reaches the largest main_data_begin there can be (511 bytes in MPEG-1, 255 in
MPEG-2 and 2.5), nothing later can point past the cut and the splicer is
closed: :attr:`Splicer.open` is False and :meth:`Splicer.repair` returns its
input unlooked at until the next cut.

No file, socket or clock lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pushsource.core.frames import FrameHeader, MPEGVersion, parse_header, roomier
from pushsource.core.gain import crc16, gain_fields

__all__ = [
    "MAX_BEGIN_MPEG1",
    "MAX_BEGIN_MPEG2",
    "Splicer",
    "carrying",
    "data_bits",
    "made_whole",
    "main_data_begin",
    "main_data_slot",
    "silence_side_info",
]

#: The largest main_data_begin (9 bits in MPEG-1, 8 in MPEG-2 and 2.5).
MAX_BEGIN_MPEG1: Final = 511
MAX_BEGIN_MPEG2: Final = 255


def main_data_begin(data: bytes | bytearray, pos: int = 0) -> int | None:
    """The main_data_begin of the Layer III frame at ``data[pos:]``: how many
    bytes before its own main-data slot its main data starts. None if no
    Layer III frame header is there (or its side information is cut off).
    Does not raise."""
    header = parse_header(data, pos)
    if header is None or header.layer != 3:
        return None
    at = pos + header.side_info_at
    if len(data) < at + 2:
        return None
    if header.version is MPEGVersion.MPEG1:
        return (data[at] << 1) | (data[at + 1] >> 7)
    return data[at]


def main_data_slot(header: FrameHeader) -> int:
    """Bytes of main data a frame like ``header`` carries (its frame length
    less header, CRC and side information): what it adds to the reservoir.
    0 for a frame that is not Layer III."""
    if header.layer != 3:
        return 0
    return max(0, header.length - header.side_info_at - header.side_info_size)


def silence_side_info(buf: bytearray, pos: int = 0, begin: int = 0) -> None:
    """Make the Layer III frame at ``buf[pos:]`` decode to silence: its side
    information all zeros (private bits, scfsi, and every granule and
    channel: part2_3_length, big_values, global_gain, scalefac_compress,
    window switching...) but main_data_begin, which becomes ``begin`` (0: it
    needs no byte before it), the CRC of a protected frame recomputed. Its
    length and main data stay. Raises ValueError if no whole Layer III frame
    header and side information are there, or ``begin`` does not fit."""
    header = parse_header(buf, pos)
    if header is None or header.layer != 3:
        raise ValueError(f"no Layer III frame at byte {pos}")
    at = pos + header.side_info_at
    end = at + header.side_info_size
    if len(buf) < end:
        raise ValueError(f"the side information of the frame at byte {pos} is cut off")
    mpeg1 = header.version is MPEGVersion.MPEG1
    if not 0 <= begin <= (MAX_BEGIN_MPEG1 if mpeg1 else MAX_BEGIN_MPEG2):
        raise ValueError(f"main_data_begin {begin} does not fit the frame at byte {pos}")
    buf[at:end] = bytes(end - at)
    if mpeg1:
        buf[at], buf[at + 1] = begin >> 1, (begin & 1) << 7
    else:
        buf[at] = begin
    if header.protected:
        # The CRC covers the header's last two bytes and the side information.
        crc = crc16(bytes(buf[pos + 2 : pos + 4]) + bytes(buf[at:end]))
        buf[pos + 4] = crc >> 8
        buf[pos + 5] = crc & 0xFF


# -- seams where the bytes a frame needs are at hand ----------------------------
#
# Rather than silence a frame that points past a cut, a frame can carry the
# bytes: frames may change bitrate from frame to frame (VBR), so one re-headed
# at a higher bitrate has room for more main data than it had.


def made_whole(frame: bytes, before: Sequence[bytes]) -> bytes | None:
    """``frame`` with the main data it has in ``before`` (the frames before
    it) moved into itself, re-headed at a higher bitrate to hold it, and
    main_data_begin 0: it decodes the same with none of them before it. None
    if no bitrate gives the room."""
    header = parse_header(frame)
    if header is None:
        return None
    need = main_data_begin(frame) or 0
    if not need:
        return frame
    reservoir = _reservoir(before, header)
    if need > len(reservoir):
        return None
    side_end = header.side_info_at + header.side_info_size
    # Its main data, and after it whatever the next frame's starts with, in
    # order: ``need`` bytes from before it, then its own slot. Its own data
    # is the first ``used`` of them; the next frame's begins at or after
    # that (it may begin before this frame's own slot), so room is made there.
    data = reservoir[len(reservoir) - need :] + frame[side_end:]
    used = min(len(data), -(-data_bits(frame, header) // 8))
    word = roomier(frame[:4], side_end + len(data))
    if word is None:
        return None
    grown = parse_header(word)
    assert grown is not None
    filler = bytes(grown.length - side_end - len(data))
    out = bytearray(word + frame[4:side_end])
    at = header.side_info_at
    if header.version is MPEGVersion.MPEG1:  # main_data_begin: 9 bits
        out[at] = 0
        out[at + 1] &= 0x7F
    else:  # 8 bits
        out[at] = 0
    out += data[:used] + filler + data[used:]
    if header.protected:
        out[4:6] = crc16(out[2:4] + out[at:side_end]).to_bytes(2, "big")
    return bytes(out)


def data_bits(frame: bytes, header: FrameHeader) -> int:
    """Bits of main data the frame's granules read (their part2_3_length,
    scale factors included)."""
    total = 0
    for gain_at in gain_fields(frame[:4]) or ():
        at = gain_at - 21  # part2_3_length: 12 bits, 21 before global_gain
        word = int.from_bytes(frame[at // 8 : at // 8 + 3], "big")
        total += (word >> (24 - 12 - at % 8)) & 0xFFF
    return total


def carrying(frame: bytes, before: Sequence[bytes], following: bytes) -> bytes | None:
    """``frame`` re-headed to carry, after its own bytes, the main data that
    ``following`` (the next frame on air) needs from ``before`` (the frames
    it followed where it came from, which do not go on air). None if no
    bitrate gives the room."""
    header = parse_header(frame)
    nxt = parse_header(following)
    if header is None or nxt is None:
        return None
    need = main_data_begin(following) or 0
    reservoir = _reservoir(before, header)
    if need > len(reservoir):
        return None  # it points before the start of its own stream: cannot be
    tail = reservoir[len(reservoir) - need :] if need else b""
    if not tail:
        return frame
    size = len(frame) + len(tail)
    word = roomier(frame[:4], size)
    if word is None:
        return None
    grown = parse_header(word)
    assert grown is not None
    out = bytearray(word + frame[4:])
    out += bytes(grown.length - size) + tail
    if header.protected:
        at, side = header.side_info_at, header.side_info_size
        out[4:6] = crc16(out[2:4] + out[at : at + side]).to_bytes(2, "big")
    return bytes(out)


def _reservoir(frames: Sequence[bytes], like: FrameHeader) -> bytes:
    """The main-data slots of ``frames``, in order: the reservoir after them."""
    return b"".join(f[len(f) - main_data_slot(parse_header(f) or like) :] for f in frames)


class Splicer:
    """One stream's splice repair: :meth:`cut` where the bytes sent stop
    following on from the ones before, then every run of frames sent through
    :meth:`repair` while :attr:`open` (a caller on a hot path looks at
    ``open`` itself and skips the call)."""

    __slots__ = ("_got", "open", "silenced")

    def __init__(self) -> None:
        #: Frames after a cut are still being looked at.
        self.open = False
        self._got = 0  # main-data bytes sent since the cut
        #: Frames rewritten to silence so far (a count for logs and tests).
        self.silenced = 0

    def cut(self) -> None:
        """The next frame through :meth:`repair` follows none of the bytes
        before it."""
        self.open = True
        self._got = 0

    def repair(self, data: bytes) -> bytes:
        """``data`` (whole frames, the next ones sent), with each Layer III
        frame that points back past the last cut silenced. Returns ``data``
        itself when nothing changes. Frames it cannot walk (not Layer III,
        free format, a frame cut off) end the check: those have no reservoir
        it could mend. Does not raise."""
        if not self.open:
            return data
        out: bytearray | None = None
        got = self._got
        pos, size = 0, len(data)
        while pos < size:
            header = parse_header(data, pos)
            if header is None or header.layer != 3 or pos + header.length > size:
                self.open = False
                break
            mpeg1 = header.version is MPEGVersion.MPEG1
            if got >= (MAX_BEGIN_MPEG1 if mpeg1 else MAX_BEGIN_MPEG2):
                self.open = False  # nothing from here on can reach back past the cut
                break
            at = pos + header.side_info_at
            begin = (data[at] << 1) | (data[at + 1] >> 7) if mpeg1 else data[at]
            if begin > got:
                if out is None:
                    out = bytearray(data)
                silence_side_info(out, pos, got)
                self.silenced += 1
            got += header.length - header.side_info_at - header.side_info_size
            pos += header.length
        self._got = got
        return data if out is None else bytes(out)
