"""The compatibility table, filled from the tests: each compatibility test that
passes marks its cell (server, feature); ``make compat`` runs them with
PUSHSOURCE_COMPAT_TABLE set and prints the Markdown table they made."""

from __future__ import annotations

import os
from pathlib import Path

#: Rows: what a station pushes to. Columns: what the tests showed there.
SERVERS: dict[str, str] = {
    "2.4.4": "Icecast 2.4.4 (Debian 12)",
    "2.5.0": "Icecast 2.5.0",
    "kh": "icecast-kh 2.4.0-kh22",
    "shoutcast": "SHOUTcast v1 protocol (Icecast 2.4.4 `<shoutcast-mount>`)",
}
FEATURES = [
    "handshake",
    "titles",
    "reconnect",
    "listener counts",
    "check",
    "second output",
    "live DJ",
]

_passed: set[tuple[str, str]] = set()


def passed(server: str, feature: str) -> None:
    """A test showed ``feature`` working on ``server``."""
    if server not in SERVERS or feature not in FEATURES:
        raise ValueError(f"no such cell: {server!r}, {feature!r}")
    _passed.add((server, feature))


def table() -> str:
    """The Markdown table of what passed: "yes", or "no" for a cell no test
    passed in this run."""
    lines = [
        "| server | " + " | ".join(FEATURES) + " |",
        "|---|" + "---|" * len(FEATURES),
    ]
    for key, name in SERVERS.items():
        cells = ["yes" if (key, f) in _passed else "no" for f in FEATURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table() -> Path | None:
    """Write the table where PUSHSOURCE_COMPAT_TABLE says, if it says."""
    where = os.environ.get("PUSHSOURCE_COMPAT_TABLE")
    if not where or not _passed:
        return None
    path = Path(where)
    path.write_text(table(), "utf-8")
    return path
