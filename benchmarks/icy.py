"""What titles inside the stream cost: pushsource.core.icy over one hour of
128 kbps audio, in the Sends a station makes.

``python -m benchmarks.icy`` wraps 57.6 MB of audio in Sends of 2800 bytes
(two of Icecast's 1400-byte blocks, about what a 0.1 s batch holds) with a
title every 3 minutes, and prints the CPU per audio hour and per Send, beside
the bytes the blocks add. Nothing asserts a figure.
"""

from __future__ import annotations

import time

from pushsource.core.icy import METAINT, IcyWriter

RATE = 16_000  # bytes per second at 128 kbps
SEND = 2800


def run(seconds: int = 3600) -> tuple[float, int, int]:
    """CPU seconds to wrap ``seconds`` of audio, the Sends, the wire bytes."""
    audio = bytes(range(256)) * (SEND // 256 + 1)
    chunk = audio[:SEND]
    total = seconds * RATE
    writer = IcyWriter(METAINT)
    sends = wire = 0
    title_every = 180 * RATE
    started = time.process_time()
    done = 0
    while done < total:
        if done % title_every < SEND:
            writer.title(f"Artist {done // title_every} - A Title of Some Length", 0)
        wire += len(writer.wrap(chunk))
        done += SEND
        sends += 1
    return time.process_time() - started, sends, wire


def main() -> None:
    cpu, sends, wire = run()
    audio = sends * SEND
    print(f"ICY titles inside the stream, interval {METAINT} bytes, {sends} Sends of {SEND} bytes")
    print(f"  CPU per audio hour: {cpu:.3f} s ({cpu / sends * 1e6:.1f} µs per Send)")
    print(f"  bytes added: {wire - audio} ({(wire - audio) / audio * 100:.3f} % of the audio)")


if __name__ == "__main__":
    main()
