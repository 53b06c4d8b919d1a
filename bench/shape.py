"""The shape of a finished case, read from its Temporal histories (the case and its children):
how many activities, timers, signals, updates, child workflows, search-attribute upserts and workflow
tasks it took. The baseline workflow is built from these counts, and its own histories are counted the
same way to show that it matches."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType

E = EventType


@dataclass
class WorkflowShape:
    workflow_type: str
    activities: Counter = field(default_factory=Counter)  # activity type → count
    # Activities scheduled before the first child started / while children ran / after the last ended.
    activities_before_children: int = 0
    activities_after_children: int = 0
    timers_started: int = 0
    timers_fired: int = 0
    signals_received: Counter = field(default_factory=Counter)
    updates: Counter = field(default_factory=Counter)
    children: list["WorkflowShape"] = field(default_factory=list)
    signals_sent: int = 0  # to other workflows (child → parent reports, parent → child forwards)
    upserts: int = 0
    workflow_tasks: int = 0
    events: int = 0
    # The steps in history order, for the baseline's children:
    #   "report" / "report:stage" a signal to another workflow (a child reporting to its case); ":stage" when
#                            the report moves the case to another stage (its StageReport has a stage)
    #   "act" / "act:trigger"    an activity; trigger = one the outside world answers later by signal
    #                            (the card refund, settled by the gateway's webhook)
    #   "wait:workflow"          a signal from another workflow (the case forwarding an Update)
    #   "wait:external"          a signal from a client (the settlement webhook through the API)
    #   ":timer" suffix          a timer was running for that wait (a deadline), cancelled by the signal
    #   "timer"                  a timer that fired (a deadline or reminder that passed)
    ops: list[str] = field(default_factory=list)
    update_order: list[str] = field(default_factory=list)

    @property
    def n_activities(self) -> int:
        return sum(self.activities.values())

    def total(self, attr: str) -> int:
        own = getattr(self, attr)
        own = sum(own.values()) if isinstance(own, Counter) else (len(own) if isinstance(own, list) else own)
        return own + sum(c.total(attr) for c in self.children)

    def summary(self) -> dict:
        return {
            "activities": self.total("activities"), "timers": self.total("timers_started"),
            "signals": self.total("signals_received"), "updates": self.total("updates"),
            "children": self.total("children"), "signals_sent": self.total("signals_sent"),
            "upserts": self.total("upserts"), "workflow_tasks": self.total("workflow_tasks"),
            "events": self.total("events"),
        }

    def describe(self, indent: str = "") -> str:
        lines = [f"{indent}{self.workflow_type}: {self.n_activities} activities "
                 f"({', '.join(f'{k}×{v}' for k, v in sorted(self.activities.items()))}), "
                 f"{self.timers_started} timers ({self.timers_fired} fired), "
                 f"signals in {dict(self.signals_received)}, updates {dict(self.updates)}, "
                 f"signals out {self.signals_sent}, upserts {self.upserts}, "
                 f"{self.workflow_tasks} workflow tasks, {self.events} events"]
        for c in self.children:
            lines.append(c.describe(indent + "  "))
        return "\n".join(lines)


def _moves_stage(ev) -> bool:
    """Whether a child's report (a StageReport, JSON payload) carries a stage."""
    try:
        payload = ev.signal_external_workflow_execution_initiated_event_attributes.input.payloads[0]
        return json.loads(payload.data).get("stage") is not None
    except (IndexError, ValueError, AttributeError):
        return False


# Activities after which the outside world answers by signal (the gateway's settlement webhook).
TRIGGER_ACTIVITIES = {"refund_card", "transfer_to_bank"}


async def read_shape(client, workflow_id: str, run_id: str | None = None) -> WorkflowShape:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    shape = WorkflowShape(workflow_type="?")
    children_started = 0
    children_open = 0
    child_ids: list[tuple[str, str]] = []
    pending_timer = False
    for ev in history.events:
        t = ev.event_type
        shape.events += 1
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            shape.workflow_type = ev.workflow_execution_started_event_attributes.workflow_type.name
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = ev.activity_task_scheduled_event_attributes.activity_type.name
            shape.activities[name] += 1
            shape.ops.append("act:trigger" if name in TRIGGER_ACTIVITIES else "act")
            if children_started == 0:
                shape.activities_before_children += 1
            elif children_open == 0:
                shape.activities_after_children += 1
        elif t == E.EVENT_TYPE_TIMER_STARTED:
            shape.timers_started += 1
            pending_timer = True
        elif t == E.EVENT_TYPE_TIMER_FIRED:
            shape.timers_fired += 1
            shape.ops.append("timer")
            pending_timer = False
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = ev.workflow_execution_signaled_event_attributes
            shape.signals_received[attrs.signal_name] += 1
            source = "workflow" if attrs.HasField("external_workflow_execution") else "external"
            shape.ops.append(f"wait:{source}" + (":timer" if pending_timer else ""))
            pending_timer = False
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            name = ev.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            shape.updates[name] += 1
            shape.update_order.append(name)
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            children_started += 1
            children_open += 1
        elif t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            ex = ev.child_workflow_execution_started_event_attributes.workflow_execution
            child_ids.append((ex.workflow_id, ex.run_id))
        elif t in (E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
                   E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
                   E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT):
            children_open -= 1
        elif t == E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            shape.signals_sent += 1
            shape.ops.append("report:stage" if _moves_stage(ev) else "report")
        elif t == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            shape.upserts += 1
        elif t == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            shape.workflow_tasks += 1
    for wid, rid in child_ids:
        shape.children.append(await read_shape(client, wid, rid))
    return shape


def baseline_spec(shape: WorkflowShape, settle_after: float) -> dict:
    """The input of bench.baseline.BaselineCase that reproduces `shape` with no-op activities: the same
    activities before, during (one per child report, as the case records each) and after its children,
    the same children with their steps in order, the same upserts and Updates."""
    reports = sum(c.signals_sent for c in shape.children)  # each one recorded by the case (an activity)
    during = shape.n_activities - shape.activities_before_children - shape.activities_after_children
    per_report = during // reports if reports else 0
    return {
        "pre": shape.activities_before_children,
        "post": shape.activities_after_children + (during - per_report * reports),
        "acts_per_report": per_report,
        "upserts": shape.upserts,
        "timers": shape.timers_fired,
        "children": [c.ops for c in shape.children],
        "settle_after": settle_after,
        "updates": list(shape.update_order),
    }
