"""The law's refund deadline on a withdrawal (domain/legal.py, docs/rules.md "The law").

The due date is computed at the first proof (the shipment reported with its tracking number, the
carrier's first scan, or the receipt), stored as `deadlines.legal_refund` and `LegalRefundDue`, and
watched by a timer of its own beside the stages: 2 days before it an unrefunded case is escalated;
on the due day (the policy's margin before its end) the waits that hold the refund back (the parcel in transit, the seller's
activation, care deciding them) end, and the marketplace refunds in the seller's place (policy
switch). A refund made late anyway owes the L242-4 increase: credited once to the wallet (ledger kind
`late_increase`, outside the order's paid), the customer told, and who was late recorded.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from temporalio import workflow

from activities.wallet import WalletActivities
from domain import legal
from domain.models import CaseKind, LateRefund, Money, WalletCredit
from workflows.case.base import text
from workflows.common import euros, fmt
from workflows.options import RECORD_ACTIVITY

PATCH = "legal-refund-due"


@dataclass
class LegalRefund:
    case: object = field(repr=False)  # the CaseWorkflow this deadline belongs to
    due: datetime | None = None
    made_at: datetime | None = None  # the refund created at the gateway, or the wallet credited
    due_reached: bool = False  # the marketplace's act (policy.legal_refund_act_at) passed, no refund made
    _watch: asyncio.Task | None = None

    def arm(self) -> None:
        """Computes the due date once a proof exists, then watches it (idempotent)."""
        case = self.case
        if self.due is not None or case.inp.kind != CaseKind.withdrawal:
            return
        shipped = case.shipment_at
        received = case.received[1] if case.received else None
        due = case.inp.policy.legal_refund_due(case.inp.opened_at, shipped, received)
        # Cases started before this rule shipped replay without it (their histories have no marker).
        if due is None or not workflow.patched(PATCH):
            return
        self.due = due
        case.state.deadlines["legal_refund"] = self.due
        case.state.legal_refund_due = self.due
        case.publish()
        self._watch = asyncio.create_task(self._watch_due())

    def seller_deadline(self) -> datetime | None:
        """The seller's activation ends by then at the latest (policy.legal_refund_seller_deadline)."""
        return None if self.due is None else self.case.inp.policy.legal_refund_seller_deadline(self.due)

    def refund_now(self) -> bool:
        """The marketplace refunds in the seller's place now: the due instant passed, the item is
        proven shipped, and the policy says so."""
        return self.due_reached and self.case.inp.policy.marketplace_refunds_at_legal_due

    def made(self) -> None:
        if self.made_at is None:
            self.made_at = workflow.now()

    def stop(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()

    async def _watch_due(self) -> None:
        case, policy = self.case, self.case.inp.policy
        if not await _until(lambda: self.made_at is not None, policy.legal_refund_escalation(self.due)):
            await case.escalate(f"the legal refund deadline is {fmt(self.due)} (Europe/Paris) and the refund is "
                                "not made yet (L221-24)")
        if not await _until(lambda: self.made_at is not None, policy.legal_refund_act_at(self.due)):
            self.due_reached = True
            await case.record("legal_refund_due_reached", {
                "due": self.due.isoformat(), "marketplace_refunds": policy.marketplace_refunds_at_legal_due})

    async def pay_increase_if_late(self, refunded_cents: int) -> None:
        """A refund made after the due date: the L242-4 increase on the sums refunded, credited once."""
        if self.due is None or self.made_at is None or refunded_cents <= 0:
            return
        days = legal.days_late(self.due, self.made_at)
        if days == 0:
            return
        case = self.case
        order, policy = case.inp.order, case.inp.policy
        rate, known = legal.legal_rate_for(self.due, policy.legal_interest_rates)
        if not known:
            workflow.logger.warning("no legal interest rate for %s: the latest one (%s %%) is used",
                                    legal.half_year(self.due.date()), rate)
        cents = legal.late_refund_increase_cents(refunded_cents, order.items_cents, days, rate)
        activated_at = case.activated_at
        late_party = "seller" if activated_at is not None and activated_at > self.due else "marketplace"
        late = LateRefund(due=self.due, refunded_at=self.made_at, days_late=days, late_party=late_party,
                          percent=str(legal.increase_percent(days, rate)), increase_cents=cents)
        case.state.late_refund = late
        if cents > 0:
            await workflow.execute_activity_method(
                WalletActivities.credit_wallet,
                WalletCredit(idempotency_key=f"{case.inp.case_id}:late-increase", customer_id=order.customer_id,
                             case_id=case.inp.case_id, order_id=order.order_id, ledger_kind="late_increase",
                             amount=Money(cents=cents, currency=order.currency),
                             reason=f"legal late-refund increase: {days} days late (L242-4)"),
                summary=f"late-refund increase {euros(cents, order.currency)}", **RECORD_ACTIVITY)
        await case.record("late_refund_increase_credited", late.model_dump(mode="json"))
        await case.notify_customer(
            "late-increase", "mail.late_increase", days=days, increase_cents=cents, refunded_cents=refunded_cents,
            currency=order.currency, order_id=order.order_id, made_at=self.made_at.isoformat(),
            due_at=self.due.isoformat(), percent=late.percent,
            how=text("mail.part.rate_up_to_10_days") if days <= 10 else text("mail.part.days_late", days=days))


async def _until(done, at: datetime) -> bool:
    """Waits until done() or the instant `at`; True when done."""
    if done():
        return True
    remaining = at - workflow.now()
    if remaining.total_seconds() <= 0:
        return done()
    try:
        await workflow.wait_condition(done, timeout=remaining)
        return True
    except asyncio.TimeoutError:
        return done()
