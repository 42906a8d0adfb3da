"""What crossfade costs: one join made the way a station makes it.

``python -m benchmarks.crossfade [--fade 3] [--joins 20] [--track 210]``
encodes two 12 s noises of different colour with lame (the hardest kind of
audio for the encoder), takes what a station holds when it asks for a join
(the outgoing track's last fade + 1.5 s of frames, the incoming one's first
chunk) and makes the join ``--joins`` times on this thread (decode, mix,
encode, splice), timing each with the thread's CPU clock. The figure is CPU
seconds per station-hour for tracks of ``--track`` seconds (one join per
track), set against a whole station's budget: ezstream's 1.75-1.9 CPU s per
audio hour; then the same with one output in another format (64 kbps
22.05 kHz mono), which gets its own join. Everything outside the joins is
passed through and costs what it costs without crossfade.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from pushsource.core.effects import Join
from pushsource.core.frames import FrameHeader, header_for, parse_header
from pushsource.ops.trial import run_tool
from pushsource.workers.crossfade import build_join, file_delays

EZSTREAM_HOUR = 1.8  # CPU s per audio hour, the README's figure


def frames(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    pos, out = 0, []
    while pos + 4 <= len(data):
        header = parse_header(data, pos)
        if header is None:
            break
        out.append((pos, data[pos : pos + header.length]))
        pos += header.length
    return out[1:]  # the LAME tag's frame


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crossfade")
    parser.add_argument("--fade", type=float, default=3.0)
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--track", type=float, default=210.0, help="seconds per track")
    args = parser.parse_args()
    for alts in ((), (("64k-22050-1", header_for(22050, 1, 64)),)):
        measure(args, alts)


def measure(args: argparse.Namespace, alts: tuple[tuple[str, FrameHeader], ...]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        for name, colour in (("out", "pinknoise"), ("in", "brownnoise")):
            wav, mp3 = Path(tmp) / f"{name}.wav", Path(tmp) / f"{name}.mp3"
            run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
                     "synth", "12", colour, "vol", "0.4")  # fmt: skip
            run_tool("lame", "--quiet", "-b", "128", wav, mp3)
            made.append((frames(mp3), file_delays(mp3)))
    (outgoing, out_delays), (incoming, in_delays) = made
    per_frame = 1152 / 44100
    held = outgoing[-math.ceil((args.fade + 1.5) / per_frame) :]
    first = incoming[: math.ceil((args.fade + 1.5) / per_frame)]
    times = []
    joins: list[Join] = []
    for _ in range(args.joins):
        start = time.thread_time()
        result = build_join(
            held,
            first,
            args.fade,
            bitrate=128,
            out_padding=out_delays[1] if out_delays else None,
            in_delay=in_delays[0] if in_delays else None,
            alts=alts,
        )
        times.append(time.thread_time() - start)
        assert isinstance(result, Join), result
        joins.append(result)
    median = statistics.median(times)
    per_hour = median * 3600 / args.track
    also = ", with an output at 64 kbps 22.05 kHz mono" if alts else ""
    print(f"crossfade {args.fade:g} s, 128 kbps 44.1 kHz stereo{also}, {args.joins} joins")
    print(
        f"  CPU per join: median {median * 1000:.0f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
    )
    print(
        f"  per station-hour with {args.track:g} s tracks: {per_hour:.2f} CPU s "
        f"({per_hour / EZSTREAM_HOUR:.2f}x ezstream's whole {EZSTREAM_HOUR} s)"
    )
    last = joins[-1]
    print(f"  join: {len(last.ends)} frames re-encoded, {last.seconds:.3f} s together")


if __name__ == "__main__":
    main()
