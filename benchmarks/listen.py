"""Cheap listeners for many mounts: one process, one selector, raw HTTP GETs.

Run as ``python -m benchmarks.listen SPEC.json OUT.json``. SPEC holds host,
port, mounts, optional duration, skip, patterns ({mount: [hex, ...]}: byte
strings whose first arrival is timed) and listed_first (started while the
client is still starting: ask for a mount only once /status-json.xsl lists
it, instead of asking hundreds of absent mounts again and again). It prints
``ready`` once every mount answered 200, and writes OUT.json (per-mount
pacing figures) when the duration is over or on SIGTERM. Every recv is
timestamped with time.monotonic(), the same clock the harness uses, so times
can be compared across processes.
"""

from __future__ import annotations

import errno
import json
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.mp3 import StreamWalker
from benchmarks.pacing import analyse
from pushsource.ops.trial import fetch_status, sources_of

RETRY_S = 0.05
#: Connections opened but not yet answered, at most: Icecast 2.4 listens with a
#: backlog of 5, and a storm of hundreds of connects at once leaves some in SYN
#: retransmission for many seconds, which would be the listener's fault.
MAX_PENDING = 16
#: A request with no answer this long is given up and made again.
ANSWER_TIMEOUT_S = 3.0
#: How often the status page is read while mounts are still coming up (listed_first).
STATUS_POLL_S = 0.1


class Mount:
    def __init__(self, name: str, patterns: list[bytes]) -> None:
        self.name = name
        self.sock: socket.socket | None = None
        self.head = b""
        self.status: int | None = None
        self.walker = StreamWalker()
        self.bytes = 0
        self.arrivals: list[tuple[float, float]] = []
        self.connected_at: float | None = None
        self.closed_at: float | None = None
        self.retry_at = 0.0
        self.opened_at = 0.0
        self.listed = False  # seen in /status-json.xsl (or not waited for)
        self.attempts = 0
        self.error: str | None = None
        self.patterns = patterns
        self.found: list[float | None] = [None] * len(patterns)
        self._tail = b""
        self._longest = max((len(p) for p in patterns), default=0)

    def take(self, data: bytes, now: float) -> None:
        self.bytes += len(data)
        self.walker.feed(data)
        self.arrivals.append((now, self.walker.seconds))
        if self._longest and None in self.found:
            window = self._tail + data
            for i, pattern in enumerate(self.patterns):
                if self.found[i] is None and pattern in window:
                    self.found[i] = now
            self._tail = window[-self._longest :]


