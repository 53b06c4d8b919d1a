"""Business counters, exported with the SDK's own metrics (one Prometheus endpoint on the worker).

Counted from activities that have just written something new (a retried write counts nothing), so
replays and retries never inflate them.
"""
from __future__ import annotations

from temporalio import activity

from domain.models import TimelineEvent

# Deadlines the case's children own: each miss has its own timeline event (an escalation may follow
# it; that escalation is not counted again as a missed deadline).
MISSED_DEADLINE_EVENTS = {
    "return_label_overdue": "awaiting_return_label",
    "return_expired": "awaiting_shipment",
    "refund_activation_missed": "awaiting_refund_activation",
    "settlement_overdue": "awaiting_bank_settlement",
}
# Deadlines the case itself owns: a miss shows only as the escalation of that stage ("... did not ...
# in time"); the photos deadline as the claim closing `expired` before the seller was ever asked.
MISSED_BY_ESCALATION = {"awaiting_seller_decision", "awaiting_outbound_shipment"}


def _counter(name: str, description: str):
    return activity.metric_meter().create_counter(name, description)


def count_case_event(ev: TimelineEvent) -> None:
    kind = ev.state.kind.value
    if ev.event == "case_opened":
        _counter("aftersales_cases_opened", "cases opened").add(1, {"kind": kind})
    elif ev.event == "case_closed":
        _counter("aftersales_cases_closed", "cases closed").add(
            1, {"kind": kind, "outcome": ev.state.outcome.value if ev.state.outcome else "none"})
    elif ev.event == "escalated":
        _counter("aftersales_escalations", "cases escalated to customer care").add(
            1, {"kind": kind, "stage": ev.state.stage.value})
    elif ev.event == "refund_settled":
        _counter("aftersales_refunded_cents", "card refunds settled, in cents").add(
            int(ev.detail.get("amount_cents", 0)), {"kind": kind})
    elif ev.event == "late_refund_increase_credited":
        party = str(ev.detail.get("late_party", "unknown"))
        _counter("aftersales_late_refunds", "withdrawals refunded after the law's deadline").add(
            1, {"kind": kind, "late_party": party})
        _counter("aftersales_late_increase_cents", "legal late-refund increases credited, in cents").add(
            int(ev.detail.get("increase_cents", 0)), {"late_party": party})
    elif ev.event == "wallet_credited":
        _counter("aftersales_wallet_credited_cents", "wallet credits, in cents").add(
            int(ev.detail.get("amount_cents", 0)), {"kind": kind})
    missed = _missed_deadline_stage(ev)
    if missed:
        _counter("aftersales_deadlines_missed", "deadlines that passed without the action").add(
            1, {"kind": kind, "stage": missed})


def _missed_deadline_stage(ev: TimelineEvent) -> str | None:
    """The stage whose deadline this event says was missed, or None."""
    if ev.event in MISSED_DEADLINE_EVENTS:
        return MISSED_DEADLINE_EVENTS[ev.event]
    if ev.event == "escalated" and ev.state.stage.value in MISSED_BY_ESCALATION \
            and "did not" in str(ev.detail.get("reason", "")):
        return ev.state.stage.value
    if ev.event == "case_closed" and ev.detail.get("outcome") == "expired" \
            and "photos" in ev.state.deadlines and "seller_answer" not in ev.state.deadlines:
        return "awaiting_photos"
    return None


def count_payout(stage: str, cents: int) -> None:
    _counter("aftersales_payouts", "wallet payouts by final stage").add(1, {"stage": stage})
    if stage == "settled":
        _counter("aftersales_payouts_settled_cents", "wallet payouts settled, in cents").add(cents)
