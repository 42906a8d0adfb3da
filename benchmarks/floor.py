"""What any source client pays on this machine: ``python -m benchmarks.floor``.

A bare loop, no pushsource at all, sends a real MP3 to a real icecast2 as
one source (a PUT, then the body): it sleeps until the next block is due and
sends it, nothing else. It prints its CPU per audio hour for blocks of 1400
bytes (one of Icecast's relay blocks: 87.5 ms at 128 kbps, what pushsource
sends per wake-up so that listeners get each block as soon as it may go),
2800 and 4096 bytes (about what ezstream sends at a time). One wake-up and
one send to Icecast cost the same whatever the client's language: this is
the floor under a station's CPU at each cadence (the kernel's side of the
send, the timer's wake-up, Icecast's read), apart from the client's own work.
Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import base64
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.harness import icecast_template
from benchmarks.media import make_tracks
from pushsource.ops.trial import IcecastServer

BLOCKS = (1400, 2800, 4096)
RATE = 16000  # bytes per second of 128 kbps


def send_loop(port: int, mount: str, audio: bytes, block: int, seconds: float) -> dict[str, float]:
    """CPU of sleeping and sending ``block`` bytes when due, for ``seconds``."""
    sock = socket.create_connection(("127.0.0.1", port))
    auth = base64.b64encode(b"source:hackme").decode()
    sock.sendall(
        f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: audio/mpeg\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    answer = sock.recv(200)
    if not answer.startswith(b"HTTP/1."):
        raise RuntimeError(f"icecast2 answered {answer!r}")
    try:
        sock.sendall(audio[:RATE])  # a second ahead, as a station's lead
        offset, sends = RATE, 0
        start, used = time.monotonic(), time.process_time()
        while time.monotonic() - start < seconds:
            sends += 1
            delay = start + sends * block / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if offset + block > len(audio):
                offset = 0
            sock.send(audio[offset : offset + block])
            offset += block
        used = time.process_time() - used
    finally:
        sock.close()
    return {
        "sends": sends,
        "cpu_s_per_hour": used / seconds * 3600,
        "us_per_send": used / sends * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        track = make_tracks(work / "tracks", 1, 30)[0]
        audio = track.path.read_bytes()
        server = IcecastServer(icecast_template(work / "icecast.xml", 4), work / "icecast")
        server.start()
        try:
            print(f"a bare sleep-and-send loop, one source on icecast2, {args.seconds:g} s each")
            head = ("block", "every", "sends/s", "CPU s per audio hour", "µs per send")
            print("{:>6} {:>8} {:>8} {:>21} {:>12}".format(*head))
            for n, block in enumerate(BLOCKS):
                got = send_loop(server.port, f"/floor{n}.mp3", audio, block, args.seconds)
                print(
                    f"{block:>6} {block / RATE * 1000:>6.1f}ms {RATE / block:>8.1f} "
                    f"{got['cpu_s_per_hour']:>21.2f} {got['us_per_send']:>12.0f}"
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
