"""One measured run: a client streams to its mounts while a listener process
records every arrival and this process samples the client's CPU and memory."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.clients import Client, Launched, Server, Station
from benchmarks.media import Track, fill_folder, write_m3u
from pushsource.ops.trial import IcecastServer, fetch_status, sources_of

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = REPO_ROOT / "icecast.xml"


def icecast_template(path: Path, mounts: int) -> Path:
    """The repository's icecast.xml with room for `mounts` sources and as many
    listeners (plus status polls); burst settings are kept. A station with two
    outputs is two sources here: count mounts, not stations."""
    root = ET.parse(DEFAULT_TEMPLATE).getroot()
    limits = root.find("limits")
    assert limits is not None
    for tag, value in (("sources", mounts + 10), ("clients", 2 * mounts + 100)):
        element = limits.find(tag)
        if element is None:
            element = ET.SubElement(limits, tag)
        element.text = str(value)
    path.write_text(ET.tostring(root, encoding="unicode"), "utf-8")
    return path


def raise_fd_limit(needed: int) -> dict[str, Any]:
    """Lift the soft RLIMIT_NOFILE (inherited by icecast2 and the listener)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    soft_now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return {"soft_before": soft, "soft": soft_now, "hard": hard, "needed": needed,
            "enough": soft_now >= needed}  # fmt: skip


@dataclass
class Bench:
    workdir: Path
    icecast: IcecastServer
    warmup_s: float  # steady-state CPU starts this long after the mounts are up
    skip_s: float  # the listener's pacing figures leave out this much after the first byte

    @property
    def icecast_pid(self) -> int:
        # IcecastServer starts icecast2 in a session of its own: its pid is its group.
        process = self.icecast._process
        assert process is not None
        return process.pid

    @property
    def server(self) -> Server:
        return Server(self.icecast.host, self.icecast.port)

    def stations(self, tag: str, n: int, order: Sequence[Track], outputs: int = 1) -> list[Station]:
        """N stations; with outputs > 1, each also sent to `outputs - 1` more
        mounts of the same server (M-b, M-c...), in its own format."""
        base = self.workdir / "runs" / tag
        base.mkdir(parents=True, exist_ok=True)
        m3u = write_m3u(base / "playlist.m3u", order)
        stations = []
        for i in range(1, n + 1):
            folder = base / f"m{i}"
            fill_folder(folder, order)
            mount = f"{tag}-m{i}"
            more = tuple(f"{mount}-{chr(ord('a') + k)}" for k in range(1, outputs))
            stations.append(Station(mount, folder, m3u, more))
        return stations


def listed_mounts(base_url: str) -> set[str]:
    try:
        status = fetch_status(base_url, timeout=2.0)
    except (OSError, ValueError):
        return set()
    found = set()
    for source in sources_of(status):
        url = str(source.get("listenurl", ""))
        found.add(url.rsplit("/", 1)[-1])
    return found


def status_poll(mounts: int) -> float:
    """How often to read /status-json.xsl for ``mounts`` mounts: Icecast makes
    the page afresh for each request (about 1 MB for 1000 mounts, 3 MB for
    3000), so polling a big one fast loads the server being measured."""
    return 0.1 if mounts <= 300 else 0.5 if mounts <= 1000 else 2.0


def wait_listed(
    bench: Bench, mounts: Sequence[str], launched: Launched, start: float, timeout: float
) -> tuple[dict[str, float], str | None]:
    """Poll /status-json.xsl (every 10 ms for a few mounts) until all are listed.
    Returns seconds from launch to listing for each mount, and an error."""
    # A status page of 1000 mounts is about 1 MB that Icecast makes afresh for
    # each request: polling it fast would load the server being measured.
    poll = 0.01 if len(mounts) <= 2 else status_poll(len(mounts))
    wanted = set(mounts)
    seen: dict[str, float] = {}
    deadline = start + timeout
    while True:
        now = time.monotonic()
        for mount in listed_mounts(bench.icecast.base_url) & (wanted - seen.keys()):
            seen[mount] = now - start
        if len(seen) == len(wanted):
            return seen, None
        exits = launched.early_exits()
        if exits and len(exits) == len(launched.procs):
            return seen, f"exited with {exits} before all mounts were up"
        if now > deadline:
            return seen, f"{len(seen)}/{len(wanted)} mounts up after {timeout:.0f} s"
        time.sleep(poll)


