"""The gain that brings a track to the station's loudness, from its tags or measured once.

A track's gain comes from its ReplayGain tag when it has one (ID3
``TXXX:REPLAYGAIN_TRACK_GAIN`` in any case, ID3 ``RVA2`` as mutagen's EasyID3
writes it, APEv2 or Vorbis comment ``REPLAYGAIN_TRACK_GAIN``; and the peak
beside it). ReplayGain 2.0 gains bring a track to -18 LUFS: the station's
target moves them by ``target + 18``. A track without a tag is measured:
libvlc decodes the MP3 the station will play (the converted copy, for a
converted file) to float samples and libebur128 takes its EBU R128 / ITU
BS.1770 integrated loudness and sample peak. The measurement is cached on
disk by the file's resolved path, size and modification time, so a track is
decoded once, however often it plays.

Decoding runs at about 100x real time, on the prefetch worker ahead of play.
The samples go through a pipe (a FIFO libvlc writes as a file): nothing of
the decoded audio is kept, in memory or on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import math
import os
import re
import select
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mutagen
import mutagen.apev2
from mutagen.id3 import ID3

from pushsource.core.frames import FrameHeader
from pushsource.core.gain import DB_PER_STEP, steps_for
from pushsource.errors import ConfigError, PushsourceError, TrackError
from pushsource.workers.state import FileStamp, write_json
from pushsource.workers.vlc import LibVLC

log = logging.getLogger("pushsource.loudness")

#: ReplayGain 2.0's reference loudness: a tag's gain brings the track there.
REPLAYGAIN_REFERENCE: Final = -18.0
_NUMBER: Final = re.compile(r"^\s*([+-]?\d+(?:[.,]\d*)?|[+-]?[.,]\d+)\s*(?:db)?\s*$", re.I)
_CHUNK: Final = 1 << 16
#: A ReplayGain tag that asks for more than this is more likely broken than
#: right (the track would be quieter than -42 LUFS, next to silence): the
#: track is measured instead, which costs one decode and is right either way.
MAX_TAG_GAIN: Final = 24.0
#: How far a track's integrated loudness can be above its sample peak. The
#: most there is, a full-scale square wave in both channels, is 6.4 LU over
#: (K-weighting lifts the highs); a tag that says more is wrong in one or both.
_LOUDNESS_OVER_PEAK: Final = 10.0


@dataclass(frozen=True)
class Loudness:
    """What a track sounds like: integrated loudness (LUFS; -inf for
    silence) and sample peak (linear, 1.0 is full scale; None: unknown)."""

    lufs: float
    peak: float | None


@dataclass(frozen=True)
class TrackGain:
    """The gain a station applies to one track."""

    steps: int  # global_gain steps added to every granule
    wanted_db: float  # what the target asked for, before rounding and the peak limit
    source: str  # "tag" (ReplayGain) or "measured"
    loudness: float | None  # the track's LUFS (as measured, or as its tag implies)
    peak: float | None

    @property
    def db(self) -> float:
        """The gain applied, in dB (whole steps of 1.505 dB)."""
        return self.steps * DB_PER_STEP

    @property
    def limited(self) -> bool:
        """Whether the peak held a positive gain back (by more than rounding)."""
        return self.wanted_db - self.db > DB_PER_STEP / 2 + 1e-9

    def describe(self) -> str:
        """For the log: "gain -4.5 dB: measured -13.6 LUFS"."""
        why = "ReplayGain tag" if self.source == "tag" else "measured"
        if self.loudness is not None and math.isfinite(self.loudness):
            why += f" {self.loudness:.1f} LUFS"
        if self.limited:
            why += f", held back from {self.wanted_db:+.1f} dB by its peak"
        return f"gain {self.db:+.1f} dB: {why}"


def gain_for(target: float, loudness: Loudness, source: str) -> TrackGain:
    """The gain that brings ``loudness`` to ``target`` LUFS. Does not raise."""
    wanted = target - loudness.lufs if math.isfinite(loudness.lufs) else 0.0
    return TrackGain(steps_for(wanted, loudness.peak), wanted, source, loudness.lufs, loudness.peak)


# -- tags ---------------------------------------------------------------------------


def _number(text: object) -> float | None:
    """A tag's number: "-6.54 dB", "+2,1 dB", "0.988". None if it is none."""
    match = _NUMBER.match(str(text))
    if match is None:
        return None
    value = float(match.group(1).replace(",", "."))
    return value if math.isfinite(value) else None


