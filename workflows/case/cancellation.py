"""Cancellation: a paid order is cancelled at once (compare-and-set) and refunded in full; a validated
order needs the seller's answer within 1 business day; a shipped or delivered one is refused."""
from __future__ import annotations

from workflows.case import refund
from workflows.case.base import Msg, text

from domain.models import CancellationDecision, DecisionRequest, OrderStatus, Outcome, Role, Stage

async def run(case) -> None:
    status = case.inp.order.status
    if status == OrderStatus.paid:
        # Compare-and-set: a seller validating at this very moment makes it fail, and the case
        # continues as the cancellation of a validated order.
        result = await case.set_order_status([OrderStatus.paid], OrderStatus.cancelled)
        if result.applied:
            case.commit("the order is cancelled")
            await case.record("order_cancelled", {"from": "paid"}, with_next=True)
            return await refund.refund_in_full_and_close(case, text("reason.cancelled_before_validation"))
        status = result.status
    if status == OrderStatus.validated:
        return await _seller_decides(case)
    await case.close(Outcome.refused, text("reason.order_already", status=status.value))


async def _seller_decides(case) -> None:
    decision = await seller_decision(case, "cancellation.requested", "mail.cancellation_asked",
                                     order_id=case.inp.order.order_id)
    if decision.decision == CancellationDecision.accept:
        result = await case.set_order_status([OrderStatus.validated], OrderStatus.cancelled)
        if result.applied:
            case.commit("the order is cancelled")
            await case.record("order_cancelled", {"from": "validated", "by": decision.actor.id}, with_next=True)
            return await refund.refund_in_full_and_close(case, text("reason.cancellation_accepted"))
    await case.close(Outcome.refused, text("reason.seller_refused_cancellation", note=decision.reason) if decision.reason
                     else text("reason.order_already_shipped"))


async def seller_decision(case, event: str, text_key: str, **params) -> DecisionRequest:
    """Asks the seller (`text_key`, then `text_key`_reminder) and waits for the answer (reminder before
    the deadline; silence: care decides, which ends the case or gives the seller more time)."""
    def msg(key: str, suffix: str = ""):
        return lambda at: Msg(Role.seller, key, text_key + suffix, {**params, "due_at": at.isoformat()}, event)

    await case.wait_in(Stage.awaiting_seller_decision, lambda: case.decision is not None, event="seller_asked",
                       ask=msg("decision-asked"), remind=msg("decision-reminder", "_reminder"))
    d = case.decision
    case.state.decision = d.decision
    await case.record("seller_decided", {"decision": d.decision, "reason": d.reason, "by": d.actor.id},
                      with_next=True)
    return d
