"""The return of the item: the seller issues a prepaid label (1 business day; "label missing" reports
re-notify, the second escalates), the customer ships within 14 days (or the case expires), the parcel
travels (carrier events, the seller's receipt, or care) for at most 10 days before care is told.
A withdrawal's first proof of shipment or receipt fixes the law's refund deadline (legal_refund.py):
reached while the parcel still travels, the refund goes out without waiting for it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from workflows.case.base import Msg, text

from domain.models import Outcome, Role, Stage


@dataclass
class Returned:
    at: datetime | None  # when the item came back; None: the law's refund deadline came first


async def return_item(case, seller_pays_label: bool) -> Returned | None:
    """The item came back (or the law's refund deadline came first); None when the return expired
    (the case is then closed)."""
    order_id = case.inp.order.order_id
    cost = text("mail.part.label_seller_pays" if seller_pays_label else "mail.part.label_customer_pays")

    def label_msg(key: str, event: str, text_key: str):
        return lambda at: Msg(Role.seller, key, text_key, {"order_id": order_id, "cost": cost,
                                                           "due_at": at.isoformat()}, event)

    await case.wait_in(Stage.awaiting_return_label, lambda: case.label is not None, event="return_label_requested",
                       detail={"seller_pays_label": seller_pays_label},
                       ask=label_msg("label-asked", "return.label_requested", "mail.label_asked"),
                       remind=label_msg("label-reminder", "return.label_reminder", "mail.label_asked_reminder"))
    label = case.label
    case.state.return_label_url = label.label_url
    if label.tracking_number not in case.state.tracking_numbers:
        case.state.tracking_numbers.append(label.tracking_number)
    await case.record("return_label_issued", {"carrier": label.carrier, "tracking_number": label.tracking_number,
                                              "label_url": label.label_url}, with_next=True)

    def ship_msg(key: str, text_key: str):
        return lambda at: Msg(Role.customer, key, text_key, {
            "order_id": order_id, "carrier": label.carrier, "tracking_number": label.tracking_number,
            "label_url": label.label_url, "due_at": at.isoformat()})

    # The carrier may report the parcel before the customer does, and the seller may even have it.
    moving = lambda: case.shipment is not None or case.parcel_seen_by_carrier or case.received is not None  # noqa: E731
    if not await case.wait_in(Stage.awaiting_shipment, moving, event="awaiting_customer_shipment",
                              ask=ship_msg("label-to-customer", "mail.label_to_customer"),
                              remind=ship_msg("ship-reminder", "mail.ship_reminder")):
        await case.notify_customer("return-expired", "mail.return_expired", order_id=order_id)
        await case.close(Outcome.expired, text("reason.not_shipped_back"))
        return None
    case.legal.arm()
    if case.received is None:
        shipment = case.shipment
        if shipment is not None and shipment.tracking_number not in case.state.tracking_numbers:
            case.state.tracking_numbers.append(shipment.tracking_number)
        detail = ({"carrier": shipment.carrier, "tracking_number": shipment.tracking_number} if shipment
                  else {"reported_by": "carrier", "tracking_number": label.tracking_number})
        await case.wait_in(Stage.in_transit, lambda: case.received is not None or case.legal.refund_now(),
                           event="return_shipped", detail=detail)
        if case.received is None:
            return Returned(None)
    by, at = case.received
    await case.record("return_received", {"confirmed_by": by}, with_next=True)
    return Returned(at)