class ListenerProcess:
    def __init__(self, bench: Bench, mounts: Sequence[str], tag: str,
                 patterns: dict[str, list[str]] | None = None, *,
                 listed_first: bool = False, skip_s: float | None = None) -> None:  # fmt: skip
        self.spec = bench.workdir / "runs" / f"{tag}-listen.json"
        self.out = bench.workdir / "runs" / f"{tag}-heard.json"
        self.spec.write_text(json.dumps({
            "host": bench.icecast.host, "port": bench.icecast.port, "mounts": list(mounts),
            "skip": bench.skip_s if skip_s is None else skip_s, "patterns": patterns or {},
            "listed_first": listed_first, "status_poll_s": status_poll(len(mounts)),
        }), "utf-8")  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.listen", str(self.spec), str(self.out)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            process_group=0,
        )  # fmt: skip

    def wait_ready(self, timeout: float) -> bool:
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            seen += self.proc.stdout.read() or b""
            if b"ready" in seen:
                return True
            time.sleep(0.01)
        return False

    def finish(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"mounts": [], "error": "listener did not finish"}
        try:
            return dict(json.loads(self.out.read_text("utf-8")))
        except (OSError, ValueError) as error:
            return {"mounts": [], "error": f"listener wrote nothing: {error}"}


def run_point(
    bench: Bench, client: Client, stations: Sequence[Station], stream_s: float, tag: str,
    *, from_launch: bool = False, skip_s: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Launch, wait for the mounts, listen and sample for stream_s, stop.

    CPU: `startup_cpu_s` is what the group used from launch until every mount was
    listed; the steady state runs from `warmup_s` after that to the end.
    ``from_launch``: the listener starts with the client and takes each mount as
    soon as it is listed, so the pacing figures include the start-up of the others
    (``skip_s``: what it leaves out after each mount's first byte).
    """
    # Every output of every station is listened to: a second output that lags
    # or stalls must show in the worst figures as the first would.
    mounts = [m for s in stations for m in s.mounts]
    n = len(stations)
    outputs = 1 + max((len(s.outputs) for s in stations), default=0)
    result: dict[str, Any] = {"client": client.key, "stations": n, "outputs": outputs,
                              "mounts": len(mounts), "stream_s": stream_s,
                              "listened_from_launch": from_launch}  # fmt: skip
    start = time.monotonic()
    launched = client.launch(stations, bench.server, bench.workdir / "runs" / tag)
    result["note"] = launched.note
    listener: ListenerProcess | None = None
    if from_launch:
        listener = ListenerProcess(bench, mounts, tag, listed_first=True, skip_s=skip_s)
    try:
        listed, error = wait_listed(bench, mounts, launched, start,
                                    timeout=20 + 0.1 * len(mounts))  # fmt: skip
        at_listed = procs.sample(launched.pgid)
        result["startup_s"] = max(listed.values()) if len(listed) == len(mounts) else None
        result["startup_first_s"] = min(listed.values()) if listed else None
        result["startup_cpu_s"] = at_listed.cpu_s
        result["mounts_up_at_start"] = len(listed)
        if error:
            result["error"] = error
            result["log"] = launched.log_tail()
            if not listed or len(launched.early_exits()) == len(launched.procs):
                return result
            # Some are up: measure what there is (the listener keeps asking for the rest).
        if listener is None:
            listener = ListenerProcess(bench, mounts, tag, skip_s=skip_s)
        if not listener.wait_ready(5 + 0.02 * len(mounts)):
            result["error"] = "listener could not connect to every mount in time"
        # The windows start once the listener is on (at once, unless mounts
        # that were listed went away again).
        base = time.monotonic()
        warm_at = base + bench.warmup_s
        end_at = base + stream_s
        _sleep_until(warm_at)
        warm = procs.sample(launched.pgid)
        warm_t = time.monotonic()
        icecast_warm = procs.sample(bench.icecast_pid).cpu_s
        rss_peak = warm.rss_bytes
        threads = [warm.threads]  # the steady state's thread counts, once a second
        while time.monotonic() < end_at - 1.0:
            time.sleep(1.0)
            now_sample = procs.sample(launched.pgid)
            rss_peak = max(rss_peak, now_sample.rss_bytes)
            threads.append(now_sample.threads)
        _sleep_until(end_at)
        end = procs.sample(launched.pgid)
        end_t = time.monotonic()
        icecast_end = procs.sample(bench.icecast_pid).cpu_s
        pss = procs.pss_bytes(launched.pgid)
        exits = launched.early_exits()
        if exits:
            ended = f"{len(exits)} process(es) ended before the run did: {exits[:5]}"
            result["error"] = "; ".join(x for x in (result.get("error"), ended) if x)
            result["log"] = launched.log_tail()
        window = end_t - warm_t
        steady = end.cpu_s - warm.cpu_s
        result.update(
            {
                "processes": end.pids,
                "steady_window_s": window,
                "steady_cpu_s": steady,
                "cpu_percent": 100 * steady / window,
                "cpu_s_per_station_hour": steady / window * 3600 / n,
                "total_cpu_s": end.cpu_s,
                "rss_mb": end.rss_bytes / 1e6,
                "rss_peak_mb": rss_peak / 1e6,
                # /proc/PID/task of every process in the group (one, for pushsource)
                "threads": max(threads),
                "threads_min": min(threads),
                "pss_mb": pss / 1e6 if pss is not None else None,
                # The server's share: what serving this client cost Icecast.
                "icecast_cpu_percent": 100 * (icecast_end - icecast_warm) / window,
            }
        )
    finally:
        heard = listener.finish() if listener is not None else None
        launched.stop()
    if heard is not None:
        result.update(summarise_heard(heard, start))
        if outputs > 1:  # the same figures for each output alone: first, second...
            result["by_output"] = [
                {"output": k + 1, **summarise_heard(_only_output(heard, stations, k), start)}
                for k in range(outputs)
            ]
    return result


def _only_output(heard: dict[str, Any], stations: Sequence[Station], k: int) -> dict[str, Any]:
    """What the listener heard on each station's k-th output (0: its own url)."""
    names = {s.mounts[k] for s in stations if k < len(s.mounts)}
    return {**heard, "mounts": [m for m in heard.get("mounts", []) if m.get("mount") in names]}


def summarise_heard(heard: dict[str, Any], launched_at: float | None = None) -> dict[str, Any]:
    """The worst figures over the mounts heard; ``launched_at`` (the harness's
    monotonic clock, which the listener shares): when the worst deviations were."""
    mounts = heard.get("mounts", [])
    out: dict[str, Any] = {"listener_error": heard.get("error")}
    if not mounts:
        return out

    def values(key: str) -> list[float]:
        return [float(m[key]) for m in mounts if m.get(key) is not None]

    devs, gaps = values("max_deviation_ms"), values("longest_silence_ms")
    drifts = values("drift_ms_per_h")
    out.update(
        {
            "mounts_heard": sum(1 for m in mounts if m.get("bytes", 0) > 0),
            "bytes_received": sum(int(m.get("bytes", 0)) for m in mounts),
            "max_deviation_ms": max(devs) if devs else None,
            "peak_to_peak_ms": max(values("peak_to_peak_ms"), default=None),
            "longest_silence_ms": max(gaps) if gaps else None,
            "drift_ms_per_h": statistics.median(drifts) if drifts else None,
            "closed_early": sum(1 for m in mounts if m.get("closed_early")),
            "mount_errors": [m.get("error") for m in mounts if m.get("error")][:3],
            # Why the listener got nothing from a mount: its last HTTP answer, if any.
            "unheard_because": dict(
                Counter(str(m.get("last_error")) for m in mounts if not m.get("bytes"))
            ),
        }
    )
    timed = [m for m in mounts if m.get("max_deviation_at") is not None]
    if launched_at is not None and timed:
        worst = max(timed, key=lambda m: float(m["max_deviation_ms"]))
        # Start-up or the common track change (all tracks are the same length)?
        out["worst_dev_mount"] = worst.get("mount")
        out["worst_dev_at_s"] = float(worst["max_deviation_at"]) - launched_at
        out["worst_dev_signed_ms"] = worst.get("max_deviation_signed_ms")
        out["dev_at_s_median"] = statistics.median(
            float(m["max_deviation_at"]) - launched_at for m in timed
        )
        out["dev_ms_median"] = statistics.median(float(m["max_deviation_ms"]) for m in timed)
    if len(mounts) == 1:
        m = mounts[0]
        for key in ("drift_stderr_ms_per_h", "audio_s", "wall_s", "burst_s", "frames",
                    "non_audio_bytes", "window_s"):  # fmt: skip
            out[key] = m.get(key)
    return out


def drop_to_air(
    bench: Bench,
    client: Client,
    drops: Sequence[Track],
    silence: Path,
    tag: str,
    quiet_s: float = 2.0,
) -> dict[str, Any]:
    """With an empty, watched folder on air, drop files in one at a time (written
    under a temporary name, then renamed) and time until each file's first audio
    frame reaches the listener."""
    result: dict[str, Any] = {"client": client.key, "trials": []}
    folder = bench.workdir / "runs" / tag / "watched"
    folder.mkdir(parents=True)
    station = Station(f"{tag}-m1", folder, folder / "unused.m3u")
    launched = client.launch_watch(station, bench.server, bench.workdir / "runs" / tag, silence)
    listener: ListenerProcess | None = None
    dropped: list[float] = []
    try:
        start = time.monotonic()
        _listed, error = wait_listed(bench, [station.mount], launched, start, timeout=30)
        if error:
            result["error"] = error
            result["log"] = launched.log_tail()
            return result
        patterns = [frame.hex() for track in drops for frame in track.first_frames]
        listener = ListenerProcess(bench, [station.mount], tag, {station.mount: patterns})
        if not listener.wait_ready(10):
            result["error"] = "listener could not connect"
            return result
        time.sleep(quiet_s)  # on air with silence, queue empty
        previous: Path | None = None
        for i, track in enumerate(drops):
            if previous is not None:
                previous.unlink()  # a folder watcher that loops must not replay it
                time.sleep(1.0)
            temporary = folder / f".drop-{i}.part"
            temporary.write_bytes(track.path.read_bytes())
            final = folder / f"drop-{i}.mp3"
            os.rename(temporary, final)
            dropped.append(time.monotonic())
            previous = final
            time.sleep(track.seconds + 1.5)
        if launched.early_exits():
            result["error"] = f"exited early: {launched.early_exits()}"
    finally:
        heard = listener.finish() if listener is not None else None
        launched.stop()
    if heard is None or not heard.get("mounts"):
        result["error"] = result.get("error") or "no listener result"
        return result
    found = heard["mounts"][0]["found_at"]
    per = len(drops[0].first_frames)
    for i, at in enumerate(dropped):
        times = [t for t in found[i * per : (i + 1) * per] if t is not None]
        result["trials"].append(min(times) - at if times else None)
    got = [t for t in result["trials"] if t is not None]
    result["drop_to_air_s"] = statistics.median(got) if got else None
    result["drop_to_air_max_s"] = max(got) if got else None
    if len(got) < len(dropped):
        result["error"] = f"{len(dropped) - len(got)} of {len(dropped)} drops never heard"
    return result


def startup_trial(bench: Bench, client: Client, stations: Sequence[Station]) -> dict[str, Any]:
    """Launch to listed, then stop: start-up time and start-up CPU only."""
    tag = stations[0].mount.rsplit("-m", 1)[0]
    start = time.monotonic()
    launched = client.launch(stations, bench.server, bench.workdir / "runs" / tag)
    try:
        listed, error = wait_listed(bench, [s.mount for s in stations], launched, start, 30)
        cpu = procs.sample(launched.pgid).cpu_s
    finally:
        launched.stop()
    return {"startup_s": max(listed.values()) if listed else None, "startup_cpu_s": cpu,
            "error": error}  # fmt: skip


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


class Ear:
    """A listener of one mount, on a thread of its own: the time of every
    read (``times``), to find the longest wait across a change."""

    def __init__(self, port: int, mount: str, *, give_up: float | None = None) -> None:
        self.mount = mount
        self.times: list[float] = []
        self._port = port
        self._give_up = give_up  # seconds to keep trying to connect; None: until stopped
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        deadline = None if self._give_up is None else time.monotonic() + self._give_up
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                sock = socket.create_connection(("127.0.0.1", self._port), timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            sock.sendall(f"GET {self.mount} HTTP/1.0\r\n\r\n".encode())
            head = sock.recv(4096)
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                sock.close()
                time.sleep(0.05)
                continue
            sock.settimeout(1.0)
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                self.times.append(time.monotonic())
            sock.close()
            return

    def stop(self) -> None:
        self._stop.set()

    def longest_gap(self, start: float, end: float, *, edges: bool = True) -> float:
        """The longest wait between reads in [start, end]; with ``edges``, from
        ``start`` to the first and from the last to ``end`` too (else inf
        with fewer than two reads)."""
        times = [t for t in self.times if start <= t <= end]
        if edges:
            times = [start, *times, end]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))
