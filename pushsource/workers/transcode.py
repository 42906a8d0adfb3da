"""One station format: any audio file converted to the station's MP3, with libvlc.

A station streams MP3 frames of one sample rate and channel count. An MP3 that
already has them is played as it is (:func:`needs_transcoding` says False);
anything else (an MP3 at another rate or channel count, a free-format MP3,
FLAC, Ogg Vorbis, Opus, M4A/AAC, WAV...) goes through libvlc's transcode chain to a cached MP3
that then plays like any other (:class:`Transcoder`).

Conversion runs ahead of play time on a background thread: it takes about a
second per minute of audio, far too long for the thread that paces frames.

The libvlc chain, found by experiment with VLC 3.0 on Debian 12
(libvlc5 + vlc-plugin-base)::

    :sout=#transcode{acodec=mp3,ab=128,channels=2,samplerate=44100}
          :std{access=file,mux=dummy,dst="..."}

- ``acodec=mp3`` picks the avcodec encoder, i.e. libmp3lame: Layer III, CBR,
  joint stereo. (``mpga`` would give Layer II from twolame; ``aenc=shine``
  keeps the first and last milliseconds that lame loses, see below, but
  sounds worse and cuts the last frame in half.)
- ``mux=dummy`` writes the encoder's packets as they are: nothing but MPEG
  frames, no container, no tags.
- ``--audio-resampler=soxr``: left alone, the transcode chain picks the
  "ugly" resampler (sample dropping and doubling).
- ``--no-sout-video``/``--no-sout-spu``: otherwise a video track (a music
  video, cover art stored as a stream) is copied raw into the same file.
- Without a clock to follow (no audio or video output in the chain) libvlc
  runs as fast as it can: a 10 s file converts in about 0.3 s, a 60 s one in
  about 1.1 s (roughly 50x real time, most of it lame).

What VLC 3.0's transcode chain loses: it does not drain the encoder at the
end (libmp3lame: "frames left in the queue on closing") and drops the first
decoded block, so a converted file is short by about 30-100 ms at the start
and up to about 200 ms at the end.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import mutagen
import mutagen.mp3
from mutagen.id3 import ID3, TIT2

from pushsource.core.frames import (
    END,
    NEED_DATA,
    Frame,
    FrameHeader,
    FrameParser,
    Skipped,
    header_for,
)
from pushsource.errors import CacheError, ConfigError, FrameError, TrackError
from pushsource.workers.state import FileStamp, station_slug, write_json
from pushsource.workers.tracks import Track, read_info
from pushsource.workers.vlc import LibVLC

if TYPE_CHECKING:  # loudness.py imports this module
    from pushsource.workers.loudness import Leveller, TrackGain

log = logging.getLogger("pushsource.transcode")

#: First bytes of containers that never hold bare MPEG frames: no need to scan
#: them for a frame sync. (MP4/M4A has "ftyp" at offset 4.)
_OTHER_MAGICS: Final = (
    b"fLaC",  # FLAC
    b"OggS",  # Ogg Vorbis, Opus, FLAC
    b"RIFF",  # WAV
    b"FORM",  # AIFF
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM
    b"\x30\x26\xb2\x75",  # ASF / WMA
)
_MPEG_SUFFIXES: Final = frozenset({".mp3", ".mp2", ".mpa", ".mpga"})
#: How many frames strict_bitrate looks at when the tags do not say CBR.
_CBR_SAMPLE_FRAMES: Final = 64
_CHUNK: Final = 64 * 1024
#: Free bytes the cache must still have after a conversion: libvlc writes a
#: frame (under 2 KB) at a time, so with less it may have been cut short.
_ROOM: Final = 64 * 1024


@dataclass(frozen=True)
class StationFormat:
    """What every frame a station sends looks like. Raises ConfigError for a
    format MPEG Layer III cannot carry."""

    sample_rate: int = 44100
    channels: int = 2
    bitrate: int = 128  # kbps

    def __post_init__(self) -> None:
        self.header()

    def header(self) -> FrameHeader:
        """A Layer III frame header of this format. Raises ConfigError."""
        try:
            return header_for(self.sample_rate, self.channels, self.bitrate)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def audio_info(self) -> str:
        """The ``ice-audio-info`` header value."""
        return f"bitrate={self.bitrate};samplerate={self.sample_rate};channels={self.channels}"

    def matches(self, frame: Frame) -> bool:
        """Whether the frame is Layer III at this sample rate and channel count,
        with a bitrate in its header (not free format)."""
        header = frame.header
        return (
            header.layer == 3
            and header.sample_rate == self.sample_rate
            and header.channels == self.channels
            and not header.free_format
        )


def default_cache_dir(station_key: str) -> Path:
    """``$XDG_CACHE_HOME/pushsource/<station>/``, else ``~/.cache/pushsource/...``:
    one folder per station, since pruning keeps only that station's files."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.fspath(Path.home() / ".cache")
    return Path(base) / "pushsource" / station_slug(station_key)


