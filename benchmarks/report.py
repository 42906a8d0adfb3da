"""The printed tables and the targets (reported beside the figures, never asserted)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

LONG_WINDOW_S = 500  # a drift figure from a shorter window is reported but not judged


def _get(d: dict[str, Any] | None, key: str) -> Any:
    return None if d is None else d.get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _median(values: list[Any]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def _scale_point(results: dict[str, Any], client: str, n: int) -> dict[str, Any] | None:
    for point in results.get("scale", []):
        if point["client"] == client and point["stations"] == n:
            return dict(point)
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """pushsource's figures against the issue's targets: PASS, MISS or n/a."""
    single = results.get("single", {})
    ps, ez = single.get("pushsource"), single.get("ezstream")
    rows: list[dict[str, Any]] = []
    big = _scale_point(results, "pushsource", 300)
    # A mount nobody could hear is worse than any figure the heard ones give.
    unheard = None
    if big is not None and "skipped" not in big:
        heard = big.get("mounts_heard") or 0
        if heard < big["stations"]:
            unheard = f"only {heard}/{big['stations']} mounts heard"

    def add(name: str, value: float | None, limit: float, ok: Callable[[float], bool],
            unit: str, why: str | None = None) -> None:  # fmt: skip
        verdict = "n/a" if value is None or why else "PASS" if ok(value) else "MISS"
        if name.startswith("300 stations") and unheard:
            verdict, why = "MISS", unheard
        rows.append({"target": name, "value": value, "limit": limit, "unit": unit,
                     "verdict": verdict, "note": why})  # fmt: skip

    cpu_ratio = _ratio(_get(ps, "cpu_s_per_station_hour"), _get(ez, "cpu_s_per_station_hour"))
    add("one station: CPU ratio to ezstream", cpu_ratio, 1.0, lambda v: v <= 1.0, "x")
    startup = _median(results.get("startup", {}).get("pushsource", {}).get("startup_s", []))
    add("start-up (launch to listed, median)", startup, 0.3, lambda v: v <= 0.3, "s")
    add("one station: max deviation", _get(ps, "max_deviation_ms"), 100, lambda v: v <= 100, "ms")
    drift = _get(ps, "drift_ms_per_h")
    short = (_get(ps, "window_s") or 0) < LONG_WINDOW_S
    add("one station: |drift|", abs(drift) if drift is not None else None, 50,
        lambda v: v <= 50, "ms/h", "window too short: run --long" if short else None)  # fmt: skip
    drop = results.get("drop_to_air", {}).get("pushsource")
    add("drop-to-air (median)", _get(drop, "drop_to_air_s"), 0.5, lambda v: v <= 0.5, "s")

    ez50 = _scale_point(results, "ezstream", 50)
    limit50 = _get(ez50, "cpu_s_per_station_hour")
    value = _get(big, "cpu_s_per_station_hour")
    add("300 stations: CPU s per station-hour vs ezstream at 50",
        value, limit50 if limit50 is not None else float("nan"),
        lambda v: limit50 is not None and v <= limit50, "s/h",
        None if limit50 is not None else "no ezstream N=50 point")  # fmt: skip
    add("300 stations: total RSS", _get(big, "rss_mb"), 200, lambda v: v <= 200, "MB")
    add("300 stations: worst mount deviation", _get(big, "max_deviation_ms"), 150,
        lambda v: v <= 150, "ms")  # fmt: skip
    add("300 stations: longest silence", _get(big, "longest_silence_ms"), 300,
        lambda v: v <= 300, "ms")  # fmt: skip
    walk = results.get("walk")
    add("walk 1 h of MP3 (pushsource.core.frames)", _get(walk, "seconds_best"), 0.2,
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
            _fmt(r.get("icecast_cpu_percent")),
            r.get("error") or "",
        ])  # fmt: skip
    if rows:
        out.append(f"\n-- one station, {meta['single_s']:.0f} s each (CPU: steady state) --")
        header = ["client", "CPU s/h", "vs ez", "start s", "start CPU s", "max dev ms", "p-p ms",
                  "drift ms/h", "silence ms", "RSS MB", "icecast %", "error"]  # fmt: skip
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
                rows.append([p["client"], str(p["stations"]), *["-"] * 11, p["skipped"]])
                continue
            ez = _scale_point(results, "ezstream", p["stations"])
            rows.append([
                p["client"], str(p["stations"]), _fmt(p.get("processes")),
                _fmt(p.get("cpu_percent")), _fmt(p.get("cpu_s_per_station_hour")),
                _fmt(_ratio(p.get("cpu_s_per_station_hour"), _get(ez, "cpu_s_per_station_hour")),
                     ".2f"),
                _fmt(p.get("rss_mb")), _fmt(p.get("pss_mb")), _fmt(p.get("icecast_cpu_percent")),
                _fmt(p.get("startup_s"), ".2f"),
                _fmt(p.get("max_deviation_ms"), ".0f"), _fmt(p.get("longest_silence_ms"), ".0f"),
                f"{p.get('mounts_heard', 0)}/{p['stations']}",
                "; ".join(x for x in (p.get("note"), p.get("error")) if x),
            ])  # fmt: skip
        out.append(f"\n-- scale, {meta['scale_s']:.0f} s per point --")
        header = ["client", "N", "procs", "CPU %", "CPU s/stn-h", "vs ez", "RSS MB", "PSS MB",
                  "icecast %", "start s", "worst dev ms", "worst silence ms", "heard",
                  "note"]  # fmt: skip
        out.append(_table(header, rows))

    walk = results.get("walk")
    if walk:
        out.append(f"\nwalk: {walk['frames']} frames ({walk['audio_s'] / 3600:.2f} h) with "
                   f"pushsource.core.frames in {walk['seconds_best']:.3f} s (next_run; "
                   f"{walk.get('per_frame_objects_seconds_best', float('nan')):.3f} s "
                   "with a Frame object per frame)")  # fmt: skip

    rows = [[t["target"], _fmt(t["value"], ".3g"), f"{_fmt(t['limit'], '.3g')} {t['unit']}",
             t["verdict"] + (f" ({t['note']})" if t.get("note") else "")]
            for t in results.get("targets", [])]  # fmt: skip
    if rows:
        out.append("\n-- pushsource against the targets (reported, not asserted) --")
        out.append(_table(["target", "value", "limit", "verdict"], rows))
    return "\n".join(out)
