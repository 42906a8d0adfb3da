"""What loudness levelling costs: applying a gain, and measuring a track once.

``python -m benchmarks.gain`` encodes a short noise, repeats its frames to one
hour (about 57 MB, in memory) and times apply_gain over it in runs of the size
a station reads them (4 frames, about 0.1 s of audio: one batch) and in one
call over all of it. The figure is CPU seconds per audio hour, set against
the whole budget of a station (ezstream's 1.75-1.9 CPU s per audio hour).

Then it measures a 60 s track the way a station does for one without a
ReplayGain tag (libvlc decodes, libebur128 measures; once per track, on the
prefetch worker), wall and CPU time, every thread of the process counted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pushsource.core.frames import END, FrameParser, FrameRun, header_for
from pushsource.core.gain import apply_gain
from pushsource.ops.trial import run_tool

TARGET_S = 0.2  # CPU s per audio hour: about a tenth of a lean station's budget
STEPS = -3


def one_hour() -> tuple[list[bytes], float]:
    """An hour of frames, as the runs of 4 frames a station reads."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, mp3 = Path(tmp) / "noise.wav", Path(tmp) / "noise.mp3"
        run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
                 "synth", "10", "pinknoise", "vol", "0.3")  # fmt: skip
        run_tool("lame", "--quiet", "-t", "-b", "128", wav, mp3)
        clean = mp3.read_bytes()
    parser = FrameParser()
    parser.feed(clean * 361)
    parser.feed(b"")
    runs, samples = [], 0
    while (event := parser.next_run(4)) is not END:
        if isinstance(event, FrameRun):
            runs.append(event.data)
            samples += event.samples
    return runs, samples / 44100


def measure_track(seconds: float = 60.0, repeat: int = 3) -> dict[str, Any]:
    """Decode and measure a track as a station does, with no cache to hit."""
    from pushsource.workers.loudness import Leveller

    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        wav, mp3 = Path(tmp) / "track.wav", Path(tmp) / "track.mp3"
        run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
                 "synth", str(seconds), "pinknoise", "vol", "0.3")  # fmt: skip
        run_tool("lame", "--quiet", "-t", "-b", "128", wav, mp3)
        for n in range(repeat):
            leveller = Leveller(-18.0, Path(tmp) / f"cache-{n}")
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                leveller.measure(mp3, header_for(44100, 2, 128))
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            finally:
                leveller.close()
    return {"audio_s": seconds, "wall_s": min(walls), "cpu_s": min(cpus)}


def measure(repeat: int = 3) -> dict[str, Any]:
    runs, audio = one_hour()
    whole = b"".join(runs)
    batched, single = [], []
    for _ in range(repeat):
        start = time.process_time()
        for data in runs:
            apply_gain(data, STEPS)
        batched.append(time.process_time() - start)
        start = time.process_time()
        apply_gain(whole, STEPS)
        single.append(time.process_time() - start)
    hours = audio / 3600
    return {
        "bytes": len(whole),
        "runs": len(runs),
        "audio_s": audio,
        "cpu_s_per_audio_hour": min(batched) / hours,
        "cpu_s_per_audio_hour_one_call": min(single) / hours,
        "mb_per_s": len(whole) / min(batched) / 1e6,
        "target_s": TARGET_S,
    }


def main() -> int:
    result = measure()
    per_hour = result["cpu_s_per_audio_hour"]
    verdict = "PASS" if per_hour <= TARGET_S else "MISS"
    print(
        f"levelled {result['audio_s'] / 3600:.2f} h of 128 kbps MP3 "
        f"({result['bytes'] / 1e6:.1f} MB, {result['runs']} runs of 4 frames) "
        f"by {STEPS} steps: {per_hour:.3f} CPU s per audio hour "
        f"({result['mb_per_s']:.0f} MB/s); in one call: "
        f"{result['cpu_s_per_audio_hour_one_call']:.3f} s; target <= {TARGET_S} s: {verdict}"
    )
    track = measure_track()
    print(
        f"measured a {track['audio_s']:.0f} s track (libvlc decode + libebur128) in "
        f"{track['wall_s']:.2f} s ({track['audio_s'] / track['wall_s']:.0f}x real time), "
        f"{track['cpu_s']:.2f} CPU s: {track['cpu_s'] * 3600 / track['audio_s']:.0f} CPU s "
        f"per audio hour, once per track"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
