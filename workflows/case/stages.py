"""THE stage table: every stage of a case, who must act in it, its deadline, its reminder and what
happens when the deadline passes. The case enters a waiting stage only through
`CaseWorkflow.wait_in(stage, ...)`, which takes the deadline, the owner, the reminder and the timeout
action from here: a waiting stage cannot be entered without them. README.md ("Stages") and
docs/rules.md show the same table; tests/test_stage_table.py checks all three against `Stage`.

Pure data and pure functions (no Temporal import): the workflow and the docs test both read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Callable

from domain.models import CaseKind, Stage
from domain.policy import Policy


class Owner(StrEnum):
    """Who must act for the case to move on (the API's and the UI's `waiting_for`)."""
    seller = "seller"
    customer = "customer"
    carrier = "carrier"
    gateway = "gateway"
    care = "care"
    nobody = "nobody"  # the case's own steps (seconds), or closed


class AtDeadline(StrEnum):
    expire = "expire"  # the case closes `expired`
    care = "care"  # escalated: customer care decides (stage awaiting_care)
    # Escalated; the owner may still act until the care deadline, then customer care decides.
    escalate = "escalate"
    # Escalated, and the marketplace acts in the seller's place (policy switch); switch off: escalate.
    on_seller_behalf = "on_seller_behalf"
    # awaiting_care only: second-level escalation (care's lead), and a new care deadline.
    escalate_again = "escalate_again"
    none = "none"  # not a waiting stage


Deadline = Callable[[Policy, datetime, CaseKind], datetime]


@dataclass(frozen=True)
class StageRule:
    owner: Owner
    deadline: Deadline | None  # (policy, since, kind) -> the instant; None: not a waiting stage
    deadline_name: str | None  # key in the case's `deadlines`
    deadline_text: str  # the rule in words (README, docs)
    reminder_to: Owner | None  # who is reminded before the deadline
    at_deadline: AtDeadline
    escalation: str = ""  # what care reads when the deadline passes
    reminder_field: str = "reminder_before_hours"  # the policy field: how long before the deadline

    @property
    def waiting(self) -> bool:
        return self.deadline is not None

    def reminder_before(self, policy: Policy) -> timedelta | None:
        if self.reminder_to is None:
            return None
        return timedelta(hours=getattr(policy, self.reminder_field))

    def reminder_text(self) -> str:
        if self.reminder_to is None:
            return "-"
        hours = Policy.model_fields[self.reminder_field].default
        return f"{self.reminder_to.value}, {hours} h before ({self.reminder_field})"


def _decision_deadline(p: Policy, since: datetime, kind: CaseKind) -> datetime:
    return p.cancellation_answer_deadline(since) if kind == CaseKind.cancellation else p.claim_answer_deadline(since)


STAGES: dict[Stage, StageRule] = {
    Stage.opening: StageRule(
        Owner.nobody, None, None, "none: the case's first steps (order compare-and-set, emails), seconds",
        None, AtDeadline.none),
    Stage.awaiting_photos: StageRule(
        Owner.customer, lambda p, t, k: p.photos_deadline(t), "photos",
        "48 hours after the claim opened (claim_photos_within_hours)", Owner.customer, AtDeadline.expire,
        "no photos of the defect in time"),
    Stage.awaiting_seller_decision: StageRule(
        Owner.seller, _decision_deadline, "seller_answer",
        "1 business day (cancellation_seller_answer_business_days, claim_seller_answer_business_days)",
        Owner.seller, AtDeadline.care, "seller did not answer in time"),
    Stage.awaiting_customer_answer: StageRule(
        Owner.customer, lambda p, t, k: p.partial_offer_deadline(t), "offer_answer",
        "2 business days after the seller's offer (partial_offer_answer_business_days)", Owner.customer,
        AtDeadline.care, "the customer did not answer the partial refund offer"),
    Stage.awaiting_return_label: StageRule(
        Owner.seller, lambda p, t, k: p.return_label_deadline(t), "return_label",
        "1 business day (return_label_business_days)", Owner.seller, AtDeadline.escalate,
        "seller did not issue the return label in time"),
    Stage.awaiting_shipment: StageRule(
        Owner.customer, lambda p, t, k: p.shipment_deadline(t), "customer_shipment",
        "14 days after the label (customer_ships_within_days)", Owner.customer, AtDeadline.expire,
        "the item was not shipped back in time", "customer_reminder_before_hours"),
    Stage.in_transit: StageRule(
        Owner.carrier, lambda p, t, k: p.return_transit_deadline(t), "return_transit",
        "10 days after the shipment (return_transit_days)", None, AtDeadline.escalate,
        "parcel not received: the return has been in transit too long"),
    Stage.awaiting_refund_activation: StageRule(
        Owner.seller, lambda p, t, k: p.refund_activation_deadline(t), "refund_activation",
        "3 days after receipt (refund_activation_days)", Owner.seller, AtDeadline.on_seller_behalf,
        "seller did not activate the refund in time"),
    Stage.refunding: StageRule(
        Owner.gateway, lambda p, t, k: p.gateway_refund_deadline(t), "gateway_refund",
        "24 hours for the gateway to take the refund (gateway_refund_hours)", None, AtDeadline.escalate,
        "the payment gateway has not taken the refund (still retrying)"),
    Stage.awaiting_bank_settlement: StageRule(
        Owner.gateway, lambda p, t, k: p.bank_settlement_deadline(t), "bank_settlement",
        "5 business days after the refund (bank_settlement_business_days)", None, AtDeadline.escalate,
        "refund not settled by the bank by its deadline"),
    Stage.awaiting_outbound_shipment: StageRule(
        Owner.seller, lambda p, t, k: p.outbound_shipment_deadline(t), "outbound_shipment",
        "5 business days after receipt (outbound_shipment_business_days)", Owner.seller, AtDeadline.escalate,
        "seller did not ship the replacement or repaired item in time"),
    Stage.outbound_in_transit: StageRule(
        Owner.carrier, lambda p, t, k: p.outbound_transit_deadline(t), "outbound_transit",
        "10 days after the seller shipped (outbound_transit_days)", None, AtDeadline.escalate,
        "replacement or repaired item not delivered: in transit too long"),
    Stage.awaiting_care: StageRule(
        Owner.care, lambda p, t, k: p.care_deadline(t), "care",
        "2 business days, again after each second-level escalation (care_decision_business_days)",
        Owner.care, AtDeadline.escalate_again, "customer care has not decided in time"),
    Stage.closed: StageRule(Owner.nobody, None, None, "none: closed", None, AtDeadline.none),
}

# Where the customer may still withdraw: nothing has left their hands or the marketplace's yet
# (the case also checks that no money moved and no parcel was handed over).
WITHDRAWABLE = {Stage.awaiting_photos, Stage.awaiting_seller_decision, Stage.awaiting_customer_answer,
                Stage.awaiting_return_label,
                Stage.awaiting_shipment, Stage.awaiting_care}
# Money is in flight: closing or forcing another refund here could move it twice.
MONEY_IN_FLIGHT = {Stage.refunding, Stage.awaiting_bank_settlement}
PARCEL_STAGES = {Stage.awaiting_shipment, Stage.in_transit, Stage.outbound_in_transit}
LOSABLE_PARCEL_STAGES = {Stage.in_transit, Stage.outbound_in_transit}

AT_DEADLINE_TEXT = {
    AtDeadline.expire: "the case closes `expired` (customer told)",
    AtDeadline.care: "escalated → `awaiting_care`",
    AtDeadline.escalate: "escalated; the owner may still act until the care deadline, then `awaiting_care`",
    AtDeadline.on_seller_behalf: "escalated; the marketplace refunds on the seller's behalf "
                                 "(`marketplace_refunds_on_seller_behalf`; off: as *escalated*)",
    AtDeadline.escalate_again: "second-level escalation to care's lead, new care deadline",
    AtDeadline.none: "-",
}


def markdown_table() -> str:
    """The table as README.md and docs/rules.md show it."""
    rows = ["| stage | owner | deadline | reminder | at the deadline |", "|---|---|---|---|---|"]
    for stage, rule in STAGES.items():
        rows.append(f"| `{stage.value}` | {rule.owner.value} | {rule.deadline_text} | {rule.reminder_text()} | "
                    f"{AT_DEADLINE_TEXT[rule.at_deadline]} |")
    return "\n".join(rows)
