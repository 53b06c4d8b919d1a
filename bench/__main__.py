"""`make bench`: performance of the after-sales cases on this machine, with a stack of its own.

    python -m bench                  # full run (~18 min on 2 cores), writes BENCHMARKS.md
    python -m bench --quick          # smoke run (~2 min), prints only
    python -m bench --waiting 20000  # more waiting cases
    python -m bench --only throughput,latency

Phases: throughput (real cases vs a baseline of the same shape and one of the old design's shape),
scaling (worker processes), tuning (worker variants), latency (help requests at 1/10/50 clients in a
closed loop: capacity), openloop (help requests at fixed Poisson arrival rates: latency), waiting (N open
cases: worker RSS, API reads). See bench/run.py and BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

# Before anything imports platformdirs (the Temporal CLI and some libraries want a runtime dir).
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ["throughput", "scaling", "tuning", "openloop", "latency", "waiting"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (~2 min); BENCHMARKS.md is left alone")
    p.add_argument("--waiting", type=int, default=None, help="waiting cases to open (default 10000, quick 300)")
    p.add_argument("--cases", type=int, default=None, help="cases of (a) per throughput phase, over its rounds (default 360: 60 a round; (b): half)")
    p.add_argument("--concurrency", type=int, default=None, help="concurrent clients of the throughput runs")
    p.add_argument("--only", default=None, help=f"comma-separated phases among {','.join(PHASES)}")
    p.add_argument("--no-tuning", action="store_true", help="skip the tuning variants")
    p.add_argument("--open-rates", default=None,
                   help="comma-separated help requests per second of the open-loop runs (default 5,20,50)")
    p.add_argument("--open-seconds", type=float, default=None, help="length of each open-loop rate (default 20)")
    p.add_argument("--worker-knobs", default="{}",
                   help='JSON temporalio Worker arguments for every worker, e.g. \'{"max_cached_workflows": 2000}\' '
                        '(+ "runner": sandbox|passthrough_all|unsandboxed); default: worker.py as it is')
    p.add_argument("--worker-pool", type=int, default=None, help="DATABASE_POOL_SIZE of the workers")
    p.add_argument("--open-window", type=int, default=None,
                   help="waiting cases on their way to their waiting stage at a time (default 0: all at once)")
    p.add_argument("--write", action="store_true", help="write BENCHMARKS.md even for --quick / --only")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--keep-logs", action="store_true", help="keep the stack's logs (printed path)")
    a = p.parse_args(argv)

    from bench.report import tables, write
    from bench.run import Config, run

    cfg = Config.for_quick(a.waiting) if a.quick else Config(waiting=a.waiting if a.waiting is not None else 10_000)
    if a.cases:
        cfg.cases_a = cfg.scaling_cases = a.cases
        cfg.cases_b = max(4, a.cases // 2)
    if a.concurrency:
        cfg.concurrency = a.concurrency
    if a.open_rates:
        cfg.open_rates = tuple(float(x) for x in a.open_rates.split(","))
    if a.open_seconds:
        cfg.open_seconds = a.open_seconds
    if a.no_tuning:
        cfg.tuning = False
    cfg.worker_knobs = json.loads(a.worker_knobs)
    cfg.worker_pool = a.worker_pool
    if a.open_window is not None:
        cfg.open_window = a.open_window
    phases = [x.strip() for x in a.only.split(",")] if a.only else list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if not cfg.tuning and "tuning" in phases:
        phases.remove("tuning")
    if cfg.waiting <= 0 and "waiting" in phases:
        phases.remove("waiting")

    def stop(signum, frame):  # SIGTERM: stop the stack as Ctrl-C does (asyncio.run cancels, finally blocks run)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # The driver on uvloop, as the API and the workers: a load generator sharing two cores with what it
    # measures should cost as little as it can (its CPU is reported, "driver").
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(run(cfg, phases, keep_logs=a.keep_logs))
    text = tables(results)
    print("\n" + text, flush=True)
    full = not a.quick and not a.only
    if not a.no_write and (a.write or full):
        write(a.output, text)
        print(f"bench: results written to {a.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
