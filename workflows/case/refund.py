"""Money of a case: the total refund to the card (items + the original delivery fee) with, for
returns, the seller's activation first; the partial refund and the card fallback to the wallet.

[awaiting_refund_activation: the seller activates within 3 days of receipt; missed → escalation and,
by policy, the marketplace refunds on the seller's behalf] → refunding (the gateway call, exactly once:
idempotency key + lookup) → awaiting_bank_settlement (the gateway's event by webhook, or care marks
it settled) → closed."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from activities.cases import REFUND_EXCEEDS_PAID, REFUND_REJECTED, CaseActivities
from activities.wallet import WalletActivities
from domain.models import GatewayEvent, Money, Outcome, RefundRequest, Role, Stage, WalletCredit
from workflows.case.base import Msg, text
from workflows.common import euros
from workflows.options import MONEY_ACTIVITY, RECORD_ACTIVITY

# Only a card that can no longer take money sends the refund to the wallet (Stripe's failure reasons
# and card error codes); any other refusal goes to customer care with the gateway's reason.
CARD_CLOSED_REASONS = {"expired_or_canceled_card", "lost_or_stolen_card"}


@dataclass
class RefundResult:
    settled: bool
    failed_reason: str | None = None
    refund_id: str | None = None
    card_closed: bool = False
    cents: int | None = None  # what was refunded


async def refund_in_full_and_close(case, why: dict, activation_from: datetime | None = None) -> None:
    """The total refund to the card: what the order paid (items + delivery fee), less what its cases
    already gave back (a partial refund to the wallet, an earlier refund). A card that can no longer
    take money falls back to the wallet; any other failure goes to customer care (one forced refund
    per care decision)."""
    order = case.inp.order
    left = order.total_cents
    if activation_from is not None:  # the seller is asked to activate the amount actually due
        left = await case.write(CaseActivities.refundable_cents, order.order_id, "refundable remainder")
        if left <= 0:
            await case.care_decides("nothing is left to refund on this order (refunded by another case)")
            raise AssertionError("care_decides without a stage to go back to always ends in a stop")
    result = await refund_card(case, left, why, activation_from=activation_from, at_most_remainder=True)
    left = result.cents or left
    if left < order.total_cents:
        why = text("reason.refund_reduced", why=why, already_cents=order.total_cents - left,
                   paid_cents=order.total_cents, refund_cents=left, currency=order.currency)
    if result.settled:
        await case.legal.pay_increase_if_late(left)
        return await case.close(Outcome.refunded, why)
    if result.card_closed:
        if not await credit_wallet(case, "card-fallback", left, f"card refund refused ({result.failed_reason}): "
                                                                "credited to your wallet"):
            await case.care_decides("the card is closed and the wallet credit would exceed what the order paid")
            raise AssertionError("care_decides without a stage to go back to always ends in a stop")
        await case.legal.pay_increase_if_late(left)
        return await case.close(Outcome.refunded_to_wallet, text(
            "reason.card_refund_to_wallet", failure=result.failed_reason, amount_cents=left,
            currency=case.state.currency))
    await case.care_decides(f"card refund failed: {result.failed_reason}")
    raise AssertionError("care_decides without a stage to go back to always ends in a stop")


async def refund_card(case, cents: int, why: dict, activation_from: datetime | None = None,
                      at_most_remainder: bool = False) -> RefundResult:
    inp, order = case.inp, case.inp.order
    money = euros(cents, order.currency)
    case.state.refund_cents = cents  # the amount at stake, shown (RefundAmountCents) from the activation on
    if activation_from is not None:
        def msg(key: str, event: str, text_key: str):
            return lambda at: Msg(Role.seller, key, text_key, {
                "order_id": order.order_id, "amount_cents": cents, "currency": order.currency,
                "due_at": at.isoformat()}, event)

        # The seller's deadline never lies beyond the law's; at the law's, the marketplace refunds.
        activated = await case.wait_in(
            Stage.awaiting_refund_activation, lambda: case.activated or case.legal.refund_now(),
            event="refund_activation_requested", since=activation_from, not_after=case.legal.seller_deadline(),
            ask=msg("activation-asked", "refund.activation_requested", "mail.activation_asked"),
            remind=msg("activation-reminder", "refund.activation_reminder", "mail.activation_asked_reminder"))
        activated = activated and case.activated
        await case.record("refund_activated" if activated else "refund_activation_missed",
                          {"by": order.seller_id if activated else "marketplace"}, with_next=True)

    case.refunds += 1
    case.money_in_flight = True
    case.commit("a refund is under way")
    req = RefundRequest(
        idempotency_key=f"{inp.case_id}:refund:{case.refunds}", case_id=inp.case_id,
        workflow_id=workflow.info().workflow_id, order_id=order.order_id, customer_id=order.customer_id,
        payment_intent=order.payment_intent, amount=Money(cents=cents, currency=order.currency), reason=why["text"],
        at_most_remainder=at_most_remainder)
    call = workflow.start_activity_method(CaseActivities.refund_card, req, summary=f"card refund {money}",
                                          **MONEY_ACTIVITY)
    try:
        await case.wait_in(Stage.refunding, call.done, event="refund_requested",
                           detail={"amount_cents": cents, "reason": why})
        try:
            result = await call
        except ActivityError as e:
            if is_cancelled_exception(e):
                raise
            if isinstance(e.cause, ApplicationError) and e.cause.type in (REFUND_REJECTED, REFUND_EXCEEDS_PAID):
                code = (e.cause.details[0] if e.cause.details else {}).get("code")
                if e.cause.type == REFUND_EXCEEDS_PAID:
                    code = "nothing left to refund on the order"
                await case.record("refund_failed", {"reason": e.cause.message, "code": code})
                return RefundResult(settled=False, failed_reason=code or e.cause.message,
                                    card_closed=code in CARD_CLOSED_REASONS)
            raise
        if result.status != "failed":
            case.legal.made()  # the law counts the refund made once the gateway created it
        if result.amount_cents is not None and result.amount_cents != cents:  # the order's remainder
            cents = result.amount_cents
            case.state.refund_cents = cents
            money = euros(cents, order.currency)
        if result.status != "pending":  # Stripe's status at creation counts: settled or failed at once
            case.gateway_events.setdefault(result.refund_id, GatewayEvent(
                object_id=result.refund_id, status=result.status, failure_reason=result.failure_reason))

        def settled() -> bool:
            return result.refund_id in case.gateway_events or case.settled_by_care is not None

        async def reconcile() -> None:
            """The settlement event is late: ask the gateway how the refund stands."""
            found = await workflow.execute_activity_method(CaseActivities.lookup_refund, result.refund_id,
                                                           summary="refund look-up", **MONEY_ACTIVITY)
            if found.status != "pending":
                case.gateway_events.setdefault(result.refund_id, GatewayEvent(
                    object_id=result.refund_id, status=found.status, failure_reason=found.failure_reason))
            await case.record("refund_looked_up", {"refund_id": result.refund_id, "status": found.status})

        if not settled():
            await case.wait_in(
                Stage.awaiting_bank_settlement, settled, event="refund_accepted",
                detail={"refund_id": result.refund_id, "amount_cents": cents}, reconcile=reconcile,
                ask=lambda at: Msg(Role.customer, f"refund-sent-{req.idempotency_key}", "mail.refund_sent", {
                    "amount_cents": cents, "currency": order.currency, "order_id": order.order_id,
                    "due_at": at.isoformat()}))
    finally:
        case.money_in_flight = False
    event = case.gateway_events.get(result.refund_id)
    if event is None or event.status == "succeeded":
        case.state.refunded_cents += cents
        await case.record("refund_settled", {"refund_id": result.refund_id, "amount_cents": cents,
                                             **({"marked_by_care": case.settled_by_care} if event is None else {})},
                          with_next=True)
        return RefundResult(settled=True, refund_id=result.refund_id, cents=cents)
    reason = event.failure_reason or event.status
    case.legal.made_at = None  # refused in the end: not a refund
    await case.record("refund_failed", {"refund_id": result.refund_id, "reason": reason})
    return RefundResult(settled=False, failed_reason=reason, refund_id=result.refund_id,
                        card_closed=reason in CARD_CLOSED_REASONS, cents=cents)


async def partial_refund_and_close(case, cents: int, reason: str | None) -> None:
    """The customer keeps the item; the partial amount goes to the wallet at once."""
    if not await credit_wallet(case, "partial-refund", cents, reason or "partial refund agreed by the seller"):
        await case.care_decides("the partial refund would exceed what is left to refund on the order")
        raise AssertionError("care_decides without a stage to go back to always ends in a stop")
    await case.close(Outcome.partially_refunded, text("reason.partial_refund", amount_cents=cents,
                                                      currency=case.state.currency, note=reason or ""))


async def credit_wallet(case, key: str, cents: int, reason: str) -> bool:
    """Credits the wallet from the case (entered in the order's ledger). False when the ledger refused
    it: it would exceed what the order paid."""
    order = case.inp.order
    try:
        await workflow.execute_activity_method(
            WalletActivities.credit_wallet,
            WalletCredit(idempotency_key=f"{case.inp.case_id}:{key}", customer_id=order.customer_id,
                         case_id=case.inp.case_id, order_id=order.order_id,
                         amount=Money(cents=cents, currency=order.currency), reason=reason),
            summary=f"wallet credit {euros(cents, order.currency)}", **RECORD_ACTIVITY)
    except ActivityError as e:
        if isinstance(e.cause, ApplicationError) and e.cause.type == REFUND_EXCEEDS_PAID:
            await case.record("wallet_credit_refused", {"amount_cents": cents, "reason": e.cause.message})
            return False
        raise
    case.commit("money was credited to the wallet")
    case.legal.made()
    case.state.wallet_credited_cents += cents
    await case.record("wallet_credited", {"amount_cents": cents, "reason": reason})
    return True
