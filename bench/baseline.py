"""The baseline: a case of the same shape as a real one, with no-op activities — what the engine (server +
SDK worker) can do with that shape on this machine, with nothing of ours in the way (no API, no database,
no email, no gateway; the same payload sizes, as padding; each activity sleeps as long as the real one ran,
so that concurrent steps complete in the same order).

The shape is a script per workflow read from the histories of a real case (bench/shape.py,
`baseline_spec`): one step per workflow task, each waiting for what that task waited for (activities
completed, timers fired, signals, Updates, children started or done, signals delivered) and then issuing
the same commands (activities with inputs and results of the recorded sizes, local activities, timers
started or cancelled, search-attribute upserts, signals to the parent or a child, children, Update
completions, the result; activities, local activities and timers with a summary of the recorded size).
So its histories have the events of the real case, in the same workflow tasks give or take the timing of
signals and Updates.

- An Update (`act`) is accepted only once the script waits at the workflow task that accepted it in the
  real case (as the real validators refuse it until the case waits for it), and answers at the step where
  the real one completed. It is sent by the activity scheduled last before it, as the real case's callers
  act on what that activity did (the email asking for the action, or the stage the read model shows);
  refused, it is sent again UPDATE_RETRY later. Sent at once, it often comes before the workflow task that
  takes the activity's result, which the script must have run first; the real caller's Update, one hop
  later (SMTP sink, driver, API), does not.
- The "trigger" activity (the card refund) makes the worker signal the workflow `settle_after` seconds
  later, as the gateway sandbox settles a refund and calls the webhook.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from bench.shape import TRIGGER_ACTIVITIES, load_scripts
    from workflows import search_attributes as sa

ACTIVITY = dict(start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)))
LOCAL = dict(start_to_close_timeout=timedelta(seconds=10))
DEADLINE = timedelta(days=1)
FIRES = timedelta(milliseconds=10)  # a timer that fired in the real case fires at once here
UPDATE_RETRY = 0.01  # seconds between the sends of a refused Update (see the module docstring)
_pending: set[asyncio.Task] = set()


def pad(size: int) -> str:
    """A JSON string payload of about `size` bytes."""
    return "x" * max(0, size - 2)


# An encrypted string payload is its text + 56 bytes (JSON quotes, the inner payload's metadata, AES-GCM's
# nonce and tag; codec.py).
SUMMARY_OVERHEAD = 56


def summary_of(size: int | None) -> str | None:
    """A summary whose payload is `size` bytes, as the real command's was (the UI's text for a step)."""
    return None if size is None else "s" * max(1, size - SUMMARY_OVERHEAD)


@activity.defn(name="bench_noop")
async def noop(step: dict, padding: str) -> str:
    """Nothing, for as long as the real activity took (the order of concurrent steps stays). Then, in the
    background, what the outside world did after it in the real case: the gateway's settlement (a signal,
    `settle_after` seconds later) and the Updates the API's callers sent once the read model showed the stage
    (sent again UPDATE_RETRY later while rejected)."""
    await asyncio.sleep(step["ms"] / 1000)
    if step.get("signal_after") is not None or step.get("updates"):
        task = asyncio.create_task(_outside(activity.client(), step))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    return pad(step["out"])


async def _outside(client, step: dict) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    handle = client.get_workflow_handle(step["workflow_id"])
    if step.get("signal_after") is not None:
        await asyncio.sleep(step["signal_after"])
        await handle.signal("sig", "")
    for name in step.get("updates", []):
        for _ in range(int(60 / UPDATE_RETRY)):
            try:
                await handle.execute_update("act", name)
                break
            except WorkflowUpdateFailedError:
                await asyncio.sleep(UPDATE_RETRY)


ACTIVITIES = [noop]


def script_input(key: str, scripts: list[dict], index: int, settle_after: float) -> dict:
    """The input of BaselineScript for scripts[index] of `key` (the case: 0), padded to the size of the real
    workflow's input. The worker reads the scripts from their file (bench.shape.save_scripts)."""
    inp = {"key": key, "index": index, "settle_after": settle_after, "pad": ""}
    inp["pad"] = pad(scripts[index]["input"] - 70)
    return inp


