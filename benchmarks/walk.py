"""How long pushsource.core.frames takes to walk one hour of 128 kbps MP3.

``python -m benchmarks.walk`` encodes a short tone, repeats its frames to one
hour (about 57 MB, in memory) and times FrameParser over it, two ways:
``next_run`` (frames in bulk, what tracks and stations use) and
``next_event`` (one Frame object per frame). Target: 0.2 s.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser, FrameRun
from pushsource.ops.trial import make_tone_mp3 as make_clean_mp3

TARGET_S = 0.2


def one_hour() -> tuple[bytes, float]:
    with tempfile.TemporaryDirectory() as tmp:
        clean = make_clean_mp3(Path(tmp) / "tone.mp3", 10.0)  # lame -t: frames only
    seconds_each = 10.0
    # Whole frames of 1152 samples: 10 s is not a whole number of them, so count.
    repeats = int(3600 / seconds_each) + 1
    return clean * repeats, repeats * seconds_each


def walk(data: bytes, chunk: int = 1 << 16) -> tuple[int, float]:
    parser = FrameParser()
    frames = 0
    samples = 0
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        parser.feed(view[start : start + chunk])
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, Frame):
                frames += 1
                samples += event.header.samples
    parser.feed(b"")
    while (event := parser.next_event()) is not END:
        if isinstance(event, Frame):
            frames += 1
            samples += event.header.samples
    return frames, samples / 44100


def walk_runs(data: bytes, chunk: int = 1 << 16) -> tuple[int, float]:
    """The same walk with next_run(): frames in bulk, as Track reads them."""
    parser = FrameParser()
    frames = 0
    samples = 0
    view = memoryview(data)
    starts = [*range(0, len(data), chunk), len(data)]
    for start in starts:
        parser.feed(view[start : start + chunk])  # the last feed is b"": the end
        while True:
            event = parser.next_run()
            if event is NEED_DATA or event is END:
                break
            if isinstance(event, FrameRun):
                frames += event.count
                samples += event.samples
    return frames, samples / 44100


def measure(repeat: int = 3) -> dict[str, Any]:
    data, _ = one_hour()
    times = []
    frames, audio = 0, 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        frames, audio = walk_runs(data)
        times.append(time.perf_counter() - start)
    strict = []
    for _ in range(repeat):
        start = time.perf_counter()
        strict_frames, _ = walk(data)
        strict.append(time.perf_counter() - start)
    assert strict_frames == frames, (strict_frames, frames)  # the two walks agree
    return {
        "bytes": len(data),
        "frames": frames,
        "audio_s": audio,
        "seconds_best": min(times),
        "seconds_all": times,
        "per_frame_objects_seconds_best": min(strict),
        "target_s": TARGET_S,
    }


def main() -> int:
    result = measure()
    verdict = "PASS" if result["seconds_best"] <= TARGET_S else "MISS"
    print(
        f"walked {result['frames']} frames ({result['audio_s'] / 3600:.2f} h, "
        f"{result['bytes'] / 1e6:.1f} MB) in {result['seconds_best']:.3f} s "
        f"(best of {len(result['seconds_all'])}) with next_run; target <= {TARGET_S} s: "
        f"{verdict}; with next_event (a Frame per frame): "
        f"{result['per_frame_objects_seconds_best']:.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