def read_replaygain(path: Path) -> Loudness | None:
    """The loudness a file's ReplayGain track tags state, or None if it has
    none that can be read. Does not raise."""
    found = _from_id3(path) or _from_ape(path) or _from_vorbis(path)
    if found is None:
        return None
    gain, peak = found
    # Taggers write 0 (RVA2, EasyID3) or -1 for "no peak": none is known.
    return Loudness(REPLAYGAIN_REFERENCE - gain, peak if peak is not None and peak > 0 else None)


def doubt(tagged: Loudness) -> str | None:
    """Why a ReplayGain tag cannot be right, for the log; None if it may be.
    Does not raise."""
    gain = REPLAYGAIN_REFERENCE - tagged.lufs
    if gain > MAX_TAG_GAIN:
        return f"it asks for {gain:+.1f} dB, more than +{MAX_TAG_GAIN:.0f} dB"
    if tagged.peak is not None and tagged.peak > 0:
        peak_db = 20 * math.log10(tagged.peak)
        if tagged.lufs > peak_db + _LOUDNESS_OVER_PEAK:
            return f"a track at {tagged.lufs:.1f} LUFS cannot peak at {peak_db:.1f} dBFS"
    return None


def _from_id3(path: Path) -> tuple[float, float | None] | None:
    try:
        tags: Any = ID3(path)  # type: ignore[no-untyped-call]
    except Exception:  # no ID3 tag (the common case), or a damaged one
        return None
    texts: dict[str, str] = {}
    for frame in tags.getall("TXXX"):
        desc = str(frame.desc).casefold()
        if desc in ("replaygain_track_gain", "replaygain_track_peak") and frame.text:
            texts.setdefault(desc, str(frame.text[0]))
    gain = _number(texts.get("replaygain_track_gain", ""))
    if gain is not None:
        return gain, _number(texts.get("replaygain_track_peak", ""))
    # RVA2 (ID3v2.4): mutagen's EasyID3 keeps replaygain_track_* in RVA2:track,
    # gain in dB, peak 0 until one is set. Channel 1 is the master volume.
    for frame in tags.getall("RVA2"):
        if str(frame.desc).casefold() == "track" and frame.channel == 1:
            return float(frame.gain), float(frame.peak) or None
    return None


def _from_ape(path: Path) -> tuple[float, float | None] | None:
    try:
        tags: Any = mutagen.apev2.APEv2(path)  # type: ignore[no-untyped-call]
    except Exception:  # no APEv2 tag (the common case)
        return None
    return _pair(tags)


def _from_vorbis(path: Path) -> tuple[float, float | None] | None:
    """FLAC and Ogg files, whose tags are converted with them."""
    if path.suffix.casefold() not in (".flac", ".ogg", ".oga", ".opus"):
        return None
    try:
        audio: Any = mutagen.File(path)
    except Exception:  # mutagen raises many kinds on damaged files
        return None
    tags = getattr(audio, "tags", None)
    return None if tags is None else _pair(tags)


def _pair(tags: Any) -> tuple[float, float | None] | None:
    """Gain and peak from a case-insensitive mapping (APEv2, Vorbis comments)."""

    def first(key: str) -> float | None:
        try:
            values = tags[key]
        except (KeyError, ValueError):
            return None
        if isinstance(values, list):
            values = values[0] if values else ""
        return _number(values)

    gain = first("REPLAYGAIN_TRACK_GAIN")
    return None if gain is None else (gain, first("REPLAYGAIN_TRACK_PEAK"))


# -- measuring ------------------------------------------------------------------------

_EBUR128_MODE_I: Final = (1 << 2) | 1
_EBUR128_MODE_SAMPLE_PEAK: Final = (1 << 4) | 1


