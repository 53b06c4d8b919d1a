"""The Temporal worker: case workflows and their activities on one task queue.

Run several of these against one Temporal cluster to scale out (docker-compose runs 3).
"""
from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.cases import CaseActivities
from activities.wallet import PayoutActivities, WalletActivities
from config import Settings, settings, setup_logging
from workflows.case import CaseWorkflow
from workflows.common import SellerWebhookWorkflow
from workflows.payout import PayoutWorkflow

# One workflow per case; payouts and seller webhook deliveries have lifecycles of their own.
WORKFLOWS = [CaseWorkflow, PayoutWorkflow, SellerWebhookWorkflow]
# The pure core and pydantic are deterministic: pass them through the sandbox instead of
# re-importing them for every workflow run (faster, and one set of model classes).
PASSTHROUGH = ("domain", "pydantic", "pydantic_core", "holidays", "activities", "config", "annotated_types")
# Production also passes the workflow modules through (measured: -31 % workflow CPU, half the memory
# per cached case). They are then imported once, outside the sandbox, which no longer restricts what
# their code calls. The strict sandbox keeps checking that: the whole test suite and the replay test
# of every recorded history run with it (WORKFLOW_SANDBOX=strict, tests/conftest.py), so a call to
# datetime.now(), random or I/O in workflow code fails CI, and a non-deterministic change fails replay.
FAST_PASSTHROUGH = (*PASSTHROUGH, "workflows")


def workflow_runner(mode: str = "fast") -> SandboxedWorkflowRunner:
    if mode not in ("fast", "strict"):
        raise ValueError(f"WORKFLOW_SANDBOX must be fast or strict, not {mode!r}")
    modules = FAST_PASSTHROUGH if mode == "fast" else PASSTHROUGH
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))


async def connect(s: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(s.temporal_address, namespace=s.temporal_namespace,
                                data_converter=pydantic_data_converter, runtime=runtime)


def build_worker(client: Client, s: Settings, activities: CaseActivities | None = None, **kwargs) -> Worker:
    acts = activities or CaseActivities(s)
    kwargs.setdefault("max_cached_workflows", s.worker_max_cached_workflows)
    return Worker(client, task_queue=s.task_queue, workflows=WORKFLOWS,
                  activities=[*acts.all(), *WalletActivities().all(), *PayoutActivities(acts.gateway).all()],
                  workflow_runner=workflow_runner(s.workflow_sandbox), **kwargs)


async def main() -> None:
    setup_logging()
    s = settings()
    runtime = None
    if s.metrics_bind:
        runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=s.metrics_bind)))
    client = await connect(s, runtime)
    worker = build_worker(client, s)
    logging.getLogger("worker").info("worker polling task queue %s on %s", s.task_queue, s.temporal_address)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
