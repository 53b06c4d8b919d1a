"""Refund child workflow, shared by cancellations, claims and returns.

[awaiting_refund_activation: the seller activates within 3 days of receipt; reminder; missed →
escalation and, by policy, the marketplace refunds on the seller's behalf] → card refund (exactly
once: idempotency key + lookup) → awaiting_bank_settlement (gateway event by webhook) until the
settlement deadline; overdue → escalation, and the wait goes on. Stages are reported to the case.
"""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.cases import REFUND_EXCEEDS_PAID, REFUND_REJECTED, CaseActivities
    from domain.models import GatewayEvent, RefundChildInput, RefundOutcome, Role, Stage
    from workflows.common import ChildReporter, Deadline, euros, fmt, send
    from workflows.options import MONEY_ACTIVITY


@workflow.defn
class RefundWorkflow:
    def __init__(self) -> None:
        self._event: GatewayEvent | None = None
        self._activated = False
        self.deadline = Deadline()

    @workflow.signal
    def gateway_event(self, event: GatewayEvent) -> None:
        # Duplicate or late deliveries are harmless: the first final status wins.
        if self._event is None:
            self._event = event

    @workflow.signal
    def activate(self) -> None:
        self._activated = True

    @workflow.signal
    def extend_deadline(self, hours: int) -> None:
        if self.deadline.at is not None:
            self.deadline.extend(timedelta(hours=hours))

    @workflow.run
    async def run(self, inp: RefundChildInput) -> RefundOutcome:
        req, policy = inp.refund, inp.policy
        case = ChildReporter(inp.parent_workflow_id)
        money = euros(req.amount.cents, req.amount.currency)

        if inp.require_activation and not await self._activation(inp, case, money):
            return RefundOutcome(refund_id=None, settled=False, failed_reason="not activated", amount=req.amount)

        await case.report("refund_requested", stage=Stage.refunding, waiting_for="gateway",
                          detail={"amount_cents": req.amount.cents, "reason": req.reason})
        try:
            result = await workflow.execute_activity_method(
                CaseActivities.refund_card, req, summary=f"card refund {money}", **MONEY_ACTIVITY)
        except ActivityError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.type in (REFUND_REJECTED, REFUND_EXCEEDS_PAID):
                await case.report("refund_failed", detail={"reason": cause.message})
                return RefundOutcome(refund_id=None, settled=False, failed_reason=cause.message, amount=req.amount)
            raise

        self.deadline.set(policy.bank_settlement_deadline(workflow.now()))
        await case.report("refund_accepted", stage=Stage.awaiting_bank_settlement, waiting_for="gateway",
                          deadline=self.deadline.at, deadline_name="bank_settlement",
                          detail={"refund_id": result.refund_id, "amount_cents": req.amount.cents})
        await send(req.case_id, f"refund-sent-{req.idempotency_key}", Role.customer, inp.refund.customer_id,
                   f"Your refund of {money} is on its way",
                   f"We refunded {money} to the card used for order {req.order_id}. "
                   f"Your bank should show it by {fmt(self.deadline.at)}.")
        if not await self.deadline.wait(lambda: self._event is not None):
            await case.report("settlement_overdue", escalate=f"refund {result.refund_id} ({money}) not settled "
                                                              "by the bank by its deadline")
            await workflow.wait_condition(lambda: self._event is not None)

        if self._event.status == "succeeded":
            await case.report("refund_settled", detail={"refund_id": result.refund_id, "amount_cents": req.amount.cents})
            return RefundOutcome(refund_id=result.refund_id, settled=True, amount=req.amount)
        reason = self._event.failure_reason or self._event.status
        await case.report("refund_failed", detail={"refund_id": result.refund_id, "reason": reason})
        return RefundOutcome(refund_id=result.refund_id, settled=False, failed_reason=reason, amount=req.amount)

    async def _activation(self, inp: RefundChildInput, case: ChildReporter, money: str) -> bool:
        """Waits for the seller to activate the refund. False only when the policy forbids refunding on
        the seller's behalf and nobody activated (customer care then decides)."""
        policy, req = inp.policy, inp.refund
        self.deadline.set(policy.refund_activation_deadline(inp.received_at or workflow.now()))
        await case.report("refund_activation_requested", stage=Stage.awaiting_refund_activation, waiting_for="seller",
                          deadline=self.deadline.at, deadline_name="refund_activation")
        ask = (f"The returned item of order {req.order_id} was received. Activate the refund of {money} "
               f"before {fmt(self.deadline.at)} (Europe/Paris).")
        await send(req.case_id, "activation-asked", Role.seller, inp.seller_id,
                   f"Activate the refund of order {req.order_id}", ask, "refund.activation_requested")

        async def remind():
            await send(req.case_id, "activation-reminder", Role.seller, inp.seller_id,
                       f"Reminder: activate the refund of order {req.order_id}", ask, "refund.activation_reminder")
            await case.report("reminder_sent", detail={"to": "seller", "deadline": self.deadline.at.isoformat()})

        if await self.deadline.wait(lambda: self._activated, reminder_before=policy.reminder_before, remind=remind):
            await case.report("refund_activated", detail={"by": inp.seller_id})
            return True
        if policy.marketplace_refunds_on_seller_behalf:
            await case.report("refund_activation_missed",
                              escalate="seller did not activate the refund in time: the marketplace refunds "
                                       "on the seller's behalf")
            return True
        await case.report("refund_activation_missed", escalate="seller did not activate the refund in time",
                          waiting_for="care")
        await workflow.wait_condition(lambda: self._activated)
        return True
