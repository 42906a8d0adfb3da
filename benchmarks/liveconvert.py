"""What converting a DJ live costs, and how soon their audio is on air.

``python -m benchmarks.liveconvert`` makes 60 s of music-like audio (pink
noise: a busy bit reservoir, no codec's easy case) in the four
formats a DJ may send that the harbor converts (MP3 at 48 kHz mono 64 kbps,
Ogg Vorbis 128 kbps, Ogg Opus 96 kbps, AAC 128 kbps in ADTS), and runs each
through :class:`~pushsource.workers.liveconvert.LiveConverter` to the
station's 44.1 kHz stereo 128 kbps MP3, two ways:

- as fast as it converts: the process's CPU seconds per minute of DJ audio
  (every thread: libvlc's decoder, resampler and lame, and the converter's
  frame walk), which is also the share of one core a live DJ costs;
- in real time, in 512-byte pieces as an encoder sends them: the seconds
  from the DJ's first byte to the first converted frame (what the station
  puts on air at once), and the largest burst the converter hands out.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from pushsource.core.frames import FrameHeader
from pushsource.ops.trial import run_tool
from pushsource.workers.liveconvert import LiveConverter, shared_instance

SECONDS = 60.0
FORMATS = {
    "MP3 48 kHz mono 64k": (
        ["-ar", "48000", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k"],
        "mp3",
    ),
    "Ogg Vorbis 128k": (["-ar", "48000", "-ac", "2", "-c:a", "libvorbis", "-b:a", "128k"], "ogg"),
    "Ogg Opus 96k": (["-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "96k"], "ogg"),
    "AAC 128k (ADTS)": (["-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k"], "adts"),
}


def make(directory: Path, seconds: float) -> dict[str, bytes]:
    wav = directory / "in.wav"
    run_tool(
        "sox", "-D", "-n", "-r", "48000", "-c", "2", "-b", "16", str(wav),
        "synth", str(seconds), "pinknoise", "vol", "0.3",
    )  # fmt: skip
    out = {}
    for name, (options, muxer) in FORMATS.items():
        path = directory / f"{muxer}-{len(out)}"
        run_tool("ffmpeg", "-v", "error", "-i", str(wav), *options, "-f", muxer, "-y", str(path))
        out[name] = path.read_bytes()
    return out


class Run:
    def __init__(self) -> None:
        self.frames = 0
        self.seconds = 0.0
        self.burst = 0.0
        self.failed: list[str] = []
        self.lock = threading.Lock()

    def hand(self, header: FrameHeader, frames: list[bytes]) -> None:
        with self.lock:
            self.frames += len(frames)
            self.seconds += len(frames) * header.duration
            self.burst = max(self.burst, len(frames) * header.duration)


def convert(data: bytes, *, rate: float | None, piece: int) -> tuple[Run, LiveConverter, float]:
    """Feed ``data`` (at ``rate`` bytes per second, else as fast as it is
    taken); the run, the converter and the wall seconds."""
    run = Run()
    converter = LiveConverter(44100, 2, 128, hand=run.hand, failed=run.failed.append, name="bench")
    started = time.monotonic()
    converter.start()
    for at in range(0, len(data), piece):
        while not converter.feed(data[at : at + piece]):
            converter.dropped = 0  # not a DJ: wait for room instead of losing it
            time.sleep(0.005)
        if rate is not None:
            delay = started + (at + piece) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    converter.feed(b"")
    converter.join(120)
    return run, converter, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="audio per format (CPU)")
    parser.add_argument("--live", type=float, default=8.0, help="seconds fed in real time")
    args = parser.parse_args()
    shared_instance()  # loading libvlc's plugins once is not the DJ's cost
    with tempfile.TemporaryDirectory() as tmp:
        media = make(Path(tmp), args.seconds)
    print(f"{'DJ sends':22} {'CPU s/min':>9} {'x real time':>11} {'out s':>6}"
          f" {'first frame s':>13} {'largest burst s':>15}")  # fmt: skip
    for name, data in media.items():
        cpu = time.process_time()
        run, _, wall = convert(data, rate=None, piece=1 << 16)
        cpu = time.process_time() - cpu
        per_min = cpu / (args.seconds / 60)
        live_bytes = data[: int(len(data) * args.live / args.seconds)]
        live, converter, _ = convert(live_bytes, rate=len(data) / args.seconds, piece=512)
        first = (
            converter.first_out - converter.first_in
            if converter.first_out is not None and converter.first_in is not None
            else float("nan")
        )
        failed = f"  FAILED: {run.failed + live.failed}" if run.failed or live.failed else ""
        print(
            f"{name:22} {per_min:9.2f} {args.seconds / wall:11.0f} {run.seconds:6.1f}"
            f" {first:13.2f} {live.burst:15.2f}{failed}"
        )


if __name__ == "__main__":
    main()
