"""The baseline: a case of the same shape as a real one, with no-op activities — what the engine (server +
SDK worker) can do with that shape on this machine, with nothing of ours in the way (no API, no database,
no email, no gateway, small payloads).

The shape comes from the histories of a real case (bench/shape.py, `baseline_spec`):
- BaselineCase runs `pre` activities, then each child in turn, running `acts_per_report` activities for
  each report its child signals (and upserting its search attributes and current details when the report
  moves the stage, as the case does), then `post` activities.
- BaselineChild replays the child's steps in order: reports (signals to the case), activities, waits
  for a signal forwarded by the case (an Update) or from outside (the settlement), under a one-day timer
  when the real child had one.
- An Update (`act`) is accepted in a stage that waits for the case (like the real validators refuse a
  wrong stage), forwards a signal to the child and answers once the stage has moved on.
- The "trigger" activity (the card refund) makes the worker signal the child `settle_after` seconds
  later, as the gateway sandbox settles a refund and calls the webhook.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import search_attributes as sa

ACTIVITY = dict(start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)))
DEADLINE = timedelta(days=1)
_pending: set[asyncio.Task] = set()


@activity.defn(name="bench_noop")
async def noop(step: str) -> None:
    return None


@activity.defn(name="bench_noop_trigger")
async def noop_trigger(target: dict) -> None:
    """No-op, then (in the background) the outside world's answer: a signal to the workflow."""
    client = activity.client()

    async def answer():
        await asyncio.sleep(target["delay"])
        await client.get_workflow_handle(target["workflow_id"]).signal("external")

    task = asyncio.create_task(answer())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


ACTIVITIES = [noop, noop_trigger]


def _awaits_case(ops: list[str], i: int) -> bool:
    """Whether the stage entered by the report at ops[i] waits for the case (an Update forwarded by it): a
    wait for a workflow signal comes before the next stage-moving report."""
    for op in ops[i + 1:]:
        if op == "report:stage":
            return False
        if op.startswith("wait:workflow"):
            return True
    return False


@workflow.defn
class BaselineChild:
    def __init__(self) -> None:
        self.from_case = 0
        self.from_outside = 0

    @workflow.signal
    def forward(self) -> None:
        self.from_case += 1

    @workflow.signal
    def external(self) -> None:
        self.from_outside += 1

    @workflow.run
    async def run(self, inp: dict) -> int:
        ops: list[str] = inp["ops"]
        case = workflow.get_external_workflow_handle(inp["parent"])
        me = workflow.info().workflow_id
        used_case = used_outside = 0
        for i, op in enumerate(ops):
            if op.startswith("report"):
                stage = op == "report:stage"
                await case.signal("report", {"stage": stage, "awaits": stage and _awaits_case(ops, i)})
            elif op == "act":
                await workflow.execute_activity(noop, op, **ACTIVITY)
            elif op == "act:trigger":
                await workflow.execute_activity(noop_trigger, {"workflow_id": me, "delay": inp["settle_after"]},
                                                **ACTIVITY)
            elif op == "timer":
                await workflow.sleep(0.01)
            elif op.startswith("wait:"):
                if op.startswith("wait:workflow"):
                    used_case += 1
                    target = used_case
                    done = lambda: self.from_case >= target  # noqa: E731
                else:
                    used_outside += 1
                    target = used_outside
                    done = lambda: self.from_outside >= target  # noqa: E731
                if op.endswith(":timer"):
                    await workflow.wait_condition(done, timeout=DEADLINE)
                else:
                    await workflow.wait_condition(done)
        return len(ops)


@workflow.defn
class BaselineCase:
    """Like CaseWorkflow: a report moving the stage upserts the search attributes and sets the details; every
    report is recorded (an activity); an Update is accepted in a stage that waits for the case, forwarded to
    the child, and answered once the stage has moved on."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.stages = 0  # stage changes so far
        self.awaiting = False
        self.child = None

    @workflow.signal
    def report(self, report: dict) -> None:
        self.reports.append(report)

    @workflow.update
    async def act(self, name: str) -> int:
        self.awaiting = False
        seen = self.stages
        await self.child.signal(BaselineChild.forward)
        await workflow.wait_condition(lambda: self.stages > seen)
        return self.stages

    @act.validator
    def _validate_act(self, name: str) -> None:
        if not self.awaiting or self.child is None:
            raise ApplicationError(f"not possible in stage {self.stages}", type="WrongStage")

    def _publish(self, stage: str) -> None:
        self.stages += 1
        workflow.upsert_search_attributes([
            sa.CASE_KIND.value_set("baseline"), sa.CASE_STAGE.value_set(stage), sa.ORDER_ID.value_set("o"),
            sa.SELLER_ID.value_set("s"), sa.CUSTOMER_ID.value_set("c"), sa.ESCALATED.value_set(False),
            sa.REFUND_CENTS.value_set(0), sa.NEXT_DEADLINE.value_unset(),
        ])
        workflow.set_current_details(f"**Baseline** · stage **{stage}**")

    @workflow.run
    async def run(self, spec: dict) -> int:
        me = workflow.info().workflow_id
        self._publish("opening")
        for _ in range(spec.get("timers", 0)):
            await workflow.sleep(0.01)
        for i in range(spec["pre"]):
            await workflow.execute_activity(noop, f"pre-{i}", **ACTIVITY)
        for n, ops in enumerate(spec["children"]):
            handle = await workflow.start_child_workflow(
                BaselineChild.run, {"ops": ops, "parent": me, "settle_after": spec["settle_after"]}, id=f"{me}-c{n}")
            self.child = handle
            while True:
                await workflow.wait_condition(lambda: bool(self.reports) or handle.done())
                while self.reports:
                    r = self.reports.pop(0)
                    if r["stage"]:
                        self.awaiting = r["awaits"]
                        self._publish(f"stage-{self.stages}")
                    for k in range(spec["acts_per_report"]):
                        await workflow.execute_activity(noop, f"record-{self.stages}-{k}", **ACTIVITY)
                if handle.done() and not self.reports:
                    break
            await handle
            self.child = None
        self.awaiting = False
        self._publish("closed")
        for i in range(spec["post"]):
            await workflow.execute_activity(noop, f"post-{i}", **ACTIVITY)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.stages


WORKFLOWS = [BaselineCase, BaselineChild]
