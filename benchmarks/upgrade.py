"""What a restart in place costs a listener: ``python -m benchmarks.upgrade``.

``pushsource run`` with N stations (``--stations 1,300``) into a real
icecast2, with the control API on; listeners on up to ``--listeners`` of the
mounts (the first, the last, and evenly between). Once every station is on
air and the listeners have a few seconds, SIGUSR2: pushsource checks the new
image in a child, execs itself (same PID) and hands every connection over.
Printed per N: the longest wait between two arrivals at any listener from a
second before the signal to ``--after`` seconds after it (the gap a listener
hears; a batch is 0.1 s), the new source logins Icecast logged (0: none
reconnected), the stations carried on, and how long the control API was away
after the exec. Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.harness import Ear, icecast_template, raise_fd_limit
from benchmarks.media import fill_folder, make_tracks
from pushsource.ops.trial import IcecastServer, free_port


def logins(server: IcecastServer) -> int:
    return server.error_log().count("Source logging in")


def api_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stations", timeout=1):
            return True
    except OSError:
        return False


def measure(work: Path, stations: int, listeners: int, after: float) -> dict[str, float]:
    raise_fd_limit(4 * stations + 256)
    server = IcecastServer(icecast_template(work / "icecast.xml", stations), work / "icecast")
    server.start()
    tracks = make_tracks(work / "tracks", 1, 120.0)
    control = free_port()
    lines = [f'[control]\nlisten = "127.0.0.1:{control}"\n']
    for n in range(stations):
        folder = work / f"s{n}"
        fill_folder(folder, tracks)
        lines.append(
            f'[[station]]\nid = "s{n}"\nfolder = "{folder}"\n'
            f'url = "icecast://source:hackme@127.0.0.1:{server.port}/s{n}.mp3"\n'
            f'state = "{work}/s{n}.state"\ncache = "{work}/cache"\n'
        )
    config = work / "stations.toml"
    config.write_text("".join(lines), "utf-8")
    err = open(work / "pushsource.err", "wb")  # noqa: SIM115 (closed below)
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushsource", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=env,
    )
    picks = sorted({round(i * (stations - 1) / max(1, listeners - 1)) for i in range(listeners)})
    ears = [Ear(server.port, f"/s{n}.mp3", give_up=60) for n in picks]
    try:
        deadline = time.monotonic() + 120
        while len(server.sources()) < stations:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"only {len(server.sources())} of {stations} on air")
            time.sleep(0.2)
        time.sleep(5.0)  # past the start-up's own catch-up
        before = logins(server)
        log = work / "pushsource.err"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGUSR2)
        while b"restarting in place" not in log.read_bytes():
            time.sleep(0.005)
        execed = time.monotonic()
        while not api_up(control):
            time.sleep(0.01)
        api_back = time.monotonic() - execed
        time.sleep(after)
        gap = max(ear.longest_gap(signalled - 1.0, signalled + after, edges=False) for ear in ears)
        text = log.read_text("utf-8", "replace")
        said = [line for line in text.splitlines() if "restart" in line or "WARNING" in line]
        print("\n".join(said[:8]), file=sys.stderr)
        return {
            "stations": stations,
            "listeners": len(ears),
            "longest_gap_ms": round(gap * 1000),
            "check_and_hand_over_s": round(execed - signalled, 2),
            "control_api_back_s": round(api_back, 2),
            "carried_on": text.count("carried on:"),
            "new_logins": logins(server) - before,
            "same_pid": float(proc.poll() is None),
        }
    finally:
        for ear in ears:
            ear.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", default="1,300", help="station counts (default 1,300)")
    parser.add_argument("--listeners", type=int, default=10, help="listened mounts, at most")
    parser.add_argument("--after", type=float, default=8.0, help="seconds listened after")
    args = parser.parse_args()
    print(
        f"{'stations':>8} {'ears':>5} {'longest gap':>12} {'check+handover':>15} "
        f"{'API back':>9} {'carried on':>11} {'new logins':>11}"
    )
    for count in (int(n) for n in args.stations.split(",")):
        with tempfile.TemporaryDirectory(prefix="pushsource-upgrade-") as tmp:
            got = measure(Path(tmp), count, min(args.listeners, count), args.after)
        print(
            f"{got['stations']:>8} {got['listeners']:>5} {got['longest_gap_ms']:>9} ms "
            f"{got['check_and_hand_over_s']:>13} s {got['control_api_back_s']:>7} s "
            f"{got['carried_on']:>11} {got['new_logins']:>11}",
            flush=True,
        )


if __name__ == "__main__":
    main()
