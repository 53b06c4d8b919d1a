"""Defect and warranty claims, and withdrawals: photos (defects), the seller's decision (claims), the
return, then a refund or the replacement / repaired item going out."""
from __future__ import annotations

from workflows.case import refund, returns
from workflows.case.base import ALLOWED_DECISIONS, Msg, text
from workflows.case.cancellation import seller_decision

from domain.models import CaseKind, ClaimDecision, Outcome, Role, Stage


async def run(case) -> None:
    inp = case.inp
    if inp.kind == CaseKind.withdrawal:
        return await return_then_refund(case, text("reason.withdrawal_returned"), seller_pays_label=False)
    # A defect claim needs photos; so does a claim under the legal conformity guarantee after 12
    # months, when the defect of used goods is no longer presumed (the customer shows it).
    evidence = inp.kind == CaseKind.defect or inp.basis == "legal_guarantee"
    if evidence and not await _photos(case):
        return await case.close(Outcome.expired, text("reason.no_photos"))
    decision = await seller_decision(
        case, f"{inp.kind.value}.opened", "mail.claim_asked", kind=inp.kind.value, order_id=inp.order.order_id,
        basis=text("mail.part.legal_guarantee") if inp.basis == "legal_guarantee" else "",
        category=inp.category.value if inp.category else "other", description=inp.description or "",
        photos=case.state.attachments, choices=", ".join(sorted(ALLOWED_DECISIONS[inp.kind])))
    d = ClaimDecision(decision.decision)
    if d == ClaimDecision.partial_refund:
        if await _customer_accepts(case, decision.partial_amount_cents, decision.reason):
            return await refund.partial_refund_and_close(case, decision.partial_amount_cents, decision.reason)
        # Refused: the claim goes on as a return with a full refund.
        return await return_then_refund(case, text("reason.partial_refused_returned"), seller_pays_label=True)
    if d == ClaimDecision.refund:
        return await return_then_refund(case, text("reason.claim_returned"), seller_pays_label=True)
    # Exchange or repair: the item comes back, then the seller sends a replacement / the repaired item.
    if await returns.return_item(case, seller_pays_label=True) is not None:
        await _outbound(case, d)


async def _customer_accepts(case, cents: int, reason: str | None) -> bool:
    """A partial refund is an offer: the customer keeps the item and takes the amount to the wallet, or
    refuses it and sends the item back for a full refund (silence: customer care decides)."""
    params = {"amount_cents": cents, "currency": case.state.currency, "order_id": case.inp.order.order_id,
              "note": reason or text("mail.part.no_reason")}

    def msg(key: str, text_key: str):
        return lambda at: Msg(Role.customer, key, text_key, {**params, "due_at": at.isoformat()})

    await case.wait_in(Stage.awaiting_customer_answer, lambda: case.offer_answer is not None, event="partial_refund_offered",
                       detail={"amount_cents": cents, "reason": reason},
                       ask=msg("offer-asked", "mail.offer_asked"), remind=msg("offer-reminder", "mail.offer_asked_reminder"))
    answer = case.offer_answer
    await case.record("offer_answered", {"accept": answer.accept, "note": answer.note})
    await case.notify_seller("offer-answered", "partial_refund.answered",
                             "mail.offer_accepted" if answer.accept else "mail.offer_refused", **params)
    return answer.accept


async def return_then_refund(case, why: dict, seller_pays_label: bool) -> None:
    returned = await returns.return_item(case, seller_pays_label)
    if returned is None:
        return
    if returned.at is None:  # the law's refund deadline passed with the parcel still travelling
        await case.escalate("the legal refund deadline passed with the parcel in transit: the marketplace "
                            "refunds on the seller's behalf")
        return await refund.refund_in_full_and_close(case, text("reason.refunded_at_legal_deadline",
                                                                kind=case.inp.kind.value))
    await refund.refund_in_full_and_close(case, why, activation_from=returned.at)


async def _photos(case) -> bool:
    """A defect claim needs photos before the seller is asked. False when none came in time."""
    if case.state.attachments:
        return True

    def msg(key: str, text_key: str):
        return lambda at: Msg(Role.customer, key, text_key, {"case_id": case.inp.case_id, "due_at": at.isoformat()})

    return await case.wait_in(Stage.awaiting_photos, lambda: case.state.attachments > 0, event="photos_requested",
                              ask=msg("photos-asked", "mail.photos_asked"),
                              remind=msg("photos-reminder", "mail.photos_asked_reminder"))


async def _outbound(case, d: ClaimDecision) -> None:
    """The seller ships the replacement or the repaired item; the case closes on its delivery."""
    params = {"what": text("mail.part.replacement" if d == ClaimDecision.exchange else "mail.part.repaired_item"),
              "order_id": case.inp.order.order_id}

    def msg(key: str, event: str, text_key: str):
        return lambda at: Msg(Role.seller, key, text_key, {**params, "due_at": at.isoformat()}, event)

    await case.wait_in(Stage.awaiting_outbound_shipment, lambda: case.outbound is not None or case.impossible is not None,
                       event="outbound_requested", ask=msg("outbound-asked", "outbound.requested", "mail.outbound_asked"),
                       remind=msg("outbound-reminder", "outbound.reminder", "mail.outbound_asked_reminder"))
    if case.impossible is not None:
        await case.care_decides(f"seller declared exchange and repair impossible: {case.impossible.note or ''}")
        raise AssertionError("care_decides without a stage to go back to always ends in a stop")
    out = case.outbound
    case.state.tracking_numbers.append(out.tracking_number)
    await case.wait_in(Stage.outbound_in_transit, lambda: case.outbound_delivered, event="outbound_shipped",
                       detail={"carrier": out.carrier, "tracking_number": out.tracking_number},
                       ask=lambda at: Msg(Role.customer, "outbound-shipped", "mail.outbound_shipped",
                                          {**params, "carrier": out.carrier, "tracking_number": out.tracking_number}))
    await case.close(Outcome.exchanged if d == ClaimDecision.exchange else Outcome.repaired,
                     text("reason.outbound_delivered", what=params["what"]))