class _Ebur128:
    """libebur128 (Debian's libebur128-1), the few calls we make, by ctypes."""

    _lib: Any = None

    def __init__(self, channels: int, sample_rate: int) -> None:
        lib = self.load()
        self._state = ctypes.c_void_p(
            lib.ebur128_init(channels, sample_rate, _EBUR128_MODE_I | _EBUR128_MODE_SAMPLE_PEAK)
        )
        if not self._state:
            raise PushsourceError(f"libebur128 cannot measure {channels} x {sample_rate} Hz")
        self.channels = channels

    @classmethod
    def load(cls) -> Any:
        """The library. Raises ConfigError if it is not installed."""
        if cls._lib is None:
            try:  # the soname first: find_library runs ldconfig, which takes a while
                lib = ctypes.CDLL("libebur128.so.1")
            except OSError:
                lib = None
            try:
                lib = lib or ctypes.CDLL(ctypes.util.find_library("ebur128") or "libebur128.so")
            except OSError as exc:
                raise ConfigError(
                    f"libebur128 is not available ({exc}); install libebur128-1, "
                    "which measures loudness for the loudness setting"
                ) from None
            state, double = ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)
            lib.ebur128_init.restype = state
            lib.ebur128_init.argtypes = [ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
            lib.ebur128_destroy.argtypes = [ctypes.POINTER(state)]
            lib.ebur128_add_frames_float.argtypes = [state, ctypes.c_char_p, ctypes.c_size_t]
            lib.ebur128_loudness_global.argtypes = [state, double]
            lib.ebur128_sample_peak.argtypes = [state, ctypes.c_uint, double]
            cls._lib = lib
        return cls._lib

    def add(self, samples: bytes) -> None:
        """Interleaved native float32 samples, whole sample frames."""
        frames = len(samples) // (4 * self.channels)
        if self._lib.ebur128_add_frames_float(self._state, samples, frames) != 0:
            raise PushsourceError("libebur128 refused the samples")

    def result(self) -> Loudness:
        value = ctypes.c_double()
        if self._lib.ebur128_loudness_global(self._state, ctypes.byref(value)) != 0:
            raise PushsourceError("libebur128 has no loudness to give")
        lufs = value.value
        peak = 0.0
        for channel in range(self.channels):
            if self._lib.ebur128_sample_peak(self._state, channel, ctypes.byref(value)) == 0:
                peak = max(peak, value.value)
        return Loudness(lufs, peak)

    def close(self) -> None:
        if self._state:
            self._lib.ebur128_destroy(ctypes.byref(self._state))
            self._state = ctypes.c_void_p()


class Leveller:
    """The gains of a station's tracks, for a target loudness in LUFS.

    Measurements are ``<key>.json`` files in ``cache_dir`` (the station's
    conversion cache's ``loudness`` folder), the key a hash of the played
    file's resolved path, size and modification time. Every method takes one
    lock: the prefetch worker and a track opened without it (a resume) may
    ask at once.
    """

    def __init__(self, target: float, cache_dir: Path, *, timeout: float = 600.0) -> None:
        """Raises ConfigError if libebur128 is missing: a station that asks
        for levelling fails at start, not at its first untagged track."""
        _Ebur128.load()
        self.target = target
        self.cache_dir = cache_dir
        self.timeout = timeout
        #: How many times a file was decoded to be measured (cache hits do not count).
        self.measurements = 0
        self._lock = threading.Lock()
        self._libvlc: LibVLC | None = None

    def close(self) -> None:
        """Release libvlc. Does not raise."""
        with self._lock:
            if self._libvlc is not None:
                self._libvlc.close()
                self._libvlc = None

    def gain(self, path: Path, play: Path, header: FrameHeader) -> TrackGain | None:
        """The gain for ``path`` of the folder, played from ``play`` (itself,
        or its converted copy) whose frames are like ``header``. None, with one
        warning, if it cannot be had: the track then plays as it is. Does not
        raise."""
        tagged = read_replaygain(path)
        why = None if tagged is None else doubt(tagged)
        if why is not None:
            log.warning("%s: ReplayGain tag not believed (%s): measured instead", path, why)
            tagged = None
        try:
            if tagged is not None and (tagged.peak is not None or tagged.lufs >= self.target):
                return gain_for(self.target, tagged, "tag")
            measured = self.measure(play, header, name=path.name)
        except (TrackError, PushsourceError) as exc:
            log.warning("%s: plays without levelling: %s", path, exc)
            return None
        if tagged is not None:  # a tag with no peak: the measured peak limits its gain
            return gain_for(self.target, Loudness(tagged.lufs, measured.peak), "tag")
        return gain_for(self.target, measured, "measured")

    def measure(self, play: Path, header: FrameHeader, *, name: str | None = None) -> Loudness:
        """Loudness and peak of an MP3, from the cache or decoded now (``name``:
        what to call it in the log, if not its own name: a converted copy's
        is a hash). Raises TrackError, or PushsourceError if libebur128 fails."""
        with self._lock:
            try:
                resolved = play.resolve()
                st = os.stat(resolved)
            except OSError as exc:
                raise TrackError(play, exc.strerror or str(exc)) from None
            stamp = FileStamp(st.st_size, st.st_mtime_ns)
            index = self.cache_dir / f"{_key(resolved, stamp)}.json"
            cached = _read_entry(index)
            if cached is not None:
                return cached
            started = time.monotonic()
            loudness = self._decode(play, header)
            if FileStamp.of(play) != stamp:
                raise TrackError(play, "changed while it was being measured")
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                write_json(
                    index,
                    {
                        "source": os.fspath(resolved),
                        "size": stamp.size,
                        "mtime_ns": stamp.mtime_ns,
                        "lufs": loudness.lufs if math.isfinite(loudness.lufs) else None,
                        "peak": loudness.peak,
                    },
                )
            except OSError as exc:  # measured all the same: it just is not kept
                log.warning("cannot keep the loudness of %s in %s: %s", play, self.cache_dir, exc)
            log.info(
                "measured %s: %.1f LUFS, peak %.1f dBFS (in %.1f s)",
                name or play.name,
                loudness.lufs,
                20 * math.log10(loudness.peak) if loudness.peak else -math.inf,
                time.monotonic() - started,
            )
            return loudness

    def prune(self) -> int:
        """Delete measurements of files that are gone or changed since.
        Returns how many. Does not raise."""
        removed = 0
        with self._lock:
            for index in _indexes(self.cache_dir):
                try:
                    entry = json.loads(index.read_text("utf-8"))
                    stamp = FileStamp(int(entry["size"]), int(entry["mtime_ns"]))
                    wanted = FileStamp.of(Path(entry["source"])) == stamp
                except (OSError, ValueError, KeyError, TypeError):
                    wanted = False
                if not wanted:
                    with contextlib.suppress(OSError):
                        index.unlink()
                        removed += 1
        return removed

    def _decode(self, play: Path, header: FrameHeader) -> Loudness:
        """Inside the lock. Raises TrackError, PushsourceError."""
        meter = _Ebur128(header.channels, header.sample_rate)
        try:
            if self._libvlc is None:
                self._libvlc = LibVLC()
            with tempfile.TemporaryDirectory(prefix="pushsource-loudness-") as tmp:
                pipe = Path(tmp) / "pcm"
                os.mkfifo(pipe, 0o600)
                samples = self._play_into(play, pipe, header, meter)
            self.measurements += 1
            if samples == 0:
                raise TrackError(play, "libvlc decoded no audio from it")
            return meter.result()
        finally:
            meter.close()

    def _play_into(self, play: Path, pipe: Path, header: FrameHeader, meter: _Ebur128) -> int:
        """libvlc writes float samples into ``pipe`` on its threads, while this
        one reads them into ``meter``. Returns the sample frames read."""
        assert self._libvlc is not None
        libvlc = self._libvlc
        dst = os.fsencode(pipe).replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        chain = (
            (
                f"#transcode{{acodec=fl32,channels={header.channels},"
                f'samplerate={header.sample_rate}}}:std{{access=file,mux=raw,dst="'
            ).encode()
            + dst
            + b'"}'
        )
        # Opened for reading first (without blocking), so libvlc's open for
        # writing finds a reader; until it does, reads say "end of file".
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
        outcome: list[str] = []
        player = threading.Thread(
            target=lambda: outcome.append(
                libvlc.play_to_end(play, [b":sout=" + chain], timeout=self.timeout)
            ),
            name="pushsource-loudness-decode",
            daemon=True,
        )
        width = 4 * header.channels
        pending = b""
        frames = 0
        try:
            player.start()
            deadline = time.monotonic() + self.timeout + 10
            while time.monotonic() < deadline:
                select.select([fd], [], [], 0.05)
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:  # libvlc has the pipe open, and is working
                    continue
                if chunk:
                    pending += chunk
                    whole = len(pending) - len(pending) % width
                    meter.add(pending[:whole])
                    frames += whole // width
                    pending = pending[whole:]
                elif not player.is_alive():
                    break  # libvlc closed the pipe and is done
                else:
                    time.sleep(0.005)  # not opened yet (or closed, and about to end)
        finally:
            os.close(fd)  # a libvlc still writing gets EPIPE and ends
            player.join(5)
        if outcome != ["ended"]:
            what = outcome[0] if outcome else "no end"
            raise TrackError(play, f"libvlc could not decode it to measure it ({what})")
        return frames


def _key(resolved: Path, stamp: FileStamp) -> str:
    parts = (os.fsencode(resolved), str(stamp.size).encode(), str(stamp.mtime_ns).encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _read_entry(index: Path) -> Loudness | None:
    try:
        entry = json.loads(index.read_text("utf-8"))
        lufs = entry["lufs"]
        peak = entry["peak"]
        return Loudness(
            -math.inf if lufs is None else float(lufs), None if peak is None else float(peak)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _indexes(folder: Path) -> Iterable[Path]:
    try:
        return sorted(folder.glob("*.json"))
    except OSError:
        return []
