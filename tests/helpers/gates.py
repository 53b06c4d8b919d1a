"""Activities that hold until the test lets them go: the real activities, behind a gate.

`Gates` wraps the case activities (notify, record_case_events, set_order_status, refund_card): an
activity call whose argument matches a gate waits at it; the test waits for it to be held
(`await gate.held`), acts while it is in flight, then opens the gate (`gate.open()`).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

from temporalio import activity

from activities.cases import CaseActivities
from domain.models import Notification, OrderStatusChange, RefundRequest, TimelineEvent


@dataclass
class Gate:
    activity: str  # the activity type
    matches: Callable[[object], bool]
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def held(self, timeout: float = 20) -> None:
        await asyncio.wait_for(self.reached.wait(), timeout)

    def open(self) -> None:
        self.opened.set()


def message_gate(key_suffix: str) -> Gate:
    """Holds the email whose message key ends with `key_suffix` (e.g. ":label-asked")."""
    return Gate("notify", lambda n: n.message_key.endswith(key_suffix))


def record_gate(event: str) -> Gate:
    """Holds the read-model write that carries the timeline event `event`."""
    return Gate("record_case_events", lambda events: any(ev.event == event for ev in events))


class GatedCaseActivities(CaseActivities):
    def __init__(self, settings, gates: list[Gate]):
        super().__init__(settings)
        self.gates = gates

    async def _pass(self, name: str, arg) -> None:
        for gate in self.gates:
            if gate.activity == name and not gate.opened.is_set() and gate.matches(arg):
                gate.reached.set()
                await gate.opened.wait()

    @activity.defn(name="notify")
    async def notify(self, n: Notification) -> bool:
        await self._pass("notify", n)
        return await super().notify(n)

    @activity.defn(name="record_case_events")
    async def record_case_events(self, events: list[TimelineEvent]) -> None:
        await self._pass("record_case_events", events)
        return await super().record_case_events(events)

    @activity.defn(name="set_order_status")
    async def set_order_status(self, change: OrderStatusChange):
        await self._pass("set_order_status", change)
        return await super().set_order_status(change)

    @activity.defn(name="refund_card")
    async def refund_card(self, req: RefundRequest):
        await self._pass("refund_card", req)
        return await super().refund_card(req)


def gated_worker(env, settings, task_queue: str, *gates: Gate):
    """A worker with the real activities behind `gates`, on `task_queue` (use instead of case_worker)."""
    from dataclasses import replace

    from worker import build_worker

    s = replace(settings, task_queue=task_queue)
    return build_worker(env.client, s, activities=GatedCaseActivities(s, list(gates)))
