"""A DJ's audio converted live to the station's MP3, with libvlc.

:class:`LiveConverter` runs one DJ's set through libvlc while they are on:
the harbor (the engine's thread) hands it the body's bytes with :meth:`feed`,
which only appends them to a bounded buffer; libvlc's own input thread reads
them through a read callback (``libvlc_media_new_callbacks``), decodes
(mpg123, vorbis, opus, faad), resamples (soxr) and encodes with lame to the
station's bitrate, rate and channels, writing bare MP3 frames into a pipe;
the converter's thread reads the pipe, walks its frames
(:class:`~pushsource.core.frames.FrameParser`) and hands them on in batches.
Nothing of it runs on the engine's thread, and it uses CPU only while the
DJ is connected: the threads end with the set.

The sout chain is the file Transcoder's (:mod:`pushsource.workers.transcode`)
writing to the pipe instead of a file. One libvlc option matters for
latency: ``--sout-mux-caching`` (1500 ms by default) holds the first 1.5 s of
a stream before the muxer writes anything; here it is 10 ms. The demuxers
still read in blocks (Ogg: 8500 bytes, about 0.5 s at 128 kbps), so converted
Ogg and AAC arrive in bursts; the station machine holds a converted DJ's
frames a burst longer (:meth:`~pushsource.core.live.LiveMixin.live_audio`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from pushsource.core import liveformat
from pushsource.core.frames import END, NEED_DATA, Frame, FrameHeader, FrameParser
from pushsource.errors import FrameError, PushsourceError
from pushsource.workers.vlc import INSTANCE_OPTIONS, import_vlc

log = logging.getLogger("pushsource")

#: Body bytes waiting for libvlc, at most (about 30 s of 320 kbps): a DJ
#: pushing faster than real time loses the newest beyond it (and the station
#: holds only half a second of converted audio anyway).
MAX_PENDING: Final = 1 << 20
#: No frame out of libvlc this long after the first byte in: it cannot decode it.
NO_OUTPUT: Final = 8.0
#: After a read of the pipe, more that comes within this long joins the batch
#: (libvlc writes a burst as many small writes).
GATHER: Final = 0.02
#: Seconds between looks at libvlc's state.
POLL: Final = 0.1
#: The muxer waits this long (ms) before its first write (libvlc: 1500).
MUX_CACHING: Final = 10

Hand = Callable[[FrameHeader, list[bytes]], None]

_instance_lock = threading.Lock()
_instance: Any = None


def shared_instance() -> Any:
    """The process's libvlc instance for live conversion, made on first use
    (loading the plugins takes a moment: never on the engine's thread).
    Raises PushsourceError."""
    global _instance
    with _instance_lock:
        if _instance is None:
            vlc = import_vlc()
            options = [*INSTANCE_OPTIONS, f"--sout-mux-caching={MUX_CACHING}"]
            instance = vlc.Instance(options)
            if instance is None:
                raise PushsourceError("libvlc failed to start (is vlc-plugin-base installed?)")
            _instance = instance
        return _instance


def sout_chain(sample_rate: int, channels: int, bitrate: int, fd: int) -> str:
    """The transcode chain to bare MP3 frames of the station's format into ``fd``."""
    return (
        f":sout=#transcode{{acodec=mp3,ab={bitrate},channels={channels},"
        f"samplerate={sample_rate}}}:std{{access=file,mux=dummy,dst=/dev/fd/{fd}}}"
    )


class LiveConverter:
    """One DJ's audio in, station-format MP3 frames out (see the module).

    ``hand(header, frames)`` and ``failed(line)`` are called on the
    converter's thread; the harbor passes them on to the engine's thread.
    ``failed`` is called at most once, and then nothing more is handed.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        bitrate: int,
        *,
        hand: Hand,
        failed: Callable[[str], None],
        name: str = "dj",
    ) -> None:
        self.sample_rate, self.channels, self.bitrate = sample_rate, channels, bitrate
        self._hand = hand
        self._failed = failed
        self._name = name
        self._cond = threading.Condition()
        self._pending = bytearray()
        self._ended = False  # the DJ's body ended: libvlc gets EOF once it has read the rest
        self._stopped = False  # hang up: stop at once, hand nothing more
        #: stop() was called, or it failed: frames handed before, still on their
        #: way to the engine's thread, are not to go on air either.
        self.hung_up = False
        self.fed = 0  # bytes given to feed()
        self.dropped = 0  # bytes feed() dropped (the buffer was full)
        self.frames_out = 0
        self.first_in: float | None = None  # monotonic: the first byte fed
        self.first_out: float | None = None  # ... and the first frame handed
        self._thread = threading.Thread(
            target=self._run, name=f"pushsource-live-{name}", daemon=True
        )
        # libvlc calls these from its input thread; kept here so they live as
        # long. Made on the converter's thread: importing python-vlc loads libvlc.
        self._read_cb: Any = None
        self._close_cb: Any = None

    # -- the harbor's side (the engine's thread): never blocks

    def start(self) -> None:
        self._thread.start()

    def feed(self, data: bytes) -> bool:
        """More of the body (b"": it ended). False if the buffer was full and
        ``data`` was dropped."""
        with self._cond:
            if not data:
                self._ended = True
            elif len(self._pending) + len(data) > MAX_PENDING:
                self.dropped += len(data)
                return False
            else:
                if self.first_in is None:
                    self.first_in = time.monotonic()
                self._pending += data
                self.fed += len(data)
            self._cond.notify()
        return True

    def stop(self) -> None:
        """Hang up: nothing more is handed; libvlc stops on the converter's thread."""
        with self._cond:
            self._stopped = self.hung_up = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- libvlc's input thread

    def _read(self, opaque: Any, buf: Any, length: int) -> int:
        with self._cond:
            while not self._pending and not self._ended and not self._stopped:
                self._cond.wait(0.5)
            if self._stopped:
                return -1
            n = min(length, len(self._pending))
            if n:
                ctypes.memmove(buf, bytes(self._pending[:n]), n)
                del self._pending[:n]
            return n  # 0: the end of the body

    # -- the converter's thread

    def _run(self) -> None:
        try:
            self._convert()
        except Exception as exc:  # a converter that dies must say so, never take the engine
            log.exception("live: converting %s's audio failed", self._name)
            self._fail(f"conversion failed: {exc}")

    def _fail(self, line: str) -> None:
        with self._cond:
            if self._stopped:
                return
            self._stopped = self.hung_up = True
        self._failed(line)

    def _convert(self) -> None:
        vlc = import_vlc()
        instance = shared_instance()
        self._read_cb = vlc.CallbackDecorators.MediaReadCb(self._read)
        self._close_cb = vlc.CallbackDecorators.MediaCloseCb(lambda opaque: None)
        out, into = os.pipe()
        media = player = None
        try:
            media = instance.media_new_callbacks(None, self._read_cb, None, self._close_cb, None)
            media.add_option(sout_chain(self.sample_rate, self.channels, self.bitrate, into))
            player = instance.media_player_new()
            player.set_media(media)
            if player.play() == -1:
                self._fail("libvlc could not start converting")
                return
            self._pump(vlc, player, out)
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify()
            if player is not None:
                player.stop()  # joins libvlc's input thread; closes its end of the pipe
                player.release()
            if media is not None:
                media.release()
            os.close(into)
            os.close(out)

    def _pump(self, vlc: Any, player: Any, out: int) -> None:
        parser = FrameParser()
        state = vlc.State
        over = False
        while not over:
            if self._stopped:
                return
            ready, _, _ = select.select([out], [], [], POLL)
            data = b""
            while ready:
                data += os.read(out, 1 << 16)
                ready, _, _ = select.select([out], [], [], GATHER)
            if data:
                parser.feed(data)
                self._frames(parser)
                continue
            now = player.get_state()
            if now == state.Error:
                self._fail("libvlc cannot decode it")
                return
            over = now in (state.Ended, state.Stopped)
            first_in = self.first_in
            if (
                self.first_out is None
                and first_in is not None
                and time.monotonic() - first_in > NO_OUTPUT
            ):
                self._fail(f"no audio came out of it in {NO_OUTPUT:.0f} s")
                return
        while select.select([out], [], [], 0)[0]:  # what libvlc wrote before it ended
            data = os.read(out, 1 << 16)
            if not data:
                break
            parser.feed(data)
        parser.feed(b"")
        self._frames(parser)
        if self.first_out is None and not self._stopped:
            self._fail("no audio came out of it")
        elif not self._ended:  # libvlc gave up mid-set: the DJ must not hold the slot
            self._fail("libvlc stopped converting it")

    def _frames(self, parser: FrameParser) -> None:
        frames: list[bytes] = []
        header: FrameHeader | None = None
        while True:
            try:
                event = parser.next_event()
            except FrameError:
                break
            if event is NEED_DATA or event is END:
                break
            if isinstance(event, Frame):
                if header is not None and event.header.samples != header.samples:
                    self._give(header, frames)
                    frames = []
                if not frames:
                    header = event.header
                frames.append(event.data)
        if header is not None:
            self._give(header, frames)

    def _give(self, header: FrameHeader, frames: list[bytes]) -> None:
        if not frames or self._stopped:
            return
        if self.first_out is None:
            self.first_out = time.monotonic()
            took = self.first_out - (self.first_in or self.first_out)
            log.info(
                "live: %s's first converted frames %.2f s after their first byte", self._name, took
            )
        self.frames_out += len(frames)
        self._hand(header, frames)


class Intake:
    """One DJ connection's body (the engine's thread): its first bytes sniffed
    (:func:`~pushsource.core.liveformat.decide`), then passed through as
    they are, or fed to a converter, or refused.

    ``convert(decision)`` is called once for audio to convert and returns the
    started converter; ``refuse(decision)`` once for a body that cannot go on.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        channels: int,
        takes: str,
        convert: bool,
        start: Callable[[liveformat.Convert], LiveConverter],
        refuse: Callable[[liveformat.Refuse], None],
    ) -> None:
        self._rate, self._channels, self._takes = sample_rate, channels, takes
        self._may_convert = convert
        self._start = start
        self._refuse = refuse
        self._first = bytearray()
        self.passing = False
        self.done = False  # refused, or the end came
        self.converter: LiveConverter | None = None
        self.decision: liveformat.Decision | None = None

    def take(self, data: bytes) -> list[bytes]:
        """Bytes of the body (b"": its end). Returns what to pass through as
        MP3 in the station's format, in order (b"" last, for the end) once
        the first bytes said so; [] while sniffing, converting or refused."""
        if self.passing:
            return [data]
        if self.done:
            return []
        converter = self.converter
        if converter is not None:
            if not converter.feed(data) and converter.dropped == len(data):
                log.info("live: %s sends faster than it is converted: dropping", converter._name)
            if not data:
                self.done = True
            return []
        self._first += data
        decision = liveformat.decide(
            bytes(self._first),
            sample_rate=self._rate,
            channels=self._channels,
            takes=self._takes,
            convert=self._may_convert,
            ended=not data,
        )
        if decision is liveformat.NEED_MORE:
            return []
        assert not isinstance(decision, liveformat._NeedMore)
        self.decision = decision
        first, self._first = bytes(self._first), bytearray()
        if isinstance(decision, liveformat.Pass):
            self.passing = True
            return [first, b""] if not data else [first]
        if isinstance(decision, liveformat.Refuse):
            self.done = True
            self._refuse(decision)
            return []
        self.converter = converter = self._start(decision)
        converter.feed(first)
        if not data:
            converter.feed(b"")
            self.done = True
        return []

    def close(self) -> None:
        """The connection is gone: stop converting (the rest of the set is
        never handed)."""
        self.done = True
        if self.converter is not None:
            self.converter.stop()
