"""What a DJ's encoder sends, and what the harbor does with it, sans-IO.

MP3 in the station's format passes through byte for byte; MP3 at another
sample rate or channel count, Ogg (Vorbis, Opus) and AAC (ADTS) are converted
to the station's format (by :mod:`pushsource.workers.liveconvert`); anything
else is refused with a status and one line the encoder shows.

The Content-Type is looked at first, in the request head, before any answer
(so ``video/mp4`` is a 415 the encoder prints, never a hang-up after a 200);
the first bytes of the body then decide, since encoders label Ogg Opus as
``application/ogg`` and some send MP3 with no type at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser, Skipped
from pushsource.errors import FrameError

#: MP3 content types encoders send (or none at all).
MP3_TYPES: Final = frozenset({"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg"})
#: Ogg: Vorbis or Opus inside (libshout and ffmpeg say application/ogg or audio/ogg).
OGG_TYPES: Final = frozenset(
    {"application/ogg", "audio/ogg", "audio/x-ogg", "audio/vorbis", "audio/opus"}
)
#: AAC in ADTS frames (ffmpeg's ``-f adts``, BUTT's and Mixxx's AAC).
AAC_TYPES: Final = frozenset({"audio/aac", "audio/aacp", "audio/x-aac"})
#: A type that says nothing: the first bytes decide.
VAGUE_TYPES: Final = frozenset({"application/octet-stream", "binary/octet-stream"})
#: The first bytes looked at before giving up on finding audio in them: an MP3
#: frame is at most 2881 bytes and the parser wants a few in a row. Tags do
#: not count (ezstream sends a file's ID3 tag, cover art and all), up to
#: TAGS_LIMIT of them.
SNIFF_LIMIT: Final = 32 * 1024
TAGS_LIMIT: Final = 4 * 1024 * 1024
#: What converting takes, for refusals.
CONVERTS: Final = "MP3 at any rate, Ogg Vorbis, Opus and AAC"


class Kind(Enum):
    """The container of a DJ's audio."""

    MP3 = "MP3"
    OGG = "Ogg"
    AAC = "AAC"


@dataclass(frozen=True, slots=True)
class Pass:
    """MP3 in the station's format: byte for byte."""


@dataclass(frozen=True, slots=True)
class Convert:
    """Audio libvlc converts; ``what`` says what it is, for the log and status."""

    kind: Kind
    what: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` with ``line`` and hang up."""

    status: int
    line: str


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


#: :func:`decide` needs more of the body.
NEED_MORE: Final = _NeedMore()

Decision = Pass | Convert | Refuse


def kind_of_type(content_type: str | None) -> Kind | None:
    """The kind a Content-Type names; None for none or a vague one (the
    bytes decide). Raises ValueError for a type the harbor cannot take."""
    if content_type is None or content_type in VAGUE_TYPES:
        return None
    if content_type in MP3_TYPES:
        return Kind.MP3
    if content_type in OGG_TYPES:
        return Kind.OGG
    if content_type in AAC_TYPES:
        return Kind.AAC
    raise ValueError(content_type)


def check_type(content_type: str | None, *, takes: str, convert: bool) -> Refuse | None:
    """At the request head: a refusal for a Content-Type this station cannot
    take (``takes`` is its own format in words), else None."""
    try:
        kind = kind_of_type(content_type)
    except ValueError:
        also = f" or {CONVERTS}" if convert else ""
        return Refuse(415, f"this station takes {takes}{also}, not {(content_type or '')[:60]}")
    if kind in (Kind.OGG, Kind.AAC) and not convert:
        return Refuse(415, f"this station takes {takes}, not {content_type} (conversion is off)")
    return None


def sniff(first: bytes) -> Kind | None:
    """The kind the first bytes of a body show, if they show one: Ogg's page
    capture pattern, an ADTS header (sync, layer 0), else MP3 (which the frame
    parser confirms)."""
    if first[:4] == b"OggS":
        return Kind.OGG
    if len(first) >= 2 and first[0] == 0xFF and first[1] & 0xF6 == 0xF0:
        return Kind.AAC  # 12 sync bits, then MPEG-4/2 and layer 00 (MP3 has layer != 0)
    return None


def decide(
    first: bytes,
    *,
    sample_rate: int,
    channels: int,
    takes: str,
    convert: bool,
    ended: bool = False,
) -> Decision | _NeedMore:
    """Pass, convert or refuse a body that begins with ``first`` (``ended``:
    that is all of it). NEED_MORE until the bytes tell."""
    kind = sniff(first)
    if kind is Kind.OGG:  # named by its first packet's start, past the page's segment table
        at = 27 + first[26] if len(first) > 26 else len(first) + 1
        if len(first) < at + 8 and not ended:
            return NEED_MORE
        packet = first[at : at + 8]
        what = "Ogg Opus" if packet == b"OpusHead" else "Ogg"
        what = "Ogg Vorbis" if packet[:7] == b"\x01vorbis" else what
        return _convert(kind, what, takes, convert)
    if kind is Kind.AAC:
        return _convert(kind, "AAC (ADTS)", takes, convert)
    parser = FrameParser()
    parser.feed(first)
    if ended:
        parser.feed(b"")
    tags = 0
    while True:
        try:
            event = parser.next_event()
        except FrameError:
            return _no_audio(len(first))
        if isinstance(event, Skipped) and event.what not in ("junk", "cut frame"):
            tags = min(TAGS_LIMIT, tags + event.length)
        if event is NEED_DATA:
            if len(first) >= SNIFF_LIMIT + tags or parser.gave_up:
                return _no_audio(len(first))
            return NEED_MORE
        if event is END:
            return _no_audio(len(first))
        if isinstance(event, Frame):
            h = event.header
            if (
                h.layer == 3
                and not h.free_format
                and (h.sample_rate, h.channels)
                == (
                    sample_rate,
                    channels,
                )
            ):
                return Pass()
            mode = "stereo" if h.channels == 2 else "mono"
            layer = "MP3" if h.layer == 3 else f"MPEG layer {h.layer}"
            free = " (free format)" if h.free_format else ""
            return _convert(Kind.MP3, f"{layer} at {h.sample_rate} Hz {mode}{free}", takes, convert)


def _convert(kind: Kind, what: str, takes: str, convert: bool) -> Decision:
    if convert:
        return Convert(kind, what)
    return Refuse(415, f"this station takes {takes}, not {what} (conversion is off)")


def _no_audio(size: int) -> Refuse:
    return Refuse(415, f"no audio this station can take in the first {size} bytes")
