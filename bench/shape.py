"""The shape of a finished case, read from its Temporal histories (the case and its children, if any): what
it did and in which workflow tasks, with the size of every payload. Two uses:

- counts for the report (activities, local activities, timers, signals, Updates, children, upserts,
  workflow tasks, events, the largest payload);
- a *script* per workflow for the baseline (bench/baseline.py): for each workflow task of the history, what
  the task waited for (its triggers: activities completed, timers fired, signals received, Updates
  accepted, children started or done, signals delivered) and the commands it issued (activities with their
  input and result sizes and how long they took, local activities, timers started or cancelled, upserts, signals sent, children
  started, Updates completed, the result). The baseline replays that with no-op activities, so its
  histories have the same events and payload sizes as the real ones without any code of ours.

The shape of the current code is read from a real case at run time; the shape of the design before the
one-workflow change is data (bench/old_shape.json, written by `python -m bench.shape` from histories of
that commit, see BENCHMARKS.md "Method")."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import EventType

E = EventType
OLD_SHAPE_FILE = Path(__file__).with_name("old_shape.json")

MAX_RUN_MS = 1000  # the baseline's activities take as long as the real ones took, up to this
# Activities after which the outside world answers by signal (the gateway's settlement webhook).
TRIGGER_ACTIVITIES = {"refund_card", "transfer_to_bank"}

_CHILD_DONE = {E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
               E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED, E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
               E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT}
_ACT_DONE = {E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, E.EVENT_TYPE_ACTIVITY_TASK_FAILED,
             E.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, E.EVENT_TYPE_ACTIVITY_TASK_CANCELED}


@dataclass
class WorkflowShape:
    workflow_type: str
    activities: Counter = field(default_factory=Counter)  # activity type → count
    local_activities: Counter = field(default_factory=Counter)
    timers_started: int = 0
    timers_fired: int = 0
    signals_received: Counter = field(default_factory=Counter)
    updates: Counter = field(default_factory=Counter)
    children: list["WorkflowShape"] = field(default_factory=list)
    signals_sent: int = 0  # to other workflows (child → parent reports, parent → child forwards)
    upserts: int = 0
    workflow_tasks: int = 0
    events: int = 0
    payload_bytes: int = 0  # all payloads of the history together
    largest_payload: int = 0  # bytes of the largest event's payloads
    largest_payload_event: str = ""
    # The baseline's script: one step per workflow task, {"on": [triggers], "do": [commands]} (see module doc).
    steps: list[dict] = field(default_factory=list)
    update_order: list[str] = field(default_factory=list)
    external_signals: int = 0  # signals from clients (not from workflows): the settlement webhook
    input_bytes: int = 0  # the workflow's input

    @property
    def n_activities(self) -> int:
        return sum(self.activities.values())

    def total(self, attr: str) -> int:
        own = getattr(self, attr)
        own = sum(own.values()) if isinstance(own, Counter) else (len(own) if isinstance(own, list) else own)
        return own + sum(c.total(attr) for c in self.children)

    def summaries(self) -> list[int]:
        """The payload sizes of the commands' summaries (activities, local activities, timers), in order."""
        own = [size for st in self.steps for size in st.get("summaries", {}).values()]  # entered in `do` order
        return own + [size for c in self.children for size in c.summaries()]

    def largest(self) -> int:
        return max([self.largest_payload, *(c.largest() for c in self.children)])

    def summary(self) -> dict:
        return {
            "histories": 1 + self.total("children"),
            "activities": self.total("activities"), "local_activities": self.total("local_activities"),
            "timers": self.total("timers_started"), "signals": self.total("signals_received"),
            "updates": self.total("updates"), "children": self.total("children"),
            "signals_sent": self.total("signals_sent"), "upserts": self.total("upserts"),
            "workflow_tasks": self.total("workflow_tasks"), "events": self.total("events"),
            "payload_kib": round(self.total("payload_bytes") / 1024, 1), "largest_payload": self.largest(),
        }

    def describe(self, indent: str = "") -> str:
        acts = ", ".join(f"{k}×{v}" for k, v in sorted(self.activities.items()))
        local = ", ".join(f"{k}×{v}" for k, v in sorted(self.local_activities.items()))
        lines = [f"{indent}{self.workflow_type}: {self.n_activities} activities ({acts})"
                 + (f", {sum(self.local_activities.values())} local ({local})" if local else "")
                 + f", {self.timers_started} timers ({self.timers_fired} fired), "
                 f"signals in {dict(self.signals_received)}, updates {dict(self.updates)}, "
                 f"signals out {self.signals_sent}, upserts {self.upserts}, "
                 f"{self.workflow_tasks} workflow tasks, {self.events} events, payloads {self.payload_bytes} B "
                 f"(largest {self.largest_payload} B: {self.largest_payload_event})"]
        for c in self.children:
            lines.append(c.describe(indent + "  "))
        return "\n".join(lines)


