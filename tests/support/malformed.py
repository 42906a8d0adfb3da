"""Malformed and non-MP3 files for the "never knocked over" tests.

Each builder writes one file (or, for one case, a folder) and returns a
:class:`Malformed` that says whether a listener should hear anything from it
and, where the standards make it predictable, exactly which bytes. The audio
comes from :func:`tests.support.media.make_clean_mp3` (``lame -t``: nothing but
frames), split into frames where ffprobe says they are; the damage is plain
byte surgery. Nothing here uses pushsource's own parser: the one header check
(:func:`frame_length_at`) follows ISO 11172-3 / 13818-3 through tests.synth.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.media import make_clean_mp3, probe_packets, run_tool
from tests.synth import Spec, frame_length

SECONDS = 0.6  # of each playable case: the whole corpus streams in a few seconds
TAG_MAGICS = (b"ID3", b"TAG", b"APETAGEX", b"LYRICSBEGIN")


@dataclass(frozen=True)
class Malformed:
    """One damaged file and what a listener may get from it."""

    name: str
    #: The file (for "album.mp3" a folder: what a listener hears comes from ``plays``).
    path: Path
    #: Whether some audio of it should reach listeners; if not, the station
    #: must skip it with one warning naming it.
    playable: bool
    #: Exactly the bytes a listener gets from this file, when that is
    #: predictable: b"" for an unplayable file, None when only "some audio".
    expect_prefix: bytes | None
    #: Byte runs of the file that must never reach a listener (tags, text, decoys).
    forbidden: tuple[bytes, ...] = ()
    #: The file that actually plays, when ``path`` is not it.
    plays: Path | None = None
    #: Warnings other than "skipped" the station should print about it: how
    #: each line ends after "<path>: " (e.g. "dropped 12 frames ...").
    notes: tuple[str, ...] = ()


# --- an independent frame header check -------------------------------------------

_VERSIONS = {3: "1", 2: "2", 0: "2.5"}
_LAYERS = {3: 1, 2: 2, 1: 3}


def frame_length_at(data: bytes, pos: int) -> int | None:
    """Length of the MPEG audio frame whose header is at ``data[pos:pos+4]``,
    None if no valid header is there (free format and reserved values count
    as invalid, as in pushsource and mutagen). Does not raise."""
    if pos < 0 or pos + 4 > len(data) or data[pos] != 0xFF:
        return None
    word = int.from_bytes(data[pos : pos + 4], "big")
    version = _VERSIONS.get((word >> 19) & 3)
    layer = _LAYERS.get((word >> 17) & 3)
    bitrate_index, rate_index = (word >> 12) & 0xF, (word >> 10) & 3
    if word >> 21 != 0x7FF or version is None or layer is None:
        return None
    if bitrate_index in (0, 15) or rate_index == 3 or word & 3 == 2:
        return None
    spec = Spec(version=version, layer=layer, bitrate_index=bitrate_index, rate_index=rate_index)
    return frame_length(spec, (word >> 9) & 1)[0]


def frame_run_at(data: bytes, start: int) -> int:
    """How many valid frame headers follow back to back from start, each
    where the frame before it ends."""
    count, at = 0, start
    while (length := frame_length_at(data, at)) is not None:
        count += 1
        at += length
    return count


def find_frame_run(data: bytes, frames: int) -> int | None:
    """Where the first run of at least ``frames`` back-to-back valid headers starts."""
    for start in range(len(data)):
        if data[start] == 0xFF and frame_run_at(data, start) >= frames:
            return start
    return None


def split_frames(path: Path, data: bytes) -> list[bytes]:
    """The frames of a ``lame -t`` file, where ffprobe says they are."""
    packets = probe_packets(path)
    frames = [data[p.pos : p.pos + p.size] for p in packets]
    if packets[0].pos != 0 or b"".join(frames) != data:
        raise RuntimeError(f"{path}: ffprobe's packets do not tile the file")
    return frames


def _clean_frames(
    seconds: float, freq: int, *, samplerate: int = 44100, channels: int = 2, bitrate: int = 128
) -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clean.mp3"
        data = make_clean_mp3(
            path, seconds, freq=freq, samplerate=samplerate, channels=channels, bitrate=bitrate
        )
        return split_frames(path, data)


def _random_junk(rng: random.Random, size: int) -> bytes:
    """Random bytes, rich in 0xFF and in sync-like FF Fx pairs, without tag names."""
    while True:
        junk = bytearray(rng.randbytes(size))
        for _ in range(size // 8):
            at = rng.randrange(size)
            junk[at] = 0xFF
            if at + 1 < size and rng.random() < 0.5:
                junk[at + 1] = rng.choice((0xFB, 0xFA, 0xF3, 0xE2, 0xFF))
        if not any(m in junk for m in TAG_MAGICS):
            return bytes(junk)


# --- tags, by hand ----------------------------------------------------------------


def synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v24_tag(frames: list[tuple[bytes, bytes]], *, size: int | None = None) -> bytes:
    """An ID3v2.4 tag of (frame id, body) pairs; ``size`` overrides the header's size."""
    body = b"".join(fid + synchsafe(len(b)) + b"\x00\x00" + b for fid, b in frames)
    return b"ID3\x04\x00\x00" + synchsafe(len(body) if size is None else size) + body


