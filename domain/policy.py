"""THE policy module: every deadline and switch of the after-sales rules, with its default.

Each field can be overridden by an environment variable `POLICY_<FIELD NAME IN CAPITALS>`
(e.g. POLICY_WITHDRAWAL_WINDOW_DAYS=45). A case copies the policy into its workflow input when it
opens, so a change of settings never alters the deadlines of a case already running (and replays
stay deterministic).
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from pydantic import BaseModel, Field, field_validator

from domain import calendar, legal

# Taux de l'intérêt légal, créances des personnes physiques (Banque de France), per half-year.
LEGAL_INTEREST_RATES = {"2024-H2": "8.16", "2025-H1": "7.21", "2025-H2": "6.65", "2026-H1": "6.67"}


class Policy(BaseModel):
    # Cancellation of a validated order: the seller answers within N business days.
    cancellation_seller_answer_business_days: int = Field(1, ge=1)
    # Defect claim: opened within N business days after delivery; seller answers within N business days.
    defect_claim_window_business_days: int = Field(3, ge=1)
    claim_seller_answer_business_days: int = Field(1, ge=1)
    # A defect claim needs photos: the customer adds them within N hours of opening it.
    claim_photos_within_hours: int = Field(48, ge=1)
    # A partial refund is an offer: the customer accepts or refuses it within N business days.
    partial_offer_answer_business_days: int = Field(2, ge=1)
    attachments_max_count: int = Field(10, ge=1)
    attachment_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    # Withdrawal (return for any reason): N calendar days after delivery, last day rolled to a business day.
    withdrawal_window_days: int = Field(30, ge=14)
    # Commercial warranty after the withdrawal window (the legal conformity guarantee is 24 months).
    warranty_months: int = Field(12, ge=1)
    legal_guarantee_months: int = Field(24, ge=24)
    # Return stages.
    return_label_business_days: int = Field(1, ge=1)
    label_missing_reports_before_escalation: int = Field(2, ge=1)
    customer_ships_within_days: int = Field(14, ge=1)
    refund_activation_days: int = Field(3, ge=1)
    marketplace_refunds_on_seller_behalf: bool = True
    # A return parcel the customer shipped that nobody reports received for N days: escalated.
    return_transit_days: int = Field(10, ge=1)
    # Replacement / repaired item back to the customer; then N days in transit before escalation.
    outbound_shipment_business_days: int = Field(5, ge=1)
    outbound_transit_days: int = Field(10, ge=1)
    # Customer care decides an escalated case within N business days (reminder before, then a
    # second-level escalation and a new care deadline): no case ever waits on nobody.
    care_decision_business_days: int = Field(2, ge=1)
    # Money. A card refund the gateway has not accepted within N hours (outage) is escalated.
    gateway_refund_hours: int = Field(24, ge=1)
    bank_settlement_business_days: int = Field(5, ge=1)
    # A settlement (refund or payout) whose event has not come by its deadline is looked up at the
    # gateway then, and again every N hours while it stays pending.
    reconcile_every_hours: int = Field(24, ge=1)
    payout_settlement_business_days: int = Field(5, ge=1)
    # The law (domain/legal.py): a withdrawal is refunded within 14 days of the request, deferred to
    # the first proof of shipment or receipt (L221-24); 2 days before that, an unrefunded case is
    # escalated, and at the due date the marketplace refunds in the seller's place once the item is
    # proven shipped (switch). Late refunds owe increases (L242-4) at the consumers' legal interest
    # rate of the half-year the refund fell due in: the table below, extended by settings
    # (POLICY_LEGAL_INTEREST_RATES='{"2026-H2": "6.90"}'); a missing half-year takes the latest rate.
    legal_refund_days: int = Field(legal.REFUND_DAYS, ge=legal.REFUND_DAYS)
    legal_refund_escalation_days_before: int = Field(2, ge=1)
    marketplace_refunds_at_legal_due: bool = True
    # The marketplace acts this long before the due instant (23:59:59 Paris), so that the refund is
    # created on the due day even if the gateway is slow: 13 h, at 10:59:59 Paris, an hour off the
    # 12-hour reminders. (With 12 h, a care reminder on the due day fell at the very instant the case
    # acts, and the wait woke by the law cancels its reminder timer as it fires: a race the real
    # server absorbs and the time-skipping test server refuses, wedging the case, sdk-java #2606/#3088.)
    legal_refund_margin_hours: int = Field(13, ge=1, le=23)
    legal_interest_rates: dict[str, str] = Field(default_factory=lambda: dict(LEGAL_INTEREST_RATES))
    # A reminder goes to whoever must act this long before their deadline (sellers: hours matter;
    # customers shipping a parcel: days).
    reminder_before_hours: int = Field(12, ge=1)
    customer_reminder_before_hours: int = Field(48, ge=1)

    @field_validator("legal_interest_rates")
    @classmethod
    def _rates(cls, rates: dict[str, str]) -> dict[str, str]:
        for half, rate in rates.items():
            if not re.fullmatch(r"\d{4}-H[12]", half):
                raise ValueError(f"{half!r}: a half-year is written like 2026-H1")
            if not 0 <= Decimal(str(rate)) < 100:
                raise ValueError(f"{half}: the rate is a percentage")
        return {half: str(rate) for half, rate in rates.items()}

    def legal_refund_due(self, informed_at: datetime, shipment_reported_at: datetime | None,
                         received_at: datetime | None) -> datetime | None:
        return legal.withdrawal_refund_due(informed_at, shipment_reported_at, received_at, self.legal_refund_days)

    def legal_refund_escalation(self, due: datetime) -> datetime:
        return due - timedelta(days=self.legal_refund_escalation_days_before)

    def legal_refund_act_at(self, due: datetime) -> datetime:
        return _after_hours(due, -self.legal_refund_margin_hours)

    def legal_refund_seller_deadline(self, due: datetime) -> datetime:
        """The latest end of the seller's activation: a minute before the marketplace acts, so that
        the seller's deadline and the marketplace's act are never one instant (see the margin)."""
        return self.legal_refund_act_at(due) - timedelta(minutes=1)

    @property
    def reminder_before(self) -> timedelta:
        return timedelta(hours=self.reminder_before_hours)

    @property
    def customer_reminder_before(self) -> timedelta:
        return timedelta(hours=self.customer_reminder_before_hours)

    # --- deadlines, computed once from the event that starts the wait -----------------------
    def cancellation_answer_deadline(self, asked_at: datetime) -> datetime:
        return calendar.business_days_deadline(asked_at, self.cancellation_seller_answer_business_days)

    def claim_answer_deadline(self, asked_at: datetime) -> datetime:
        return calendar.business_days_deadline(asked_at, self.claim_seller_answer_business_days)

    def partial_offer_deadline(self, offered_at: datetime) -> datetime:
        return calendar.business_days_deadline(offered_at, self.partial_offer_answer_business_days)

    def photos_deadline(self, opened_at: datetime) -> datetime:
        # Elapsed hours: add them in UTC (aware arithmetic in Europe/Paris would be wall-clock
        # arithmetic, one hour off across a DST change), then give the result back in opened_at's zone.
        return _after_hours(opened_at, self.claim_photos_within_hours)

    def defect_window_end(self, delivered_at: datetime) -> datetime:
        return calendar.business_days_deadline(delivered_at, self.defect_claim_window_business_days)

    def withdrawal_window_end(self, delivered_at: datetime) -> datetime:
        return calendar.calendar_days_deadline(
            delivered_at, self.withdrawal_window_days, roll_to_business_day=True
        )

    def warranty_end(self, delivered_at: datetime) -> datetime:
        return calendar.months_deadline(delivered_at, self.warranty_months)

    def return_label_deadline(self, since: datetime) -> datetime:
        return calendar.business_days_deadline(since, self.return_label_business_days)

    def shipment_deadline(self, label_issued_at: datetime) -> datetime:
        return calendar.calendar_days_deadline(label_issued_at, self.customer_ships_within_days)

    def refund_activation_deadline(self, received_at: datetime) -> datetime:
        return calendar.calendar_days_deadline(received_at, self.refund_activation_days)

    def outbound_shipment_deadline(self, since: datetime) -> datetime:
        return calendar.business_days_deadline(since, self.outbound_shipment_business_days)

    def return_transit_deadline(self, shipped_at: datetime) -> datetime:
        return calendar.calendar_days_deadline(shipped_at, self.return_transit_days)

    def outbound_transit_deadline(self, shipped_at: datetime) -> datetime:
        return calendar.calendar_days_deadline(shipped_at, self.outbound_transit_days)

    def care_deadline(self, escalated_at: datetime) -> datetime:
        return calendar.business_days_deadline(escalated_at, self.care_decision_business_days)

    def gateway_refund_deadline(self, requested_at: datetime) -> datetime:
        return _after_hours(requested_at, self.gateway_refund_hours)

    def bank_settlement_deadline(self, refunded_at: datetime) -> datetime:
        return calendar.business_days_deadline(refunded_at, self.bank_settlement_business_days)

    def payout_settlement_deadline(self, sent_at: datetime) -> datetime:
        return calendar.business_days_deadline(sent_at, self.payout_settlement_business_days)


def _after_hours(since: datetime, hours: int) -> datetime:
    """`hours` elapsed hours after `since`: added in UTC (aware arithmetic in Europe/Paris would be
    wall-clock arithmetic, one hour off across a DST change), given back in since's zone."""
    if since.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant")
    return (since.astimezone(timezone.utc) + timedelta(hours=hours)).astimezone(since.tzinfo)


def load_policy(environ: dict[str, str] | None = None) -> Policy:
    """Defaults, overridden by POLICY_* environment variables (validated: a bad value fails loudly)."""
    env = os.environ if environ is None else environ
    overrides: dict = {
        name: env[f"POLICY_{name.upper()}"]
        for name in Policy.model_fields
        if f"POLICY_{name.upper()}" in env
    }
    if "legal_interest_rates" in overrides:  # JSON, extending the table (a new half-year each half-year)
        try:
            extra = json.loads(overrides["legal_interest_rates"])
        except ValueError as e:
            raise ValueError(f"POLICY_LEGAL_INTEREST_RATES is not JSON: {e}") from None
        overrides["legal_interest_rates"] = {**LEGAL_INTEREST_RATES, **extra}
    return Policy.model_validate(overrides)
