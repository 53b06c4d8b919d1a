"""Worker Deployment Versioning on the real dev server, with the real CaseWorkflow and activities.

Two builds of one deployment run side by side (the same code under two build ids: what a release
looks like to the server). Cases opened on A stay on A's workers after B is promoted, to their end;
new cases start on B; the drain report says when A's workers may stop. A 50 % ramp sends new cases
to both versions. The case's own timers are hours long (policy values are whole hours or days), so
the timer crossing the switch here is the retry timer of a refund the gateway refused at first.
"""
from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timezone
from types import SimpleNamespace

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkerDeploymentVersion
from codec import data_converter
from temporalio.workflow import _Definition  # the SDK's parsed @workflow.defn

from devstack.gateway_sandbox import create_app as create_sandbox
from devstack.temporal_server import ensure_search_attributes
from domain.models import Actor, CaseInput, CaseKind, DecisionRequest, Outcome, Role, Stage
from domain.policy import Policy
from starter import deploy
from starter.service import order_from_row
from tests.helpers.cases import settle_refund
from tests.helpers.data import make_order, new_id
from tests.helpers.servers import ServedApp, start_dev_server
from worker import VERSIONING, VERSIONING_DEFAULT, WORKFLOWS, build_worker
from workflows.case import CaseWorkflow


def test_every_workflow_type_has_the_behaviour_it_declares():
    """VERSIONING says how each type moves between versions; a versioned worker gives the default to
    the types whose @workflow.defn says nothing, so every other one must declare its own there."""
    assert set(VERSIONING) == set(WORKFLOWS)
    for w in WORKFLOWS:
        declared = _Definition.must_from_class(w).versioning_behavior
        assert (declared or VERSIONING_DEFAULT) == VERSIONING[w], w.__name__


@pytest.fixture(scope="module")
async def cluster(pool, tmp_path_factory):
    server = await start_dev_server(tmp_path_factory.mktemp("temporal-versioning") / "server.log")
    sandbox = await ServedApp(create_sandbox(api_key="sk_test_sandbox", webhook_url=None, webhook_secret="whsec_test",
                                             settle_after_seconds=None), name="gateway sandbox").start()
    try:
        client = await Client.connect(server.address, data_converter=data_converter())
        await ensure_search_attributes(client)
        yield SimpleNamespace(server=server, client=client, sandbox=sandbox)
    finally:
        await sandbox.stop()
        server.stop()


class Builds:
    """Workers of several builds of one deployment on one task queue, each with its own identity."""

    def __init__(self, cluster, test_settings, deployment: str, stack: AsyncExitStack):
        self.cluster, self.deployment, self.stack = cluster, deployment, stack
        self.settings = replace(test_settings, gateway_url=cluster.sandbox.url, task_queue=f"tq-{deployment}",
                                worker_deployment=deployment)

    @staticmethod
    def identity(build: str) -> str:
        return f"worker-{build}"

    async def start(self, build: str) -> WorkerDeploymentVersion:
        s = replace(self.settings, worker_build_id=build)
        await self.stack.enter_async_context(build_worker(self.cluster.client, s, identity=self.identity(build)))
        version = WorkerDeploymentVersion(self.deployment, build)
        await deploy.wait_registered(self.cluster.client, "default", version)
        return version

    async def open_case(self, pool, order_id: str) -> WorkflowHandle:
        order = order_from_row(await pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id))
        case_id = new_id("case")
        inp = CaseInput(case_id=case_id, kind=CaseKind.cancellation, order=order, opened_at=datetime.now(timezone.utc),
                        opened_by=Actor(role=Role.customer, id=order.customer_id), policy=Policy())
        return await self.cluster.client.start_workflow(CaseWorkflow.run, inp, id=case_id,
                                                        task_queue=self.settings.task_queue)

    async def report(self) -> deploy.DeploymentReport:
        return await deploy.describe(self.cluster.client, "default", self.deployment)


async def version_of(handle: WorkflowHandle, timeout: float = 20.0) -> str:
    """The build the case is pinned to (set by its first workflow task)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
        if info.deployment_version.build_id:
            assert info.behavior == 1  # VERSIONING_BEHAVIOR_PINNED
            return info.deployment_version.build_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} was never pinned to a version")


async def stage_of(handle: WorkflowHandle, stage: Stage, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last = None
    while loop.time() < end:
        try:
            last = await handle.query(CaseWorkflow.get_state)
            if last is not None and last.stage == stage:
                return
        except Exception:  # noqa: BLE001 — first workflow task not run yet
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never reached {stage}: {last and last.stage}")


async def who_ran(handle: WorkflowHandle, since: datetime) -> tuple[set[str], set[str]]:
    """Identities of the workers that completed the case's workflow tasks and ran its activities after `since`."""
    tasks, activities = set(), set()
    async for event in handle.fetch_history_events():
        if event.event_time.ToDatetime(tzinfo=timezone.utc) < since:
            continue
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            tasks.add(event.workflow_task_completed_event_attributes.identity)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            activities.add(event.activity_task_started_event_attributes.identity)
    return tasks, activities


async def gateway_faults(sandbox, mode: str, count: int = 0) -> None:
    async with httpx.AsyncClient() as http:
        (await http.post(f"{sandbox.url}/_sandbox/faults", json={"mode": mode, "count": count})).raise_for_status()