def text_frame(fid: bytes, text: str) -> tuple[bytes, bytes]:
    return fid, b"\x03" + text.encode("utf-8")


def apic_frame(picture: bytes) -> tuple[bytes, bytes]:
    return b"APIC", b"\x03image/jpeg\x00\x03cover\x00" + picture


def ape_tag(items: dict[str, str], *, header_size: int, footer_size: int) -> bytes:
    """An APEv2 tag (header, items, footer) whose two size fields say what they are told."""
    body = b"".join(
        struct.pack("<II", len(v.encode()), 0) + k.encode("ascii") + b"\x00" + v.encode()
        for k, v in items.items()
    )
    is_header, has_header = 1 << 29, 1 << 31
    count = len(items)
    header = b"APETAGEX" + struct.pack("<IIII", 2000, header_size, count, has_header | is_header)
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, footer_size, count, has_header)
    return header + bytes(8) + body + footer + bytes(8)


def png_image(width: int = 48, height: int = 48, seed: int = 5) -> bytes:
    """A valid RGB PNG of noise."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --- the cases --------------------------------------------------------------------


def make_corrupt_headers(path: Path, freq: int = 900) -> Malformed:
    """Frames 10 and 20 get 4 bytes of junk where their headers were: a
    listener gets every other frame."""
    frames = _clean_frames(SECONDS + 0.3, freq)
    damaged = list(frames)
    damaged[10] = b"\xde\xad\xbe\xef" + frames[10][4:]
    damaged[20] = b"\xff\xff\xff\xff" + frames[20][4:]  # sync bits set, bitrate index 15
    path.write_bytes(b"".join(damaged))
    kept = frames[:10] + frames[11:20] + frames[21:]
    return Malformed("corrupt-headers", path, True, b"".join(kept))


def make_inserted_junk(path: Path, freq: int = 940) -> Malformed:
    """Random bytes (0xFF-rich, one lone valid header) between frames in four places."""
    frames = _clean_frames(SECONDS, freq)
    rng = random.Random(2024)
    out = bytearray()
    for i, frame in enumerate(frames):
        out += frame
        if i in (3, 8, 13, 19):
            junk = _random_junk(rng, rng.randrange(40, 300))
            if i == 8:  # a valid header that no second frame follows
                junk = junk[:20] + b"\xff\xfb\x90\x64" + junk[20:60]
            out += junk
    data = bytes(out)
    if frame_run_at(data, 0) < 3:
        raise RuntimeError(f"{path}: the clean frames do not chain")
    path.write_bytes(data)
    return Malformed("inserted-junk", path, True, b"".join(frames))


def make_id3_past_end(path: Path, freq: int = 980) -> Malformed:
    """An ID3v2 header whose size runs past the end: all the audio is "in" the tag."""
    frames = _clean_frames(SECONDS, freq)
    tag = id3v24_tag([text_frame(b"TIT2", "Endless Tag Title")], size=(1 << 28) - 1)
    path.write_bytes(tag + b"".join(frames))
    return Malformed("id3-past-end", path, False, b"")


def make_ape_bogus_size(path: Path, freq: int = 1020) -> Malformed:
    """Audio, then an APEv2 tag whose header claims 2 GB and whose footer 3 bytes."""
    frames = _clean_frames(SECONDS, freq)
    items = {"Artist": "Ape Bogus Artist", "Title": "Ape Bogus Size Title"}
    path.write_bytes(b"".join(frames) + ape_tag(items, header_size=0x7FFF_FFF0, footer_size=3))
    return Malformed(
        "ape-bogus-size",
        path,
        True,
        b"".join(frames),
        forbidden=(b"APETAGEX", b"Ape Bogus Size Title"),
    )


def make_fake_sync_cover(path: Path, freq: int = 1060) -> Malformed:
    """ID3v2.4 whose cover art holds a run of valid 48 kHz frames; 44.1 kHz audio follows."""
    frames = _clean_frames(SECONDS, freq)
    decoy = b"".join(_clean_frames(0.25, 3000, samplerate=48000))
    picture = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200) + decoy + bytes(300)
    tag = id3v24_tag(
        [
            text_frame(b"TPE1", "Cover Trap Artist"),
            text_frame(b"TIT2", "Cover Trap Title"),
            apic_frame(picture),
        ]
    )
    if find_frame_run(tag, 5) is None:
        raise RuntimeError(f"{path}: the decoy frames in the cover do not chain")
    path.write_bytes(tag + b"".join(frames))
    return Malformed(
        "fake-sync-cover",
        path,
        True,
        b"".join(frames),
        forbidden=(decoy[:1000], b"Cover Trap Title"),
    )


def make_rate_change(path: Path, freq: int = 1100) -> Malformed:
    """44.1 kHz frames, then 48 kHz frames: a listener gets the first part only."""
    first = _clean_frames(SECONDS / 2 + 0.1, freq)
    second = _clean_frames(SECONDS / 2, freq + 300, samplerate=48000)
    path.write_bytes(b"".join(first + second))
    return Malformed(
        "rate-change",
        path,
        True,
        b"".join(first),
        forbidden=(second[1],),
        notes=(f"dropped {len(second)} frames that change the format",),
    )


def make_channels_change(path: Path, freq: int = 1140) -> Malformed:
    """Stereo frames, then mono ones at the same rate: a listener gets the stereo part."""
    first = _clean_frames(SECONDS / 2 + 0.1, freq)
    second = _clean_frames(SECONDS / 2, freq + 300, channels=1, bitrate=64)
    path.write_bytes(b"".join(first + second))
    return Malformed(
        "channels-change",
        path,
        True,
        b"".join(first),
        forbidden=(second[1],),
        notes=(f"dropped {len(second)} frames that change the format",),
    )


def make_empty(path: Path) -> Malformed:
    path.write_bytes(b"")
    return Malformed("empty", path, False, b"")


TEXT = (
    "This is not an MP3. It talks about ID3 tags, a TAG at the end and\n"
    "APETAGEX footers, but it is only text that someone named .mp3.\n"
)


def make_text(path: Path) -> Malformed:
    path.write_text(TEXT * 20, "utf-8")
    return Malformed("text", path, False, b"", forbidden=(b"someone named .mp3",))


def make_truncated_mid_frame(path: Path, freq: int = 1180) -> Malformed:
    """Cut in the middle of frame 12, as a half-finished download: frames 0-11 play."""
    frames = _clean_frames(SECONDS, freq)
    path.write_bytes(b"".join(frames[:12]) + frames[12][: len(frames[12]) // 2])
    return Malformed("truncated-mid-frame", path, True, b"".join(frames[:12]))


def make_truncated_in_tag(path: Path, freq: int = 1220) -> Malformed:
    """A real tag with a 6 KB cover, cut inside the cover: no audio is left."""
    frames = _clean_frames(SECONDS, freq)
    picture = b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(6000)
    tag = id3v24_tag([text_frame(b"TIT2", "Cut In The Tag"), apic_frame(picture)])
    path.write_bytes((tag + b"".join(frames))[:3000])
    return Malformed("truncated-in-tag", path, False, b"")


def make_no_frames(path: Path, seed: int = 77) -> Malformed:
    """8 KB of random bytes, 0xFF-rich and with lone valid headers, that hold
    no three frames in a row."""
    rng = random.Random(seed)
    data = bytearray(_random_junk(rng, 8000))
    for _ in range(10):
        at = rng.randrange(len(data) - 4)
        data[at : at + 4] = b"\xff\xfb\x90\x64"
    while (start := find_frame_run(bytes(data), 3)) is not None:  # a run by chance
        data[start] = 0
    path.write_bytes(bytes(data))
    return Malformed("no-frames", path, False, b"")


def make_png(path: Path) -> Malformed:
    path.write_bytes(png_image())
    return Malformed("png", path, False, b"", forbidden=(b"\x89PNG", b"IHDR"))


def make_wav(path: Path) -> Malformed:
    """A 16-bit PCM WAV of a tone, named .mp3: not MPEG, so it is converted
    like any other format, and plays."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tone.wav"
        run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
                 "synth", "0.5", "sine", "440", "vol", "0.5")  # fmt: skip
        data = wav.read_bytes()
    if find_frame_run(data, 3) is not None:
        raise RuntimeError(f"{path}: this WAV happens to hold MPEG frames")
    path.write_bytes(data)
    return Malformed("wav", path, True, None, forbidden=(b"RIFF", b"WAVEfmt"))


