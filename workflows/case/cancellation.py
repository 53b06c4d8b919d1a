"""Cancellation: a paid order is cancelled at once (compare-and-set) and refunded in full; a validated
order needs the seller's answer within 1 business day; a shipped or delivered one is refused."""
from __future__ import annotations

from workflows.case import refund
from workflows.case.base import Msg
from workflows.common import fmt

from domain.models import CancellationDecision, DecisionRequest, OrderStatus, Outcome, Role, Stage

RETURN_RIGHT = " Once the order is delivered, you can return it within the withdrawal period."


async def run(case) -> None:
    status = case.inp.order.status
    if status == OrderStatus.paid:
        # Compare-and-set: a seller validating at this very moment makes it fail, and the case
        # continues as the cancellation of a validated order.
        result = await case.set_order_status([OrderStatus.paid], OrderStatus.cancelled)
        if result.applied:
            case.commit("the order is cancelled")
            await case.record("order_cancelled", {"from": "paid"}, with_next=True)
            return await refund.refund_in_full_and_close(case, "order cancelled before validation")
        status = result.status
    if status == OrderStatus.validated:
        return await _seller_decides(case)
    await case.close(Outcome.refused, f"The order is already {status.value}: it can no longer be cancelled.{RETURN_RIGHT}")


async def _seller_decides(case) -> None:
    order_id = case.inp.order.order_id
    decision = await seller_decision(
        case, "cancellation.requested", f"Cancellation requested on order {order_id}",
        f"The customer asks to cancel order {order_id}. Accept or refuse")
    if decision.decision == CancellationDecision.accept:
        result = await case.set_order_status([OrderStatus.validated], OrderStatus.cancelled)
        if result.applied:
            case.commit("the order is cancelled")
            await case.record("order_cancelled", {"from": "validated", "by": decision.actor.id}, with_next=True)
            return await refund.refund_in_full_and_close(case, "cancellation accepted by the seller")
    await case.close(Outcome.refused, (decision.reason or "The seller has already shipped the order.") + RETURN_RIGHT)


async def seller_decision(case, event: str, subject: str, ask: str) -> DecisionRequest:
    """Asks the seller and waits for the answer (reminder before the deadline; silence: care decides,
    which ends the case or gives the seller more time)."""
    def msg(key: str, prefix: str = ""):
        return lambda at: Msg(Role.seller, key, prefix + subject,
                              f"{ask} before {fmt(at)} (Europe/Paris), otherwise customer care takes over.", event)

    await case.wait_in(Stage.awaiting_seller_decision, lambda: case.decision is not None, event="seller_asked",
                       ask=msg("decision-asked"), remind=msg("decision-reminder", "Reminder: "))
    d = case.decision
    case.state.decision = d.decision
    await case.record("seller_decided", {"decision": d.decision, "reason": d.reason, "by": d.actor.id},
                      with_next=True)
    return d
