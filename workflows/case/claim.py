"""Defect and warranty claims, and withdrawals: photos (defects), the seller's decision (claims), the
return, then a refund or the replacement / repaired item going out."""
from __future__ import annotations

from workflows.case import refund, returns
from workflows.case.base import ALLOWED_DECISIONS, KIND_TITLES, Msg
from workflows.case.cancellation import seller_decision
from workflows.common import euros, fmt

from domain.models import CaseKind, ClaimDecision, Outcome, Role, Stage


async def run(case) -> None:
    inp = case.inp
    if inp.kind == CaseKind.withdrawal:
        return await return_then_refund(case, "withdrawal: item returned", seller_pays_label=False)
    # A defect claim needs photos; so does a claim under the legal conformity guarantee after 12
    # months, when the defect of used goods is no longer presumed (the customer shows it).
    evidence = inp.kind == CaseKind.defect or inp.basis == "legal_guarantee"
    if evidence and not await _photos(case):
        return await case.close(Outcome.expired, "No photos of the defect were added in time.")
    basis = " (legal conformity guarantee)" if inp.basis == "legal_guarantee" else ""
    what = f"{KIND_TITLES[inp.kind]}{basis} on order {inp.order.order_id}"
    choices = ", ".join(sorted(ALLOWED_DECISIONS[inp.kind]))
    decision = await seller_decision(
        case, f"{inp.kind.value}.opened", what,
        f"{what}: {inp.category.value if inp.category else 'other'} — {inp.description or ''}\n"
        f"Photos: {case.state.attachments}. Answer with one of: {choices}")
    d = ClaimDecision(decision.decision)
    if d == ClaimDecision.partial_refund:
        if await _customer_accepts(case, decision.partial_amount_cents, decision.reason):
            return await refund.partial_refund_and_close(case, decision.partial_amount_cents, decision.reason)
        # Refused: the claim goes on as a return with a full refund.
        return await return_then_refund(case, "defect claim: partial refund refused, item returned",
                                        seller_pays_label=True)
    if d == ClaimDecision.refund:
        return await return_then_refund(case, "defect claim: item returned", seller_pays_label=True)
    # Exchange or repair: the item comes back, then the seller sends a replacement / the repaired item.
    if await returns.return_item(case, seller_pays_label=True) is not None:
        await _outbound(case, d)


async def _customer_accepts(case, cents: int, reason: str | None) -> bool:
    """A partial refund is an offer: the customer keeps the item and takes the amount to the wallet, or
    refuses it and sends the item back for a full refund (silence: customer care decides)."""
    money = euros(cents, case.state.currency)
    order_id = case.inp.order.order_id

    def msg(key: str, subject: str):
        return lambda at: Msg(Role.customer, key, subject,
                              f"The seller offers {money} to your wallet for order {order_id}, and you keep the "
                              f"item ({reason or 'no reason given'}). Accept or refuse before {fmt(at)} "
                              "(Europe/Paris); if you refuse, you return the item for a full refund.")

    await case.wait_in(Stage.awaiting_customer_answer, lambda: case.offer_answer is not None, event="partial_refund_offered",
                       detail={"amount_cents": cents, "reason": reason},
                       ask=msg("offer-asked", f"A partial refund of {money} is offered"),
                       remind=msg("offer-reminder", f"Reminder: a partial refund of {money} is offered"))
    answer = case.offer_answer
    await case.record("offer_answered", {"accept": answer.accept, "note": answer.note})
    await case.notify_seller("offer-answered", "partial_refund.answered",
                             f"Partial refund {'accepted' if answer.accept else 'refused'} on order {order_id}",
                             f"The customer {'accepted' if answer.accept else 'refused'} the partial refund of "
                             f"{money}." + ("" if answer.accept else " The item comes back for a full refund."))
    return answer.accept


async def return_then_refund(case, why: str, seller_pays_label: bool) -> None:
    returned = await returns.return_item(case, seller_pays_label)
    if returned is None:
        return
    if returned.at is None:  # the law's refund deadline passed with the parcel still travelling
        await case.escalate("the legal refund deadline passed with the parcel in transit: the marketplace "
                            "refunds on the seller's behalf")
        return await refund.refund_in_full_and_close(case, f"{why.split(':')[0]}: refunded at the legal "
                                                     "deadline, item in transit")
    await refund.refund_in_full_and_close(case, why, activation_from=returned.at)


async def _photos(case) -> bool:
    """A defect claim needs photos before the seller is asked. False when none came in time."""
    if case.state.attachments:
        return True

    def msg(key: str, subject: str):
        return lambda at: Msg(Role.customer, key, subject,
                              f"Please add photos of the defect to case {case.inp.case_id} before {fmt(at)} "
                              "(Europe/Paris), so the seller can assess it.")

    return await case.wait_in(Stage.awaiting_photos, lambda: case.state.attachments > 0, event="photos_requested",
                              ask=msg("photos-asked", "Add photos to your claim"),
                              remind=msg("photos-reminder", "Reminder: add photos to your claim"))


async def _outbound(case, d: ClaimDecision) -> None:
    """The seller ships the replacement or the repaired item; the case closes on its delivery."""
    what = "replacement" if d == ClaimDecision.exchange else "repaired item"
    order_id = case.inp.order.order_id

    def msg(key: str, event: str, subject: str):
        return lambda at: Msg(Role.seller, key, subject,
                              f"The returned item of order {order_id} arrived. Ship the {what} before {fmt(at)} "
                              "(Europe/Paris), or declare exchange and repair impossible.", event)

    await case.wait_in(Stage.awaiting_outbound_shipment, lambda: case.outbound is not None or case.impossible is not None,
                       event="outbound_requested", ask=msg("outbound-asked", "outbound.requested", f"Ship the {what}"),
                       remind=msg("outbound-reminder", "outbound.reminder", f"Reminder: ship the {what}"))
    if case.impossible is not None:
        await case.care_decides(f"seller declared exchange and repair impossible: {case.impossible.note or ''}")
        raise AssertionError("care_decides without a stage to go back to always ends in a stop")
    out = case.outbound
    case.state.tracking_numbers.append(out.tracking_number)
    await case.wait_in(Stage.outbound_in_transit, lambda: case.outbound_delivered, event="outbound_shipped",
                       detail={"carrier": out.carrier, "tracking_number": out.tracking_number},
                       ask=lambda at: Msg(Role.customer, "outbound-shipped", f"Your {what} is on its way",
                                          f"Carrier {out.carrier}, tracking number {out.tracking_number}."))
    await case.close(Outcome.exchanged if d == ClaimDecision.exchange else Outcome.repaired,
                     f"The {what} was delivered.")
