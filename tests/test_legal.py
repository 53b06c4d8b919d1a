"""domain/legal.py against an independent table: every expected value below was worked out by hand
from the articles' text (docs/rules.md, "The law"), not computed with the functions under test."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from domain import legal
from domain.policy import Policy

PARIS = ZoneInfo("Europe/Paris")
UTC = timezone.utc


def paris(y, mo, d, h=12, mi=0, s=0):
    return datetime(y, mo, d, h, mi, s, tzinfo=PARIS)


# (informed, shipment reported, received, expected due as a UTC instant, why)
DUE = [
    (paris(2026, 3, 1, 10), paris(2026, 3, 14), None, datetime(2026, 3, 15, 22, 59, 59, tzinfo=UTC),
     "shipped on day 13: due at the end of day 14 (CET)"),
    (paris(2026, 3, 1, 10), None, None, None, "no proof yet: unknown"),
    (paris(2026, 12, 20, 15), None, paris(2026, 12, 22), datetime(2027, 1, 3, 22, 59, 59, tzinfo=UTC),
     "year end: 20 Dec + 14 = 3 Jan"),
    (paris(2026, 3, 20), paris(2026, 3, 21), None, datetime(2026, 4, 3, 21, 59, 59, tzinfo=UTC),
     "spring DST change in between: the end of the day is 23:59:59 CEST"),
    (paris(2026, 10, 20), paris(2026, 10, 21), None, datetime(2026, 11, 3, 22, 59, 59, tzinfo=UTC),
     "autumn DST change in between: 23:59:59 CET"),
    (paris(2026, 5, 1), None, paris(2026, 5, 20, 9), datetime(2026, 5, 20, 21, 59, 59, tzinfo=UTC),
     "receipt after day 14: due at the end of the receipt's day"),
    (paris(2026, 5, 1), paris(2026, 5, 18), paris(2026, 5, 22), datetime(2026, 5, 18, 21, 59, 59, tzinfo=UTC),
     "both proofs: the first (shipment, day 17) counts"),
    (paris(2026, 5, 1), paris(2026, 5, 12), paris(2026, 5, 10), datetime(2026, 5, 15, 21, 59, 59, tzinfo=UTC),
     "both proofs, receipt first and before day 14: day 14"),
    (datetime(2026, 6, 30, 22, 30, tzinfo=UTC), paris(2026, 7, 2), None,
     datetime(2026, 7, 15, 21, 59, 59, tzinfo=UTC), "request at 00:30 Paris on 1 July (30 June in UTC): 15 July"),
]


@pytest.mark.parametrize("informed, shipped, received, expected, why", DUE, ids=[d[-1] for d in DUE])
def test_withdrawal_refund_due(informed, shipped, received, expected, why):
    due = legal.withdrawal_refund_due(informed, shipped, received)
    assert due == expected
    if due is not None:
        assert due.astimezone(PARIS).strftime("%H:%M:%S") == "23:59:59"


DUE_AT = paris(2026, 3, 15, 23, 59, 59)
LATE = [
    (paris(2026, 3, 10), 0, "before the due date"),
    (paris(2026, 3, 15, 23, 59, 59), 0, "at the due instant"),
    (paris(2026, 3, 16, 0, 0, 1), 1, "one second into the next Paris day"),
    (datetime(2026, 3, 15, 23, 30, tzinfo=UTC), 1, "00:30 Paris on the 16th is still the 15th in UTC"),
    (paris(2026, 3, 20), 5, "the issue's example: five days late"),
    (paris(2026, 4, 14, 1), 30, "across the spring DST change"),
    (paris(2027, 3, 15), 365, "a year"),
]


@pytest.mark.parametrize("refunded, expected, why", LATE, ids=[x[-1] for x in LATE])
def test_days_late(refunded, expected, why):
    assert legal.days_late(DUE_AT, refunded) == expected


# 400.00 EUR paid: 390.00 of items + 10.00 of delivery; legal rate 6.67 %.
AMOUNT, PRICE, RATE = 40_000, 39_000, Decimal("6.67")
BANDS = [
    (0, 0), (1, 2_668), (10, 2_668),  # the legal rate, once: 400.00 × 6.67 % = 26.68
    (11, 2_000), (20, 2_000),  # 5 %
    (21, 4_000), (30, 4_000),  # 10 %
    (31, 8_000), (60, 8_000),  # 20 %
    (61, 20_000), (90, 20_000),  # 50 %
    (91, 22_000), (120, 22_000),  # 55 %: one started further 30 days
    (121, 24_000), (150, 24_000), (151, 26_000),  # 60 %, then 65 %
    (211, 30_000),  # 90 + 121 days: five started periods, 75 %
    (241, 32_000),  # 80 % = 320.00, still below the price
    (271, 34_000), (301, 36_000), (331, 38_000),  # 85 %, 90 %, 95 %
    (361, 39_000),  # 100 % = 400.00 > 390.00 of items: capped at the price
    (2_000, 39_000),
]


@pytest.mark.parametrize("days, expected", BANDS, ids=[f"{d}-days" for d, _ in BANDS])
def test_increase_bands_and_cap(days, expected):
    assert legal.late_refund_increase_cents(AMOUNT, PRICE, days, RATE) == expected


ROUNDING = [
    (50, 50, 11, "5", 3, "2.5 cents: half up to 3 (not half-even's 2)"),
    (10, 10, 11, "5", 1, "0.5 cent: half up to 1"),
    (1_000, 1_000, 3, "6.65", 67, "66.5 cents: 67"),
    (39_989, 38_999, 1, "8.16", 3_263, "3263.1024"),
    (12_345, 12_000, 7, "7.21", 890, "890.0745"),
    (39_990, 39_000, 2, "6.65", 2_659, "2659.335"),
    (39_989, 38_999, 1, "6.67", 2_667, "2667.2663"),
]


@pytest.mark.parametrize("amount, price, days, rate, expected, why", ROUNDING, ids=[r[-1] for r in ROUNDING])
def test_increase_rounds_cents_half_up(amount, price, days, rate, expected, why):
    assert legal.late_refund_increase_cents(amount, price, days, Decimal(rate)) == expected


RATES = Policy().legal_interest_rates
RATE_OF = [
    (paris(2024, 12, 31, 23, 59, 59), "8.16", True, "the last second of 2024 H2 in Paris"),
    (paris(2025, 1, 1, 0, 0, 0), "7.21", True, "2025 H1"),
    (datetime(2025, 6, 30, 21, 59, 59, tzinfo=UTC), "7.21", True, "23:59:59 Paris on 30 June: H1"),
    (datetime(2025, 6, 30, 22, 0, 0, tzinfo=UTC), "6.65", True, "00:00 Paris on 1 July: H2"),
    (paris(2026, 3, 1), "6.67", True, "2026 H1"),
    (paris(2026, 12, 1), "6.67", False, "2026 H2 not in the table: the latest rate, flagged"),
]


@pytest.mark.parametrize("due, rate, found, why", RATE_OF, ids=[r[-1] for r in RATE_OF])
def test_legal_rate_of_the_half_year_of_the_due_date(due, rate, found, why):
    assert legal.legal_rate_for(due, RATES) == (Decimal(rate), found)


def test_settings_extend_the_rate_table():
    from domain.policy import load_policy

    policy = load_policy({"POLICY_LEGAL_INTEREST_RATES": '{"2026-H2": "6.90"}'})
    assert policy.legal_interest_rates["2026-H2"] == "6.90"
    assert policy.legal_interest_rates["2024-H2"] == "8.16"  # extended, not replaced
    assert legal.legal_rate_for(paris(2026, 12, 1), policy.legal_interest_rates) == (Decimal("6.90"), True)


GUARANTEE = [
    (paris(2025, 1, 31), paris(2026, 1, 31, 23), True, "the last day of the 12 months: presumed"),
    (paris(2025, 1, 31), paris(2026, 2, 1, 0, 1), False, "the day after: the customer shows the defect"),
    (paris(2024, 2, 29), paris(2025, 2, 28), True, "29 Feb + 12 months = 28 Feb"),
]


@pytest.mark.parametrize("delivered, claimed, presumed, why", GUARANTEE, ids=[g[-1] for g in GUARANTEE])
def test_used_goods_presumption_lasts_12_months(delivered, claimed, presumed, why):
    assert legal.used_goods_defect_presumed(delivered, claimed) is presumed


def test_legal_guarantee_lasts_24_months():
    assert legal.legal_guarantee_end(paris(2024, 2, 29)) == paris(2026, 2, 28, 23, 59, 59)
    assert legal.legal_guarantee_end(paris(2025, 10, 26, 1)) == paris(2027, 10, 26, 23, 59, 59)