def _payload_bytes(msg) -> int:
    """Bytes of the payloads anywhere in a message (search attributes and headers aside)."""
    total = 0
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if hasattr(value, "ListFields"):
            items = [value]
        elif hasattr(value, "keys"):  # a map: its values
            items = [value[k] for k in value]
        else:
            items = list(value)
        for item in items:
            if not hasattr(item, "ListFields"):
                continue
            name = item.DESCRIPTOR.full_name
            if name == "temporal.api.common.v1.Payload":
                total += len(item.data)
            elif name not in ("temporal.api.common.v1.SearchAttributes", "temporal.api.common.v1.Header"):
                total += _payload_bytes(item)
    return total


def _payload_sizes(ev) -> int:
    """Bytes of the payloads an event carries (inputs, results, details, markers, signal and Update inputs)."""
    attrs = ev.WhichOneof("attributes")
    return _payload_bytes(getattr(ev, attrs)) if attrs else 0


def _sizes(payloads) -> int:
    return sum(len(p.data) for p in payloads.payloads)


def _metadata_sizes(ev) -> int:
    """Bytes of an event's user metadata (the summary and details the UI shows), payloads like the others."""
    return _payload_bytes(ev.user_metadata) if ev.HasField("user_metadata") else 0


def _note_summary(step: dict, ev) -> None:
    """The summary of the command just appended to the step (activity, local activity, timer): its payload's
    size, by the command's index in `do`, for the baseline to give its command a summary of that size."""
    if ev.HasField("user_metadata") and ev.user_metadata.HasField("summary"):
        step.setdefault("summaries", {})[str(len(step["do"]) - 1)] = len(ev.user_metadata.summary.data)