class Listeners:
    def __init__(self, host: str, port: int, mounts: list[Mount]) -> None:
        self.host, self.port = host, port
        self.mounts = mounts
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.ready_said = False
        self.status_poll_s = STATUS_POLL_S

    def watch_listing(self) -> None:
        """Until every mount has been listed, read /status-json.xsl (on a thread
        of its own: a big status page must not hold up the recv timestamps)."""
        by_name = {m.name: m for m in self.mounts}
        base = f"http://{self.host}:{self.port}"

        def poll() -> None:
            while not self.stopping and not all(m.listed for m in self.mounts):
                try:
                    sources = sources_of(fetch_status(base, timeout=5.0))
                except (OSError, ValueError):
                    sources = []
                for source in sources:
                    mount = by_name.get(str(source.get("listenurl", "")).rsplit("/", 1)[-1])
                    if mount is not None:
                        mount.listed = True
                time.sleep(self.status_poll_s)

        threading.Thread(target=poll, name="status", daemon=True).start()

    def _open(self, mount: Mount, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            mount.retry_at = now + RETRY_S
            return
        mount.sock, mount.head, mount.status = sock, b"", None
        mount.opened_at = now
        mount.attempts += 1
        self.selector.register(sock, selectors.EVENT_WRITE, mount)

    def _drop(self, mount: Mount, now: float, retry: bool) -> None:
        assert mount.sock is not None
        self.selector.unregister(mount.sock)
        mount.sock.close()
        mount.sock = None
        if retry:  # not there (yet, or any more): try again until the end
            mount.retry_at = now + RETRY_S
        elif mount.closed_at is None:
            mount.closed_at = now

    def run(self, duration: float | None) -> None:
        self.started = time.monotonic()
        end = self.started + duration if duration else None
        while not self.stopping:
            now = time.monotonic()
            if end is not None and now >= end:
                break
            pending = 0
            for mount in self.mounts:
                if mount.sock is not None and mount.status != 200:
                    if now - mount.opened_at > ANSWER_TIMEOUT_S:
                        mount.error = f"no answer in {ANSWER_TIMEOUT_S:g} s"
                        self._drop(mount, now, retry=True)
                    else:
                        pending += 1
            for mount in self.mounts:
                if pending >= MAX_PENDING:
                    break
                if (mount.sock is None and mount.closed_at is None and mount.listed
                        and now >= mount.retry_at):  # fmt: skip
                    self._open(mount, now)
                    pending += 1
            for key, events in self.selector.select(timeout=0.02):
                self._event(key.data, events)
            if not self.ready_said and all(m.status == 200 for m in self.mounts):
                self.ready_said = True
                print("ready", flush=True)
        self.stopped = time.monotonic()

    def _event(self, mount: Mount, events: int) -> None:
        assert mount.sock is not None
        now = time.monotonic()
        if events & selectors.EVENT_WRITE:
            if mount.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._drop(mount, now, retry=True)
                return
            request = f"GET /{mount.name} HTTP/1.0\r\nHost: {self.host}:{self.port}\r\n"
            request += "User-Agent: pushsource-benchmark\r\n\r\n"
            mount.sock.send(request.encode("ascii"))
            self.selector.modify(mount.sock, selectors.EVENT_READ, mount)
            return
        try:
            data = mount.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            data = b""
        now = time.monotonic()
        if not data:
            self._drop(mount, now, retry=mount.status != 200)
            return
        if mount.status != 200:
            mount.head += data
            if b"\r\n\r\n" not in mount.head:
                return
            head, _, rest = mount.head.partition(b"\r\n\r\n")
            try:
                mount.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                mount.status = 0
            if mount.status != 200:
                mount.error = head.split(b"\r\n", 1)[0].decode("latin-1")
                self._drop(mount, now, retry=True)
                return
            mount.error = None
            mount.connected_at = now
            data = rest
            if not data:
                return
        mount.take(data, now)


def report(listeners: Listeners, skip: float) -> dict[str, Any]:
    mounts = []
    for m in listeners.mounts:
        figures = analyse(m.arrivals, stop=m.closed_at or listeners.stopped, skip=skip)
        figures.update(
            {
                "mount": m.name,
                "connected_at": m.connected_at,
                "first_byte_at": m.arrivals[0][0] if m.arrivals else None,
                "closed_early": m.closed_at is not None,
                "bytes": m.bytes,
                "frames": m.walker.frames,
                "non_audio_bytes": m.walker.non_audio_bytes,
                "sample_rate": m.walker.sample_rate,
                "found_at": m.found,
                "last_error": m.error,
            }
        )
        mounts.append(figures)
    return {"started": listeners.started, "stopped": listeners.stopped, "mounts": mounts}


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text("utf-8"))
    patterns: dict[str, list[str]] = spec.get("patterns", {})
    mounts = [
        Mount(name, [bytes.fromhex(h) for h in patterns.get(name, [])]) for name in spec["mounts"]
    ]
    listeners = Listeners(spec["host"], int(spec["port"]), mounts)
    listeners.status_poll_s = float(spec.get("status_poll_s", STATUS_POLL_S))
    if spec.get("listed_first"):
        listeners.watch_listing()
    else:
        for mount in mounts:
            mount.listed = True

    def stop(signum: int, frame: FrameType | None) -> None:
        listeners.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    listeners.run(spec.get("duration"))
    out = report(listeners, float(spec.get("skip", 5.0)))
    Path(argv[1]).write_text(json.dumps(out), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
