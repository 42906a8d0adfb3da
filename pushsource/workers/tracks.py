"""One file of the queue: its title and facts from the tags, its frames from disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import mutagen
import mutagen.apev2
import mutagen.easyid3

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser, FrameRun, Skipped
from pushsource.core.gain import apply_gain
from pushsource.errors import FrameError, TrackError
from pushsource.workers.state import FileStamp

if TYPE_CHECKING:  # loudness.py needs this module's neighbours at import time
    from pushsource.workers.loudness import TrackGain

log = logging.getLogger("pushsource.tracks")

CHUNK: Final = 16 * 1024


@dataclass(frozen=True)
class TrackInfo:
    """What the tags say about a file."""

    title: str
    duration: float | None  # seconds
    bitrate: int | None  # kbps, the average for VBR


def read_info(path: Path) -> TrackInfo:
    """Title (``Artist - Title``, else the title, else the file name without
    extension), duration and bitrate from the file's tags. Does not raise."""
    artist = title = ""
    duration: float | None = None
    bitrate: int | None = None
    try:
        audio: Any = mutagen.File(path, easy=True)
    except Exception as exc:  # mutagen raises many kinds on damaged files
        log.debug("%s: no tags read: %s", path, exc)
        audio = None
    if audio is not None:
        artist, title = _first(audio.tags, "artist"), _first(audio.tags, "title")
        info = getattr(audio, "info", None)
        duration = getattr(info, "length", None) or None
        rate = getattr(info, "bitrate", None)
        bitrate = round(rate / 1000) if rate else None
    if not title and audio is not None and audio.tags is not None and "TIT2" in audio.tags:
        # Formats without "easy" keys for their ID3 tags (WAVE, AIFF): raw frames.
        artist, title = _first(audio.tags, "TPE1"), _first(audio.tags, "TIT2")
    if audio is None:
        try:  # mutagen finds no frame in a free-format MP3, but its ID3 tag is there
            id3: Any = mutagen.easyid3.EasyID3(path)  # type: ignore[no-untyped-call]
            artist, title = _first(id3, "artist"), _first(id3, "title")
        except Exception:  # no ID3 tag either
            pass
    if not title:
        try:  # MP3s sometimes carry APEv2 instead of ID3
            ape: Any = mutagen.apev2.APEv2(path)  # type: ignore[no-untyped-call]
            artist, title = artist or _first(ape, "Artist"), _first(ape, "Title")
        except Exception:  # no APE tag is the common case
            pass
    name = f"{artist} - {title}" if artist and title else title or path.stem
    return TrackInfo(title=name, duration=duration, bitrate=bitrate)


def _first(tags: Any, key: str) -> str:
    if tags is None:
        return ""
    try:
        values = tags[key]
    except (KeyError, ValueError):
        return ""
    items = values if isinstance(values, list) else list(values)
    return str(items[0]).strip() if items else ""


_warned: dict[tuple[Path, FileStamp | None, str], None] = {}


def skipped(exc: TrackError) -> bool:
    """Say once that a file is skipped, and why. The same version of a file
    can be refused twice (once ahead of time, once when its turn comes).
    Returns whether this was the first time."""
    key = (exc.path, FileStamp.of(exc.path), exc.reason)
    if key in _warned:
        return False
    if len(_warned) > 1000:
        _warned.clear()
    _warned[key] = None
    fields = {"event": "file_skipped", "file": exc.path.name, "error": exc.reason}
    log.warning("skipped %s: %s", exc.path, exc.reason, extra=fields)
    return True


