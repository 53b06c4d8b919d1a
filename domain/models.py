"""Pydantic v2 models shared by workflows, activities and the API. Money is integer cents + currency."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from domain.policy import Policy


class Money(BaseModel):
    cents: int = Field(ge=0)
    currency: str = Field("EUR", min_length=3, max_length=3)


class OrderStatus(StrEnum):
    paid = "paid"
    validated = "validated"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


class OrderLine(BaseModel):
    sku: str
    title: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class Order(BaseModel):
    order_id: str
    customer_id: str
    seller_id: str
    status: OrderStatus
    currency: str = "EUR"
    lines: list[OrderLine]
    delivery_fee_cents: int = Field(0, ge=0)
    payment_intent: str  # the gateway's reference of the card payment
    created_at: datetime
    delivered_at: datetime | None = None

    @property
    def items_cents(self) -> int:
        return sum(line.quantity * line.unit_price_cents for line in self.lines)

    @property
    def total_cents(self) -> int:
        """What the customer paid: items plus delivery fee (a total refund gives all of it back)."""
        return self.items_cents + self.delivery_fee_cents


class CaseKind(StrEnum):
    cancellation = "cancellation"
    defect = "defect"
    withdrawal = "withdrawal"
    warranty = "warranty"


class Stage(StrEnum):
    opening = "opening"
    awaiting_photos = "awaiting_photos"
    awaiting_seller_decision = "awaiting_seller_decision"
    awaiting_customer_answer = "awaiting_customer_answer"  # a partial refund offered: accept or refuse
    awaiting_return_label = "awaiting_return_label"
    awaiting_shipment = "awaiting_shipment"
    in_transit = "in_transit"
    awaiting_refund_activation = "awaiting_refund_activation"
    refunding = "refunding"
    awaiting_bank_settlement = "awaiting_bank_settlement"
    awaiting_outbound_shipment = "awaiting_outbound_shipment"
    outbound_in_transit = "outbound_in_transit"
    awaiting_care = "awaiting_care"
    closed = "closed"


class Outcome(StrEnum):
    refunded = "refunded"
    refused = "refused"
    refunded_to_wallet = "refunded_to_wallet"
    partially_refunded = "partially_refunded"
    exchanged = "exchanged"
    repaired = "repaired"
    expired = "expired"
    withdrawn = "withdrawn"
    closed_by_care = "closed_by_care"


class Role(StrEnum):
    customer = "customer"
    seller = "seller"
    agent = "agent"


class Actor(BaseModel):
    role: Role
    id: str


class DefectCategory(StrEnum):
    screen = "screen"
    battery = "battery"
    does_not_power_on = "does_not_power_on"
    cosmetic = "cosmetic"
    missing_accessory = "missing_accessory"
    wrong_item = "wrong_item"
    other = "other"


class CaseInput(BaseModel):
    """Everything a case workflow needs, frozen when the case opens."""
    case_id: str
    kind: CaseKind
    order: Order
    opened_at: datetime
    opened_by: Actor
    policy: Policy
    category: DefectCategory | None = None
    description: str | None = None
    # Warranty claims: the commercial warranty (12 months), then the legal conformity guarantee
    # (24 months: the customer shows the defect, description and photos; domain/legal.py).
    basis: Literal["commercial_warranty", "legal_guarantee"] | None = None


class CancellationDecision(StrEnum):
    accept = "accept"
    refuse = "refuse"


class ClaimDecision(StrEnum):
    refund = "refund"
    exchange = "exchange"
    repair = "repair"
    partial_refund = "partial_refund"


class DecisionRequest(BaseModel):
    actor: Actor
    decision: str  # a CancellationDecision or ClaimDecision, checked against the case kind
    reason: str | None = Field(None, max_length=2000)
    partial_amount_cents: int | None = Field(None, gt=0)


class CareResolution(StrEnum):
    force_refund = "force_refund"  # refund in full now (once per decision; never twice)
    extend_deadline = "extend_deadline"  # give the stage's owner extend_hours more (re-arms the timer)
    close = "close"  # close the case with the reason
    mark_received = "mark_received"  # a parcel arrived (return at the seller's, outbound at the customer's)
    mark_lost = "mark_lost"  # a parcel is lost in transit: the customer is refunded in full
    mark_settled = "mark_settled"  # the bank settled the refund (the gateway's event was lost)


class WalletCredit(BaseModel):
    """Money credited to a customer's wallet (partial refund, card-refund fallback, care gesture)."""
    idempotency_key: str
    customer_id: str
    case_id: str | None = None
    order_id: str | None = None
    amount: Money
    reason: str
    # The order's ledger kind: a case's credit counts against what the order paid; a legal late-refund
    # increase (L242-4) does not.
    ledger_kind: Literal["wallet_credit", "late_increase"] = "wallet_credit"


