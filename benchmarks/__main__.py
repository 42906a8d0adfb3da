"""python -m benchmarks [--smoke] [--long] [--out PATH] [--only CLIENTS] [--scale 1,10,100,300]
[--outputs K]"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.clients import Client, Pushsource, all_clients
from benchmarks.harness import (
    Bench,
    drop_to_air,
    icecast_template,
    raise_fd_limit,
    run_point,
    startup_trial,
)
from benchmarks.media import make_mp3, make_silence, make_tracks, playlist_order
from pushsource.ops.trial import IcecastServer

#: Without `pushsource run`, N stations are N processes; above this many, skip.
FALLBACK_MAX = 100


@dataclass(frozen=True)
class Plan:
    single_s: float  # streaming time of each one-station run
    scale_s: float  # streaming time of each scale point
    scale: tuple[int, ...]
    extra_scale: tuple[tuple[str, int], ...]  # (client, N) points run besides the grid
    #: (N, K): pushsource with N stations of K pass-through outputs each, run
    #: right after its N x 1 point (issue 13).
    outputs_scale: tuple[tuple[int, int], ...]
    startup_trials: int  # launches to on-air only, besides the measured runs
    drops: int  # drop-to-air trials per client
    drop_track_s: float
    track_s: float  # every playlist track lasts this long
    warmup_s: float
    skip_s: float
    scale_skip_s: float  # the listener starts with the client at scale: no late burst to absorb
    quiet_s: float  # drop-to-air: on air with silence this long before the first drop
    restarts: bool  # a fresh Icecast for every run (the smoke run saves the seconds)
    walk: bool
    default_clients: tuple[str, ...]
    scale_clients: tuple[str, ...]


DEFAULT = Plan(
    single_s=50, scale_s=25, scale=(1, 10, 100, 300),
    extra_scale=(("pushsource", 1000), ("pushsource", 3000)),
    outputs_scale=((100, 2),),
    startup_trials=4, drops=3, drop_track_s=3, track_s=20, warmup_s=5, skip_s=5,
    scale_skip_s=1, quiet_s=3,
    restarts=True, walk=True,
    default_clients=("pushsource", "ezstream", "liquidsoap-copy", "liquidsoap-mp3"),
    scale_clients=("pushsource", "ezstream", "liquidsoap-copy"),
)  # fmt: skip
SMOKE = Plan(
    single_s=4, scale_s=4, scale=(2,), extra_scale=(), outputs_scale=((2, 2),),
    startup_trials=0, drops=1,
    drop_track_s=1, track_s=2.5, warmup_s=1.5, skip_s=1.5, scale_skip_s=1, quiet_s=1,
    restarts=False,
    walk=False,
    default_clients=("pushsource", "ezstream"), scale_clients=("pushsource", "ezstream"),
)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes: a check")
    parser.add_argument("--long", action="store_true", help="10-minute one-station runs (drift)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument(
        "--only", help="comma-separated clients: pushsource,ezstream,liquidsoap-copy,liquidsoap-mp3"
    )
    parser.add_argument("--scale", help="station counts, e.g. 1,10,100,300 (empty: none)")
    parser.add_argument(
        "--outputs",
        type=int,
        help="also run pushsource at each scale point with this many pass-through outputs "
        "per station (default: 100 x 2 only; 1: none)",
    )
    parser.add_argument(
        "--phases",
        default="single,drop,scale,walk",
        help="which parts to run (default %(default)s)",
    )
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temp dir)")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="a process busy-looping on one core beside every client, the whole run",
    )
    return parser.parse_args(argv)


def versions() -> dict[str, str | None]:
    def first_line(*argv: str) -> str | None:
        if shutil.which(argv[0]) is None:
            return None
        done = subprocess.run(argv, capture_output=True, text=True)
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else None

    import pushsource

    return {
        "pushsource": pushsource.__version__,
        "ezstream": first_line("ezstream", "-V"),
        "liquidsoap": first_line("liquidsoap", "--version"),
        "icecast2": first_line("icecast2", "-v"),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = SMOKE if args.smoke else DEFAULT
    single_s = 600.0 if args.long else plan.single_s
    scale = plan.scale
    if args.scale is not None:  # the points asked for, and no others
        scale = tuple(int(n) for n in args.scale.split(",") if n.strip())
        plan = dataclasses.replace(plan, extra_scale=(), outputs_scale=())
    if args.outputs is not None:
        if args.outputs < 1:
            print("--outputs: at least 1 (1: no outputs points)", file=sys.stderr)
            return 2
        wanted_outputs = tuple((n, args.outputs) for n in scale) if args.outputs > 1 else ()
        plan = dataclasses.replace(plan, outputs_scale=wanted_outputs)
    wanted = tuple(args.only.split(",")) if args.only else plan.default_clients
    clients = {c.key: c for c in all_clients()}
    unknown = [k for k in wanted if k not in clients]
    if unknown:
        print(f"--only: unknown client(s) {unknown}; known: {sorted(clients)}", file=sys.stderr)
        return 2

    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": "smoke" if args.smoke else "long" if args.long else "default",
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "versions": versions(),
            "single_s": single_s,
            "scale_s": plan.scale_s,
            "scale": list(scale),
            "outputs_scale": [list(p) for p in plan.outputs_scale],
            "warmup_s": plan.warmup_s,
            "listener_skip_s": plan.skip_s,
            "scale_listener_skip_s": plan.scale_skip_s,
            "track_s": plan.track_s,
            "busy_process_beside": args.busy,
        },
        "skipped": {},
        "single": {},
        "startup": {},
        "drop_to_air": {},
        "scale": [],
    }
    available: dict[str, Client] = {}
    for key in wanted:
        reason = clients[key].missing()
        if reason:
            results["skipped"][key] = reason
            print(f"skipping {key}: {reason}", flush=True)
        else:
            available[key] = clients[key]

    max_mounts = _max_mounts(plan, scale)
    results["meta"]["fd_limit"] = raise_fd_limit(4 * max_mounts + 256)
    if not results["meta"]["fd_limit"]["enough"]:
        print(f"warning: open-file limit {results['meta']['fd_limit']}", flush=True)

    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-bench-")) if owned else args.workdir
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # icecast2 drops to nobody and must reach its log dir
    began = time.monotonic()
    # Another program keeping one of the cores busy: what a shared machine does.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        run_all(args, plan, single_s, scale, available, workdir, results)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        results["meta"]["elapsed_s"] = time.monotonic() - began
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = report.targets(results)
    print(report.render(results), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n", "utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


def run_all(
    args: argparse.Namespace,
    plan: Plan,
    single_s: float,
    scale: tuple[int, ...],
    available: dict[str, Client],
    workdir: Path,
    results: dict[str, Any],
) -> None:
    say = _progress()
    phases = set(args.phases.split(","))
    say("making the playlist")
    max_mounts = _max_mounts(plan, scale)
    # Long enough that no station runs out while the last ones are still starting.
    longest = max(single_s, plan.scale_s) + 60 + 0.1 * max_mounts
    tracks = make_tracks(workdir / "media", 4, plan.track_s)
    order = playlist_order(tracks, longest)
    drops = [
        make_mp3(workdir / "media" / f"drop{i}.mp3", plan.drop_track_s,
                 ("pinknoise", "sine", str(500 + 100 * i)), "Benchmark", f"Drop {i}")
        for i in range(plan.drops)
    ]  # fmt: skip
    silence = make_silence(workdir / "media" / "silence.mp3", 10)
    max_mounts = _max_mounts(plan, scale)
    template = icecast_template(workdir / "icecast-template.xml", max_mounts)
    icecast = IcecastServer(template, workdir / "icecast")
    icecast.start()
    bench = Bench(workdir, icecast, plan.warmup_s, plan.skip_s)
    try:
        for key, client in available.items() if "single" in phases else ():
            say(f"one station: {key}, {single_s:.0f} s")
            stations = bench.stations(f"one-{key}", 1, order)
            if plan.restarts:  # each run starts from a quiet server
                icecast.restart()
            results["single"][key] = run_point(bench, client, stations, single_s, f"one-{key}")
            trials = [results["single"][key].get("startup_s")]
            cpus = [results["single"][key].get("startup_cpu_s")]
            # Slow starters (Liquidsoap: seconds) get one extra launch, not two.
            extra = plan.startup_trials if (trials[0] or 0) < 2 else min(1, plan.startup_trials)
            for i in range(extra):
                stations = bench.stations(f"start{i}-{key}", 1, order)
                trial = startup_trial(bench, client, stations)
                trials.append(trial["startup_s"])
                cpus.append(trial["startup_cpu_s"])
            results["startup"][key] = {"startup_s": trials, "startup_cpu_s": cpus}
        for key, client in available.items() if "drop" in phases else ():
            if not client.watches_folder:
                results["drop_to_air"][key] = {"client": key, "n/a": _why_no_drop(key)}
                continue
            say(f"drop-to-air: {key}, {plan.drops} drops")
            if plan.restarts:
                icecast.restart()
            results["drop_to_air"][key] = drop_to_air(
                bench, client, drops, silence, f"drop-{key}", quiet_s=plan.quiet_s
            )
        if "scale" not in phases:
            scale = ()
        points = scale_points(plan, scale, available)
        for key, n, k in points:
            client = available[key]
            what = f"{n} stations" + (f" x {k} outputs" if k > 1 else "")
            if isinstance(client, Pushsource) and n > FALLBACK_MAX and not client.has_run_command():
                why = f"`pushsource run` not available and {n} processes would swamp the machine"
                results["scale"].append({"client": key, "stations": n, "outputs": k,
                                         "skipped": why})  # fmt: skip
                say(f"scale: {key}, {what}: skipped ({why})")
                continue
            say(f"scale: {key}, {what}, {plan.scale_s:.0f} s")
            tag = f"n{n}-{key}" + (f"-x{k}" if k > 1 else "")
            stations = bench.stations(tag, n, order, outputs=k)
            # A fresh server: what one client left behind (a backlog of status
            # requests, half-closed sources) must not weigh on the next.
            if plan.restarts:
                icecast.restart()
            point = run_point(bench, available[key], stations, plan.scale_s, tag,
                              from_launch=True, skip_s=plan.scale_skip_s)  # fmt: skip
            results["scale"].append(point)
        if plan.walk and "walk" in phases:
            say("walking one hour of MP3 with pushsource.core.frames")
            from benchmarks.walk import measure

            results["walk"] = measure()
    finally:
        icecast.stop()


def scale_points(
    plan: Plan, scale: tuple[int, ...], available: dict[str, Client]
) -> list[tuple[str, int, int]]:
    """(client, stations, outputs per station) in run order: the grid, each
    outputs point right after pushsource's N x 1 point (the same conditions, as
    near in time as can be), then the extra points."""
    points: list[tuple[str, int, int]] = []
    for n in scale:
        points += [(key, n, 1) for key in plan.scale_clients if key in available]
        if "pushsource" in available:
            points += [("pushsource", n, k) for m, k in plan.outputs_scale if m == n]
    if scale:
        points += [(key, n, 1) for key, n in plan.extra_scale if key in available]
        if "pushsource" in available:  # an outputs point whose N x 1 is not in the grid
            points += [("pushsource", n, k) for n, k in plan.outputs_scale if n not in scale]
    return points


def _max_mounts(plan: Plan, scale: tuple[int, ...]) -> int:
    return max([*scale, *(n for _, n in plan.extra_scale),
                *(n * k for n, k in plan.outputs_scale), 1])  # fmt: skip


def _why_no_drop(key: str) -> str:
    if key == "ezstream":
        return (
            "ezstream plays a fixed playlist, file or program; it does not watch a folder "
            "(a new file is only seen when the playlist is re-read at its end or on SIGHUP)"
        )
    if key == "liquidsoap-mp3":
        return (
            "re-encoded: the dropped file's frames cannot be recognised by their bytes; "
            "liquidsoap-copy measures the same folder watch"
        )
    return "this client does not watch a folder"


def _progress() -> Any:
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - start:6.1f} s] {text}", flush=True)

    return say


if __name__ == "__main__":
    sys.exit(main())
