"""The printed tables and the targets (reported beside the figures, never asserted)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from pushsource.engine.loop import WORKERS

LONG_WINDOW_S = 500  # a drift figure from a shorter window is reported but not judged
#: pushsource's threads whatever the number of stations: main, engine, the pools.
THREAD_BOUND = 2 + WORKERS


def _get(d: dict[str, Any] | None, key: str) -> Any:
    return None if d is None else d.get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _median(values: list[Any]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _scale_point(
    results: dict[str, Any], client: str, n: int, outputs: int = 1
) -> dict[str, Any] | None:
    for point in results.get("scale", []):
        if (point["client"], point["stations"], point.get("outputs", 1)) == (client, n, outputs):
            return dict(point)
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """pushsource's figures against the targets: issue 19's floors first, then the
    earlier ones (issue 6) that still hold. PASS, MISS or n/a."""
    single = results.get("single", {})
    ps, ez = single.get("pushsource"), single.get("ezstream")
    rows: list[dict[str, Any]] = []
    points = {n: _scale_point(results, "pushsource", n) for n in (1, 300, 1000)}

    def unheard(n: int) -> str | None:
        """A mount nobody could hear is worse than any figure the heard ones give."""
        point = points[n]
        if point is None or "skipped" in point:
            return None
        heard = point.get("mounts_heard") or 0
        return f"only {heard}/{n} mounts heard" if heard < n else None

    def add(issue: int, name: str, value: float | None, limit: float,
            ok: Callable[[float], bool], unit: str, why: str | None = None,
            stations: int | None = None) -> None:  # fmt: skip
        verdict = "n/a" if value is None or why else "PASS" if ok(value) else "MISS"
        if stations is not None and (missing := unheard(stations)):
            verdict, why = "MISS", missing
        rows.append({"issue": issue, "target": name, "value": value, "limit": limit,
                     "unit": unit, "verdict": verdict, "note": why})  # fmt: skip

    # -- issue 19 (its floors replace issue 10's targets)
    cpu_ratio = _ratio(_get(ps, "cpu_s_per_station_hour"), _get(ez, "cpu_s_per_station_hour"))
    add(19, "1 station: CPU s per audio hour, x ezstream's", cpu_ratio, 4.0,
        lambda v: v <= 4.0, "x")  # fmt: skip
    add(19, "1 station: max deviation", _get(ps, "max_deviation_ms"), 100, lambda v: v <= 100,
        "ms")  # fmt: skip
    startup = _median(results.get("startup", {}).get("pushsource", {}).get("startup_s", []))
    add(19, "1 station: start-up, launch to listed (median)", startup, 0.3,
        lambda v: v <= 0.3, "s")  # fmt: skip
    big = points[300]
    ez300 = _scale_point(results, "ezstream", 300)
    ratio300 = _ratio(_get(big, "cpu_s_per_station_hour"), _get(ez300, "cpu_s_per_station_hour"))
    add(19, "300 stations: CPU s per station-hour, x ezstream's at 300", ratio300, 1.0,
        lambda v: v <= 1.0, "x", None if big is None or (ez300 and "skipped" not in ez300)
        else "no ezstream N=300 point", stations=300)  # fmt: skip
    add(19, "300 stations: memory (RSS)", _get(big, "rss_mb"), 150, lambda v: v <= 150, "MB",
        stations=300)  # fmt: skip
    add(19, "300 stations from launch: worst pacing deviation",
        _get(big, "max_deviation_ms"), 100, lambda v: v <= 100, "ms", stations=300)  # fmt: skip
    add(19, "300 stations from launch: longest silence at a listener",
        _get(big, "longest_silence_ms"), 250, lambda v: v <= 250, "ms", stations=300)  # fmt: skip
    k = points[1000]
    add(19, "1000 stations: CPU (% of one core)", _get(k, "cpu_percent"), 40,
        lambda v: v <= 40, "%", stations=1000)  # fmt: skip
    add(19, "1000 stations: memory (RSS)", _get(k, "rss_mb"), 300, lambda v: v <= 300, "MB",
        stations=1000)  # fmt: skip
    add(19, "1000 stations: worst pacing deviation", _get(k, "max_deviation_ms"), 150,
        lambda v: v <= 150, "ms", stations=1000)  # fmt: skip
    add(19, "1000 stations: longest silence at a listener", _get(k, "longest_silence_ms"), 300,
        lambda v: v <= 300, "ms", stations=1000)  # fmt: skip
    # The pools start their threads when work comes, so N=1 may show fewer:
    # the bound is what does not grow (the main thread, the engine, the pools).
    counts = {n: _get(p, "threads") for n, p in points.items() if p and "skipped" not in p}
    shown = "/".join(_fmt(counts.get(n)) for n in (1, 300, 1000))
    known = [c for c in counts.values() if c is not None]
    add(19, f"threads at N=1/300/1000 ({shown}), most", max(known) if known else None,
        THREAD_BOUND, lambda v: v <= THREAD_BOUND, "")  # fmt: skip

    # -- issue 6, still kept
    drift = _get(ps, "drift_ms_per_h")
    short = (_get(ps, "window_s") or 0) < LONG_WINDOW_S
    add(6, "1 station: |drift|", abs(drift) if drift is not None else None, 50,
        lambda v: v <= 50, "ms/h", "window too short: run --long" if short else None)  # fmt: skip
    drop = results.get("drop_to_air", {}).get("pushsource")
    add(6, "drop-to-air (median)", _get(drop, "drop_to_air_s"), 0.5, lambda v: v <= 0.5, "s")
    walk = results.get("walk")
    add(6, "walk 1 h of MP3 (pushsource.core.frames)", _get(walk, "seconds_best"), 0.2,
        lambda v: v <= 0.2, "s")  # fmt: skip
    return rows


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                       enumerate(zip(header, widths, strict=True)))]  # fmt: skip
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths, strict=True))))  # fmt: skip
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    meta = results["meta"]
    out.append(
        f"\n== pushsource benchmark ({meta['mode']}): {meta['cpus']} CPUs, load at start "
        f"{meta['loadavg_at_start'][0]:.2f}, {meta.get('elapsed_s', 0):.0f} s =="
    )
    for key, why in results.get("skipped", {}).items():
        out.append(f"skipped {key}: {why}")

    single = results.get("single", {})
    ez_cpu = _get(single.get("ezstream"), "cpu_s_per_station_hour")
    rows = []
    for key, r in single.items():
        start = results.get("startup", {}).get(key, {})
        drift = r.get("drift_ms_per_h")
        drift_text = (f"{drift:+.0f}±{r.get('drift_stderr_ms_per_h') or 0:.0f}"
                      if drift is not None else "-")  # fmt: skip
        rows.append([
            key, _fmt(r.get("cpu_s_per_station_hour")),
            _fmt(_ratio(r.get("cpu_s_per_station_hour"), ez_cpu), ".2f"),
            _fmt(_median(start.get("startup_s", [])), ".3f"),
            _fmt(_median(start.get("startup_cpu_s", [])), ".2f"),
            _fmt(r.get("max_deviation_ms"), ".0f"), _fmt(r.get("peak_to_peak_ms"), ".0f"),
            drift_text, _fmt(r.get("longest_silence_ms"), ".0f"), _fmt(r.get("rss_mb")),
            _fmt(r.get("icecast_cpu_percent")), _fmt(r.get("threads")),
            r.get("error") or "",
        ])  # fmt: skip
    if rows:
        out.append(f"\n-- one station, {meta['single_s']:.0f} s each (CPU: steady state) --")
        header = ["client", "CPU s/h", "vs ez", "start s", "start CPU s",
                  "max dev ms", "p-p ms", "drift ms/h", "silence ms", "RSS MB", "icecast %",
                  "threads", "error"]  # fmt: skip
        out.append(_table(header, rows))

    drops = results.get("drop_to_air", {})
    if drops:
        out.append("\n-- drop-to-air (empty queue, file renamed into the folder) --")
        for key, d in drops.items():
            if "n/a" in d:
                out.append(f"{key}: n/a ({d['n/a']})")
            else:
                trials = ", ".join(_fmt(t, ".3f") for t in d.get("trials", []))
                out.append(f"{key}: median {_fmt(d.get('drop_to_air_s'), '.3f')} s "
                           f"(trials: {trials}) {d.get('error') or ''}")  # fmt: skip

    scale = results.get("scale", [])
    if scale:
        rows = []
        for p in scale:
            if "skipped" in p:
                rows.append([p["client"], str(p["stations"]), str(p.get("outputs", 1)),
                             *["-"] * 12, p["skipped"]])  # fmt: skip
                continue
            ez = _scale_point(results, "ezstream", p["stations"], p.get("outputs", 1))
            rows.append([
                p["client"], str(p["stations"]), str(p.get("outputs", 1)),
                _fmt(p.get("processes")), _fmt(p.get("threads")),
                _fmt(p.get("cpu_percent")), _fmt(p.get("cpu_s_per_station_hour")),
                _fmt(_ratio(p.get("cpu_s_per_station_hour"), _get(ez, "cpu_s_per_station_hour")),
                     ".2f"),
                _fmt(p.get("rss_mb")), _fmt(p.get("pss_mb")), _fmt(p.get("icecast_cpu_percent")),
                _fmt(p.get("startup_s"), ".2f"),
                _fmt(p.get("max_deviation_ms"), ".0f"), _fmt(p.get("longest_silence_ms"), ".0f"),
                f"{p.get('mounts_heard', 0)}/{p.get('mounts', p['stations'])}",
                "; ".join(x for x in (p.get("note"), p.get("error")) if x),
            ])  # fmt: skip
        out.append(f"\n-- scale, {meta['scale_s']:.0f} s per point --")
        header = ["client", "N", "outs", "procs", "threads", "CPU %", "CPU s/stn-h", "vs ez",
                  "RSS MB", "PSS MB", "icecast %", "start s", "worst dev ms", "worst silence ms",
                  "heard", "note"]  # fmt: skip
        out.append(_table(header, rows))
    out.extend(_outputs_section(results))

    walk = results.get("walk")
    if walk:
        out.append(f"\nwalk: {walk['frames']} frames ({walk['audio_s'] / 3600:.2f} h) with "
                   f"pushsource.core.frames in {walk['seconds_best']:.3f} s (next_run; "
                   f"{walk.get('per_frame_objects_seconds_best', float('nan')):.3f} s "
                   "with a Frame object per frame)")  # fmt: skip

    rows = [[str(t["issue"]), t["target"], _fmt(t["value"], ".3g"),
             f"{_fmt(t['limit'], '.3g')} {t['unit']}",
             t["verdict"] + (f" ({t['note']})" if t.get("note") else "")]
            for t in results.get("targets", [])]  # fmt: skip
    if rows:
        out.append("\n-- pushsource against the targets (reported, not asserted) --")
        out.append(_table(["issue", "target", "value", "limit", "verdict"], rows))
    return "\n".join(out)


def _outputs_section(results: dict[str, Any]) -> list[str]:
    """pushsource's N x K points (K pass-through outputs per station) beside its
    N x 1 point: what each more output costs, and whether every output keeps time."""
    rows = []
    for p in results.get("scale", []):
        k = p.get("outputs", 1)
        if p["client"] != "pushsource" or k == 1 or "skipped" in p:
            continue
        n = p["stations"]
        for q, label in ((_scale_point(results, "pushsource", n), f"{n} x 1"), (p, f"{n} x {k}")):
            if q is None or "skipped" in q:
                rows.append([label, *["-"] * 12, "no such point" if q is None else q["skipped"]])
                continue
            per_output = q.get("by_output") or [q]
            devs = "/".join(_fmt(o.get("max_deviation_ms"), ".0f") for o in per_output)
            gaps = "/".join(_fmt(o.get("longest_silence_ms"), ".0f") for o in per_output)
            rows.append([
                label, _fmt(q.get("cpu_percent")), _fmt(q.get("cpu_s_per_station_hour")),
                _fmt(_ratio(q.get("cpu_s_per_station_hour"),
                            _get(_scale_point(results, "pushsource", n), "cpu_s_per_station_hour")),
                     ".2f"),
                _fmt(q.get("rss_mb")), _fmt(q.get("threads")), _fmt(q.get("icecast_cpu_percent")),
                _fmt(q.get("startup_s"), ".2f"), devs, _fmt(q.get("dev_ms_median"), ".0f"),
                _fmt(q.get("worst_dev_at_s")), gaps,
                f"{q.get('mounts_heard', 0)}/{q.get('mounts', n)}", q.get("error") or "",
            ])  # fmt: skip
    if not rows:
        return []
    header = ["stations x outputs", "CPU %", "CPU s/stn-h", "vs x1", "RSS MB", "threads",
              "icecast %", "start s", "worst dev ms (per output)", "median dev ms",
              "worst dev at s", "worst silence ms (per output)", "heard", "error"]  # fmt: skip
    track_s = results.get("meta", {}).get("track_s")
    return ["\n-- several outputs per station (pushsource, pass-through; issue 13) --",
            "median dev: of the mounts' own worst; worst dev at: seconds after launch "
            f"(stations change track {_fmt(track_s)} s after their start)",
            _table(header, rows)]  # fmt: skip
