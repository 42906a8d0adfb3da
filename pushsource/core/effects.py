"""What the station machine is handed and what it hands back.

The workers hand it opened tracks (:class:`Cued`) and their frames in chunks
(:class:`Chunk`; :class:`Alt` for an output in another format); it answers
every event with effects (:class:`Send`, :class:`Wake`, :class:`Read`...)
that the engine carries out. Plain data: nothing here does anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pushsource.core.frames import FrameHeader
from pushsource.errors import IcecastError

# -- the machine's phase -------------------------------------------------------


class Phase(Enum):
    WAITING = "waiting"  # no connection: waiting for a track (or the first-file grace)
    CONNECTING = "connecting"
    ON_AIR = "on air"
    CLOSING = "closing"  # the trailing silence, then Close
    HANGING_UP = "hanging up"  # Close sent, waiting for closed()
    BACKOFF = "backoff"
    DONE = "done"


# -- what the workers hand the machine --------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole frames of one track: ``ends[i]`` is where frame i ends in ``data``."""

    data: bytes
    ends: Sequence[int]
    offset: int  # file offset of data[0]
    last: bool  # the track has no frames after these
    #: Its digitally silent frames (pushsource.core.silence), found on the
    #: workers: runs (start, stop) of frame indexes, stop excluded, in order.
    silent: tuple[tuple[int, int], ...] = ()


class Alt:
    """A track in another output's format (converted ahead, on the workers): a
    window of its frames, read ahead in chunks like the station's own, so an
    hour-long track costs seconds of memory. The window holds frames ``first``
    to ``loaded - 1`` (:meth:`between` gives them); ``handle`` is the workers'
    open copy, positioned after them, until ``last`` (all in).

    Frames forgotten by :meth:`trim` stay in the buffer until they are most
    of it or the next chunk comes: trimming on every Send would otherwise copy
    the whole window each time."""

    __slots__ = ("_base", "_buf", "_ends", "first", "handle", "header", "last", "reading")

    def __init__(
        self,
        data: bytes,
        ends: Sequence[int],
        header: FrameHeader,  # its first frame's: every frame has its samples and rate
        handle: object = None,
        last: bool = True,
        first: int = 0,
        reading: bool = False,  # a read of the next chunk is out
    ) -> None:
        self._buf = data
        self._ends = list(ends)  # _ends[i]: where frame _base + i ends in _buf
        self._base = first  # the frame _buf starts with (at or before first)
        self.first = first
        self.header = header
        self.handle = handle
        self.last = last
        self.reading = reading

    @property
    def window_start(self) -> int:
        """The first frame still held (forgotten ones included: see trim)."""
        return self._base

    @property
    def loaded(self) -> int:
        """The index of the first frame not in the window."""
        return self._base + len(self._ends)

    def _start(self, index: int) -> int:
        """Where frame ``index`` (in the buffer) begins in it."""
        return self._ends[index - self._base - 1] if index > self._base else 0

    def between(self, start: int, stop: int) -> bytes:
        """Frames ``start`` to ``stop - 1``, all in the window."""
        return self._buf[self._start(start) : self._ends[stop - self._base - 1]]

    @property
    def data(self) -> bytes:
        """The window's bytes (a copy: for inspection, not the Send path)."""
        return self._buf[self._start(self.first) :]

    @property
    def ends(self) -> list[int]:
        """Where each of the window's frames ends in :attr:`data`."""
        cut = self._start(self.first)
        return [end - cut for end in self._ends[self.first - self._base :]]

    def add(self, chunk: Chunk) -> None:
        """The next frames, read on the workers; the forgotten ones go (the
        buffer is copied here anyway)."""
        cut = self._start(self.first)
        self._buf = self._buf[cut:] + chunk.data
        base = len(self._buf) - len(chunk.data)
        kept = self._ends[self.first - self._base :]
        self._ends = [end - cut for end in kept] + [base + end for end in chunk.ends]
        self._base = self.first
        self.last = chunk.last
        self.reading = False

    def trim(self, before: int) -> None:
        """Forget the frames before index ``before`` (sent already)."""
        self.first = max(self.first, min(before, self.loaded))
        dead = self.first - self._base
        # Compact only once the dead part is over half the buffer: each copy
        # is paid for by at least as many bytes forgotten since the last one.
        if dead and 2 * self._ends[dead - 1] > len(self._buf):
            cut = self._ends[dead - 1]
            self._buf = self._buf[cut:]
            self._ends = [end - cut for end in self._ends[dead:]]
            self._base = self.first


