"""`python -m benchmarks --smoke` runs end to end and reports real, measured figures.

Only that the figures exist and are physically sane is checked (CPU was used,
audio arrived, about as much audio as wall time); how good they are is the
benchmark's business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.icecast import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pushsource against the targets" in done.stdout, done.stdout
    return dict(json.loads(out.read_text("utf-8")))


def _clients(results: dict[str, Any]) -> list[str]:
    return [c for c in ("pushsource", "ezstream") if c not in results["skipped"]]


def _check_streamed(point: dict[str, Any], stations: int, outputs: int = 1) -> None:
    assert point.get("error") is None, point
    assert point["stations"] == stations
    assert point["mounts"] == stations * outputs, point
    assert point["mounts_heard"] == stations * outputs, point
    assert point["closed_early"] == 0, point
    # About 16 KB/s per mount arrived, and it was MPEG audio.
    assert point["bytes_received"] > stations * outputs * 16_000 * point["stream_s"] / 2, point
    assert point["processes"] >= 1
    assert point["rss_mb"] > 1
    assert 0 < point["startup_s"] < 30
    assert point["total_cpu_s"] >= point["steady_cpu_s"] >= 0
    assert 0 <= point["max_deviation_ms"] <= point["peak_to_peak_ms"] + 1e-6
    assert point["longest_silence_ms"] > 0


def test_smoke_single_station_figures(results: dict[str, Any]) -> None:
    assert results["meta"]["mode"] == "smoke"
    assert "pushsource" in _clients(results), results["skipped"]
    for key in _clients(results):
        point = results["single"][key]
        _check_streamed(point, 1)
        # Audio received tracks wall time: the burst puts it ahead by a few
        # seconds at most, and a client that stalled would be far behind.
        assert point["wall_s"] / 2 < point["audio_s"] < point["wall_s"] + 8, point
        assert point["frames"] > 0
        assert point["drift_stderr_ms_per_h"] >= 0
    # pushsource is a Python program: starting it and streaming costs CPU time.
    assert results["single"]["pushsource"]["total_cpu_s"] > 0


def test_smoke_drop_to_air_and_scale(results: dict[str, Any]) -> None:
    drop = results["drop_to_air"]["pushsource"]
    assert drop.get("error") is None, drop
    assert len(drop["trials"]) == 1
    assert 0 < drop["drop_to_air_s"] < 10
    if "ezstream" in _clients(results):
        assert "folder" in results["drop_to_air"]["ezstream"]["n/a"]
    points = {(p["client"], p["stations"], p["outputs"]): p for p in results["scale"]}
    for key in _clients(results):
        _check_streamed(points[(key, 2, 1)], 2)
    # Two stations of two outputs each, in one process: every output of every
    # station was heard, each output's share about half of what arrived.
    two = points[("pushsource", 2, 2)]
    _check_streamed(two, 2, outputs=2)
    assert [o["output"] for o in two["by_output"]] == [1, 2], two
    for output in two["by_output"]:
        assert output["mounts_heard"] == 2, two
        assert 0.3 < output["bytes_received"] / two["bytes_received"] < 0.7, two
        assert output["max_deviation_ms"] <= two["max_deviation_ms"] + 1e-6, two
    for target in results["targets"]:
        assert target["verdict"] in ("PASS", "MISS", "n/a"), target