def shape_of_history(history, children: dict[str, object] | None = None) -> WorkflowShape:
    """The shape of one workflow's history (a temporalio WorkflowHistory); `children`: histories of the
    children it started, by workflow id (read into the shape's children, in start order)."""
    children = children or {}
    shape = WorkflowShape(workflow_type="?")
    parent_id = None
    act_index: dict[int, int] = {}  # scheduled event id → index of the activity in this workflow
    timer_index: dict[str, int] = {}
    sent_index: dict[int, int] = {}  # initiated event id → index of the signal sent
    child_index: dict[int, int] = {}  # initiated event id → index of the child
    child_ids: list[str] = []
    pending: list = []  # triggers seen since the last workflow task started
    seen_by_task: list = []
    signals = updates = 0
    step = None
    for ev in history.events:
        t = ev.event_type
        shape.events += 1
        size, meta = _payload_sizes(ev), _metadata_sizes(ev)
        shape.payload_bytes += size + meta
        if size + meta > shape.largest_payload:
            shape.largest_payload = size + meta
            shape.largest_payload_event = EventType.Name(t).removeprefix("EVENT_TYPE_")
        if t == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            a = ev.workflow_execution_started_event_attributes
            shape.workflow_type = a.workflow_type.name
            shape.input_bytes = _sizes(a.input)
            if a.HasField("parent_workflow_execution"):
                parent_id = a.parent_workflow_execution.workflow_id
        elif t == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            seen_by_task, pending = pending, []
        elif t in (E.EVENT_TYPE_WORKFLOW_TASK_FAILED, E.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT):
            pending, seen_by_task = seen_by_task + pending, []
        elif t == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            shape.workflow_tasks += 1
            step = {"on": seen_by_task, "do": []}
            shape.steps.append(step)
            seen_by_task = []
        # --- what a task waits for (resolved before the next task starts)
        elif t in _ACT_DONE:
            a = getattr(ev, ev.WhichOneof("attributes"))
            pending.append(["act", act_index[a.scheduled_event_id]])
        elif t == E.EVENT_TYPE_TIMER_FIRED:
            shape.timers_fired += 1
            pending.append(["timer", timer_index[ev.timer_fired_event_attributes.timer_id]])
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            a = ev.workflow_execution_signaled_event_attributes
            shape.signals_received[a.signal_name] += 1
            if not a.HasField("external_workflow_execution"):
                shape.external_signals += 1
            signals += 1
            pending.append(["signal", signals])
        elif t == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            a = ev.child_workflow_execution_started_event_attributes
            child_ids.append(a.workflow_execution.workflow_id)
            pending.append(["child_started", child_index[a.initiated_event_id]])
        elif t in _CHILD_DONE:
            a = getattr(ev, ev.WhichOneof("attributes"))
            pending.append(["child_done", child_index[a.initiated_event_id]])
        elif t == E.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED:
            pending.append(["signaled", sent_index[ev.external_workflow_execution_signaled_event_attributes.initiated_event_id]])
        # --- what a task did (its commands, and the Updates it accepted)
        elif step is None:
            continue
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            name = ev.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            shape.updates[name] += 1
            shape.update_order.append(name)
            updates += 1
            step["on"].append(["update", updates])
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            step["do"].append(["update_done"])
        elif t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            a = ev.activity_task_scheduled_event_attributes
            name = a.activity_type.name
            shape.activities[name] += 1
            act_index[ev.event_id] = len(act_index)
            step["do"].append(["act", act_index[ev.event_id], name, _sizes(a.input), 0, 0])
            _note_summary(step, ev)
        elif t == E.EVENT_TYPE_MARKER_RECORDED:
            a = ev.marker_recorded_event_attributes
            if a.marker_name == "core_local_activity":
                name = "?"
                try:
                    name = json.loads(a.details["data"].payloads[0].data).get("activity_type", "?")
                except (KeyError, IndexError, ValueError, AttributeError):
                    pass
                shape.local_activities[name] += 1
                step["do"].append(["local", name, size])
                _note_summary(step, ev)
        elif t == E.EVENT_TYPE_TIMER_STARTED:
            shape.timers_started += 1
            timer_index[ev.timer_started_event_attributes.timer_id] = len(timer_index)
            step["do"].append(["timer", timer_index[ev.timer_started_event_attributes.timer_id], False])
            _note_summary(step, ev)
        elif t == E.EVENT_TYPE_TIMER_CANCELED:
            step["do"].append(["cancel_timer", timer_index[ev.timer_canceled_event_attributes.timer_id]])
        elif t == E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            shape.upserts += 1
            step["do"].append(["upsert"])
        elif t == E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            a = ev.signal_external_workflow_execution_initiated_event_attributes
            shape.signals_sent += 1
            sent_index[ev.event_id] = len(sent_index)
            target = "parent" if a.workflow_execution.workflow_id == parent_id else a.workflow_execution.workflow_id
            step["do"].append(["signal", sent_index[ev.event_id], target, _sizes(a.input)])
        elif t == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            a = ev.start_child_workflow_execution_initiated_event_attributes
            child_index[ev.event_id] = len(child_index)
            step["do"].append(["child", child_index[ev.event_id], a.workflow_id])
        elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            step["do"].append(["complete", _sizes(ev.workflow_execution_completed_event_attributes.result)])
    # Results of the activities and how long they ran (known once completed), then fired timers, into the
    # commands.
    # From scheduled to completed: concurrent activities then complete in the recorded order.
    results, started, ran_ms = {}, {}, {}
    for ev in history.events:
        if ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            started[ev.event_id] = ev.event_time.ToDatetime()
        elif ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = ev.activity_task_completed_event_attributes
            results[act_index[a.scheduled_event_id]] = _sizes(a.result)
            if a.scheduled_event_id in started:
                ran = ev.event_time.ToDatetime() - started[a.scheduled_event_id]
                ran_ms[act_index[a.scheduled_event_id]] = min(MAX_RUN_MS, round(ran.total_seconds() * 1000))
    fired = {tr[1] for s in shape.steps for tr in s["on"] if tr[0] == "timer"}
    for s in shape.steps:
        for cmd in s["do"]:
            if cmd[0] == "act":
                cmd[4], cmd[5] = results.get(cmd[1], 0), ran_ms.get(cmd[1], 0)
            elif cmd[0] == "timer":
                cmd[2] = cmd[1] in fired
    # Signal targets and children by their index among this workflow's children.
    for s in shape.steps:
        for cmd in s["do"]:
            if cmd[0] == "signal" and cmd[2] != "parent":
                cmd[2] = f"child:{child_ids.index(cmd[2])}" if cmd[2] in child_ids else "parent"
            elif cmd[0] == "child":
                cmd[2] = cmd[1]
    for wid in child_ids:
        shape.children.append(shape_of_history(children[wid], children) if wid in children else WorkflowShape("?"))
    return shape


async def read_shape(client, workflow_id: str, run_id: str | None = None) -> WorkflowShape:
    """The shape of a finished case: its history and its children's, fetched from the server."""
    histories: dict[str, object] = {}

    async def fetch(wid: str, rid: str | None) -> object:
        h = await client.get_workflow_handle(wid, run_id=rid).fetch_history()
        histories[wid] = h
        for ev in h.events:
            if ev.event_type == E.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
                ex = ev.child_workflow_execution_started_event_attributes.workflow_execution
                await fetch(ex.workflow_id, ex.run_id)
        return h
    return shape_of_history(await fetch(workflow_id, run_id), histories)