@dataclass(eq=False)
class Cued:
    """An opened track, its first chunk read. ``handle`` is the workers' (the
    open file); the machine only hands it back in Read and Release."""

    handle: object
    path: Path
    title: str
    duration: float | None
    bitrate: int  # kbps (the tags' average for VBR)
    header: FrameHeader  # its first frame's: every frame has its samples and rate
    chunk: Chunk
    resumed: bool = False  # opened part-way through, to go on after a break
    stamp: object = None  # the file's version when opened (for the play state)
    looped: bool = False  # from the library (idle loop), not the queue: new files go first
    gain_db: float | None = None  # the level change it plays with (loudness), if any
    gain_note: str = ""  # for its log line: "gain +3.0 dB: measured -21.0 LUFS"
    #: Seconds of its audio before chunk.offset (a resumed one): the workers'
    #: estimate from the bytes; the machine's own count after an outage.
    before: float = 0.0
    #: The track for each output in another format, by format key (see Alt).
    alts: dict[str, Alt] = field(default_factory=dict)


# -- effects ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    headers: dict[str, str]


@dataclass(slots=True)  # not frozen: made on every batch, and a frozen init costs twice
class Span:
    """What a stretch of a Send is, for outputs in another format: ``seconds``
    of ``track`` from ``at`` seconds into it, or of silence (track None: idle,
    frames late, closing, or a DJ's frames, ``live``)."""

    track: Cued | None
    at: float
    seconds: float
    live: bool = False


@dataclass(slots=True)  # not frozen: made on every batch, and a frozen init costs twice
class Send:
    data: bytes
    frames: int
    lead: float  # seconds of audio sent ahead of real time after this
    spans: tuple[Span, ...] = ()  # what the data is, in order
    #: (byte of data, title): where a track's first frame is, for titles
    #: that travel inside the stream (its SetTitle follows this Send).
    titles: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Close:
    """Hang up cleanly once the bytes sent have gone; answer with closed()."""


@dataclass(slots=True)  # not frozen: made on every batch, and a frozen init costs twice
class Wake:
    at: float


@dataclass(frozen=True, slots=True)
class SetTitle:
    title: str


@dataclass(frozen=True, slots=True)
class Cue:
    """Open the next track (``resume``: this file at this offset, first); answer with cued()."""

    resume: tuple[Path, int] | None = None


@dataclass(frozen=True, slots=True)
class Read:
    handle: object
    frames: int


@dataclass(frozen=True, slots=True)
class Release:
    handle: object


@dataclass(frozen=True, slots=True)
class Join:
    """Crossfade: frames that stand for the end of one track and the start of
    the next (made on the workers: workers/crossfade.py)."""

    cut_at: int  # file offset of the outgoing track's first frame it replaces
    data: bytes  # whole frames in the station's format
    ends: tuple[int, ...]  # where each frame ends in data
    resume_at: int  # file offset of the incoming track's first frame after it
    skip: int  # the incoming track's frames it replaces (those before resume_at)
    title_at: int  # the frame at the fade's midpoint: the incoming title goes there
    seconds: float  # how long the two tracks sound together
    #: The same join for each output in another format, by format key: its
    #: frames for the same time as ``data`` (see Alt).
    alts: dict[str, Alt] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mix:
    """Make the join from ``outgoing`` into ``incoming`` (their frames as
    (file offset, frame)); answer with joined()."""

    out_track: Cued
    in_track: Cued
    outgoing: tuple[tuple[int, bytes], ...]
    incoming: tuple[tuple[int, bytes], ...]
    fade: float


@dataclass(frozen=True, slots=True)
class Started:
    track: Cued


@dataclass(frozen=True, slots=True)
class Ended:
    track: Cued
    skipped: bool


@dataclass(frozen=True, slots=True)
class State:
    """Connection state for the world: connecting, on air, idle,
    reconnecting, stopped or failed."""

    state: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    error: IcecastError | None = None


Effect = (
    (Connect | Send | Close | Wake | SetTitle | Cue | Read | Release | Started | Ended)
    | Mix
    | State
    | Finished
)