class CareRequest(BaseModel):
    actor: Actor
    resolution: CareResolution
    reason: str = Field(min_length=3, max_length=2000)
    extend_hours: int | None = Field(None, gt=0, le=24 * 60)


class ActionAnswer(BaseModel):
    """What an update returns: the case's stage after the action."""
    case_id: str
    stage: Stage
    outcome: Outcome | None = None


class CaseState(BaseModel):
    """The case as operators, the API and the read model see it (the workflow's query)."""
    case_id: str
    kind: CaseKind
    order_id: str
    customer_id: str
    seller_id: str
    stage: Stage = Stage.opening
    outcome: Outcome | None = None
    waiting_for: Literal["seller", "customer", "carrier", "gateway", "care", "nobody"] = "nobody"
    deadline: datetime | None = None
    deadlines: dict[str, datetime] = Field(default_factory=dict)
    escalated: bool = False
    escalation_reason: str | None = None
    refund_cents: int = 0
    refunded_cents: int = 0
    wallet_credited_cents: int = 0
    currency: str = "EUR"
    closed_reason: str | None = None  # cases closed before reasons were keyed: as written (English)
    # Why the case closed: a catalog key (starter/locales, `reason.*`) and its params, read in each
    # reader's locale (starter/i18n.render_text).
    closed_reason_key: str | None = None
    closed_reason_params: dict = Field(default_factory=dict)
    decision: str | None = None
    return_label_url: str | None = None
    tracking_numbers: list[str] = Field(default_factory=list)  # return and outbound parcels (carrier webhook)
    attachments: int = 0
    legal_refund_due: datetime | None = None  # withdrawals: the law's refund deadline, once known
    late_refund: "LateRefund | None" = None  # a refund made after it: the increase and who was late


class LateRefund(BaseModel):
    """A withdrawal refunded after the law's due date (domain/legal.py), for the customer and care."""
    due: datetime
    refunded_at: datetime
    days_late: int
    late_party: Literal["seller", "marketplace"]  # the seller's activation, or the marketplace's own steps
    percent: str  # the L242-4 increase
    increase_cents: int


CaseState.model_rebuild()


class TimelineEvent(BaseModel):
    """One append-only line of a case's timeline, written by the workflow through an activity."""
    case_id: str
    seq: int  # per-case sequence from the workflow: the idempotency key of the write
    at: datetime
    event: str
    detail: dict = Field(default_factory=dict)
    state: CaseState  # the read model after this event


class Notification(BaseModel):
    """A message to a customer or seller. message_key makes sending it idempotent. The case names its
    text by catalog key + params (rendered in the recipient's locale by the activity); the payout
    workflow still gives subject and body as written."""
    message_key: str
    recipient_role: Role
    recipient_id: str
    subject: str = ""
    body: str = ""
    text: str | None = None
    params: dict = Field(default_factory=dict)
    case_id: str | None = None
    event: str | None = None  # for sellers' webhooks: machine-readable event type