class Track:
    """An open file and its frames, read lazily.

    :meth:`open` checks the file before anything is sent: it raises TrackError
    unless an audio frame is found. After that, :meth:`next_frame` never
    raises: a read error ends the track early with a warning.

    With a ``gain``, every frame it hands out has that many global_gain steps
    added (pushsource.core.gain): same lengths and offsets, another level.
    """

    def __init__(
        self,
        path: Path,
        *,
        play: Path | None = None,
        chunk: int = CHUNK,
        gain: TrackGain | None = None,
    ) -> None:
        """``path`` is the file in the folder (its tags give the title); ``play``
        the MP3 to read frames from, if not that one (a converted copy)."""
        self.path = path
        self.play = play if play is not None else path
        self.gain = gain  # the level change applied to its frames, if any
        self._steps = gain.steps if gain is not None else 0
        self.info = TrackInfo(title=path.stem, duration=None, bitrate=None)
        self.resumed = False  # opened part-way through, to go on where a stream broke
        self.stamp: FileStamp | None = None  # the version of the file we opened
        self._chunk = chunk
        self._file: BinaryIO | None = None
        self._parser = FrameParser()
        self._first: Frame | None = None
        self._first_taken = False
        self._position = 0
        self._dropped = 0  # frames in another format than the first
        self._pushed: FrameRun | None = None  # handed back by push_back()
        # The last frames read (workers/quiet.py: near-silence at the start of
        # the next chunk decodes with them) and the file offset they end at.
        self.context = b""
        self.context_end = -1
        #: Copies of it in other outputs' formats, read as it plays: closed with it.
        self.companions: list[Track] = []
        #: Trimming its digital silence (pushsource.workers.feed.trim_start,
        #: read_trimmed): on, seconds dropped at each end, a chunk read ahead
        #: that could not join the one before it (the next read hands it out).
        self.trim = False
        self.trimmed_start = 0.0
        self.trimmed_end = 0.0
        self.held: object = None

    def __repr__(self) -> str:
        return f"Track({str(self.path)!r})"

    @property
    def first(self) -> Frame:
        """The first audio frame (after open)."""
        assert self._first is not None, "Track.open() first"
        return self._first

    @property
    def gain_steps(self) -> int:
        """global_gain steps added to every granule (0: the frames as they are)."""
        return self._steps

    @property
    def gain_db(self) -> float | None:
        """The gain applied, in dB; None when the track is not levelled."""
        return None if self.gain is None else self.gain.db

    @property
    def position(self) -> int:
        """Byte offset of the next frame next_frame() will return: where to
        reopen the file to go on from here."""
        return self.first.offset if not self._first_taken else self._position

    def open(self, offset: int = 0) -> Track:
        """Open the file (at ``offset``, a frame boundary), read its tags and
        find its first frame. Raises TrackError."""
        try:
            self._file = self.play.open("rb")
            if offset:
                self._file.seek(offset)
        except FileNotFoundError:
            raise TrackError(self.path, "file is gone") from None
        except IsADirectoryError:
            raise TrackError(self.path, "is a directory") from None
        except OSError as exc:
            raise TrackError(self.path, exc.strerror or str(exc)) from None
        self._parser = FrameParser(offset)
        self.resumed = offset > 0
        self.stamp = FileStamp.of(self.path)  # the folder's file: what "played" means
        self.info = read_info(self.path)
        if self.play != self.path:
            # A converted copy: the title is the folder file's, the bitrate and
            # length the copy's (what goes on air).
            copy = read_info(self.play)
            self.info = TrackInfo(
                title=self.info.title,
                duration=copy.duration or self.info.duration,
                bitrate=copy.bitrate,
            )
        try:
            self._first = self._read_frame()
        except (FrameError, OSError) as exc:
            self.close()
            reason = str(exc) if isinstance(exc, FrameError) else (exc.strerror or str(exc))
            raise TrackError(self.path, reason) from None
        if self._first is None:  # only possible if the file shrank under us
            self.close()
            raise TrackError(self.path, "no MPEG audio frame found")
        return self

    def next_frame(self) -> Frame | None:
        """The next audio frame (``first`` comes first), or None at the end.
        Does not raise."""
        run = self.next_run(1)
        if run is None:
            return None
        if run.count == 1 and run.offset == self.first.offset:
            return self.first
        return Frame(run.offset, run.header, run.data)

    def next_run(self, limit: int) -> FrameRun | None:
        """The next audio frames, at least one and at most ``limit``, as one
        run (``first`` comes first, on its own), or None at the end. Does not raise."""
        if self._pushed is not None:
            pushed, self._pushed = self._pushed, None
            self._position = pushed.end
            return pushed
        if not self._first_taken:
            self._first_taken = True
            first = self.first
            run: FrameRun | None = FrameRun(first.offset, first.header, first.header, 1, first.data)
        elif self._file is None:
            return None
        else:
            try:
                run = self._read_run(limit)
            except (FrameError, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.warning("%s: stopped early: %s", self.path, reason)
                self.close()
                return None
        if run is not None:
            self._position = run.end
        return run

    def push_back(self, run: FrameRun) -> None:
        """Give back the run next_run() just returned: it comes again next."""
        self._pushed = run
        self._position = run.offset

    def _read_frame(self) -> Frame | None:
        run = self._read_run(1)
        return None if run is None else Frame(run.offset, run.header, run.data)

    def _read_run(self, limit: int) -> FrameRun | None:
        assert self._file is not None
        parser = self._parser
        while True:
            event = parser.next_run(limit)
            if isinstance(event, FrameRun):
                # Players break when the sample rate or channel count changes
                # mid-stream: a track keeps the format of its first frame.
                if self._first is None or self._first.header.continues(event.header):
                    if self._steps:
                        data = apply_gain(event.data, self._steps)
                        return FrameRun(event.offset, event.header, event.last, event.count, data)
                    return event
                self._dropped += event.count
                continue
            if isinstance(event, Skipped):
                log.debug(
                    "%s: skipped %s, %d bytes at %d",
                    self.path,
                    event.what,
                    event.length,
                    event.offset,
                )
            elif event is NEED_DATA:
                parser.feed(self._file.read(self._chunk))
            elif event is END:
                if parser.gave_up is not None and self._first is not None:
                    log.warning(
                        "%s: ended at byte %d: %s", self.path, parser.offset, parser.gave_up
                    )
                self.close()
                return None

    @property
    def closed(self) -> bool:
        """Closed (or never opened): no more frames to read."""
        return self._file is None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._dropped:
            log.warning("%s: dropped %d frames that change the format", self.path, self._dropped)
            self._dropped = 0