def make_album_folder(path: Path, freq: int = 1260) -> Malformed:
    """A folder named like an MP3 (``album.mp3/``) holding a good file."""
    path.mkdir()
    inner = path / "track.mp3"
    audio = make_clean_mp3(inner, SECONDS, freq=freq)
    return Malformed("album", path, True, audio, plays=inner)


def make_unreadable(path: Path, freq: int = 1300) -> Malformed:
    """A good file nobody may read. Only meaningful when not root (root reads anyway)."""
    make_clean_mp3(path, SECONDS, freq=freq)
    path.chmod(0)
    return Malformed("unreadable", path, False, b"")


Builder = Callable[[Path], Malformed]

#: (name, builder) of every case; the unreadable file only when permissions bite.
CASES: tuple[tuple[str, Builder], ...] = (
    ("corrupt-headers", make_corrupt_headers),
    ("inserted-junk", make_inserted_junk),
    ("id3-past-end", make_id3_past_end),
    ("ape-bogus-size", make_ape_bogus_size),
    ("fake-sync-cover", make_fake_sync_cover),
    ("rate-change", make_rate_change),
    ("channels-change", make_channels_change),
    ("empty", make_empty),
    ("text", make_text),
    ("truncated-mid-frame", make_truncated_mid_frame),
    ("truncated-in-tag", make_truncated_in_tag),
    ("no-frames", make_no_frames),
    ("png", make_png),
    ("wav", make_wav),
    ("album", make_album_folder),
    *((("unreadable", make_unreadable),) if os.geteuid() != 0 else ()),
)


def build_malformed(directory: Path, first_number: int = 1, step: int = 1) -> list[Malformed]:
    """Every case as ``directory/NN-name.mp3``, numbered from first_number by step."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        build(directory / f"{first_number + i * step:02d}-{name}.mp3")
        for i, (name, build) in enumerate(CASES)
    ]