class Resolver:
    """Which MP3 to play for a file of the folder: the file itself when it is
    in the station format, else its converted copy.

    The convert executor calls :meth:`prepare` ahead of play time (converting
    takes seconds); a cue asks :meth:`ready` first and leaves a file that is
    not to the convert executor, then opens it with :meth:`resolve`, which
    answers from what ``prepare`` found.

    With a ``leveller`` (the loudness setting), ``prepare`` also finds the
    gain of the MP3 it will play (measured after conversion, for a converted
    file), which :meth:`gain` then answers.
    """

    def __init__(
        self,
        fmt: StationFormat,
        transcoder: Transcoder,
        *,
        strict_bitrate: bool = False,
        converted: Callable[[float], object] = lambda seconds: None,
        leveller: Leveller | None = None,
    ) -> None:
        self._converted = converted  # told how long each conversion took
        self._fmt = fmt
        self._transcoder = transcoder
        self._strict = strict_bitrate
        self._leveller = leveller
        self._known: dict[Path, tuple[FileStamp | None, Path, TrackGain | None]] = {}

    def prepare(self, path: Path) -> Path:
        """Raises TrackError. Called ahead of a file's turn and again when it
        is opened: the second call finds the first's answer (the Transcoder
        logs the one "converted" line, and only when libvlc ran)."""
        stamp = FileStamp.of(path)
        known = self._fresh(path, stamp)
        if known is not None:
            return known[1]
        if needs_transcoding(path, self._fmt, strict_bitrate=self._strict):
            started = time.monotonic()
            runs = self._transcoder.conversions
            play = self._transcoder.convert(path)
            if self._transcoder.conversions != runs:  # not a cache hit
                self._converted(time.monotonic() - started)
        else:
            play = path
        gain = None
        if self._leveller is not None:  # both are in the station format now
            gain = self._leveller.gain(path, play, self._fmt.header())
        self._remember(path, (stamp, play, gain))
        return play

    def ready(self, path: Path) -> bool:
        """Whether :meth:`prepare` would answer at once: known already, or an
        MP3 in the station format with no loudness to measure. False when it
        may have to convert or measure (a cached answer is quick, but it is
        the convert executor's to find)."""
        stamp = FileStamp.of(path)
        if self._fresh(path, stamp) is not None:
            return True
        if self._leveller is not None:
            return False
        try:
            if needs_transcoding(path, self._fmt, strict_bitrate=self._strict):
                return False
        except TrackError:
            return True  # the cue says why, in its one line
        self._remember(path, (stamp, path, None))  # what prepare() would find: played as it is
        return True

    def _fresh(
        self, path: Path, stamp: FileStamp | None
    ) -> tuple[FileStamp | None, Path, TrackGain | None] | None:
        """What is known of ``path``, if the file has not changed since."""
        known = self._known.get(path)
        if known is not None and known[0] == stamp and stamp is not None and known[1].is_file():
            return known
        return None

    def _remember(self, path: Path, known: tuple[FileStamp | None, Path, TrackGain | None]) -> None:
        self._known[path] = known
        if len(self._known) > 10_000:  # only the next few files matter
            self._known.pop(next(iter(self._known)))

    def resolve(self, path: Path) -> Path:
        """Raises TrackError."""
        return self._get(path)[1]

    def gain(self, path: Path) -> TrackGain | None:
        """The gain to play ``path`` with (None: as it is). Raises TrackError."""
        return self._get(path)[2]

    def _get(self, path: Path) -> tuple[FileStamp | None, Path, TrackGain | None]:
        known = self._known.get(path)
        if known is not None and known[0] == FileStamp.of(path):
            return known
        self.prepare(path)
        return self._known[path]


