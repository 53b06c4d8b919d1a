"""The policy module: the defaults of docs/rules.md, settings overrides, and deadlines on fixed real dates."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest
from pydantic import ValidationError

from domain.calendar import PARIS
from domain.policy import Policy, load_policy

UTC = timezone.utc
CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))


def paris(y, m, d, hh=12, mm=0, ss=0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=PARIS)


def eod(y, m, d, offset: timezone) -> datetime:
    """23:59:59 Paris wall clock on that day, written with its explicit UTC offset."""
    return datetime.combine(date(y, m, d), time(23, 59, 59), tzinfo=offset)


def assert_instant(actual: datetime, expected: datetime) -> None:
    assert actual.tzinfo is not None
    assert actual == expected
    assert actual.astimezone(PARIS).utcoffset() == expected.utcoffset()
    assert actual.astimezone(PARIS).replace(tzinfo=None) == expected.replace(tzinfo=None)


# ----------------------------------------------------------------------------- defaults
def test_defaults_are_the_numbers_of_the_design():
    p = Policy()
    assert p.cancellation_seller_answer_business_days == 1
    assert p.claim_seller_answer_business_days == 1
    assert p.defect_claim_window_business_days == 3
    assert p.withdrawal_window_days == 30
    assert p.warranty_months == 12
    assert p.legal_guarantee_months == 24
    assert p.return_label_business_days == 1
    assert p.customer_ships_within_days == 14
    assert p.refund_activation_days == 3
    assert p.bank_settlement_business_days == 5
    assert p.payout_settlement_business_days == 5
    assert p.legal_refund_days == 14
    assert p.marketplace_refunds_on_seller_behalf is True
    assert p.label_missing_reports_before_escalation == 2  # escalates on the second report


def test_load_policy_without_overrides_is_the_defaults():
    assert load_policy({}) == Policy()
    assert load_policy({"UNRELATED": "1", "WITHDRAWAL_WINDOW_DAYS": "99"}) == Policy()


# ----------------------------------------------------------------------------- overrides
def test_withdrawal_window_override_from_settings():
    p = load_policy({"POLICY_WITHDRAWAL_WINDOW_DAYS": "45"})
    assert p.withdrawal_window_days == 45
    assert p == Policy(withdrawal_window_days=45)  # nothing else changed
    # Fri 29 May 2026 + 45 days = Mon 13 July 2026 (a business day: not rolled).
    assert_instant(p.withdrawal_window_end(paris(2026, 5, 29, 15)), eod(2026, 7, 13, CEST))
    # The default would have ended Mon 29 June (Sun 28 rolled).
    assert_instant(Policy().withdrawal_window_end(paris(2026, 5, 29, 15)), eod(2026, 6, 29, CEST))


def test_load_policy_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("POLICY_WITHDRAWAL_WINDOW_DAYS", "45")
    monkeypatch.setenv("POLICY_MARKETPLACE_REFUNDS_ON_SELLER_BEHALF", "false")
    p = load_policy()
    assert p.withdrawal_window_days == 45
    assert p.marketplace_refunds_on_seller_behalf is False


def test_several_overrides_at_once():
    p = load_policy({
        "POLICY_CUSTOMER_SHIPS_WITHIN_DAYS": "10",
        "POLICY_BANK_SETTLEMENT_BUSINESS_DAYS": "7",
        "POLICY_MARKETPLACE_REFUNDS_ON_SELLER_BEHALF": "false",
    })
    assert (p.customer_ships_within_days, p.bank_settlement_business_days) == (10, 7)
    assert p.marketplace_refunds_on_seller_behalf is False
    assert p.withdrawal_window_days == 30


@pytest.mark.parametrize("env", [
    {"POLICY_WITHDRAWAL_WINDOW_DAYS": "forty-five"},
    {"POLICY_WITHDRAWAL_WINDOW_DAYS": ""},
    {"POLICY_WITHDRAWAL_WINDOW_DAYS": "4.5"},
    {"POLICY_WITHDRAWAL_WINDOW_DAYS": "10"},       # below the legal 14 days
    {"POLICY_WITHDRAWAL_WINDOW_DAYS": "-30"},
    {"POLICY_DEFECT_CLAIM_WINDOW_BUSINESS_DAYS": "0"},
    {"POLICY_LEGAL_GUARANTEE_MONTHS": "12"},       # below the legal 24 months
    {"POLICY_MARKETPLACE_REFUNDS_ON_SELLER_BEHALF": "maybe"},
], ids=lambda env: ",".join(f"{k}={v}" for k, v in env.items()))
def test_invalid_overrides_are_rejected(env):
    with pytest.raises(ValidationError) as err:
        load_policy(env)
    field = next(iter(env))[len("POLICY_"):].lower()
    assert err.value.errors()[0]["loc"] == (field,)


# ----------------------------------------------------------------------------- round trip
def test_policy_round_trips_through_json():
    for p in (Policy(), load_policy({"POLICY_WITHDRAWAL_WINDOW_DAYS": "45",
                                     "POLICY_MARKETPLACE_REFUNDS_ON_SELLER_BEHALF": "false"})):
        back = Policy.model_validate_json(p.model_dump_json())
        assert back == p
        assert back.model_dump() == p.model_dump()


def test_policy_round_trips_through_the_temporal_pydantic_converter():
    from temporalio.contrib.pydantic import pydantic_data_converter

    p = Policy(withdrawal_window_days=45, refund_activation_days=4)
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([p])
    [back] = converter.from_payloads([payload], [Policy])
    assert isinstance(back, Policy)
    assert back == p


# ----------------------------------------------------------------------------- deadlines
def test_cancellation_and_claim_answers_within_one_business_day():
    p = Policy()
    friday = paris(2026, 6, 5, 16)
    assert_instant(p.cancellation_answer_deadline(friday), eod(2026, 6, 8, CEST))
    assert_instant(p.claim_answer_deadline(friday), eod(2026, 6, 8, CEST))
    # Wed before Ascension 2026 → Fri 15 May.
    assert_instant(p.claim_answer_deadline(paris(2026, 5, 13, 16)), eod(2026, 5, 15, CEST))


def test_defect_window_three_business_days_across_easter_monday():
    # Delivered Thu 25 March 2027 → Fri 26, Tue 30, Wed 31 March.
    assert_instant(Policy().defect_window_end(paris(2027, 3, 25, 15)), eod(2027, 3, 31, CEST))


def test_withdrawal_window_sunday_then_easter_monday_rolls_to_tuesday():
    # Fri 6 March 2026 + 30 = Sun 5 April; Mon 6 April is Easter Monday → Tue 7 April.
    assert_instant(Policy().withdrawal_window_end(paris(2026, 3, 6, 11)), eod(2026, 4, 7, CEST))


def test_warranty_end_twelve_months_after_delivery():
    assert_instant(Policy().warranty_end(paris(2026, 1, 31, 11)), eod(2027, 1, 31, CET))
    assert_instant(Policy().warranty_end(paris(2028, 2, 29, 11)), eod(2029, 2, 28, CET))


def test_return_label_one_business_day_across_christmas():
    assert_instant(Policy().return_label_deadline(paris(2026, 12, 24, 10)), eod(2026, 12, 28, CET))


def test_shipment_window_fourteen_days_not_rolled():
    # Sun 14 June 2026 + 14 = Sun 28 June 2026.
    assert_instant(Policy().shipment_deadline(paris(2026, 6, 14, 10)), eod(2026, 6, 28, CEST))


def test_refund_activation_three_calendar_days():
    # Thu 24 Dec 2026 + 3 = Sun 27 Dec (calendar days, not rolled).
    assert_instant(Policy().refund_activation_deadline(paris(2026, 12, 24, 10)), eod(2026, 12, 27, CET))
    # Fri 29 May 2026 + 3 = Mon 1 June.
    assert_instant(Policy().refund_activation_deadline(paris(2026, 5, 29, 10)), eod(2026, 6, 1, CEST))


def test_bank_settlement_and_payout_five_business_days():
    p = Policy()
    # Thu 23 Dec 2027: Fri 24, [Sat 25, Sun 26], Mon 27, Tue 28, Wed 29, Thu 30.
    assert_instant(p.bank_settlement_deadline(paris(2027, 12, 23, 10)), eod(2027, 12, 30, CET))
    # Wed 13 May 2026: Fri 15, Mon 18, Tue 19, Wed 20, Thu 21 (Ascension skipped).
    assert_instant(p.payout_settlement_deadline(paris(2026, 5, 13, 10)), eod(2026, 5, 21, CEST))
    # Fri 22 May 2026: Tue 26 (Whit Monday skipped), Wed 27, Thu 28, Fri 29, Mon 1 June.
    assert_instant(p.bank_settlement_deadline(paris(2026, 5, 22, 10)), eod(2026, 6, 1, CEST))


def test_outbound_shipment_five_business_days():
    # Wed 8 July 2026: Thu 9, Fri 10, Mon 13, [Tue 14 July], Wed 15, Thu 16.
    assert_instant(Policy().outbound_shipment_deadline(paris(2026, 7, 8, 10)), eod(2026, 7, 16, CEST))


def test_photos_deadline_is_48_hours_of_elapsed_time_even_across_dst():
    # 48 real hours from Sat 28 March 2026 12:00 CET: Mon 30 March 13:00 CEST (clocks went forward).
    opened = paris(2026, 3, 28, 12)
    deadline = Policy().photos_deadline(opened)
    assert deadline.astimezone(UTC) - opened.astimezone(UTC) == timedelta(hours=48)
    assert deadline == datetime(2026, 3, 30, 11, 0, tzinfo=UTC)
    assert deadline.astimezone(PARIS).replace(tzinfo=None) == datetime(2026, 3, 30, 13, 0)
    # Autumn: 48 real hours from Sat 24 Oct 2026 12:00 CEST = Mon 26 Oct 11:00 CET.
    deadline = Policy().photos_deadline(paris(2026, 10, 24, 12))
    assert deadline == datetime(2026, 10, 26, 10, 0, tzinfo=UTC)
    assert deadline.astimezone(PARIS).replace(tzinfo=None) == datetime(2026, 10, 26, 11, 0)


def test_photos_deadline_from_a_utc_instant_as_workflow_now_gives_it():
    deadline = Policy().photos_deadline(datetime(2026, 3, 28, 11, 0, tzinfo=UTC))
    assert deadline == datetime(2026, 3, 30, 11, 0, tzinfo=UTC)
    assert deadline.utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        Policy().photos_deadline(datetime(2026, 3, 28, 11, 0))


def test_reminder_durations():
    p = Policy()
    assert p.reminder_before == timedelta(hours=12)
    assert p.customer_reminder_before == timedelta(hours=48)


def test_overridden_policy_changes_the_computed_deadlines():
    p = load_policy({"POLICY_DEFECT_CLAIM_WINDOW_BUSINESS_DAYS": "5",
                     "POLICY_CUSTOMER_SHIPS_WITHIN_DAYS": "7"})
    # Thu 25 March 2027 + 5 business days: Fri 26, Tue 30, Wed 31, Thu 1, Fri 2 April.
    assert_instant(p.defect_window_end(paris(2027, 3, 25, 15)), eod(2027, 4, 2, CEST))
    assert_instant(p.shipment_deadline(paris(2026, 6, 14, 10)), eod(2026, 6, 21, CEST))
