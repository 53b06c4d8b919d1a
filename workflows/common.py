"""Building blocks shared by the case and payout workflows (workflow code: deterministic)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.cases import CaseActivities
    from domain.calendar import PARIS
    from domain.models import Notification, Role
    from workflows.options import NOTIFY_ACTIVITY

def euros(cents: int, currency: str = "EUR") -> str:
    return f"{cents / 100:.2f} {currency}"


def fmt(moment: datetime | None) -> str:
    """A deadline as people read it: Europe/Paris wall clock."""
    return moment.astimezone(PARIS).strftime("%a %d %b %Y %H:%M") if moment else "-"


def message_key(case_id: str, key: str) -> str:
    """The key of a case's message: the email's Message-ID and the sent-once record follow from it."""
    return f"{case_id}:{key}"


async def send(case_id: str, key: str, role: Role, recipient: str, subject: str, body: str,
               event: str | None = None) -> bool:
    """A message as written (the payout workflow's, English)."""
    return await deliver(Notification(message_key=message_key(case_id, key), recipient_role=role, recipient_id=recipient,
                                      subject=subject, body=body, case_id=case_id, event=event))


async def send_text(case_id: str, key: str, role: Role, recipient: str, text: str, params: dict,
                    event: str | None = None) -> bool:
    """A message named by catalog key (starter/locales/*.po), rendered in the recipient's locale by the
    activity."""
    return await deliver(Notification(message_key=message_key(case_id, key), recipient_role=role, recipient_id=recipient,
                                      text=text, params=params, case_id=case_id, event=event))


async def deliver(n: Notification) -> bool:
    """Email (+ seller webhook) once per key. A message undeliverable for a day must not block the case:
    returns False then, and the caller records it. A cancellation of the workflow is never swallowed."""
    what = n.text or n.subject
    try:
        has_webhook = await workflow.execute_activity_method(
            CaseActivities.notify, n, summary=f"{n.recipient_role.value}: {what}", **NOTIFY_ACTIVITY)
    except ActivityError as e:
        if is_cancelled_exception(e):
            raise
        return False
    if has_webhook:
        # Its own workflow, not awaited: a seller endpoint that fails for hours delays nobody.
        await workflow.start_child_workflow(
            SellerWebhookWorkflow.run, n, id=f"webhook-{n.message_key}",
            parent_close_policy=ParentClosePolicy.ABANDON, static_summary=f"Seller webhook: {what}")
    return True


@workflow.defn
class SellerWebhookWorkflow:
    """Delivers one signed webhook to a seller, retried for a day (the Idempotency-Key stays the same)."""

    @workflow.run
    async def run(self, n: Notification) -> bool:
        try:
            await workflow.execute_activity_method(CaseActivities.deliver_seller_webhook, n,
                                                   summary=n.event or "case.updated", **NOTIFY_ACTIVITY)
            return True
        except ActivityError as e:
            if is_cancelled_exception(e):
                raise
            return False


class Deadline:
    """The deadline of the current waiting stage. Moving it (care extends it, an escalation arms the
    care deadline) wakes the wait, which re-arms its timer, also when the old deadline had passed."""

    def __init__(self) -> None:
        self.at: datetime | None = None
        self._version = 0
        self.parked = False  # the wait is blocked on its timer/condition (nothing of the case runs)

    def set(self, at: datetime | None) -> None:
        self.at = at
        self._version += 1

    async def wait(self, done: Callable[[], bool], *, reminder_before: timedelta | None = None,
                   remind: Callable[[], Awaitable] | None = None, every: timedelta | None = None,
                   on_every: Callable[[], Awaitable] | None = None) -> bool:
        """Waits for `done` until the deadline, calling `remind` once `reminder_before` it and
        `on_every` at each `every` (a periodic look-up). True when done, False when the deadline passed first."""
        reminded = remind is None
        next_check = workflow.now() + every if every and on_every else None
        while not done():
            now = workflow.now()
            remind_at = self.at - reminder_before if not reminded else None
            targets = [(self.at, "deadline")]
            if remind_at is not None and remind_at > now:
                targets.append((remind_at, "reminder"))
            if next_check is not None and next_check < self.at:
                targets.append((next_check, "check"))
            target, what = min(targets)
            if target <= now:
                return done()
            version = self._version
            self.parked = True
            try:
                await workflow.wait_condition(lambda: done() or self._version != version, timeout=target - now,
                                              timeout_summary=what)
            except asyncio.TimeoutError:
                self.parked = False
                if what == "reminder":
                    await remind()
                    reminded = True
                elif what == "check":
                    await on_every()
                    next_check = workflow.now() + every
            finally:
                self.parked = False
        return True