def needs_transcoding(path: Path, fmt: StationFormat, *, strict_bitrate: bool = False) -> bool:
    """False only for an MP3 (by content, not name) whose sample rate and
    channel count are the station's; with ``strict_bitrate``, it must also be
    CBR at the station's bitrate. True for any other file. Raises TrackError
    if the file cannot be read."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except FileNotFoundError:
        raise TrackError(path, "file is gone") from None
    except IsADirectoryError:
        raise TrackError(path, "is a directory") from None
    except OSError as exc:
        raise TrackError(path, exc.strerror or str(exc)) from None
    if head.startswith(_OTHER_MAGICS) or head[4:8] == b"ftyp":
        return True
    track = Track(path)
    try:
        track.open()
    except TrackError:
        if path.suffix.lower() in _MPEG_SUFFIXES and not _free_format(path):
            raise  # named MPEG, is no other container: our parser's reason says it best
        # Readable (we just read it) but no MPEG frames with a bitrate in their
        # headers: libvlc may know it. It decodes free format, which many
        # players do not (ffmpeg does not), and whose bitrate (lame: up to 640
        # kbps) is not the one the station declares: converted, it plays anywhere.
        return True
    try:
        if not fmt.matches(track.first):
            return True
        return strict_bitrate and not _is_cbr_at(track, fmt.bitrate)
    finally:
        track.close()


def _free_format(path: Path) -> bool:
    """Whether the first audio frames of ``path`` are free format (bitrate
    index 0, see pushsource.core.frames). Does not raise."""
    parser = FrameParser(free_format=True)
    try:
        with path.open("rb") as file:
            while True:
                event = parser.next_event()
                if isinstance(event, Frame):
                    return event.header.free_format
                if event is NEED_DATA:
                    parser.feed(file.read(_CHUNK))
                elif event is END:
                    return False
    except (OSError, FrameError):
        return False


def _is_cbr_at(track: Track, bitrate: int) -> bool:
    try:
        audio: Any = mutagen.mp3.MP3(track.path)  # type: ignore[no-untyped-call]
        mode = audio.info.bitrate_mode
    except Exception:  # mutagen raises many kinds on damaged files
        mode = mutagen.mp3.BitrateMode.UNKNOWN
    if mode in (mutagen.mp3.BitrateMode.VBR, mutagen.mp3.BitrateMode.ABR):
        return False
    if mode == mutagen.mp3.BitrateMode.CBR:
        return track.first.header.bitrate == bitrate
    # No Xing/Info/VBRI frame to ask (lame -t, many old encoders): look at the first frames.
    for _ in range(_CBR_SAMPLE_FRAMES):
        frame = track.next_frame()
        if frame is None:
            break
        if frame.header.bitrate != bitrate:
            return False
    return True


class Transcoder:
    """Converts files to the station format with libvlc and caches the results.

    Cache files are ``<key>.mp3`` in ``cache_dir``, where the key is a hash of
    the source's resolved path, size, modification time and the format; each
    has a ``<key>.json`` beside it naming its source, so :meth:`prune` can tell
    which are stale. The directory belongs to one station: :meth:`prune`
    removes whatever the station no longer needs.

    Thread safety: every method takes one lock, so calls from several threads
    run one after the other. The station calls :meth:`convert` from a single
    background worker; it blocks for as long as libvlc takes.
    """

    def __init__(self, cache_dir: Path, fmt: StationFormat, *, timeout: float = 600.0) -> None:
        self.cache_dir = cache_dir
        self.format = fmt
        self.timeout = timeout
        #: How many times libvlc actually ran (a cache hit does not count).
        self.conversions = 0
        self._lock = threading.Lock()
        self._libvlc: LibVLC | None = None

    def __enter__(self) -> Transcoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release libvlc (its threads and plugins). Does not raise."""
        with self._lock:
            if self._libvlc is not None:
                self._libvlc.close()
                self._libvlc = None

    def convert(self, source: Path) -> Path:
        """The station-format MP3 of ``source``, from the cache or made now.
        Raises TrackError if libvlc cannot decode it, its output is not right,
        or it takes longer than ``timeout``."""
        with self._lock:
            resolved, stamp = _stat(source)
            key = self._key(resolved, stamp)
            target = self.cache_dir / f"{key}.mp3"
            index = target.with_suffix(".json")
            if target.is_file() and index.is_file():
                return target
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=self.cache_dir)
            except OSError as exc:
                raise self._cache_error(source, exc) from None
            os.close(fd)
            partial = Path(name)
            try:
                started = time.monotonic()
                try:
                    self._run(source, partial)
                    seconds = self._verify(source, partial)
                except TrackError:
                    # libvlc does not say when the disk filled up: its output is
                    # just short, and that is not the file's fault.
                    self._check_room(source, partial)
                    raise
                self._check_room(source, partial)  # an MP3 declares no length to check
                if FileStamp.of(source) != stamp:
                    raise TrackError(source, "changed while it was being converted")
                try:
                    # The station reads the title from the file it plays: carry it over.
                    _set_title(partial, read_info(source).title)
                    _fsync(partial)
                    write_json(
                        index,
                        {
                            "source": os.fspath(resolved),
                            "size": stamp.size,
                            "mtime_ns": stamp.mtime_ns,
                            "format": self.format.audio_info(),
                            "seconds": round(seconds, 3),
                        },
                    )
                    os.replace(partial, target)
                except (OSError, mutagen.MutagenError) as exc:
                    raise self._cache_error(source, exc) from None
            finally:
                partial.unlink(missing_ok=True)
            took = time.monotonic() - started
            log.info(
                "converted %s (%.1f s of audio in %.1f s, %.0fx)",
                source,
                seconds,
                took,
                seconds / took if took > 0 else 0,
            )
            return target

    def forget(self, source: Path) -> None:
        """Delete the cache entries of ``source``, every version. Does not raise."""
        wanted = os.fspath(source.resolve())
        with self._lock:
            for index, entry in self._entries():
                if entry is not None and entry.get("source") == wanted:
                    _remove_entry(index)

    def prune(self, keep: Iterable[Path]) -> int:
        """Delete every cache entry whose source is not in ``keep``, is gone or
        has changed since, or that was made for another format; and leftovers
        of interrupted conversions. Returns how many cache files it removed.
        Does not raise."""
        kept = {os.fspath(path.resolve()) for path in keep}
        removed = 0
        with self._lock:
            for index, entry in self._entries():
                if (
                    entry is None
                    or not index.with_suffix(".mp3").exists()  # a crash before the rename
                    or not self._still_wanted(entry, kept)
                ):
                    removed += _remove_entry(index)
            with contextlib.suppress(OSError):
                for path in self.cache_dir.iterdir():
                    if path.name.endswith(".part") or (
                        path.suffix == ".mp3" and not path.with_suffix(".json").exists()
                    ):
                        path.unlink(missing_ok=True)
                        removed += path.suffix == ".mp3"
        return removed

    # -- inside the lock ----------------------------------------------------

    def _cache_error(self, source: Path, exc: Exception) -> CacheError:
        # Not the file's fault: the station plays it on, without this copy.
        reason = str(exc)
        if isinstance(exc, OSError) and exc.strerror:  # without the file name, said already
            reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno else exc.strerror
        return CacheError(source, f"cannot write its conversion to {self.cache_dir}: {reason}")

    def _check_room(self, source: Path, partial: Path) -> None:
        """Raises CacheError if the cache's disk cannot take _ROOM more bytes
        beside libvlc's output: then it was full (or got so) while libvlc wrote."""
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                try:
                    left = _ROOM
                    while left > 0:  # a write to a nearly full disk may be partial
                        written = os.write(fd, bytes(min(left, _CHUNK)))
                        if written <= 0:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        left -= written
                finally:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._cache_error(source, exc) from None

    def _key(self, resolved: Path, stamp: FileStamp) -> str:
        parts = (
            os.fsencode(resolved),
            str(stamp.size).encode(),
            str(stamp.mtime_ns).encode(),
            self.format.audio_info().encode(),
        )
        return hashlib.sha256(b"\0".join(parts)).hexdigest()

    def _still_wanted(self, entry: dict[str, Any], kept: set[str]) -> bool:
        source = entry.get("source")
        if not isinstance(source, str) or source not in kept:
            return False
        if entry.get("format") != self.format.audio_info():
            return False
        return FileStamp.of(Path(source)) == FileStamp(
            entry.get("size", -1), entry.get("mtime_ns", -1)
        )

    def _entries(self) -> Iterator[tuple[Path, dict[str, Any] | None]]:
        """Each index file and what it says (None if unreadable)."""
        try:
            indexes = sorted(self.cache_dir.glob("*.json"))
        except OSError:
            return
        for index in indexes:
            try:
                entry = json.loads(index.read_text("utf-8"))
            except (OSError, ValueError):
                entry = None
            yield index, entry if isinstance(entry, dict) else None

    def _run(self, source: Path, output: Path) -> None:
        if self._libvlc is None:
            self._libvlc = LibVLC()
        fmt = self.format
        # The chain parser unquotes \" and \\ inside a quoted value.
        dst = os.fsencode(output).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        chain = (
            (
                f"#transcode{{acodec=mp3,ab={fmt.bitrate},channels={fmt.channels},"
                f'samplerate={fmt.sample_rate}}}:std{{access=file,mux=dummy,dst="'
            ).encode()
            + dst
            + b'"}'
        )
        self.conversions += 1
        outcome = self._libvlc.play_to_end(source, [b":sout=" + chain], timeout=self.timeout)
        if outcome == "timeout":
            raise TrackError(source, f"conversion took longer than {self.timeout:g} s")
        if outcome == "error":
            raise TrackError(source, "libvlc cannot open or decode it")

    def _verify(self, source: Path, output: Path) -> float:
        """Seconds of audio in libvlc's output. Raises TrackError unless it is
        station-format frames of about the length the source declares."""
        frames = wrong = 0
        seconds = 0.0
        try:
            for frame in _frames(output):
                if self.format.matches(frame):
                    frames += 1
                    seconds += frame.header.duration
                else:
                    wrong += 1
        except OSError as exc:
            raise TrackError(source, f"cannot read libvlc's output: {exc.strerror}") from None
        if frames == 0:
            raise TrackError(source, "libvlc found no audio in it that it can decode")
        if wrong:
            raise TrackError(
                source,
                f"libvlc's output has {wrong} frames that are not MP3 at "
                f"{self.format.sample_rate} Hz, {self.format.channels} channels",
            )
        declared = _declared_seconds(source)
        # VLC 3.0 loses up to ~0.3 s at the ends (see the module docstring).
        if declared is not None and seconds < declared - (0.5 + 0.01 * declared):
            raise TrackError(
                source,
                f"decoded only {seconds:.1f} s of the {declared:.1f} s it declares "
                f"(truncated or damaged)",
            )
        return seconds


