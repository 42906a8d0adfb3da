"""A real full disk: a small tmpfs mounted for one test, filled to a few KiB."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(kib: int) -> Iterator[Path]:
    """A fresh tmpfs of ``kib`` KiB, unmounted after. Skips the test where
    none can be mounted (it needs root, or CAP_SYS_ADMIN in a container)."""
    where = Path(tempfile.mkdtemp(prefix="pushsource-tmpfs-"))
    if shutil.which("mount") is None:
        where.rmdir()
        pytest.skip("needs mount(8) to make a full disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", where],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True, check=False)
        where.rmdir()


def free_bytes(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def fill(where: Path, leave: int) -> None:
    """Take all but about ``leave`` bytes of the disk under ``where``."""
    with (where / "filler").open("ab") as filler:
        filler.write(bytes(max(0, free_bytes(where) - leave)))
    assert 0 < free_bytes(where) <= leave + 8192, free_bytes(where)
