"""A real icecast2 for tests: the product's own (pushsource.ops.trial), started
from the repository's icecast.xml."""

from __future__ import annotations

from pathlib import Path

from pushsource.ops.trial import (
    HOST,
    IcecastServer,
    TrialError,
    fetch_status,
    find_source,
    free_port,
    render_config,
    sources_of,
    wait_for_status,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "icecast.xml"

__all__ = [
    "DEFAULT_TEMPLATE",
    "HOST",
    "REPO_ROOT",
    "IcecastServer",
    "TrialError",
    "fetch_status",
    "find_source",
    "free_port",
    "render_config",
    "sources_of",
    "wait_for_status",
]
