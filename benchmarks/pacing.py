"""Pacing figures from what a listener saw: (arrival time, audio seconds so far) pairs."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any


def analyse(
    arrivals: Sequence[tuple[float, float]], *, stop: float, skip: float = 5.0
) -> dict[str, Any]:
    """offset(t) = audio received by t - wall time since the first byte.

    ``skip`` seconds after the first byte are left out of the offset figures:
    Icecast's burst on connect (about 4 s of audio at once) is absorbed there.
    The longest silence covers the whole connection, up to ``stop``.
    """
    if not arrivals:
        return {"arrivals": 0, "error": "nothing arrived"}
    t0 = arrivals[0][0]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    gaps.append(max(0.0, stop - arrivals[-1][0]))
    result: dict[str, Any] = {
        "arrivals": len(arrivals),
        "wall_s": stop - t0,
        "audio_s": arrivals[-1][1],
        "longest_silence_ms": max(gaps) * 1000,
    }
    points = [(t - t0, audio - (t - t0)) for t, audio in arrivals if t - t0 >= skip]
    if len(points) < 3:
        result["error"] = f"fewer than 3 arrivals after the first {skip} s"
        return result
    offsets = [o for _, o in points]
    median = statistics.median(offsets)
    slope, stderr = _fit(points)
    worst_t, worst_o = max(points, key=lambda p: abs(p[1] - median))
    result.update(
        {
            "burst_s": median,  # how far ahead of wall time the listener runs: the burst
            "max_deviation_ms": abs(worst_o - median) * 1000,
            # When (on the arrivals' clock) and which way: negative is late.
            "max_deviation_at": t0 + worst_t,
            "max_deviation_signed_ms": (worst_o - median) * 1000,
            "peak_to_peak_ms": (max(offsets) - min(offsets)) * 1000,
            "drift_ms_per_h": slope * 3600 * 1000,
            "drift_stderr_ms_per_h": stderr * 3600 * 1000,
            "window_s": points[-1][0] - points[0][0],
        }
    )
    return result


def _fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error (residuals taken as
    independent, which arrivals are not quite: read the error as a lower bound)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, math.inf
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    intercept = my - slope * mx
    ss = sum((y - intercept - slope * x) ** 2 for x, y in points)
    return slope, math.sqrt(ss / (n - 2) / sxx) if n > 2 else math.inf
