"""The monitoring shipped in docker/monitoring: every series the Grafana
dashboard and the Prometheus alert rules name is one /metrics serves, promtool
accepts the rules, and each alert fires when it should and not otherwise
(promtool's rule tests, tests/alerts_test.yml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pushsource.ops.metrics import Metrics
from pushsource.ops.runner import StationRunner
from tests.test_metrics import stations  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docker" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "docker" / "monitoring" / "grafana-dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "alerts_test.yml"

#: PromQL words that are not series: operators, modifiers, aggregations and
#: functions (functions are also told by the "(" after them).
_WORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "le",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ]
)


def series_named(expr: str) -> set[str]:
    """The series an expression names: label matchers, ranges, strings and
    the label lists of by/on/without left out, functions too."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold { or (
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana's variables ($__all, $station)
    expr = re.sub(r"label_values\(([^,)]*),\s*\w+\s*\)", r"(\1)", expr)  # Grafana's, a label
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", expr):
        word, call = match.group(0).split("(")[0].strip(), match.group(1)
        if not call and word.lower() not in _WORDS and not re.fullmatch(r"[0-9a-f]+", word):
            names.add(word)
    return names


def exposed(text: str) -> set[str]:
    """Every series name /metrics serves: its samples, and each family its
    TYPE line declares (a histogram's _bucket, _sum and _count too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text("utf-8"))["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text("utf-8"))
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for var in board["templating"]["list"]:
        yield f"${var['name']}", var["definition"]


def test_the_reader_of_expressions_finds_series_and_nothing_else() -> None:
    expr = (
        'sum by (le, station) (rate(foo_seconds_bucket{station=~"$station",x="a(b)"}[10m]))'
        " > on (station) group_left bar_total unless ignoring (x) baz == 1"
        " and time() - qux > 1.5e+3"
    )
    assert series_named(expr) == {"foo_seconds_bucket", "bar_total", "baz", "qux"}
    assert series_named("label_values(quux_state, station)") == {"quux_state"}


def test_the_dashboard_and_the_rules_name_only_series_that_metrics_serves(
    stations: list[StationRunner],  # noqa: F811 (the fixture)
) -> None:
    body, _ = Metrics(stations).render()
    served = exposed(body.decode())
    assert {"process_resident_memory_bytes", "pushsource_build_info"} <= served
    exprs = [*rule_exprs(), *dashboard_exprs()]
    assert len(exprs) > 20  # every panel and rule read
    unknown = {
        (where, name) for where, expr in exprs for name in series_named(expr) if name not in served
    }
    assert not unknown, f"named but not served by /metrics: {sorted(unknown)}"
    # Each alert the issue asks for is there.
    alerts = dict(rule_exprs())
    for name in ("StationFailed", "StationReconnecting", "Silent", "StuckOnTrack", "Late"):
        assert f"Pushsource{name}" in alerts


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):  # .ci/run installs Debian's prometheus package
            pytest.fail("promtool is missing: apt-get install prometheus")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return tool


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules() -> None:
    done = _run(_promtool(), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(dict(rule_exprs()))} rules found" in done.stdout


def test_each_alert_fires_when_it_should_and_not_otherwise(tmp_path: Path) -> None:
    tests: Any = yaml.safe_load(RULE_TESTS.read_text("utf-8"))
    tests["rule_files"] = [str(RULES)]
    fired = {
        check["alertname"]
        for case in tests["tests"]
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == set(dict(rule_exprs())), "every rule is seen firing at least once"
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests), "utf-8")
    done = _run(_promtool(), "test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
