"""What an Icecast crash costs a listener: ``python -m benchmarks.crashes``.

One station (``pushsource stream``, default idle: back on air as soon as
Icecast is) plays a folder of 30 s tracks into a real icecast2, which is
killed with SIGKILL ``--crashes`` times, at random 1-6 s after it came back,
and started again 0.2-1 s later. A listener records the mount before each
kill; a new one records it after each restart (from Icecast's burst, so from
the new source connection's first byte). Printed per crash: where the new
recording starts in the tracks against where the last one stopped, in bytes
(+: never heard, -: heard again; a listener cut mid-frame makes up to one
frame of +), and whether it started with anything but the tracks' frames
(silence). Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import icecast_template
from benchmarks.media import fill_folder, make_tracks
from benchmarks.mp3 import audio_frames
from pushsource.ops.trial import IcecastServer

MOUNT = "/crashes.mp3"
FRAME = 417  # bytes of a 128 kbps, 44.1 kHz frame (without padding)


class Recorder:
    """A listener: GET the mount (again until Icecast has it) and keep the body."""

    def __init__(self, port: int) -> None:
        self.audio = bytearray()
        self.closed = threading.Event()
        self._port = port
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", self._port), timeout=5)
            except OSError:
                time.sleep(0.02)
                continue
            sock.sendall(f"GET {MOUNT} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n")[0]:
                sock.close()
                time.sleep(0.02)
                continue
            self.audio += body
            sock.settimeout(None)
            while chunk := sock.recv(65536):
                self.audio += chunk
            sock.close()
            break
        self.closed.set()

    def wait_for(self, size: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.audio) < size:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the listener got {len(self.audio)} bytes of {size}")
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crashes", description=__doc__)
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tracks = make_tracks(work / "tracks", 4, 30)
        minutes = args.crashes * 8 / 60 + 1
        order = [tracks[i % len(tracks)] for i in range(int(minutes * 2) + 2)]
        fill_folder(work / "music", order)
        expected = b"".join(b"".join(audio_frames(t.path.read_bytes())) for t in order)
        server = IcecastServer(icecast_template(work / "icecast.xml", 4), work / "icecast")
        server.start()
        env = dict(os.environ, XDG_STATE_HOME=str(work / "state"))
        url = f"icecast://source:hackme@127.0.0.1:{server.port}{MOUNT}"
        log = (work / "pushsource.log").open("w")
        run = subprocess.Popen(
            [sys.executable, "-m", "pushsource", "stream", str(work / "music"), url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        moved: list[int] = []
        silent = 0
        try:
            listener = Recorder(server.port)
            listener.wait_for(2 * 16000, 20)
            base = expected.find(bytes(listener.audio[:2000]))
            for n in range(1, args.crashes + 1):
                time.sleep(rng.uniform(1.0, 6.0))
                server.kill()
                listener.closed.wait(5)
                heard = bytes(listener.audio)
                end = base + len(heard) if expected[base : base + len(heard)] == heard else -1
                time.sleep(rng.uniform(0.2, 1.0))
                server.start()
                listener = Recorder(server.port)
                listener.wait_for(4000, 20)
                base = expected.find(bytes(listener.audio[:2000]))
                if base < 0 or end < 0:
                    silent += 1
                    print(f"crash {n}: the recording starts with bytes that are not the tracks'")
                    break
                moved.append(base - end)
                print(f"crash {n}: {base - end:+d} bytes", flush=True)
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(15)
            server.stop()
            log.close()
        text = (work / "pushsource.log").read_text("utf-8", "replace")
        if moved:
            print(
                f"{len(moved)} crashes: the next listener starts {min(moved):+d} to "
                f"{max(moved):+d} bytes ({max(moved) / FRAME:+.2f} frames at most) from where "
                f"the last stopped; {silent} started with other bytes; "
                f"{text.count('queue empty')} 'queue empty' lines"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
