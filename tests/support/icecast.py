"""A real icecast2 for tests: the product's own (pushsource.ops.trial), started
from the repository's icecast.xml."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    "edited_template",
    "fetch_status",
    "find_source",
    "free_port",
    "render_config",
    "set_limits",
    "sources_of",
    "temp_icecast",
    "wait_for_status",
]

Edit = Callable[[ET.Element], None]


def edited_template(workdir: Path, edit: Edit) -> Path:
    """The shipped icecast.xml with ``edit`` applied to its root, in ``workdir``."""
    tree = ET.parse(DEFAULT_TEMPLATE)
    edit(tree.getroot())
    template = workdir / "template.xml"
    tree.write(template, encoding="unicode")
    return template


def set_limits(**limits: int) -> Edit:
    """An edit setting ``<limits><NAME>`` (``sources=50``, ``clients=100``)."""

    def edit(root: ET.Element) -> None:
        for tag, value in limits.items():
            found = root.find(f"limits/{tag}")
            assert found is not None, f"icecast.xml has no <limits><{tag}>"
            found.text = str(value)

    return edit


@contextlib.contextmanager
def temp_icecast(
    name: str, *, edit: Edit | None = None, start: bool = True, **options: Any
) -> Iterator[IcecastServer]:
    """An icecast2 of a test's own (to kill, freeze, restart or configure), from
    the shipped icecast.xml changed by ``edit``; ``options`` go to
    IcecastServer (``tls``, ``port``). Its workdir is a fresh directory under
    /tmp: as root icecast2 runs as nobody, who cannot enter pytest's private
    tmp directories. Stopped and removed at the end, even frozen (SIGSTOP)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"pushsource-icecast-{name}-"))
    template = DEFAULT_TEMPLATE if edit is None else edited_template(workdir, edit)
    server = IcecastServer(template, workdir, **options)
    try:
        if start:
            server.start()
        yield server
    finally:
        process = server._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a frozen one would not stop
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
