# mutagen ships py.typed but leaves its tag constructors unannotated.
# mypy: disallow-untyped-calls=False
"""Tiny real MP3 files made at test time with sox and lame.

Every builder knows by construction which bytes are MPEG audio frames: it
encodes with ``lame -t`` (no Xing/Info frame, no tags) and wraps that in
whatever the case needs. ffprobe is the independent check of those claims
(see tests/test_support.py). The one frame-header walk here
(``walk_mpeg_frames``) is built from the standard's formulas in tests/synth.py,
never from pushsource's own parser.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mutagen.apev2 import APEv2
from mutagen.id3 import APIC, ID3, TIT2, TPE1

from pushsource.ops.trial import encode_tone as _encode
from pushsource.ops.trial import make_tone_mp3 as make_clean_mp3
from pushsource.ops.trial import run_tool, tag_mp3

__all__ = ["make_clean_mp3", "run_tool"]  # the product's, re-exported for the tests


@dataclass(frozen=True)
class Fixture:
    path: Path
    #: The exact MPEG audio frames a listener must get from this file, in order.
    audio: bytes
    #: "Artist - Title" from the file's tags; the file name's stem when it has none.
    title: str | None
    #: Duration of ``audio``.
    seconds: float


@dataclass(frozen=True)
class Packet:
    """One MPEG audio frame as ffprobe sees it."""

    pos: int
    size: int
    seconds: float


def probe_packets(path: Path) -> list[Packet]:
    """ffprobe's packets: where each MPEG frame starts, its size and duration."""
    out = run_tool(
        "ffprobe", "-v", "error", "-f", "mp3", "-select_streams", "a:0", "-show_packets",
        "-show_entries", "packet=pos,size,duration_time", "-of", "json", path,
    )  # fmt: skip
    return [
        Packet(int(p["pos"]), int(p["size"]), float(p["duration_time"]))
        for p in json.loads(out)["packets"]
    ]