class RefundRequest(BaseModel):
    idempotency_key: str
    case_id: str
    workflow_id: str  # where the gateway's settlement event is routed (the case's workflow id)
    order_id: str
    customer_id: str
    payment_intent: str
    amount: Money
    reason: str
    # A total refund: refund what the order has left, at most `amount` (the ledger decides, under its lock).
    at_most_remainder: bool = False


class RefundResult(BaseModel):
    refund_id: str  # the gateway's id
    status: str  # pending | succeeded | failed | canceled (Stripe's statuses)
    failure_reason: str | None = None
    amount_cents: int | None = None  # what was refunded (less than asked for a remainder)


class GatewayEvent(BaseModel):
    """A settlement or failure reported by the gateway's webhook (signal to the case or payout)."""
    object_id: str
    status: Literal["succeeded", "failed", "canceled"]
    failure_reason: str | None = None


class OrderStatusChange(BaseModel):
    order_id: str
    expected: list[OrderStatus]
    new: OrderStatus


class OrderStatusResult(BaseModel):
    applied: bool
    status: OrderStatus


class LabelRequest(BaseModel):
    actor: Actor
    carrier: str = Field(min_length=2, max_length=40)
    tracking_number: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    label_url: str = Field(min_length=8, max_length=500, pattern=r"^https?://")


class ShipmentRequest(BaseModel):
    actor: Actor
    carrier: str = Field(min_length=2, max_length=40)
    tracking_number: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


class OfferAnswer(BaseModel):
    """The customer's answer to a partial refund offered by the seller."""
    actor: Actor
    accept: bool
    note: str | None = Field(None, max_length=2000)


class SimpleAction(BaseModel):
    actor: Actor
    note: str | None = Field(None, max_length=2000)


class CarrierEvent(BaseModel):
    event_id: str
    tracking_number: str
    status: Literal["in_transit", "delivered", "exception"]
    at: datetime


class PayoutStage(StrEnum):
    requested = "requested"
    sending = "sending"
    awaiting_bank_settlement = "awaiting_bank_settlement"
    settled = "settled"
    rejected = "rejected"


class PayoutInput(BaseModel):
    """No bank details: they stay sealed in PostgreSQL and only the transfer activity opens them."""
    payout_id: str
    customer_id: str
    amount: Money
    iban_masked: str
    policy: Policy

    @model_validator(mode="before")
    @classmethod
    def _started_with_bank_details(cls, data):
        # Payouts started before the bank details left the input carried the full IBAN: masked here,
        # so their histories still replay (same commands) and the clear details are dropped.
        if isinstance(data, dict) and "iban_masked" not in data and "iban" in data:
            data = {k: v for k, v in data.items() if k not in ("iban", "bic", "account_holder")} | {
                "iban_masked": mask_iban(data["iban"])}
        return data


class PayoutState(BaseModel):
    payout_id: str
    customer_id: str
    amount: Money
    iban_masked: str
    stage: PayoutStage = PayoutStage.requested
    expected_by: datetime | None = None
    transfer_id: str | None = None
    escalated: bool = False
    failure_reason: str | None = None


class PayoutStep(BaseModel):
    """A payout's stage change written to PostgreSQL (and the ledger entry it implies)."""
    payout_id: str
    customer_id: str
    stage: PayoutStage
    amount: Money
    transfer_id: str | None = None
    expected_by: datetime | None = None
    failure_reason: str | None = None


class TransferRequest(BaseModel):
    """The bank details are read (and decrypted) by the activity from the payout's row."""
    idempotency_key: str
    payout_id: str
    workflow_id: str
    amount: Money


def mask_iban(iban: str) -> str:
    """Only the last 4 characters are ever shown (logs, emails, API)."""
    compact = iban.replace(" ", "")
    return "•" * max(len(compact) - 4, 0) + compact[-4:]


def mask_name(name: str) -> str:
    """An account holder as shown: each word's first letter ("Alice Martin" → "A•••• M•••••")."""
    return " ".join(w[0] + "•" * (len(w) - 1) for w in name.split()) or "•"
