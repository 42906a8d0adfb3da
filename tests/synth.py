"""Synthetic MPEG streams, built bit by bit from the standards' formulas and
independent of pushsource's own tables: frames of any version and layer, and
the tags and header frames the parser must skip."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

VERSION_BITS = {"1": 3, "2": 2, "2.5": 0}
LAYER_BITS = {1: 3, 2: 2, 3: 1}


@dataclass(frozen=True)
class Spec:
    version: str = "1"
    layer: int = 3
    bitrate_index: int = 9  # 128 kbps for MPEG-1 Layer III
    rate_index: int = 0
    mono: bool = False
    crc: bool = False
    #: Channel mode bits (0 stereo, 1 joint, 2 dual, 3 mono); None: 3 if mono else 1.
    mode: int | None = None

    @property
    def channel_mode(self) -> int:
        if self.mode is not None:
            return self.mode
        return 3 if self.mono else 1


def frame_length(spec: Spec, padding: int) -> tuple[int, int]:
    """(length, samples), from the formulas of ISO 11172-3 / 13818-3."""
    tables = {
        ("1", 1): [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
        ("1", 2): [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
        ("1", 3): [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
        ("2", 1): [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
        ("2", 2): [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    }
    rates = {"1": [44100, 48000, 32000], "2": [22050, 24000, 16000], "2.5": [11025, 12000, 8000]}
    key = (
        "1" if spec.version == "1" else "2",
        min(spec.layer, 2) if spec.version != "1" else spec.layer,
    )
    bitrate = tables[key][spec.bitrate_index] * 1000
    rate = rates[spec.version][spec.rate_index]
    if spec.layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384
    if spec.layer == 3 and spec.version != "1":
        return 72 * bitrate // rate + padding, 576
    return 144 * bitrate // rate + padding, 1152


def make_frame(spec: Spec, padding: int = 0, rng: random.Random | None = None) -> bytes:
    rng = rng or random.Random(1)
    word = (
        (0x7FF << 21)
        | (VERSION_BITS[spec.version] << 19)
        | (LAYER_BITS[spec.layer] << 17)
        | ((0 if spec.crc else 1) << 16)
        | (spec.bitrate_index << 12)
        | (spec.rate_index << 10)
        | (padding << 9)
        | (spec.channel_mode << 6)
    )
    length, _ = frame_length(spec, padding)
    body = bytearray(rng.randbytes(length - 4))
    if spec.layer == 3:
        # main_data_begin 0 (its first 8 or 9 bits): each frame's main data is
        # its own, no bit reservoir, so a station passes these frames on byte
        # for byte even right after a cut (tests/test_splice.py and the
        # station's splice tests use real lame frames, which lean on it).
        at = 2 if spec.crc else 0
        body[at] = 0
        if spec.version == "1":
            body[at + 1] &= 0x7F
    return struct.pack(">I", word) + bytes(body)


def make_frames(n: int, spec: Spec = Spec(), seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [make_frame(spec, padding=i % 3 == 1, rng=rng) for i in range(n)]


def syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v2(payload: bytes, major: int = 4, flags: int = 0) -> bytes:
    tag = b"ID3" + bytes([major, 0, flags]) + syncsafe(len(payload)) + payload
    if major == 4 and flags & 0x10:
        tag += b"3DI" + bytes([major, 0, flags]) + syncsafe(len(payload))
    return tag


def id3v1() -> bytes:
    return b"TAG" + b"Title".ljust(30, b"\0") + b"Artist".ljust(30, b"\0") + bytes(65)


def apev2(items: bytes = b"\x05\0\0\0\0\0\0\0Title\0hello") -> bytes:
    size = len(items) + 32
    header = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0xA0000000) + bytes(8)
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, size, 1, 0x80000000) + bytes(8)
    return header + items + footer


def lyrics3v2() -> bytes:
    body = b"LYRICSBEGIN" + b"IND00002" + b"10" + b"LYR00005" + b"hello"
    return body + b"%06d" % len(body) + b"LYRICS200"


def xing_frame(spec: Spec = Spec(), magic: bytes = b"Xing") -> bytes:
    frame = bytearray(make_frame(spec))
    mono = spec.channel_mode == 3
    side = (17 if mono else 32) if spec.version == "1" else (9 if mono else 17)
    at = 4 + side
    frame[at : at + 4] = magic
    return bytes(frame)


def vbri_frame() -> bytes:
    frame = bytearray(make_frame(Spec()))
    frame[36:40] = b"VBRI"
    return bytes(frame)