def _stat(source: Path) -> tuple[Path, FileStamp]:
    """The resolved path and stamp of a readable regular file. Raises TrackError."""
    try:
        st = os.stat(source)
        if not stat.S_ISREG(st.st_mode):
            raise TrackError(source, "not a regular file")
        with source.open("rb"):  # libvlc would only say "no audio"
            pass
        resolved = source.resolve()
    except FileNotFoundError:
        raise TrackError(source, "file is gone") from None
    except OSError as exc:
        raise TrackError(source, exc.strerror or str(exc)) from None
    return resolved, FileStamp(st.st_size, st.st_mtime_ns)


def _frames(path: Path) -> Iterator[Frame]:
    """The MPEG audio frames of a file. Raises OSError."""
    parser = FrameParser()
    with path.open("rb") as file:
        while True:
            try:
                event = parser.next_event()
            except FrameError:  # no frame at all: the caller counts none
                return
            if isinstance(event, Frame):
                yield event
            elif isinstance(event, Skipped):
                log.debug("%s: %s, %d bytes at %d", path, event.what, event.length, event.offset)
            elif event is END:
                return
            else:  # NEED_DATA
                parser.feed(file.read(_CHUNK))


def _declared_seconds(source: Path) -> float | None:
    """The length a container states in its headers (FLAC STREAMINFO, Ogg
    granule, MP4 duration, WAV data size), or None. MP3s are left out: without
    a Xing frame mutagen can only estimate. Does not raise."""
    try:
        audio: Any = mutagen.File(source)
    except Exception:  # mutagen raises many kinds on damaged files
        return None
    if audio is None or isinstance(audio, mutagen.mp3.MP3):
        return None
    length = getattr(getattr(audio, "info", None), "length", None)
    return float(length) if length else None


def _set_title(path: Path, title: str) -> None:
    tags = ID3()  # type: ignore[no-untyped-call]
    tags.add(TIT2(encoding=3, text=title))  # type: ignore[no-untyped-call]
    tags.save(path, v2_version=4, v1=0)


def _fsync(path: Path) -> None:
    with path.open("rb+") as file:
        os.fsync(file.fileno())


def _remove_entry(index: Path) -> int:
    """Remove a cache entry (MP3 first, so no MP3 is left without its index).
    Returns 1 if an MP3 was removed. Does not raise."""
    removed = 0
    with contextlib.suppress(OSError):
        index.with_suffix(".mp3").unlink()
        removed = 1
    with contextlib.suppress(OSError):
        index.unlink()
    return removed