def audio_seconds(audio: bytes) -> float:
    """Duration of pure MPEG frames, by ffprobe."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audio.mp3"
        path.write_bytes(audio)
        return sum(p.seconds for p in probe_packets(path))


def _fixture(path: Path, audio: bytes, title: str | None = None) -> Fixture:
    return Fixture(path, audio, title if title is not None else path.stem, audio_seconds(audio))


def _clean(seconds: float, freq: int, *, sound: Sequence[str] = (), vbr: bool = False) -> bytes:
    """The -t encode of a tone (or of sound), made in a scratch directory."""
    with tempfile.TemporaryDirectory() as tmp:
        return _encode(
            Path(tmp) / "clean.mp3",
            seconds,
            sound=sound or ("sine", str(freq)),
            samplerate=44100,
            channels=2,
            lame_args=["-t", *(["-V", "4"] if vbr else ["-b", "128"])],
        )


# --- ID3 and other tags, by hand where mutagen cannot write them ---------------


def _synchsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _utf16_text(text: str) -> bytes:
    # Encoding 1 (UTF-16 with BOM): its FF FE is exactly what unsynchronisation escapes.
    return b"\x01" + text.encode("utf-16")


def _unsynchronise(data: bytes) -> bytes:
    # ID3v2.3 section 5: a 00 after every FF that is followed by 111xxxxx or 00,
    # and after a final FF.
    out = bytearray()
    for i, byte in enumerate(data):
        out.append(byte)
        if byte == 0xFF and (i + 1 == len(data) or data[i + 1] >= 0xE0 or data[i + 1] == 0):
            out.append(0)
    return bytes(out)


def id3v23_unsync_tag(artist: str, title: str, picture: bytes) -> bytes:
    frames = b""
    for frame_id, body in (
        (b"TPE1", _utf16_text(artist)),
        (b"TIT2", _utf16_text(title)),
        (b"APIC", b"\x00image/jpeg\x00\x03\x00" + picture),
    ):
        frames += frame_id + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    data = _unsynchronise(frames)
    return b"ID3\x03\x00\x80" + _synchsafe(len(data)) + data


def id3v22_tag(artist: str, title: str) -> bytes:
    frames = b""
    for frame_id, body in ((b"TP1", _utf16_text(artist)), (b"TT2", _utf16_text(title))):
        frames += frame_id + len(body).to_bytes(3, "big") + body
    frames += b"\x00" * 64  # padding
    return b"ID3\x02\x00\x00" + _synchsafe(len(frames)) + frames


def id3v24_footer_tag(artist: str, title: str) -> bytes:
    frames = b""
    for frame_id, text in ((b"TPE1", artist), (b"TIT2", title)):
        body = b"\x03" + text.encode("utf-8")
        frames += frame_id + _synchsafe(len(body)) + b"\x00\x00" + body
    # With a footer the tag carries no padding (ID3v2.4 structure, 3.4).
    size = _synchsafe(len(frames))
    return b"ID3\x04\x00\x10" + size + frames + b"3DI\x04\x00\x10" + size


def id3v1_tag(artist: str, title: str) -> bytes:
    def field(text: str, width: int) -> bytes:
        return text.encode("latin-1")[:width].ljust(width, b"\0")

    return (
        b"TAG"
        + field(title, 30)
        + field(artist, 30)
        + field("", 30)
        + b"2024"
        + field("", 30)
        + b"\xff"
    )


def lyrics3v2_block(lyrics: str) -> bytes:
    fields = b""
    for field_id, value in ((b"IND", b"10"), (b"LYR", lyrics.encode("latin-1"))):
        fields += field_id + b"%05d" % len(value) + value
    body = b"LYRICSBEGIN" + fields
    return body + b"%06d" % len(body) + b"LYRICS200"


def _mp3_as_picture(frames: bytes, size: int) -> bytes:
    # A JPEG-looking blob that carries a run of valid MP3 frames: a parser that
    # hunts for sync words inside the tag would play them.
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
    tail = size - len(head) - len(frames)
    return head + frames + bytes(random.Random(7).randrange(256) for _ in range(max(tail, 0)))


def _junk() -> bytes:
    rng = random.Random(1234)
    junk = bytearray(rng.randrange(256) for _ in range(300))
    # FF bytes, a header with the forbidden bitrate index 15, and one valid
    # 128 kbps header that no second frame follows.
    junk += (
        b"\xff\xff\xff\xff" + b"\xff\xfb\xf0\x00" + bytes(rng.randrange(256) for _ in range(100))
    )
    junk += b"\xff\xfb\x90\x64" + bytes(rng.randrange(256) for _ in range(200))
    return bytes(junk)


# --- builders -------------------------------------------------------------------


def make_cbr(path: Path, seconds: float = 0.8, freq: int = 440) -> Fixture:
    return _fixture(path, make_clean_mp3(path, seconds, freq=freq))


def make_cbr_info(path: Path, seconds: float = 0.8, freq: int = 470) -> Fixture:
    """lame's usual CBR output, with its Info/LAME header frame first."""
    clean = _clean(seconds, freq)
    full = _encode(
        path, seconds, sound=("sine", str(freq)), samplerate=44100, channels=2,
        lame_args=["-b", "128"],
    )  # fmt: skip
    _check_header_frame(path, full, clean, b"Info")
    return _fixture(path, clean)


def make_vbr(path: Path, seconds: float = 0.8, freq: int = 500) -> Fixture:
    """lame -V 4 with its Xing/LAME header frame; noise makes the frame sizes vary."""
    sound = ("sine", str(freq), "pinknoise")
    clean = _clean(seconds, freq, sound=sound, vbr=True)
    full = _encode(path, seconds, sound=sound, samplerate=44100, channels=2, lame_args=["-V", "4"])
    _check_header_frame(path, full, clean, b"Xing")
    return _fixture(path, clean)


def _check_header_frame(path: Path, full: bytes, clean: bytes, marker: bytes) -> None:
    # lame's bitstream must be the same with and without -t, the header frame aside.
    header = full[: len(full) - len(clean)]
    if not full.endswith(clean) or marker not in header[:64]:
        raise RuntimeError(f"{path}: lame output is not a {marker!r} frame + the -t encode")


