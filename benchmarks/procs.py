"""CPU time and memory of a whole process group, from /proc.

Each client runs in a process group of its own (its processes, threads and
whatever they spawn stay in it), so summing /proc/PID/stat over the group
counts everything: utime+stime of the live processes plus cutime+cstime of
children they already reaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class GroupSample:
    pids: int
    cpu_s: float  # user+sys, reaped children included
    rss_bytes: int  # sum of the processes' resident sets
    threads: int  # entries of /proc/PID/task, summed over the group's processes


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            # fields[0] is field 3 (state); pgrp is field 5.
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


def sample(pgid: int) -> GroupSample:
    cpu_ticks = rss_pages = count = threads = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None or int(fields[2]) != pgid:
            continue
        count += 1
        # utime, stime, cutime, cstime are fields 14-17; rss is field 24.
        cpu_ticks += sum(int(v) for v in fields[11:15])
        rss_pages += int(fields[21])
        threads += thread_count(int(entry))
    return GroupSample(count, cpu_ticks / TICK, rss_pages * PAGE, threads)


def thread_count(pid: int) -> int:
    """How many threads the process has now: the entries of /proc/PID/task."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0


def pss_bytes(pgid: int) -> int | None:
    """Proportional set size of the group: shared pages split among their users,
    so N copies of one program are not counted N times. None if unreadable."""
    total = 0
    for pid in group_members(pgid):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
        else:
            return None
    return total
