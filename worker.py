"""The Temporal worker: case workflows and their activities on one task queue.

Run several of these against one Temporal cluster to scale out (docker-compose runs 3). With
WORKER_DEPLOYMENT set, the worker is one version (deployment, build id) of a Worker Deployment:
the server routes new workflows to the deployment's current (or ramping) version and keeps pinned
ones on the version they started on (README "Shipping new workflow code").
"""
from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.cases import CaseActivities
from activities.wallet import PayoutActivities, WalletActivities
from codec import data_converter, keyring
from config import Settings, build_id, settings, setup_logging
from workflows.case import CaseWorkflow
from workflows.common import SellerWebhookWorkflow
from workflows.payout import PayoutWorkflow

# One workflow per case; payouts and seller webhook deliveries have lifecycles of their own.
WORKFLOWS = [CaseWorkflow, PayoutWorkflow, SellerWebhookWorkflow]

# How each workflow type moves between worker versions (README "Shipping new workflow code"):
VERSIONING = {
    # a case (30 days and more) ends on the code it started with, unless an operator moves it (README)
    CaseWorkflow: VersioningBehavior.PINNED,
    # a payout lives a week at most (its settlement deadline): its version drains soon after a release
    PayoutWorkflow: VersioningBehavior.PINNED,
    # one delivery retried for a day, started by a pinned case: the server starts it on the case's version
    SellerWebhookWorkflow: VersioningBehavior.PINNED,
}
# Given to versioned workers as their default behaviour, not on each @workflow.defn: the SDK sends a
# decorator's behaviour from every worker, and a real server refuses it from an unversioned one
# (the suite's dev-server workers, the bench, a worker without WORKER_DEPLOYMENT). A type needing
# another behaviour than the others declares it on its @workflow.defn (versioned workers only, then).
VERSIONING_DEFAULT = VersioningBehavior.PINNED  # tests/test_versioning.py checks it against VERSIONING

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
                                data_converter=data_converter(s.codec_keys), runtime=runtime)


def deployment_version(s: Settings) -> WorkerDeploymentVersion | None:
    """The version this worker runs as; None (unversioned) when no deployment is configured."""
    return WorkerDeploymentVersion(s.worker_deployment, build_id(s)) if s.worker_deployment else None


def build_worker(client: Client, s: Settings, activities: CaseActivities | None = None, **kwargs) -> Worker:
    acts = activities or CaseActivities(s)
    kwargs.setdefault("max_cached_workflows", s.worker_max_cached_workflows)
    version = deployment_version(s)
    if version is not None:
        kwargs.setdefault("deployment_config", WorkerDeploymentConfig(
            version=version, use_worker_versioning=True, default_versioning_behavior=VERSIONING_DEFAULT))
    return Worker(client, task_queue=s.task_queue, workflows=WORKFLOWS,
                  activities=[*acts.all(), *WalletActivities().all(),
                              *PayoutActivities(acts.gateway, keyring(s.codec_keys)).all()],
                  workflow_runner=workflow_runner(s.workflow_sandbox), **kwargs)


async def main() -> None:
    setup_logging()
    s = settings()
    runtime = None
    if s.metrics_bind:
        runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=s.metrics_bind)))
    client = await connect(s, runtime)
    worker = build_worker(client, s)
    version = deployment_version(s)
    log = logging.getLogger("worker")
    log.info("worker polling task queue %s on %s as %s", s.task_queue, s.temporal_address,
             f"version {version.deployment_name}:{version.build_id}" if version else "an unversioned worker")
    if version is None:
        await worker.run()
        return
    from starter.deploy import promote_if_no_current

    async def bootstrap() -> None:
        # A deployment's very first version becomes current by itself (nothing else could run the
        # cases); replacing a current version is the operator's decision (python -m starter.deploy).
        try:
            if await promote_if_no_current(client, s.temporal_namespace, version):
                log.info("no current version in deployment %s: %s made current", version.deployment_name,
                         version.build_id)
        except Exception:  # noqa: BLE001 — the worker still serves its pinned cases; the operator promotes
            log.exception("could not make the first version current")

    boot = asyncio.create_task(bootstrap())  # beside the polling: it waits for the server to see it
    await worker.run()
    boot.cancel()


def run(coro) -> None:
    """Runs a worker process's event loop: uvloop, as the API's (uvicorn[standard]). The worker's own
    Python is mostly the SDK's and our activities' I/O (asyncpg, SMTP, HTTP): measured, 5-9 ms less
    CPU per case than with asyncio's loop (BENCHMARKS.md). The workflows do not run on it: the SDK
    runs them on a deterministic loop of its own."""
    import uvloop

    uvloop.run(coro)


if __name__ == "__main__":
    run(main())
