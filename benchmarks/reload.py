"""What a reload costs the stations it leaves alone: ``python -m benchmarks.reload``.

For each N in ``--stations`` (default 1 and 300): ``pushsource run --config``
with N stations into a real icecast2, listeners on up to ``--listeners`` of
the stations the reload leaves alone, each recording when its bytes arrive.
Then the file is rewritten (the last station removed when N > 1, a new one
added, the rest as they were) and SIGHUP sent. Printed per N: how long until
the new station was on air and the removed one gone, the longest wait between
two reads of any listener in the ``--window`` seconds from a second before the
signal, the same over as long a stretch before it (what the machine gives
with no reload), and how many source logins Icecast logged for the stations
listened to (1 each: never reconnected). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Ear, icecast_template, raise_fd_limit
from benchmarks.media import fill_folder, make_tracks
from pushsource.ops.trial import IcecastServer, find_source, sources_of


def config_text(folder: Path, port: int, ids: list[str]) -> str:
    return "".join(
        f'[[station]]\nid = "{key}"\nfolder = "{folder}"\n'
        f'url = "icecast://source:hackme@127.0.0.1:{port}/{key}"\nidle = "loop"\n\n'
        for key in ids
    )


def listed(server: IcecastServer) -> set[str]:
    try:
        return {str(s.get("listenurl", "")).rsplit("/", 1)[-1] for s in sources_of(server.status())}
    except (OSError, ValueError):
        return set()


def logins(server: IcecastServer, mount: str) -> int:
    return sum(
        1
        for line in server.error_log().splitlines()
        if "Source logging in" in line and f'"{mount}"' in line
    )


def one(n: int, work: Path, folder: Path, listeners: int, window: float) -> dict[str, float]:
    server = IcecastServer(icecast_template(work / f"icecast-{n}.xml", n + 2), work / f"ice-{n}")
    server.start()
    ids = [f"s{k}" for k in range(n)]
    config = work / f"stations-{n}.toml"
    config.write_text(config_text(folder, server.port, ids), "utf-8")
    env = dict(os.environ, XDG_STATE_HOME=str(work / f"state-{n}"))
    log = (work / f"pushsource-{n}.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "-m", "pushsource", "run", "--config", str(config), "--no-console"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ears: list[Ear] = []
    try:
        deadline = time.monotonic() + 120
        while not set(ids) <= listed(server):
            if time.monotonic() > deadline or run.poll() is not None:
                raise RuntimeError(f"{n} stations not all on air: see {log.name}")
            time.sleep(0.2)
        kept = ids[:-1] if n > 1 else ids
        ears = [Ear(server.port, f"/{key}") for key in kept[:listeners]]
        time.sleep(window + 2.0)  # the listeners past Icecast's burst, a stretch to compare
        gone = ids[-1] if n > 1 else None
        config.write_text(config_text(folder, server.port, [*kept, "new"]), "utf-8")
        signalled = time.monotonic()
        run.send_signal(signal.SIGHUP)
        took = float("nan")
        while time.monotonic() - signalled < 30:
            now = listed(server)
            if "new" in now and (gone is None or gone not in now):
                took = time.monotonic() - signalled
                break
            time.sleep(0.05)
        time.sleep(max(0.0, signalled + window - 1.0 - time.monotonic()))
        end = signalled + window - 1.0
        across = max(ear.longest_gap(signalled - 1.0, end) for ear in ears)
        before = max(ear.longest_gap(signalled - 1.0 - window, signalled - 1.0) for ear in ears)
        logged = [logins(server, ear.mount) for ear in ears]
        assert find_source(sources_of(server.status()), "/new") is not None
        return {
            "stations": n,
            "took": took,
            "across": across,
            "before": before,
            "listened": len(ears),
            "max_logins": max(logged),
        }
    finally:
        for ear in ears:
            ear.stop()
        run.send_signal(signal.SIGTERM)
        run.wait(30)
        server.stop()
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload", description=__doc__)
    parser.add_argument("--stations", default="1,300", help="station counts (default 1,300)")
    parser.add_argument("--listeners", type=int, default=10)
    parser.add_argument("--window", type=float, default=4.0, help="seconds measured")
    args = parser.parse_args(argv)
    counts = [int(text) for text in args.stations.split(",") if text]
    raise_fd_limit(4 * max(counts) + 256)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tracks = make_tracks(work / "tracks", 3, 30)
        fill_folder(work / "music", tracks)
        for n in counts:
            rows.append(one(n, work, work / "music", args.listeners, args.window))
            print(rows[-1], flush=True)
    print(
        "\n| stations | new on air, removed gone | longest gap across the reload "
        "| longest gap before it | source logins of those listened |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['stations']} | {row['took']:.2f} s | {row['across'] * 1000:.0f} ms "
            f"({row['listened']} listeners) | {row['before'] * 1000:.0f} ms "
            f"| {row['max_logins']} at most |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