def make_id3v24_apic(path: Path, seconds: float = 0.8, freq: int = 530) -> Fixture:
    """ID3v2.4 with a ~20 KB APIC whose data holds a run of valid MP3 frames."""
    clean = _clean(seconds, freq)
    decoy = _clean(0.3, 2000)
    path.write_bytes(clean)
    tags = ID3()
    tags.add(TPE1(encoding=3, text="Picture Artist"))
    tags.add(TIT2(encoding=3, text="Cover With Fake Frames"))
    tags.add(
        APIC(
            encoding=3, mime="image/jpeg", type=3, desc="cover", data=_mp3_as_picture(decoy, 20_000)
        )
    )
    tags.save(path, v2_version=4, v1=0)
    return _fixture(path, clean, "Picture Artist - Cover With Fake Frames")


def make_id3v23_unsync(path: Path, seconds: float = 0.8, freq: int = 560) -> Fixture:
    clean = _clean(seconds, freq)
    decoy = _clean(0.1, 1800)
    path.write_bytes(id3v23_unsync_tag("Ünsync Artist", "Tïtle v2.3", decoy) + clean)
    return _fixture(path, clean, "Ünsync Artist - Tïtle v2.3")


def make_id3v22(path: Path, seconds: float = 0.8, freq: int = 590) -> Fixture:
    clean = _clean(seconds, freq)
    path.write_bytes(id3v22_tag("Old Artist", "Version 2.2") + clean)
    return _fixture(path, clean, "Old Artist - Version 2.2")


def make_id3v24_footer(path: Path, seconds: float = 0.8, freq: int = 620) -> Fixture:
    clean = _clean(seconds, freq)
    path.write_bytes(id3v24_footer_tag("Footer Artist", "Tag With Footer") + clean)
    return _fixture(path, clean, "Footer Artist - Tag With Footer")


def make_id3v1(path: Path, seconds: float = 0.8, freq: int = 650) -> Fixture:
    clean = _clean(seconds, freq)
    path.write_bytes(clean + id3v1_tag("V1 Artist", "Only ID3v1"))
    return _fixture(path, clean, "V1 Artist - Only ID3v1")


def make_apev2(path: Path, seconds: float = 0.8, freq: int = 680) -> Fixture:
    clean = _clean(seconds, freq)
    path.write_bytes(clean)
    tags = APEv2()
    tags["Artist"] = "Ape Artist"
    tags["Title"] = "APEv2 At The End"
    tags.save(path)
    return _fixture(path, clean, "Ape Artist - APEv2 At The End")


def make_lyrics3_id3v1(path: Path, seconds: float = 0.8, freq: int = 710) -> Fixture:
    clean = _clean(seconds, freq)
    lyrics = lyrics3v2_block("[00:00]la la la\r\n[00:01]TAG is not a tag here")
    path.write_bytes(clean + lyrics + id3v1_tag("Lyrics Artist", "Lyrics3v2 Then ID3v1"))
    return _fixture(path, clean, "Lyrics Artist - Lyrics3v2 Then ID3v1")


def make_junk_prefix(path: Path, seconds: float = 0.8, freq: int = 740) -> Fixture:
    clean = _clean(seconds, freq)
    path.write_bytes(_junk() + clean)
    return _fixture(path, clean)


