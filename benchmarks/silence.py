"""What finding dead air costs: ``silent_runs`` over the chunks a station reads.

``python -m benchmarks.silence`` encodes 10 s of music-like noise and 10 s
of digital silence with lame (CBR 128 kbps), cuts each into the 80-frame
chunks the workers read, and times silent_runs over an hour's worth of them:
CPU seconds per audio hour, on the workers (the engine's thread only reads
the runs found).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pushsource.core.gain import silent_runs
from pushsource.ops.trial import run_tool
from pushsource.workers.feed import read_chunk
from pushsource.workers.tracks import Track

CHUNK = 80  # frames: about 2 s, as the station reads them
HOUR_FRAMES = round(3600 * 44100 / 1152)


def chunks(kind: str) -> list[tuple[bytes, list[int]]]:
    """10 s of ``kind`` ("noise" or "silence") in 80-frame chunks."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, mp3 = Path(tmp) / "in.wav", Path(tmp) / "in.mp3"
        synth = ["sox", "-D", "-n", "-r", "44100", "-c", "2", "-b", "16", wav]
        if kind == "noise":
            run_tool(*synth, "synth", "10", "pinknoise", "vol", "0.3")
        else:
            run_tool(*synth, "trim", "0", "10")
        run_tool("lame", "--quiet", "-b", "128", wav, mp3)
        track = Track(mp3).open()
        whole = read_chunk(track, 1 << 20)
        track.close()
    data, ends = whole.data, list(whole.ends)
    out = []
    for i in range(0, len(ends) - CHUNK + 1, CHUNK):
        base = ends[i - 1] if i else 0
        out.append((data[base : ends[i + CHUNK - 1]], [end - base for end in ends[i : i + CHUNK]]))
    return out


def main() -> None:
    for kind in ("noise", "silence"):
        parts = chunks(kind)
        reps = max(1, HOUR_FRAMES // (CHUNK * len(parts)))
        start = time.process_time()
        for _ in range(reps):
            for data, ends in parts:
                silent_runs(data, ends)
        spent = time.process_time() - start
        hours = reps * CHUNK * len(parts) * 1152 / 44100 / 3600
        print(f"{kind}: {spent / hours:.3f} CPU s per audio hour of 128 kbps stereo")


if __name__ == "__main__":
    main()
