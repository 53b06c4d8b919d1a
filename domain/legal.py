"""THE law (France, Code de la consommation): the one place for its rules, as pure functions.

- L221-24, withdrawal: the seller refunds everything paid (delivery included) within 14 days of being
  told of the withdrawal, and may defer until it has the item back or the customer has given proof of
  shipment, whichever comes first: the refund is due at the later of the end of the Paris day
  request + 14 days and the end of the Paris day of the first proof; unknown while neither exists.
- L242-4, late refunds: the sums due are increased by the legal interest rate up to 10 days late,
  5 % up to 20, 10 % up to 30, 20 % up to 60, 50 % up to 90, then 5 more points for each started
  further 30 days, never above the product's price (items, without delivery).
- L217-3 and following, legal conformity guarantee: 24 months after delivery; for used goods the
  defect is presumed to have existed at delivery only in the first 12 months (after that the
  customer shows it: a description and photos).

Deterministic (no clock, no I/O, no logging): workflows call these.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from domain.calendar import add_months, end_of_paris_day, months_deadline, paris_day

REFUND_DAYS = 14  # L221-24
# L242-4: (last day late of the band, increase in percent); None = the legal interest rate.
INCREASE_BANDS: tuple[tuple[int, Decimal | None], ...] = (
    (10, None), (20, Decimal(5)), (30, Decimal(10)), (60, Decimal(20)), (90, Decimal(50)))
AFTER_90_POINTS_PER_30_DAYS = Decimal(5)
# The legal guarantee: presumption of a defect at delivery for used goods (L217-7), and its length.
USED_GOODS_PRESUMPTION_MONTHS = 12
LEGAL_GUARANTEE_MONTHS = 24


def withdrawal_refund_due(informed_at: datetime, shipment_reported_at: datetime | None = None,
                          received_at: datetime | None = None, days: int = REFUND_DAYS) -> datetime | None:
    """When the refund of a withdrawal is due (23:59:59 Paris), None while there is neither a
    shipment reported with a tracking number nor the seller's receipt."""
    proofs = [t for t in (shipment_reported_at, received_at) if t is not None]
    if not proofs:
        return None
    first_proof = paris_day(min(proofs))
    return end_of_paris_day(max(paris_day(informed_at) + timedelta(days=days), first_proof))


def days_late(due: datetime, refunded_at: datetime) -> int:
    """Paris calendar days from the due date's day to the refund's day; 0 when on time."""
    return max(0, (paris_day(refunded_at) - paris_day(due)).days)


def increase_percent(days: int, legal_rate_percent: Decimal | float | str) -> Decimal:
    """The L242-4 increase for `days` days late, in percent (0 when on time)."""
    if days <= 0:
        return Decimal(0)
    for last_day, percent in INCREASE_BANDS:
        if days <= last_day:
            return Decimal(str(legal_rate_percent)) if percent is None else percent
    started_periods = -(-(days - 90) // 30)  # ceil: each started further 30 days
    return INCREASE_BANDS[-1][1] + AFTER_90_POINTS_PER_30_DAYS * started_periods


def late_refund_increase_cents(amount_cents: int, price_cents: int, days_late: int,
                               legal_rate_percent: Decimal | float | str) -> int:
    """The increase owed on `amount_cents` refunded `days_late` days late, cents rounded half up,
    never above the product's price."""
    raw = Decimal(amount_cents) * increase_percent(days_late, legal_rate_percent) / 100
    return min(int(raw.quantize(Decimal(1), rounding=ROUND_HALF_UP)), max(price_cents, 0))


def half_year(d: date) -> str:
    """'2026-H1' for January to June, '2026-H2' for July to December."""
    return f"{d.year}-H{1 if d.month <= 6 else 2}"


def legal_rate_for(due: datetime, rates: dict[str, str]) -> tuple[Decimal, bool]:
    """The consumers' legal interest rate of the half-year in which the refund fell due, and whether
    it was found; a half-year missing from the table takes the latest rate (the caller warns)."""
    key = half_year(paris_day(due))
    if key in rates:
        return Decimal(str(rates[key])), True
    latest = max(rates)  # 'YYYY-Hn' sorts in time order
    return Decimal(str(rates[latest])), False


def used_goods_defect_presumed(delivered_at: datetime, claimed_at: datetime) -> bool:
    """Within 12 months of delivery a defect of used goods is presumed to have existed at delivery;
    after that, the customer must show it (a description and photos)."""
    return paris_day(claimed_at) <= add_months(paris_day(delivered_at), USED_GOODS_PRESUMPTION_MONTHS)


def legal_guarantee_end(delivered_at: datetime, months: int = LEGAL_GUARANTEE_MONTHS) -> datetime:
    return months_deadline(delivered_at, months)