@workflow.defn
class BaselineScript:
    """Runs one workflow's script (the case's or a child's), see the module docstring."""

    def __init__(self) -> None:
        self.signals = 0
        self.accepted = 0  # Updates accepted
        self.answered = 0  # Updates the script has completed
        self.steps_done = 0
        self.ready: list[int] = []
        self.stages = 0

    @workflow.signal
    def sig(self, payload: str) -> None:
        self.signals += 1

    @workflow.update
    async def act(self, name: str) -> int:
        n = self.accepted
        self.accepted += 1
        await workflow.wait_condition(lambda: self.answered > n)
        return self.stages

    @act.validator
    def _validate_act(self, name: str) -> None:
        n = self.accepted
        if n >= len(self.ready) or self.steps_done <= self.ready[n]:
            raise ApplicationError(f"not possible in stage {self.stages}", type="WrongStage")

    def _publish(self) -> None:
        self.stages += 1
        workflow.upsert_search_attributes([
            sa.CASE_KIND.value_set("baseline"), sa.CASE_STAGE.value_set(f"stage-{self.stages}"),
            sa.ORDER_ID.value_set("o"), sa.SELLER_ID.value_set("s"), sa.CUSTOMER_ID.value_set("c"),
            sa.ESCALATED.value_set(False), sa.REFUND_CENTS.value_set(0), sa.NEXT_DEADLINE.value_unset(),
        ])
        workflow.set_current_details(f"**Baseline** · stage **{self.stages}**")

    @workflow.run
    async def run(self, inp: dict) -> str:
        with workflow.unsafe.sandbox_unrestricted():  # a file written once before the first case of its key
            scripts = load_scripts(inp["key"])
        script, settle_after = scripts[inp["index"]], inp["settle_after"]
        self.ready = script["ready"]
        me = workflow.info().workflow_id
        parent = workflow.info().parent
        acts: dict[int, asyncio.Future] = {}
        timers: dict[int, asyncio.Task] = {}
        children: dict[int, asyncio.Task] = {}
        handles: dict[int, workflow.ChildWorkflowHandle] = {}
        sent: dict[int, asyncio.Task] = {}

        async def child_done(k: int) -> None:
            h = handles.get(k) or await children[k]
            await h

        for step in script["steps"]:
            for kind, *args in step["on"]:
                if kind == "act":
                    await acts[args[0]]
                elif kind == "timer":
                    await timers[args[0]]
                elif kind == "signal":
                    await workflow.wait_condition(lambda n=args[0]: self.signals >= n)
                elif kind == "update":
                    await workflow.wait_condition(lambda n=args[0]: self.accepted >= n)
                elif kind == "child_started":
                    handles[args[0]] = await children[args[0]]
                elif kind == "child_done":
                    await child_done(args[0])
                elif kind == "signaled":
                    await sent[args[0]]
            summaries = step.get("summaries", {})
            for j, (kind, *args) in enumerate(step["do"]):
                summary = summary_of(summaries.get(str(j)))
                if kind == "act":
                    i, name, size_in, size_out, ms, *updates = args
                    step_in = {"workflow_id": me, "out": size_out, "ms": ms, "updates": updates,
                               "signal_after": settle_after if name in TRIGGER_ACTIVITIES else None}
                    acts[i] = workflow.start_activity(noop, args=[step_in, pad(size_in - 110)], summary=summary,
                                                      **ACTIVITY)
                elif kind == "local":
                    await workflow.execute_local_activity(noop, args=[{"workflow_id": me, "out": args[1] - 150,
                                                                       "ms": 0}, ""], summary=summary, **LOCAL)
                elif kind == "timer":
                    timers[args[0]] = asyncio.ensure_future(workflow.sleep(FIRES if args[1] else DEADLINE,
                                                                           summary=summary))
                    await asyncio.sleep(0)  # the timer's command now, before the step's next ones (recorded order)
                elif kind == "cancel_timer":
                    timers[args[0]].cancel()
                elif kind == "upsert":
                    self._publish()
                elif kind == "signal":
                    i, target, size = args
                    handle = (workflow.get_external_workflow_handle(parent.workflow_id) if target == "parent"
                              else handles[int(target.split(":")[1])])
                    sent[i] = asyncio.ensure_future(handle.signal("sig", pad(size)))
                elif kind == "child":
                    k, index = args
                    children[k] = asyncio.ensure_future(workflow.start_child_workflow(
                        BaselineScript.run, script_input(inp["key"], scripts, index, settle_after), id=f"{me}-c{k}"))
                elif kind == "update_done":
                    self.answered += 1
                elif kind == "complete":
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return pad(args[0])
            self.steps_done += 1
            # Let what the step started (timers, signals, children) issue its commands now, as the real task did,
            # even when the next step's triggers are already there.
            await asyncio.sleep(0)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ""


WORKFLOWS = [BaselineScript]
