"""A sans-IO MPEG audio frame parser.

Feed it bytes with :meth:`FrameParser.feed` (``b""`` marks the end of input) and
pull events with :meth:`FrameParser.next_event`: a :class:`Frame` of audio, a
:class:`Skipped` span (tags, header frames, junk), :data:`NEED_DATA` or
:data:`END`. No file, socket or clock lives here.

What is audio: MPEG-1, MPEG-2 and MPEG-2.5 Layer I/II/III frames (ISO 11172-3,
ISO 13818-3). What is not: ID3v2 (anywhere, with or without footer), ID3v1 and
its "TAG+" extension, APEv1/v2, Lyrics3 v1/v2, and the Xing/Info/VBRI frame
encoders put first (a valid frame that carries a seek table, not sound).

Free format (bitrate index 0, e.g. ``lame --freeformat``) is audio only to a
parser made with ``free_format=True``: its frame length is not in the header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Final

from pushsource.errors import FrameError

__all__ = [
    "END",
    "NEED_DATA",
    "Frame",
    "FrameHeader",
    "FrameParser",
    "FrameRun",
    "Skipped",
    "header_for",
    "parse_header",
    "silent_frame",
]


class MPEGVersion(Enum):
    MPEG1 = "1"
    MPEG2 = "2"
    MPEG25 = "2.5"


# Bitrates in kbps by (version is MPEG-1, layer); index 0 (free format) and 15
# (forbidden) are rejected like mutagen does: a free-format frame has no length
# in its header, and false syncs often land there. FrameParser(free_format=True)
# learns that length from the distance between headers instead.
_BITRATES: Final[dict[tuple[bool, int], tuple[int, ...]]] = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_SAMPLE_RATES: Final[dict[MPEGVersion, tuple[int, int, int]]] = {
    MPEGVersion.MPEG1: (44100, 48000, 32000),
    MPEGVersion.MPEG2: (22050, 24000, 16000),
    MPEGVersion.MPEG25: (11025, 12000, 8000),
}
_VERSION_BITS: Final = {0: MPEGVersion.MPEG25, 2: MPEGVersion.MPEG2, 3: MPEGVersion.MPEG1}
_LAYER_BITS: Final = {1: 3, 2: 2, 3: 1}
MONO: Final = 3  # channel mode value for single channel


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The 4-byte header of one MPEG audio frame, decoded."""

    version: MPEGVersion
    layer: int
    protected: bool  # a 16-bit CRC follows the header
    bitrate: int  # kbps; 0 for free format
    sample_rate: int
    padding: bool
    channel_mode: int  # 0 stereo, 1 joint stereo, 2 dual channel, 3 mono
    length: int  # bytes, header included
    samples: int  # PCM samples per channel this frame decodes to

    @property
    def channels(self) -> int:
        return 1 if self.channel_mode == MONO else 2

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    @property
    def free_format(self) -> bool:
        """Bitrate index 0: the length came from the distance to the next header."""
        return self.bitrate == 0

    def continues(self, other: FrameHeader) -> bool:
        """Whether ``other`` can follow this frame in one stream (same version,
        layer, sample rate and channel count; bitrate and padding may change)."""
        return (
            self.version is other.version
            and self.layer == other.layer
            and self.sample_rate == other.sample_rate
            and (self.channel_mode == MONO) == (other.channel_mode == MONO)
        )

    @property
    def side_info_at(self) -> int:
        """Where Layer III side information starts in the frame: after the
        header, and after the CRC of a protected frame."""
        return 6 if self.protected else 4

    @property
    def side_info_size(self) -> int:
        """Bytes of Layer III side information (ISO 11172-3 2.4.1.7, 13818-3 2.4.1.7)."""
        return self._side_info_size()

    def _side_info_size(self) -> int:
        if self.version is MPEGVersion.MPEG1:
            return 17 if self.channel_mode == MONO else 32
        return 9 if self.channel_mode == MONO else 17


