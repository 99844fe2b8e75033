"""CPU time of processes and of the whole machine, read from ``/proc`` (Linux; ``None`` elsewhere).

Benchmarks run their load generator, servers and databases on one machine, often a small shared one. They take a
sample of these counters before and after the timed interval and report the differences: each party's CPU seconds
and the machine's "other" busy time (what else ran meanwhile), which is the main source of noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """CPU seconds (user + system) process ``pid`` used so far, None if it is gone or there is no ``/proc``.

    With ``children``, also its waited-for children's (``cutime`` + ``cstime``).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the parenthesised comm start at field 3 (state); utime, stime, cutime, cstime are 14-17.
    after = text[text.rindex(")") + 2 :].split()
    return sum(int(v) for v in after[11 : 15 if children else 13]) / _ticks()


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float] | None:
    """CPU seconds used so far by each live process of ``pids``; None without ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return None
    found = {pid: process_cpu_seconds(pid) for pid in pids}
    return {pid: cpu for pid, cpu in found.items() if cpu is not None}


def cpu_used(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds used between two :func:`cpu_by_pid` samples by the processes alive at the second (new ones
    counted from 0); None when either is unknown."""
    if before is None or after is None:
        return None
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def minus(after: float | None, before: float | None) -> float | None:
    """``after - before``, None when either is unknown."""
    return None if after is None or before is None else after - before


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process used so far."""
    own = os.times()
    return own.user + own.system


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine used so far (all cores; ``/proc/stat`` user + nice + system).

    Interrupt and softirq time is left out: loopback traffic between processes lands there without being charged
    to either of them."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    if first[:1] != ["cpu"]:
        return None
    return sum(int(v) for v in first[1:4]) / _ticks()


def cpu_of_processes_named(name: str) -> float | None:
    """CPU seconds used so far by the running processes whose command name is ``name`` (e.g. every PostgreSQL
    process, of every database); None without ``/proc``. A process that exits takes its figure with it."""
    if not Path("/proc/self/stat").exists():
        return None
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            if text[text.index("(") + 1 : text.rindex(")")] == name:
                after = text[text.rindex(")") + 2 :].split()
                total += (int(after[11]) + int(after[12])) / _ticks()
    return total


async def wait_until_quiet(threshold: float, max_wait: float, window: float) -> float | None:
    """Measure the machine's busy share of one core over ``window``-second windows until it is at most
    ``threshold`` (e.g. 0.25) or ``max_wait`` seconds have passed (at least one window).

    Returns the last window's share (1.0 = one core busy), or None without ``/proc``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    while True:
        t0, busy0 = loop.time(), machine_busy_seconds()
        await asyncio.sleep(window)
        busy1 = machine_busy_seconds()
        if busy0 is None or busy1 is None:
            return None
        share = (busy1 - busy0) / (loop.time() - t0)
        if share <= threshold or loop.time() >= deadline:
            return share


def process_group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``: a server started with ``start_new_session`` and the children it
    spawned (granian's worker process, for one); empty without ``/proc``."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            # After the parenthesised comm: state, ppid, pgrp.
            if int(text[text.rindex(")") + 2 :].split()[2]) == pgid:
                found.append(int(stat.parent.name))
    return found


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's children that have exited and been waited for (a load
    generator run with :func:`subprocess.run`, for one)."""
    own = os.times()
    return own.children_user + own.children_system
