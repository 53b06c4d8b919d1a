"""The Temporal worker: case workflows and their activities on one task queue.

Run several of these against one Temporal cluster to scale out (docker-compose runs 3).
"""
from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.cases import CaseActivities
from activities.wallet import PayoutActivities, WalletActivities
from codec import data_converter, keyring
from config import Settings, settings, setup_logging
from workflows.case import CaseWorkflow
from workflows.common import SellerWebhookWorkflow
from workflows.payout import PayoutWorkflow

# One workflow per case; payouts and seller webhook deliveries have lifecycles of their own.
WORKFLOWS = [CaseWorkflow, PayoutWorkflow, SellerWebhookWorkflow]
# The pure core and pydantic are deterministic: pass them through the sandbox instead of
# re-importing them for every workflow run (faster, and one set of model classes).
PASSTHROUGH = ("domain", "pydantic", "pydantic_core", "holidays", "activities", "config", "annotated_types")


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))


async def connect(s: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(s.temporal_address, namespace=s.temporal_namespace,
                                data_converter=data_converter(s.codec_keys), runtime=runtime)


def build_worker(client: Client, s: Settings, activities: CaseActivities | None = None, **kwargs) -> Worker:
    acts = activities or CaseActivities(s)
    return Worker(client, task_queue=s.task_queue, workflows=WORKFLOWS,
                  activities=[*acts.all(), *WalletActivities().all(), *PayoutActivities(acts.gateway, keyring(s.codec_keys)).all()],
                  workflow_runner=workflow_runner(), **kwargs)


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