def _decode_header(word: int, free_size: int | None = None) -> FrameHeader | None:
    """The header ``word`` decodes to, or None. Bitrate index 0 (free format)
    is valid only with ``free_size``: the frame's length without padding."""
    if word >> 21 != 0x7FF:
        return None
    version = _VERSION_BITS.get((word >> 19) & 3)
    layer = _LAYER_BITS.get((word >> 17) & 3)
    bitrate_index = (word >> 12) & 0xF
    rate_index = (word >> 10) & 3
    if version is None or layer is None or bitrate_index == 15 or rate_index == 3:
        return None
    if bitrate_index == 0 and free_size is None:
        return None
    if word & 3 == 2:  # reserved emphasis value
        return None
    mpeg1 = version is MPEGVersion.MPEG1
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index]
    sample_rate = _SAMPLE_RATES[version][rate_index]
    padding = bool((word >> 9) & 1)
    if layer == 1:
        length = (12 * bitrate * 1000 // sample_rate + padding) * 4
        samples = 384
    elif layer == 2 or mpeg1:
        length = 144 * bitrate * 1000 // sample_rate + padding
        samples = 1152
    else:  # Layer III of MPEG-2 and MPEG-2.5 carries one granule per frame
        length = 72 * bitrate * 1000 // sample_rate + padding
        samples = 576
    if bitrate_index == 0:
        assert free_size is not None
        length = free_size + padding * _slot(layer)
    return FrameHeader(
        version=version,
        layer=layer,
        protected=not (word >> 16) & 1,
        bitrate=bitrate,
        sample_rate=sample_rate,
        padding=padding,
        channel_mode=(word >> 6) & 3,
        length=length,
        samples=samples,
    )


def _slot(layer: int) -> int:
    """Bytes the padding bit adds: one slot (4 bytes in Layer I, else 1)."""
    return 4 if layer == 1 else 1


#: The fields a free-format stream keeps from frame to frame: all of the header
#: but the padding, private and mode extension bits.
_FREE_FIXED: Final = 0xFFFFFCCF
#: The longest free-format frame looked for: lame writes up to 640 kbps, 2880
#: bytes a frame at 32 kHz (and at 8 kHz MPEG-2.5); room to spare.
MAX_FREE_FRAME: Final = 8192
#: How many candidate next headers are tried for one free-format sync: bounds
#: the work junk full of free-format-looking words can cause.
_FREE_TRIES: Final = 8


def _free_header(data: bytes | bytearray, pos: int, like: FrameHeader) -> FrameHeader | None:
    """The free-format header at ``data[pos:pos+4]`` in the stream of free-format
    frame ``like`` (their frames differ only by padding), or None."""
    if len(data) < pos + 4 or data[pos] != 0xFF or (data[pos + 2] >> 4) != 0:
        return None
    free_size = like.length - like.padding * _slot(like.layer)
    header = _decode_header(int.from_bytes(data[pos : pos + 4], "big"), free_size)
    return header if header is not None and like.continues(header) else None


_header_cache: dict[int, FrameHeader | None] = {}


def parse_header(data: bytes | bytearray, offset: int = 0) -> FrameHeader | None:
    """Decode the frame header at ``data[offset:offset+4]``; None if it is not a
    valid one (or fewer than 4 bytes are there). Does not raise."""
    if len(data) < offset + 4 or data[offset] != 0xFF:
        return None
    word = int.from_bytes(data[offset : offset + 4], "big")
    try:
        return _header_cache[word]
    except KeyError:
        pass
    header = _decode_header(word)
    if len(_header_cache) > 4096:  # junk can produce many distinct words
        _header_cache.clear()
    _header_cache[word] = header
    return header


def header_for(sample_rate: int, channels: int, bitrate: int) -> FrameHeader:
    """The Layer III header of a stream with this format (no padding, no CRC).
    Raises ValueError if MPEG has no such sample rate or bitrate."""
    version = next((v for v, rates in _SAMPLE_RATES.items() if sample_rate in rates), None)
    if version is None:
        raise ValueError(f"MPEG audio has no {sample_rate} Hz sample rate")
    bitrates = _BITRATES[(version is MPEGVersion.MPEG1, 3)]
    if bitrate not in bitrates[1:]:
        choices = ", ".join(map(str, bitrates[1:]))
        raise ValueError(
            f"MPEG-{version.value} Layer III at {sample_rate} Hz has no {bitrate} kbps "
            f"bitrate (choose from {choices})"
        )
    if channels not in (1, 2):
        raise ValueError(f"MPEG audio has 1 or 2 channels, not {channels}")
    version_bits = {v: k for k, v in _VERSION_BITS.items()}[version]
    word = (
        (0x7FF << 21)
        | (version_bits << 19)
        | (1 << 17)  # Layer III
        | (1 << 16)  # no CRC
        | (bitrates.index(bitrate) << 12)
        | (_SAMPLE_RATES[version].index(sample_rate) << 10)
        | ((MONO if channels == 1 else 1) << 6)  # mono, or joint stereo
    )
    header = _decode_header(word)
    assert header is not None
    return header


def roomier(word: bytes, length: int) -> bytes | None:
    """The 4-byte header ``word`` (a Layer III frame's) at the lowest bitrate
    whose frame, padding bit cleared, is at least ``length`` bytes long; None
    if no bitrate of its version is (or ``word`` is no such header). Frames of
    one stream may change bitrate from frame to frame (VBR), so a frame may
    be re-headed to carry more bytes. Does not raise."""
    header = parse_header(word)
    if header is None or header.layer != 3 or header.free_format:
        return None
    value = int.from_bytes(word, "big") & ~((0xF << 12) | (1 << 9))
    for index in range(1, 15):
        candidate = _decode_header(value | (index << 12))
        if candidate is not None and candidate.length >= length:
            return (value | (index << 12)).to_bytes(4, "big")
    return None


def silent_frame(like: FrameHeader) -> bytes:
    """A frame of digital silence in the format of ``like`` (no padding, no CRC).

    Zero side information and zero main data decode to silence in every layer:
    no allocated bits (Layer I/II), zero part2_3_length (Layer III).
    """
    version_bits = {v: k for k, v in _VERSION_BITS.items()}[like.version]
    layer_bits = {v: k for k, v in _LAYER_BITS.items()}[like.layer]
    bitrate_index = _BITRATES[(like.version is MPEGVersion.MPEG1, like.layer)].index(like.bitrate)
    rate_index = _SAMPLE_RATES[like.version].index(like.sample_rate)
    word = (
        (0x7FF << 21)
        | (version_bits << 19)
        | (layer_bits << 17)
        | (1 << 16)  # protection bit set: no CRC
        | (bitrate_index << 12)
        | (rate_index << 10)
        | (like.channel_mode << 6)
    )
    header = _decode_header(word)
    assert header is not None
    return word.to_bytes(4, "big") + bytes(header.length - 4)


@dataclass(frozen=True, slots=True)
class Frame:
    """One audio frame: ``data`` is its exact bytes, header included."""

    offset: int
    header: FrameHeader
    data: bytes


@dataclass(frozen=True, slots=True)
class FrameRun:
    """Consecutive audio frames of one stream format (version, layer, sample
    rate, channel count): ``data`` is their exact bytes, ``count`` how many.
    Bitrate and padding may change from frame to frame."""

    offset: int  # of the first frame
    header: FrameHeader  # the first frame's
    last: FrameHeader  # the last frame's
    count: int
    data: bytes

    @property
    def samples(self) -> int:
        """PCM samples per channel the run decodes to."""
        return self.count * self.header.samples

    @property
    def end(self) -> int:
        """Offset just past the last frame."""
        return self.offset + len(self.data)

    def frames(self) -> Iterator[Frame]:
        """The run as Frame objects, one by one (costly: for checks and slow paths)."""
        data, pos = self.data, 0
        while pos < len(data):
            header = parse_header(data, pos)
            if header is None and self.header.free_format:
                header = _free_header(data, pos, self.header)
            assert header is not None, "a FrameRun holds whole frames only"
            yield Frame(self.offset + pos, header, data[pos : pos + header.length])
            pos += header.length


@dataclass(frozen=True, slots=True)
class Skipped:
    """A span of input that is not audio: ``what`` says which kind."""

    offset: int
    length: int
    what: str  # "id3v2", "id3v1", "apev2", "lyrics3", "xing", "vbri", "junk", "cut frame"


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: next_event() needs more input before it can say anything.
NEED_DATA: Final = _Sentinel("NEED_DATA")
#: The input has ended and every event has been returned.
END: Final = _Sentinel("END")

Event = Frame | Skipped | _Sentinel

#: Consecutive valid, mutually consistent headers needed before a sync is
#: trusted: false syncs inside tags, cover art and junk are common.
SYNC_FRAMES: Final = 3
_TAG_MAGICS: Final = (b"ID3", b"TAG", b"APETAGEX", b"LYRICSBEGIN")
_LONGEST_MAGIC: Final = 11
_MAX_LYRICS3: Final = 1_000_000 + 32  # Lyrics3v2 sizes have six decimal digits
#: Parsed bytes are dropped from the buffer once this many have piled up: a
#: station holds one parser per open file, so this is memory per station.
_COMPACT_AT: Final = 1 << 14
#: The longest run of unexplained bytes (junk) read before giving up: past the
#: last frame it ends the input, before the first it means "no audio". A file
#: with gigabytes of zeros after its audio must not hold up the reader.
MAX_JUNK: Final = 1 << 20
#: The most non-audio bytes (tags and junk together) read between two frames,
#: or before the first: room for big cover art, not for a 2 GB tag.
MAX_GAP: Final = 64 << 20


class FrameParser:
    """Finds the audio frames in a stream of bytes. See the module docstring.

    ``next_event`` raises :class:`FrameError` once, at the end of an input in
    which no audio frame was found; nothing else it does raises.
    """

    def __init__(
        self,
        offset: int = 0,
        *,
        max_junk: int = MAX_JUNK,
        max_gap: int = MAX_GAP,
        free_format: bool = False,
    ) -> None:
        """``offset``: where in its file the input starts (offsets are reported from it).
        ``max_junk``, ``max_gap``: see :data:`MAX_JUNK` and :data:`MAX_GAP`.
        ``free_format``: free-format frames are audio too (else junk): only for
        readers that take lengths from the frames handed out, never from
        :func:`parse_header`, which cannot know them."""
        # bytes, not bytearray: its 4-byte slices are hashable keys for _lengths.
        self._buf = b""
        self._pos = 0  # parse point, index into _buf
        self._base = offset  # absolute offset of _buf[0]
        self._start = offset
        self._eof = False
        self._skip = 0  # bytes of a tag still to discard
        self._locked: FrameHeader | None = None  # header of the last trusted frame
        self._junk_start: int | None = None  # absolute offset where unexplained bytes began
        self._pending: list[Event] = []
        self.frames = 0  # audio frames returned so far
        self._ended = False
        # The fast path of next_run(): frame length by 4-byte header, for the
        # valid headers that continue _lengths_for (one stream format).
        self._lengths: dict[bytes, int] = {}
        self._lengths_for: FrameHeader | None = None
        self._max_junk = max_junk
        self._max_gap = max_gap
        self._gap_start = offset  # absolute offset just past the last frame
        self._free_format = free_format
        # A free-format frame of the stream whose frame length was learned:
        # that length holds for the rest of the input.
        self._free: FrameHeader | None = None
        #: Why the input was given up before its end (too much non-audio data), or None.
        self.gave_up: str | None = None

    @property
    def offset(self) -> int:
        """Absolute offset of the next byte the parser will look at."""
        return self._base + self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add input; an empty ``data`` marks the end of input."""
        if self._eof:
            if data:
                raise RuntimeError("FrameParser.feed() called after the end of input")
            return
        if not data:
            self._eof = True
            return
        if self._pos >= _COMPACT_AT:
            self._buf = self._buf[self._pos :]
            self._base += self._pos
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event:
        """Return the next event. Raises FrameError at the end of an input that
        held no audio frame."""
        while True:
            if self._pending:
                return self._pending.pop(0)
            if self._ended:
                return END
            event = self._step()
            if event is not None:
                return event

    def next_run(self, limit: int = 1 << 30) -> FrameRun | Skipped | _Sentinel:
        """Like :meth:`next_event`, but audio comes as a :class:`FrameRun` of up
        to ``limit`` frames (at least one), so long inputs cost no Python object
        per frame. The frames, skips and errors are exactly next_event()'s.

        Once the strict parser has a sync, frames are walked by a table of the
        headers seen so far; any header not in it, or anything else the strict
        rules look at (the end of the input, a possible Xing/Info/VBRI frame),
        goes back to the strict parser for that frame.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if self._locked is not None and not (self._pending or self._skip or self._ended):
            run = self._fast_run(limit)
            if run is not None:
                return run
        event = self.next_event()
        if isinstance(event, Frame):
            return FrameRun(event.offset, event.header, event.header, 1, event.data)
        return event

    def _fast_run(self, limit: int) -> FrameRun | None:
        """Frames from the parse point that the strict parser would return as
        they are, or None if it must judge the first one itself."""
        locked = self._locked
        assert locked is not None
        lengths = self._lengths
        if self._lengths_for is None or not self._lengths_for.continues(locked):
            lengths.clear()
            self._lengths_for = locked
        buf, start = self._buf, self._pos
        size = len(buf)
        get = lengths.get
        pos = start
        length = get(buf[pos : pos + 4])
        if length is None and (length := self._learn(buf[pos : pos + 4])) is None:
            return None
        # An info frame has its magic at 4+side info(+2) or 36 bytes in: where one
        # of those bytes could start "Xing", "Info" or "VBRI", ask _header_frame_kind.
        info = locked.layer == 3
        at = 4 + locked._side_info_size()
        # Not Layer III: look at the header's own 0xFF instead, which never matches.
        xing, vbri = (at, 36) if info else (0, 0)
        end = size - 4  # the next header must be there
        last = pos
        count = 0
        # A stream may mix free-format frames with fixed-bitrate ones; a run
        # holds one kind, so its frames() can size each from its first header.
        free = self._free is not None
        was_free = free and buf[pos + 2] < 16
        for count in range(limit):  # noqa: B007 (count is the result)
            nxt = pos + length
            if nxt > end:
                break
            if free and (buf[nxt + 2] < 16) != was_free:
                break
            if (
                buf[pos + xing] in b"XI" or buf[pos + xing + 2] in b"XI" or buf[pos + vbri] == 0x56
            ) and _header_frame_kind(buf, pos, locked) is not None:
                break
            # Trusted when the next header is valid too: the strict rule.
            word = buf[nxt : nxt + 4]
            following = get(word)
            if following is None and (following := self._learn(word)) is None:
                break
            last, pos, length = pos, nxt, following
        else:
            count = limit
        if pos == start:
            return None
        first = self._header(buf, start)
        header = self._header(buf, last)
        assert first is not None and header is not None
        self._pos = pos
        self._gap_start = self._base + pos
        self._locked = header
        self.frames += count
        return FrameRun(self._base + start, first, header, count, buf[start:pos])

    def _learn(self, word: bytes) -> int | None:
        """Frame length for a header word that continues the stream, else None."""
        header = self._header(word, 0)
        assert self._lengths_for is not None
        if header is None or not self._lengths_for.continues(header):
            return None
        if len(self._lengths) < 256:  # bitrate x padding x CRC x mode x ...: few
            self._lengths[word] = header.length
        return header.length

    def _header(self, buf: bytes, pos: int) -> FrameHeader | None:
        """parse_header, and free-format headers once their frame length is known."""
        header = parse_header(buf, pos)
        if header is None and self._free is not None:
            header = _free_header(buf, pos, self._free)
        return header

    # -- the state machine -------------------------------------------------

    def _step(self) -> Event | None:
        """Advance by one decision; None means 'loop again'."""
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if self._locked is None and self._too_much(self._base + pos):
            return self._give_up()
        if self._skip:
            n = min(self._skip, avail)
            self._pos += n
            self._skip -= n
            if self._skip:
                return self._starved()
            return None
        if self._locked is not None:
            return self._step_locked(buf, pos, avail)
        return self._step_searching(buf, pos, avail)

    def _too_much(self, upto: int) -> bool:
        """Whether the non-audio run reaching ``upto`` is over a bound."""
        if upto - self._gap_start > self._max_gap:
            self.gave_up = f"more than {_size(self._max_gap)} without audio"
            return True
        if self._junk_start is not None and upto - self._junk_start > self._max_junk:
            self.gave_up = f"more than {_size(self._max_junk)} of data that is not audio"
            return True
        return False

    def _give_up(self) -> Event | None:
        """End the input here: what is left is not read. Raises FrameError if no
        frame was found."""
        at = self._base + self._pos
        self._skip = 0
        self._flush_junk(at)
        self._ended = True
        if self.frames == 0:
            raise FrameError(f"no MPEG audio frame found: {self.gave_up}", at)
        return None

    def _starved(self) -> Event | None:
        """Out of input at the parse point: wait for more, or finish."""
        if not self._eof:
            return NEED_DATA
        self._skip = 0
        end = self._base + len(self._buf)
        if self._junk_start is None and self._pos < len(self._buf):
            self._junk_start = self.offset
        self._pos = len(self._buf)
        self._flush_junk(end)
        self._ended = True
        if self.frames == 0:
            raise FrameError(f"no MPEG audio frame found in {end - self._start} bytes", end)
        return None

    def _step_locked(self, buf: bytes, pos: int, avail: int) -> Event | None:
        assert self._locked is not None
        if avail < 4 and not self._eof:
            return NEED_DATA
        header = self._header(buf, pos)
        if header is None or not self._locked.continues(header):
            self._locked = None  # lost sync: look for tags or a new sync here
            return None
        length = header.length
        if avail < length + _LONGEST_MAGIC and not self._eof:
            return NEED_DATA  # to judge a frame we look at what follows it
        if avail < length:  # the input ends inside this frame
            self._pos = len(buf)
            self._pending.append(Skipped(self._base + pos, avail, "cut frame"))
            return self._starved()
        end = pos + length
        trusted = (
            avail < length + 4  # input ends here or in the next 1-3 bytes
            or self._header(buf, end) is not None
            or _magic_at(buf, end) is not None
        )
        if not trusted and header.free_format:
            moved = self._free_moved(buf, pos)
            if moved is None:
                return NEED_DATA
            if moved:  # another free-format stream: learn its length
                self._locked = None
                return None
        if not trusted and any(buf.find(m, pos + 4, end) >= 0 for m in _TAG_MAGICS):
            # Junk follows and a tag starts inside this frame: the frame was cut
            # short and what we took for its tail is a tag. Drop it.
            self._pos = end
            self._locked = None
            return Skipped(self._base + pos, length, "cut frame")
        self._pos = end
        self._locked = header
        info = _header_frame_kind(buf, pos, header)
        if info is not None:
            return Skipped(self._base + pos, length, info)
        self.frames += 1
        self._gap_start = self._base + end
        return Frame(self._base + pos, header, bytes(buf[pos:end]))

    def _step_searching(self, buf: bytes, pos: int, avail: int) -> Event | None:
        if avail == 0:
            return self._starved()
        if not self._eof and avail < _LONGEST_MAGIC and _could_be_magic(buf, pos):
            return NEED_DATA
        tag = _magic_at(buf, pos)
        if tag is not None:
            return self._start_tag(tag, buf, pos, avail)
        if buf[pos] == 0xFF:
            verdict = self._confirm_sync(buf, pos)
            if verdict is None:
                return NEED_DATA
            if verdict:
                self._flush_junk(self._base + pos)
                self._locked = self._header(buf, pos)
                return None
        # Neither a sync nor a tag: junk. Jump to the next place either could start.
        if self._junk_start is None:
            self._junk_start = self._base + pos
        nxt = _next_candidate(buf, pos + 1)
        self._pos = len(buf) if nxt < 0 else nxt
        return None

    def _confirm_sync(self, buf: bytes, pos: int) -> bool | None:
        """Whether a trusted run of frames starts at pos; None: need more input."""
        first = self._header(buf, pos)
        if first is None:
            if self._free_format and len(buf) - pos >= 4:
                return self._confirm_free(buf, pos)
            return False if len(buf) - pos >= 4 or self._eof else None
        verdict = self._confirm_run(buf, pos, first)
        if verdict is False and first.free_format:  # another stream, another length?
            return self._confirm_free(buf, pos)
        return verdict

    def _confirm_free(self, buf: bytes, pos: int) -> bool | None:
        """Whether a trusted run of free-format frames starts at pos; None: need
        more input.

        A free-format header does not say how long its frame is: the next
        header of the stream says, for the bitrate is fixed and only padding
        changes the length (ISO 11172-3 2.4.2.3). Each header within reach with
        the same fixed fields is tried as that next one; the length a trusted
        run confirms is kept for the rest of the input.
        """
        word = int.from_bytes(buf[pos : pos + 4], "big")
        probe = _decode_header(word, 0)
        if probe is None or not probe.free_format:
            return False
        pad = probe.padding * _slot(probe.layer)
        limit = pos + pad + MAX_FREE_FRAME  # the furthest the next header can be
        prefix, fixed = buf[pos : pos + 2], word & _FREE_FIXED
        at = buf.find(prefix, pos + 4 + pad, limit + 1)
        tries = 0
        while at >= 0 and tries < _FREE_TRIES:
            if len(buf) - at < 4:
                break
            if int.from_bytes(buf[at : at + 4], "big") & _FREE_FIXED == fixed:
                tries += 1
                known, self._free = self._free, _decode_header(word, at - pos - pad)
                assert self._free is not None
                verdict = self._confirm_run(buf, pos, self._free)
                if verdict:
                    self._lengths_for = None  # lengths cached for the old size are wrong
                    return True
                self._free = known
                if verdict is None:
                    return None
            at = buf.find(prefix, at + 1, limit + 1)
        if tries < _FREE_TRIES and len(buf) < limit + 4 and not self._eof:
            return None
        return False

    def _free_moved(self, buf: bytes, pos: int) -> bool | None:
        """Whether the free-format stream at pos goes on within reach with
        another frame length: its next header is not where the length learned
        says, nor does that length go on from the one found (then it is junk
        between frames). None: need more input."""
        limit = pos + 4 + MAX_FREE_FRAME
        if len(buf) < limit + 4 and not self._eof:
            return None
        fixed = int.from_bytes(buf[pos : pos + 4], "big") & _FREE_FIXED
        prefix = buf[pos : pos + 2]
        at = buf.find(prefix, pos + 4, limit)
        while at >= 0 and len(buf) - at >= 4:
            if int.from_bytes(buf[at : at + 4], "big") & _FREE_FIXED == fixed:
                header = self._header(buf, at)
                if header is None:
                    return True
                nxt = at + header.length
                if len(buf) - nxt < 4:
                    return None if not self._eof else nxt != len(buf)
                return self._header(buf, nxt) is None
            at = buf.find(prefix, at + 1, limit)
        return False

    def _confirm_run(self, buf: bytes, pos: int, first: FrameHeader) -> bool | None:
        """Whether the frame ``first`` at pos starts a trusted run; None: need more input."""
        at, count = pos, 0
        header: FrameHeader | None = first
        while header is not None and first.continues(header):
            count += 1
            if count >= SYNC_FRAMES:
                return True
            at += header.length
            if len(buf) - at < 4:
                if not self._eof:
                    return None
                # A short file: a run that ends exactly at the end of input counts.
                return at == len(buf) and count >= 2
            header = self._header(buf, at)
        # A run cut short by a tag (ID3v1 after two frames, say) is trusted too.
        if count >= 2 and header is None:
            magic = _magic_at(buf, at)
            if magic is None and len(buf) - at < _LONGEST_MAGIC and not self._eof:
                return None
            return magic is not None
        return False

    def _start_tag(self, tag: bytes, buf: bytes, pos: int, avail: int) -> Event | None:
        size = _tag_size(tag, buf, pos, self._eof)
        if size is None:
            return NEED_DATA
        if size == 0:  # looked like a tag, is not one: one junk byte
            if self._junk_start is None:
                self._junk_start = self._base + pos
            self._pos = pos + 1
            return None
        self._flush_junk(self._base + pos)
        what = {b"ID3": "id3v2", b"TAG": "id3v1", b"APETAGEX": "apev2"}.get(tag, "lyrics3")
        take = min(size, avail)
        self._pos = pos + take
        self._skip = size - take
        self._pending.append(Skipped(self._base + pos, size, what))
        return None

    def _flush_junk(self, upto: int) -> None:
        if self._junk_start is not None and upto > self._junk_start:
            self._pending.append(Skipped(self._junk_start, upto - self._junk_start, "junk"))
        self._junk_start = None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n & 0xFFFFF else f"{n} bytes"


def _magic_at(buf: bytes, pos: int) -> bytes | None:
    for magic in _TAG_MAGICS:
        if buf.startswith(magic, pos):
            return magic
    return None


def _could_be_magic(buf: bytes, pos: int) -> bool:
    tail = bytes(buf[pos:])
    return any(len(tail) < len(m) and m.startswith(tail) for m in _TAG_MAGICS)


def _next_candidate(buf: bytes, start: int) -> int:
    """Index of the next byte at or after start where a frame or tag could
    begin (or a tag's name is cut off by the end of the buffer), or -1."""
    best = buf.find(b"\xff", start)
    limit = len(buf) if best < 0 else best
    for magic in _TAG_MAGICS:  # ASCII names: none can straddle a 0xFF byte
        # Only a start before `limit` counts; "TAG" also hides inside "APETAGEX".
        i = buf.find(magic, start, limit + len(magic) - 1)
        if i >= 0:
            best = limit = i
    for k in range(min(_LONGEST_MAGIC - 1, len(buf) - start), 0, -1):
        at = len(buf) - k
        if best >= 0 and at >= best:
            break
        if _could_be_magic(buf, at):  # a name cut off by the end of the buffer
            return at
    return best


def _tag_size(tag: bytes, buf: bytes, pos: int, eof: bool) -> int | None:
    """Total size of the tag starting at pos, 0 if it is not really one, None
    if more input is needed to tell."""
    avail = len(buf) - pos
    if tag == b"ID3":
        if avail < 10:
            return 0 if eof else None
        major, revision, flags = buf[pos + 3], buf[pos + 4], buf[pos + 5]
        size_bytes = buf[pos + 6 : pos + 10]
        if major not in (2, 3, 4) or revision == 0xFF or any(b & 0x80 for b in size_bytes):
            return 0
        size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
        footer = 10 if major == 4 and flags & 0x10 else 0
        return 10 + size + footer
    if tag == b"TAG":
        if avail < 4 and not eof:
            return None
        return 227 if buf.startswith(b"TAG+", pos) else 128
    if tag == b"APETAGEX":
        if avail < 32:
            return 0 if eof else None
        size = int.from_bytes(buf[pos + 12 : pos + 16], "little")
        flags = int.from_bytes(buf[pos + 20 : pos + 24], "little")
        if flags & (1 << 29):  # this is the header: items and footer follow
            return 32 + size
        return 32  # a footer met on its own: its items already went by as junk
    # Lyrics3: runs to "LYRICSEND" (v1) or "LYRICS200" (v2).
    for end_magic in (b"LYRICS200", b"LYRICSEND"):
        end = buf.find(end_magic, pos + 11, pos + _MAX_LYRICS3)
        if end >= 0:
            return end + len(end_magic) - pos
    if eof or avail >= _MAX_LYRICS3:
        return 0
    return None


def _header_frame_kind(buf: bytes, pos: int, header: FrameHeader) -> str | None:
    """'xing' or 'vbri' if the frame at pos is an encoder's info frame, else None."""
    if header.layer != 3:
        return None
    at = pos + 4 + header._side_info_size()
    for offset in (at, at + 2):  # some encoders leave room for a CRC, some do not
        if bytes(buf[offset : offset + 4]) in (b"Xing", b"Info"):
            return "xing"
    if buf[pos + 36 : pos + 40] == b"VBRI":
        return "vbri"
    return None