async def run_cli(monkeypatch, cluster, *args: str) -> int:
    monkeypatch.setenv("TEMPORAL_ADDRESS", cluster.server.address)
    return await deploy.cli(list(args))


async def test_promoted_version_takes_new_cases_while_old_cases_finish_on_their_version(
        cluster, pool, party, test_settings, monkeypatch, capsys):
    client = cluster.client
    async with AsyncExitStack() as stack:
        builds = Builds(cluster, test_settings, "versioning-switch", stack)
        await builds.start("A")
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "promote", "A") == 0

        # Version A: a cancellation waiting for the seller, and a paid one whose refund the gateway
        # refuses twice (retried after 2 s, then 4 s: the second retry comes after the switch).
        waiting = await builds.open_case(pool, await make_order(pool, party, "validated"))
        await gateway_faults(cluster.sandbox, "error", count=2)
        paid_order = await make_order(pool, party, "paid")
        refunding = await builds.open_case(pool, paid_order)
        await stage_of(waiting, Stage.awaiting_seller_decision)
        await stage_of(refunding, Stage.refunding)
        assert [await version_of(waiting), await version_of(refunding)] == ["A", "A"]

        # Version B comes up and is promoted (as the README's procedure does).
        await builds.start("B")
        switched_at = datetime.now(timezone.utc)
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "promote", "B") == 0
        report = await builds.report()
        assert report.current == "B"
        a = report.version("A")
        assert (a.status, a.open_cases, a.open_pinned, a.may_stop) == ("draining", 2, 2, False)
        capsys.readouterr()
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "drained", "A") == 1
        assert "2 open pinned workflow(s) (2 case(s)) still run there" in capsys.readouterr().out

        # A new case starts on B.
        new = await builds.open_case(pool, await make_order(pool, party, "validated"))
        assert await version_of(new) == "B"
        await stage_of(new, Stage.awaiting_seller_decision)

        # The A cases go on with A's workers: the refund retried after the switch, the seller's answer.
        await stage_of(refunding, Stage.awaiting_bank_settlement)
        await settle_refund(SimpleNamespace(client=client), cluster.sandbox.url, refunding.id, f"pi_{paid_order}")
        assert (await refunding.result()).outcome == Outcome.refunded
        assert (await builds.report()).version("A").open_pinned == 1
        await waiting.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=Actor(role=Role.seller, id=party["seller_id"]), decision="refuse", reason="Already packed."))
        assert (await waiting.result()).outcome == Outcome.refused

        for handle in (waiting, refunding):
            tasks, activities = await who_ran(handle, since=switched_at)
            assert tasks == {Builds.identity("A")} and activities == {Builds.identity("A")}, handle.id
            assert await version_of(handle) == "A"
        # The refund's last attempt (third, after two refusals) started after the switch, on A.
        retried = [e async for e in refunding.fetch_history_events()
                   if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and
                   e.activity_task_started_event_attributes.attempt == 3]
        assert len(retried) == 1 and retried[0].event_time.ToDatetime(tzinfo=timezone.utc) > switched_at
        new_tasks, _ = await who_ran(new, since=switched_at)
        assert new_tasks == {Builds.identity("B")}

        # A has drained: the report says so (the server confirms after its grace period of 1 s here).
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while not (await builds.report()).version("A").may_stop:
            assert loop.time() < end, await builds.report()
            await asyncio.sleep(0.5)
        capsys.readouterr()
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "drained", "A") == 0
        assert "A: drained" in capsys.readouterr().out
        b = (await builds.report()).version("B")
        assert (b.status, b.open_cases, b.may_stop) == ("current", 1, False)


async def test_a_ramp_of_50_percent_starts_new_cases_on_both_versions(cluster, pool, party, test_settings,
                                                                      monkeypatch, capsys):
    async with AsyncExitStack() as stack:
        builds = Builds(cluster, test_settings, "versioning-ramp", stack)
        await builds.start("C")
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "promote", "C") == 0
        await builds.start("D")
        capsys.readouterr()
        assert await run_cli(monkeypatch, cluster, "--deployment", builds.deployment, "ramp", "D", "50") == 0
        assert "ramping D at 50 %" in capsys.readouterr().out

        orders = [await make_order(pool, party, "validated") for _ in range(16)]
        cases = await asyncio.gather(*(builds.open_case(pool, o) for o in orders))
        versions = await asyncio.gather(*(version_of(c) for c in cases))
        on = {b: versions.count(b) for b in ("C", "D")}
        assert on["C"] and on["D"] and on["C"] + on["D"] == 16, versions
        # Each case ran on the build it is pinned to, and the report counts them per version.
        for handle, build in zip(cases, versions):
            assert (await who_ran(handle, since=datetime.min.replace(tzinfo=timezone.utc)))[0] == {Builds.identity(build)}
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while True:
            report = await builds.report()
            counted = {b: report.version(b).open_cases for b in ("C", "D")}
            if counted == on or loop.time() > end:
                break
            await asyncio.sleep(0.2)
        assert counted == on
        assert (report.current, report.ramping, report.ramp_percent) == ("C", "D", 50)
