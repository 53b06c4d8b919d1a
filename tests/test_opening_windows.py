"""Which help requests an order allows, on real calendar edges (pure rules: fixed dates are right here)."""
from __future__ import annotations

from datetime import datetime

import pytest

from domain.calendar import PARIS
from domain.models import CaseKind, DefectCategory, Order, OrderLine
from domain.policy import Policy
from starter.service import CaseService, Conflict, Invalid

SERVICE = CaseService(pool=None, temporal=None, task_queue="unused", policy=Policy())
DESCRIPTION = "The battery drains in two hours."


def order(status="delivered", delivered=None) -> Order:
    return Order(order_id="o1", customer_id="c1", seller_id="s1", status=status, payment_intent="pi_o1",
                 lines=[OrderLine(sku="X", title="Phone", quantity=1, unit_price_cents=10000)],
                 delivery_fee_cents=500, created_at=datetime(2027, 3, 1, tzinfo=PARIS), delivered_at=delivered)


def at(y, m, d, hh=12, mm=0, ss=0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=PARIS)


def check(kind, delivered, now, **details):
    if kind == CaseKind.defect:
        details.setdefault("category", DefectCategory.battery)
        details.setdefault("description", DESCRIPTION)
    return SERVICE.check_opening(order(delivered=delivered), kind, now, **details)


def test_defect_claim_on_the_third_business_day_after_a_thursday_before_easter_monday():
    delivered = at(2027, 3, 25, 15)  # Thursday; Easter Monday is 29 March 2027
    # Business days after: Fri 26, Tue 30, Wed 31 → the window ends Wed 31 March 23:59:59.
    check(CaseKind.defect, delivered, at(2027, 3, 31, 23, 59, 0))
    with pytest.raises(Invalid) as err:
        check(CaseKind.defect, delivered, at(2027, 4, 1, 9))  # next business day
    assert err.value.extra["reason"] == "defect_window_closed"
    assert err.value.extra["closed_at"] == "2027-03-31T23:59:59+02:00"
    assert "withdrawal" in err.value.extra["still_possible"]


def test_withdrawal_whose_30th_day_is_a_sunday_is_accepted_on_the_monday():
    delivered = at(2027, 1, 1, 10)  # +30 days = Sunday 31 January 2027
    check(CaseKind.withdrawal, delivered, at(2027, 2, 1, 22))  # Monday evening: still open
    with pytest.raises(Invalid) as err:
        check(CaseKind.withdrawal, delivered, at(2027, 2, 2, 0, 0, 1))
    assert err.value.extra["reason"] == "withdrawal_window_closed"
    assert err.value.extra["closed_at"] == "2027-02-01T23:59:59+01:00"
    assert err.value.extra["still_possible"] == ["warranty"]


def test_warranty_only_after_the_withdrawal_window_and_within_twelve_months():
    delivered = at(2026, 6, 10)
    with pytest.raises(Invalid) as err:
        check(CaseKind.warranty, delivered, at(2026, 6, 20))
    assert err.value.extra["reason"] == "withdrawal_still_open"
    assert check(CaseKind.warranty, delivered, at(2026, 8, 1)) == "commercial_warranty"
    assert check(CaseKind.warranty, delivered, at(2027, 6, 10, 23, 59)) == "commercial_warranty"


def test_after_twelve_months_the_legal_guarantee_takes_over_until_24_months_with_evidence():
    delivered = at(2026, 6, 10)
    # After the commercial warranty the defect of used goods is no longer presumed: a description is
    # required (the case then asks for photos).
    with pytest.raises(Invalid) as err:
        check(CaseKind.warranty, delivered, at(2027, 6, 11, 0, 1))
    assert err.value.extra["field"] == "description" and "legal conformity guarantee" in err.value.message
    assert check(CaseKind.warranty, delivered, at(2027, 6, 11, 0, 1), description=DESCRIPTION) == "legal_guarantee"
    assert check(CaseKind.warranty, delivered, at(2028, 6, 10, 23, 59), description=DESCRIPTION) == "legal_guarantee"
    with pytest.raises(Invalid) as err:
        check(CaseKind.warranty, delivered, at(2028, 6, 11, 0, 1), description=DESCRIPTION)
    assert err.value.extra["reason"] == "warranty_window_closed"
    assert err.value.extra["closed_at"] == "2028-06-10T23:59:59+02:00"
    assert "legal conformity guarantee (24 months after delivery) has ended" in err.value.message
    assert err.value.extra["still_possible"] == []


def test_a_closed_window_names_the_warranty_or_the_legal_guarantee_still_open():
    delivered = at(2026, 6, 10)
    with pytest.raises(Invalid) as err:
        check(CaseKind.withdrawal, delivered, at(2026, 9, 1))
    assert "still possible under the commercial warranty until 2027-06-10T23:59:59+02:00" in err.value.message
    with pytest.raises(Invalid) as err:
        check(CaseKind.defect, delivered, at(2027, 9, 1))
    assert "under the legal conformity guarantee until 2028-06-10T23:59:59+02:00" in err.value.message
    assert "contact customer care" not in err.value.message


def test_defect_claim_needs_category_and_a_sentence():
    delivered = at(2027, 3, 25, 15)
    with pytest.raises(Invalid) as err:
        check(CaseKind.defect, delivered, at(2027, 3, 26), category=None)
    assert err.value.extra["field"] == "category"
    with pytest.raises(Invalid) as err:
        check(CaseKind.defect, delivered, at(2027, 3, 26), description="broken")
    assert err.value.extra["field"] == "description"


def test_return_kinds_need_a_delivered_order_and_cancelled_orders_cannot_be_cancelled():
    with pytest.raises(Invalid) as err:
        SERVICE.check_opening(order("validated"), CaseKind.withdrawal, at(2027, 3, 1))
    assert err.value.extra["reason"] == "order_not_delivered"
    assert err.value.extra["still_possible"] == ["cancellation"]
    with pytest.raises(Conflict):
        SERVICE.check_opening(order("cancelled"), CaseKind.cancellation, at(2027, 3, 1))
    SERVICE.check_opening(order("paid"), CaseKind.cancellation, at(2027, 3, 1))