def baseline_spec(shape: WorkflowShape, settle_after: float) -> dict:
    """The input of bench.baseline.BaselineScript that reproduces `shape` with no-op activities: the scripts
    of the case (index 0) and of its children (depth first), the Updates in order, and for each Update the
    step after which it is accepted."""
    flat: list[WorkflowShape] = []

    def collect(s: WorkflowShape) -> None:
        flat.append(s)
        for c in s.children:
            collect(c)
    collect(shape)
    scripts = []
    for s in flat:
        steps = [dict(on=list(st["on"]), do=[list(c) for c in st["do"]], summaries=dict(st.get("summaries", {})))
                 for st in s.steps]
        for st in steps:  # children by their index in `scripts`
            for cmd in st["do"]:
                if cmd[0] == "child":
                    cmd[2] = flat.index(s.children[cmd[1]])
        triggers = sum(1 for st in steps for c in st["do"] if c[0] == "act" and c[2] in TRIGGER_ACTIVITIES)
        if triggers != s.external_signals:
            raise ValueError(f"{s.workflow_type}: {s.external_signals} signal(s) from outside for {triggers} "
                             f"activities that trigger one ({sorted(TRIGGER_ACTIVITIES)}): not a shape the baseline "
                             "can replay")
        # An Update is accepted once the script waits at the workflow task that accepted it in the real case,
        # as the real validators refuse it until the case waits for it.
        ready = [i - 1 for i, st in enumerate(steps) for tr in st["on"] if tr[0] == "update"]
        scripts.append({"type": s.workflow_type, "input": s.input_bytes, "steps": steps, "ready": ready})
    # The API's callers act once the read model shows the stage, i.e. right after an activity of the case:
    # each Update is sent by the baseline's activity scheduled last before the task that accepted it (none:
    # by the driver, from the start).
    case_steps, client_updates, names = scripts[0]["steps"], [], iter(shape.update_order)
    last_act = None
    for st in case_steps:
        for tr in st["on"]:
            if tr[0] == "update":
                name = next(names)
                if last_act is None:
                    client_updates.append(name)
                else:
                    last_act.append(name)
        for cmd in st["do"]:
            if cmd[0] == "act":
                cmd[6:] = []
                last_act = cmd
    return {"scripts": scripts, "updates": client_updates, "settle_after": settle_after}


# ---------------------------------------------------------------------- scripts for the baseline worker
# The baseline's scripts reach its worker as files (BENCH_SCRIPTS_DIR/<key>.json, written once by the driver
# before the first case of that key), so that a baseline workflow's input can have the size of the real
# one's. This module is passed through the sandbox: the cache is the worker process's.
_scripts: dict[str, list[dict]] = {}


def save_scripts(directory: Path, key: str, scripts: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{key}.json"
    tmp.write_text(json.dumps(scripts))
    tmp.rename(directory / f"{key}.json")  # atomic: a worker reads it whole or not at all


def load_scripts(key: str) -> list[dict]:
    if key not in _scripts:
        import os

        _scripts[key] = json.loads((Path(os.environ["BENCH_SCRIPTS_DIR"]) / f"{key}.json").read_text())
    return _scripts[key]


# ---------------------------------------------------------------------- old shape (data)
def old_shapes() -> dict:
    """bench/old_shape.json: per kind ("a", "b"), the shape before the one-workflow change: "summary" and
    "describe" of its histories and "spec" for the baseline (settle_after set by the run); "measured": what
    the real cases of that design cost in the last full run before the change (written by hand)."""
    return json.loads(OLD_SHAPE_FILE.read_text())


def main(argv: list[str] | None = None) -> int:
    """python -m bench.shape DUMP.json: writes bench/old_shape.json from histories dumped as
    {kind: {"case_id": id, "histories": {workflow id: history JSON}}} (see BENCHMARKS.md "Method")."""
    import argparse

    from temporalio.client import WorkflowHistory

    p = argparse.ArgumentParser(prog="python -m bench.shape")
    p.add_argument("dump", type=Path)
    p.add_argument("--source", default="", help="where the histories come from (commit), kept in the file")
    p.add_argument("--output", type=Path, default=OLD_SHAPE_FILE)
    a = p.parse_args(argv)
    out = {"source": a.source}
    if a.output.exists():  # the figures measured by hand stay
        out["measured"] = json.loads(a.output.read_text()).get("measured", {})
    for kind, d in json.loads(a.dump.read_text()).items():
        hist = {wid: WorkflowHistory.from_json(wid, h) for wid, h in d["histories"].items()}
        shape = shape_of_history(hist[d["case_id"]], hist)
        spec = baseline_spec(shape, 0.0)
        del spec["settle_after"]
        out[kind] = {"summary": shape.summary(), "describe": shape.describe(), "spec": spec}
        print(shape.describe())
    a.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