def make_truncated(path: Path, seconds: float = 0.8, freq: int = 770) -> Fixture:
    """The last frame cut in half: a listener gets every frame but that one."""
    clean = make_clean_mp3(path, seconds, freq=freq)
    last = probe_packets(path)[-1]
    if last.pos + last.size != len(clean):
        raise RuntimeError(f"{path}: ffprobe's last packet does not end the file")
    path.write_bytes(clean[: last.pos + last.size // 2])
    return _fixture(path, clean[: last.pos])


def make_mpeg2(path: Path, seconds: float = 0.8, freq: int = 800) -> Fixture:
    """MPEG-2 Layer III at 22.05 kHz."""
    return _fixture(
        path,
        make_clean_mp3(
            path, seconds, freq=freq, bitrate=64, extra_lame_args=["--resample", "22.05"]
        ),
    )


def make_crc(path: Path, seconds: float = 0.8, freq: int = 830) -> Fixture:
    """Frames with CRC protection (lame -p)."""
    return _fixture(path, make_clean_mp3(path, seconds, freq=freq, extra_lame_args=["-p"]))


def make_mono(path: Path, seconds: float = 0.8, freq: int = 860) -> Fixture:
    return _fixture(path, make_clean_mp3(path, seconds, freq=freq, channels=1, bitrate=64))


def make_free_format(
    path: Path, seconds: float, *, freq: int = 440, bitrate: int = 400, samplerate: int = 44100
) -> bytes:
    """``lame --freeformat -b <bitrate>`` of a stereo tone (with lame's Info
    frame, as a user would have it): every header has bitrate index 0, the
    frame length is the distance to the next header. Returns the file's bytes."""
    data = _encode(
        path, seconds, sound=("sine", str(freq)), samplerate=samplerate, channels=2,
        lame_args=["--freeformat", "-b", str(bitrate)],
    )  # fmt: skip
    assert data[2] >> 4 == 0, f"lame wrote no free-format header: {data[:4].hex()}"
    return data


CORPUS = (
    ("01-cbr", make_cbr),
    ("02-cbr-info", make_cbr_info),
    ("03-vbr", make_vbr),
    ("04-id3v24-apic", make_id3v24_apic),
    ("05-id3v23-unsync", make_id3v23_unsync),
    ("06-id3v22", make_id3v22),
    ("07-id3v24-footer", make_id3v24_footer),
    ("08-id3v1", make_id3v1),
    ("09-apev2", make_apev2),
    ("10-lyrics3-id3v1", make_lyrics3_id3v1),
    ("11-junk", make_junk_prefix),
    ("12-truncated", make_truncated),
    ("13-mpeg2-22khz", make_mpeg2),
    ("14-crc", make_crc),
    ("15-mono", make_mono),
)


def build_corpus(directory: Path) -> list[Fixture]:
    """Every case above, named so that name order is play order."""
    directory.mkdir(parents=True, exist_ok=True)
    return [build(directory / f"{name}.mp3") for name, build in CORPUS]


def make_titled_tracks(
    directory: Path, titles: list[tuple[str, str]], seconds: float = 2.5
) -> list[Fixture]:
    """One clean track per (artist, title), tagged ID3v2.4 in UTF-8."""
    directory.mkdir(parents=True, exist_ok=True)
    fixtures = []
    for number, (artist, title) in enumerate(titles, start=1):
        path = directory / f"{number:02d}-track.mp3"
        clean = make_clean_mp3(path, seconds, freq=330 + 110 * number)
        tag_mp3(path, artist, title)
        fixtures.append(_fixture(path, clean, f"{artist} - {title}"))
    return fixtures


# --- decoding what a listener got ---------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """What ffmpeg made of an MP3 stream."""

    #: ffmpeg's output at ``-v error``: "" when every frame decoded cleanly.
    errors: str
    #: Sample frames (samples per channel) decoded.
    frames: int
    channels: int
    #: 16-bit little-endian PCM, channels interleaved.
    pcm: bytes


def decode_mp3(mp3: bytes, directory: Path, name: str = "decoded") -> Decoded:
    """Decode raw MPEG frames with ffmpeg to WAV (the null muxer complains about
    timestamps when the sample rate changes mid-stream). A decoder that gives
    up altogether is an AssertionError with its output."""
    source, target = directory / f"{name}.mp3", directory / f"{name}.wav"
    source.write_bytes(mp3)
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "mp3", "-i", source, "-f", "wav", "-y", target],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    with wave.open(str(target), "rb") as decoded:
        assert decoded.getsampwidth() == 2
        frames = decoded.getnframes()
        return Decoded(done.stderr, frames, decoded.getnchannels(), decoded.readframes(frames))


# --- files in other formats, and an independent look at a recording's frames ----------


@dataclass(frozen=True)
class Tagged:
    """A tone in some container, tagged with an artist and a title."""

    path: Path
    #: "Artist - Title", as a station should show it.
    title: str
    #: For a ``lame -t`` MP3, exactly its MPEG audio frames; None for other formats.
    audio: bytes | None


def make_tagged_audio(
    path: Path,
    seconds: float,
    *,
    artist: str,
    title: str,
    freq: int = 440,
    samplerate: int = 44100,
    channels: int = 2,
    bitrate: int = 128,
) -> Tagged:
    """A sine tone as MP3 (``lame -t``, ID3v2.4), FLAC, Ogg Vorbis, Opus, M4A (AAC)
    or WAV (an ``id3 `` chunk), by the suffix of ``path``, tagged with mutagen's
    class for that format."""
    from mutagen.flac import FLAC
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    suffix = path.suffix.lower()
    audio: bytes | None = None
    if suffix == ".mp3":
        audio = make_clean_mp3(
            path, seconds, freq=freq, samplerate=samplerate, channels=channels, bitrate=bitrate
        )
        id3 = ID3()
        id3.add(TPE1(encoding=3, text=artist))
        id3.add(TIT2(encoding=3, text=title))
        id3.save(path, v2_version=4, v1=0)
        return Tagged(path, f"{artist} - {title}", audio)
    codecs = {
        ".flac": ["-c:a", "flac"],
        ".ogg": ["-c:a", "libvorbis"],
        ".opus": ["-c:a", "libopus"],
        ".m4a": ["-c:a", "aac"],
        ".wav": ["-c:a", "pcm_s16le", "-bitexact"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "in.wav"
        run_tool(
            "sox", "-R", "-n", "-r", str(samplerate), "-c", str(channels), "-b", "16", wav,
            "synth", str(seconds), "sine", str(freq), "vol", "0.5",
        )  # fmt: skip
        run_tool("ffmpeg", "-v", "error", "-y", "-i", wav, *codecs[suffix], path)
    if suffix == ".wav":
        wave_file = WAVE(path)
        wave_file.add_tags()
        assert wave_file.tags is not None
        wave_file.tags.add(TPE1(encoding=3, text=artist))
        wave_file.tags.add(TIT2(encoding=3, text=title))
        wave_file.save()
    elif suffix == ".m4a":
        mp4 = MP4(path)
        mp4["\xa9ART"] = artist
        mp4["\xa9nam"] = title
        mp4.save()
    else:
        vorbis_comments = {".flac": FLAC, ".ogg": OggVorbis, ".opus": OggOpus}[suffix](path)
        vorbis_comments["artist"] = artist
        vorbis_comments["title"] = title
        vorbis_comments.save()
    return Tagged(path, f"{artist} - {title}", audio)


@dataclass(frozen=True)
class MpegHeader:
    """What a listener's player needs from one frame header (ISO 11172-3 / 13818-3)."""

    length: int
    sample_rate: int
    channels: int
    layer: int
    bitrate: int  # kbps


_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: kbps by (MPEG-1, layer) and bitrate index; MPEG-2/2.5 Layers II and III share one row.
_MPEG_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}


def mpeg_header_at(data: bytes, pos: int) -> MpegHeader | None:
    """The frame header at ``data[pos:pos+4]``, None if no valid one is there.
    Built on tests.synth (the standards' formulas), not on pushsource's parser."""
    from tests.synth import Spec, frame_length

    if pos < 0 or pos + 4 > len(data):
        return None
    word = int.from_bytes(data[pos : pos + 4], "big")
    version_bits, layer_bits = (word >> 19) & 3, (word >> 17) & 3
    bitrate_index, rate_index = (word >> 12) & 0xF, (word >> 10) & 3
    if word >> 21 != 0x7FF or version_bits == 1 or layer_bits == 0:
        return None
    if bitrate_index in (0, 15) or rate_index == 3 or word & 3 == 2:
        return None
    version = {3: "1", 2: "2", 0: "2.5"}[version_bits]
    layer = {3: 1, 2: 2, 1: 3}[layer_bits]
    spec = Spec(version=version, layer=layer, bitrate_index=bitrate_index, rate_index=rate_index)
    length, _ = frame_length(spec, (word >> 9) & 1)
    mpeg1 = version == "1"
    table = _MPEG_BITRATES[(mpeg1, layer if mpeg1 or layer == 1 else 2)]
    channels = 1 if (word >> 6) & 3 == 3 else 2
    rate = _MPEG_RATES[version_bits][rate_index]
    return MpegHeader(length, rate, channels, layer, table[bitrate_index])


def walk_mpeg_frames(data: bytes) -> tuple[list[tuple[int, MpegHeader]], int]:
    """Every frame of ``data``, back to back from offset 0: (offset, header) each,
    and where the walk stopped (``len(data)`` when the frames tile it, else the
    first byte that is not a frame header, or a last frame cut short)."""
    frames: list[tuple[int, MpegHeader]] = []
    pos = 0
    while (header := mpeg_header_at(data, pos)) is not None and pos + header.length <= len(data):
        frames.append((pos, header))
        pos += header.length
    return frames, pos


@dataclass(frozen=True)
class ProbedFrame:
    """One decoded frame as ffprobe reports it."""

    pos: int
    sample_rate: int  # from its duration and sample count
    channels: int


def probe_frames(path: Path) -> list[ProbedFrame]:
    """ffprobe's decoded frames of a raw MPEG audio file. ffprobe 5 prints no
    per-frame sample rate, so it is worked out from duration and sample count."""
    out = run_tool(
        "ffprobe", "-v", "error", "-f", "mp3", "-select_streams", "a:0", "-show_frames",
        "-show_entries", "frame=pkt_pos,nb_samples,channels,pkt_duration_time",
        "-of", "json", path,
    )  # fmt: skip
    rates = (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
    frames = []
    for frame in json.loads(out)["frames"]:
        exact = int(frame["nb_samples"]) / float(frame["pkt_duration_time"])
        rate = min(rates, key=lambda r: abs(r - exact))
        frames.append(ProbedFrame(int(frame["pkt_pos"]), rate, int(frame["channels"])))
    return frames


# --- loudness: tracks made at a level, measured by ffmpeg's ebur128 ------------------


@dataclass(frozen=True)
class Level:
    """What ffmpeg's ebur128 filter says of a file (EBU R128 / ITU BS.1770)."""

    lufs: float  # integrated loudness
    peak_dbfs: float  # sample peak


def ebur128(path: Path, *, input_format: str | None = None) -> Level:
    """ffmpeg's integrated loudness and sample peak of ``path``."""
    fmt = ["-f", input_format] if input_format else []
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", *fmt, "-i", path,
         "-af", "ebur128=peak=sample", "-f", "null", "-"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = out.stderr.rpartition("Summary:")[2]
    lufs = re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert lufs is not None and peak is not None, out.stderr[-2000:]
    return Level(float(lufs.group(1)), float(peak.group(1)))


def make_track_at(
    path: Path,
    lufs: float,
    seconds: float,
    *,
    sound: Sequence[str] = ("pinknoise",),
    samplerate: int = 44100,
    channels: int = 2,
    lame_args: Sequence[str] = ("-b", "128"),
) -> bytes:
    """A ``lame -t`` MP3 (nothing but audio frames) whose integrated loudness
    is ``lufs`` to within about 0.2 dB, by ffmpeg: encoded, measured, and
    encoded again with the difference. Returns its frames."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "in.wav"
        correction = 0.0
        for _ in range(2):
            run_tool(
                "sox", "-R", "-n", "-r", str(samplerate), "-c", str(channels), "-b", "16", wav,
                "synth", str(seconds), *sound, "vol", "0.1", "gain", f"{correction:.2f}",
            )  # fmt: skip
            run_tool("lame", "--quiet", "-t", *lame_args, wav, path)
            correction += lufs - ebur128(path).lufs
    return path.read_bytes()


# --- the bit reservoir: tracks that lean on it, and decoders that judge a stream ------


def make_noise_mp3(
    path: Path,
    seconds: float,
    *,
    samplerate: int = 44100,
    channels: int = 2,
    lame_args: Sequence[str] = ("-b", "128"),
    color: str = "pinknoise",
) -> bytes:
    """Noise (sox's ``pinknoise``, ``whitenoise``, ``brownnoise``: the same
    samples on every run, so two tracks need two colours or lengths cut
    apart) encoded with ``lame -t``: noise keeps lame's bit reservoir full, so
    almost every frame's main data starts hundreds of bytes back, in the
    frames before it (main_data_begin). Returns the file's bytes (only audio
    frames)."""
    return _encode(
        path,
        seconds,
        sound=(color,),
        samplerate=samplerate,
        channels=channels,
        lame_args=["-t", *lame_args],
    )


def reservoir_begin(data: bytes, pos: int) -> int:
    """main_data_begin of the Layer III frame at ``data[pos:]``, read from the
    bits (ISO 11172-3 2.4.1.7: 9 bits in MPEG-1, 8 in MPEG-2/2.5, after the
    header and a protected frame's CRC), not by pushsource's parser."""
    mpeg1 = (data[pos + 1] >> 3) & 3 == 3
    at = pos + (4 if data[pos + 1] & 1 else 6)
    return (data[at] << 1 | data[at + 1] >> 7) if mpeg1 else data[at]


_DECODER_TROUBLE = re.compile(r"error|warn|fail|illegal|invalid|overread|can't|cannot", re.I)


#: mpg123's lines that name the file (whose name may hold any word).
_MPG123_NAMING = re.compile(r"Directory:|Playing MPEG stream|\[[\d:]+\] Decoding of")


def decoder_errors(path: Path) -> str:
    """What mpg123 (``-t``: decode, play nothing) and ffmpeg (``-v error``)
    find wrong in decoding ``path``: their complaint lines, "" when both
    decoded every frame without one."""
    mpg123 = subprocess.run(
        ["mpg123", "-t", path], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    ffmpeg = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    lines = [
        f"mpg123: {line}"
        for line in mpg123.stderr.splitlines()
        if _DECODER_TROUBLE.search(line) and not _MPG123_NAMING.match(line)
    ]
    if mpg123.returncode != 0:
        lines.append(f"mpg123: exit status {mpg123.returncode}")
    lines += [f"ffmpeg: {line}" for line in ffmpeg.stderr.splitlines() if line.strip()]
    if ffmpeg.returncode != 0:
        lines.append(f"ffmpeg: exit status {ffmpeg.returncode}")
    return "\n".join(lines)


def side_info_span(data: bytes, pos: int) -> tuple[int, int, bool]:
    """Where the side info of the Layer III frame at ``pos`` starts and ends
    (from the frame's start), and whether it is MPEG-1."""
    mpeg1 = (data[pos + 1] >> 3) & 3 == 3
    mono = data[pos + 3] >> 6 == 3
    at = 4 if data[pos + 1] & 1 else 6
    return at, at + ((17 if mono else 32) if mpeg1 else (9 if mono else 17)), mpeg1


def unmend(got: bytes, want: bytes, frames: int = 6) -> bytes:
    """``got`` with the frames a splice mended put back as ``want`` has them:
    among their first ``frames`` frames (both from a frame boundary), a frame
    of ``got`` whose header and main data are ``want``'s and whose side info
    is zero but for main_data_begin (pushsource.core.splice: it pointed back
    past a cut). For byte-exact comparisons across a cut; any other difference
    stays."""
    out = bytearray(got)
    pos = 0
    for _ in range(frames):
        header = mpeg_header_at(want, pos)
        if header is None or header.layer != 3 or pos + header.length > len(got):
            break
        mine, theirs = got[pos : pos + header.length], want[pos : pos + header.length]
        at, end, mpeg1 = side_info_span(want, pos)
        rest = mine[at + 1 : end]
        silent = not any(rest[1:]) and (not rest[0] & 0x7F if mpeg1 else not rest[0])
        if mine[:4] == theirs[:4] and mine[end:] == theirs[end:] and silent:
            out[pos : pos + header.length] = theirs
        pos += header.length
    return bytes(out)
