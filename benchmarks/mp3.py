"""The listener's own MPEG audio frame walker, written from ISO 11172-3 / 13818-3.

It is deliberately independent of pushsource.core.frames: the benchmark must not
judge pushsource with pushsource's own parser. It only needs what a listener
needs to know how much audio has arrived: where frames are, how many samples
each carries, and which bytes are not audio (an ID3v2 tag a muxer writes at the
start, an ID3v1 tag, an Xing/Info/VBRI header frame, a partial frame where a
burst starts mid-frame).
"""

from __future__ import annotations

from dataclasses import dataclass

# kbps by (MPEG-1?, layer) and bitrate index.
_KBPS = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
# Hz by version bits (3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5) and rate index.
_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class Header:
    length: int  # bytes, header included
    samples: int  # per channel
    sample_rate: int
    mpeg1: bool
    mono: bool
    #: What must stay the same from one frame to the next (version, layer, rate).
    kind: int


def header_at(data: bytes | bytearray, pos: int) -> Header | None:
    """The frame header at data[pos:pos+4], or None when there is none."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = data[pos + 1], data[pos + 2], data[pos + 3]
    version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    if b3 & 3 == 2:  # reserved emphasis
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    rate = _HZ[version][rate_index]
    bps = _KBPS[(mpeg1, layer)][bitrate_index] * 1000
    if layer == 1:
        samples = 384
        length = (12 * bps // rate + padding) * 4
    elif layer == 2 or mpeg1:
        samples = 1152
        length = 144 * bps // rate + padding
    else:  # Layer III, MPEG-2/2.5
        samples = 576
        length = 72 * bps // rate + padding
    return Header(length, samples, rate, mpeg1, (b3 >> 6) == 3, (b1 & 0x1E) << 8 | (b2 & 0x0C))


def is_info_frame(data: bytes | bytearray, pos: int, header: Header) -> bool:
    """An Xing/Info/VBRI frame: a valid header carrying a seek table, not sound."""
    side = (17 if header.mono else 32) if header.mpeg1 else (9 if header.mono else 17)
    at = pos + 4 + side
    return (
        bytes(data[at : at + 4]) in (b"Xing", b"Info")
        or bytes(data[pos + 36 : pos + 40]) == b"VBRI"
    )


class StreamWalker:
    """Counts the audio in a stream fed in arbitrary pieces.

    A sync is trusted once the next header follows where the frame says and
    agrees on version, layer and rate; after a loss of sync it searches again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._kind: int | None = None  # set while in sync
        self.samples = 0  # audio samples (per channel) received
        self.seconds = 0.0  # their duration
        self.frames = 0
        self.non_audio_bytes = 0
        self.sample_rate = 0

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = self._pos
        end = len(buf)
        while pos + 4 <= end:
            header = header_at(buf, pos)
            if header is not None and (self._kind is None or header.kind == self._kind):
                if pos + header.length > end:
                    break
                if self._kind is None:
                    # Not yet in sync: the next header must confirm this one.
                    if pos + header.length + 4 > end:
                        break
                    following = header_at(buf, pos + header.length)
                    if following is None or following.kind != header.kind:
                        pos += 1
                        self.non_audio_bytes += 1
                        continue
                    self._kind = header.kind
                if is_info_frame(buf, pos, header):
                    self.non_audio_bytes += header.length
                else:
                    self.frames += 1
                    self.samples += header.samples
                    self.seconds += header.samples / header.sample_rate
                    self.sample_rate = header.sample_rate
                pos += header.length
                continue
            if buf[pos : pos + 3] == b"ID3":
                if pos + 10 > end:
                    break
                size = 0
                for byte in buf[pos + 6 : pos + 10]:
                    size = size << 7 | (byte & 0x7F)
                size += 10 + (10 if buf[pos + 5] & 0x10 else 0)
                if pos + size > end:
                    break
                pos += size
                self.non_audio_bytes += size
                continue
            if buf[pos : pos + 3] == b"TAG" and self._kind is not None:
                if pos + 128 > end:
                    break
                pos += 128
                self.non_audio_bytes += 128
                continue
            # Lost (or never had) sync: look for the next candidate.
            self._kind = None
            pos += 1
            self.non_audio_bytes += 1
        del buf[:pos]
        self._pos = 0


def audio_frames(data: bytes) -> list[bytes]:
    """The audio frames of a whole file, in order (tags and info frames left out)."""
    frames: list[bytes] = []
    pos, kind = 0, None
    while pos + 4 <= len(data):
        header = header_at(data, pos)
        if header is not None and pos + header.length <= len(data):
            following = header_at(data, pos + header.length)
            confirmed = following is not None and following.kind == header.kind
            if header.kind == kind or confirmed:
                kind = header.kind
                if not is_info_frame(data, pos, header):
                    frames.append(data[pos : pos + header.length])
                pos += header.length
                continue
        if data[pos : pos + 3] == b"ID3" and pos + 10 <= len(data):
            size = 0
            for byte in data[pos + 6 : pos + 10]:
                size = size << 7 | (byte & 0x7F)
            pos += size + 10 + (10 if data[pos + 5] & 0x10 else 0)
            continue
        kind = None
        pos += 1
    return frames
