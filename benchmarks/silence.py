"""What finding dead air costs: what the workers do to each chunk they read.

``python -m benchmarks.silence`` encodes 10 s each of music-like noise, of
digital silence and of sox's own (dithered) silence with lame (CBR 128 kbps),
cuts each into the 80-frame chunks the workers read, and times what
read_chunk does with them over an hour's worth: silent_runs (digital
silence, from the side info) and quiet_runs (near-silence: decoded only
where the gains say it may be). CPU seconds per audio hour, on the workers
(the engine's thread only reads the runs found).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pushsource.core.gain import silent_runs
from pushsource.ops.trial import run_tool
from pushsource.workers.feed import read_chunk
from pushsource.workers.quiet import quiet_runs
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
        elif kind == "dithered":
            run_tool(*[part for part in synth if part != "-D"], "trim", "0", "10")
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
    for kind in ("noise", "silence", "dithered"):
        parts = chunks(kind)
        reps = max(1, HOUR_FRAMES // (CHUNK * len(parts)))
        if kind == "dithered":
            reps = max(1, reps // 20)  # it decodes: a twentieth of the hour is plenty
        start = time.process_time()
        for _ in range(reps):
            for data, ends in parts:
                silent_runs(data, ends)
        digital = time.process_time() - start
        start = time.process_time()
        for _ in range(reps):
            for data, ends in parts:
                quiet_runs(data, ends, silent_runs(data, ends))
        both = time.process_time() - start
        hours = reps * CHUNK * len(parts) * 1152 / 44100 / 3600
        print(
            f"{kind}: silent_runs {digital / hours:.3f}, with quiet_runs {both / hours:.3f} "
            "CPU s per audio hour of 128 kbps stereo"
        )


if __name__ == "__main__":
    main()
