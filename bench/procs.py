"""Subprocess entry points of the benchmark.

    python -m bench.procs sandbox --port P --webhook-url URL ...   the gateway sandbox, quiet
    python -m bench.procs worker --knobs '{"max_cached_workflows": 2000}'
        the real worker exactly as worker.py builds it (worker.connect + worker.build_worker), plus knobs
    python -m bench.procs baseline-worker --knobs '{}'
        the baseline workflows (bench/baseline.py) with no-op activities, built the same way

Knobs are temporalio Worker keyword arguments, plus two of the benchmark's own:
  "runner": "sandbox" (default, worker.workflow_runner()) | "strict" (worker.PASSTHROUGH only: the workflow
            modules re-imported for each run) | "passthrough_workflows" (worker.PASSTHROUGH plus the workflow
            modules: not re-imported for each run) | "passthrough_all" | "unsandboxed"
"""
from __future__ import annotations

import argparse
import json
import logging
import os


def _runner(name: str):
    from temporalio.worker import UnsandboxedWorkflowRunner
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    import worker

    if name == "sandbox":
        return worker.workflow_runner()
    if name == "strict":  # worker.PASSTHROUGH only: the workflow modules re-imported (and checked) for each run
        return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *worker.PASSTHROUGH))
    if name == "unsandboxed":
        return UnsandboxedWorkflowRunner()
    if name == "passthrough_workflows":  # worker.PASSTHROUGH + the workflow modules themselves
        return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
            *worker.PASSTHROUGH, "workflows", "bench"))
    if name == "passthrough_all":
        return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())
    raise SystemExit(f"unknown runner {name!r}")


async def run_worker(knobs: dict, baseline: bool) -> None:
    import worker
    from config import settings

    s = settings()
    knobs = dict(knobs)
    runner_name = knobs.pop("runner", "sandbox")
    runner = _runner(runner_name)
    client = await worker.connect(s)
    if baseline:
        from temporalio.worker import Worker

        from bench.baseline import ACTIVITIES, WORKFLOWS

        w = Worker(client, task_queue=s.task_queue, workflows=WORKFLOWS, activities=ACTIVITIES,
                   workflow_runner=runner, **knobs)
    else:
        w = (worker.build_worker(client, s, **knobs) if runner_name == "sandbox"
             else _build_with_runner(client, s, runner, knobs))
    await w.run()


def _build_with_runner(client, s, runner, knobs: dict):
    """worker.build_worker with another workflow runner (build_worker fixes the runner itself)."""
    from temporalio.worker import Worker

    import worker
    from activities.cases import CaseActivities
    from activities.wallet import PayoutActivities, WalletActivities

    acts = CaseActivities(s)
    return Worker(client, task_queue=s.task_queue, workflows=worker.WORKFLOWS,
                  activities=[*acts.all(), *WalletActivities().all(), *PayoutActivities(acts.gateway).all()],
                  workflow_runner=runner, **knobs)


def run_sandbox(a: argparse.Namespace) -> None:
    import uvicorn

    from devstack.gateway_sandbox import create_app

    app = create_app(api_key=a.api_key, webhook_url=a.webhook_url, webhook_secret=a.webhook_secret,
                     settle_after_seconds=a.settle_after)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.procs")
    sub = p.add_subparsers(dest="cmd", required=True)
    sb = sub.add_parser("sandbox")
    sb.add_argument("--port", type=int, required=True)
    sb.add_argument("--api-key", required=True)
    sb.add_argument("--webhook-url", required=True)
    sb.add_argument("--webhook-secret", required=True)
    sb.add_argument("--settle-after", type=float, default=0.2)
    for name in ("worker", "baseline-worker"):
        w = sub.add_parser(name)
        w.add_argument("--knobs", default="{}")
    a = p.parse_args()
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if a.cmd == "sandbox":
        run_sandbox(a)
    else:
        import worker

        worker.run(run_worker(json.loads(a.knobs), baseline=a.cmd == "baseline-worker"))  # the same loop


if __name__ == "__main__":
    main()
