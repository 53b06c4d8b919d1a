"""Request and webhook bodies of the API (the pages' forms validate with the same models)."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from domain.models import CancellationDecision, CareResolution, CaseKind, ClaimDecision, DefectCategory


def _unstorable(value) -> bool:
    """Text PostgreSQL cannot store: a NUL character or an unpaired surrogate (not UTF-8 encodable)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return "\x00" in value
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_unstorable(v) for v in value)
    return False


class Body(BaseModel):
    """Request and webhook bodies: text PostgreSQL cannot store is a 422 naming the field, not a 500."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value):
        if _unstorable(value):
            raise ValueError("text must be UTF-8 without NUL characters")
        return value


class HelpRequest(Body):
    kind: CaseKind
    category: DefectCategory | None = None
    description: str | None = Field(None, max_length=5000)


class DecisionBody(Body):
    # One flat list so a bad value is reported on the field itself; the case checks it fits its kind.
    decision: Literal[tuple(d.value for d in (*CancellationDecision, *ClaimDecision))]  # type: ignore[valid-type]
    reason: str | None = Field(None, max_length=2000)
    partial_amount_cents: int | None = Field(None, gt=0)


class LabelBody(Body):
    carrier: str = Field(min_length=2, max_length=40)
    tracking_number: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    label_url: str = Field(min_length=8, max_length=500, pattern=r"^https?://")


class ShipmentBody(Body):
    carrier: str = Field(min_length=2, max_length=40)
    tracking_number: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9-]+$")


class NoteBody(Body):
    note: str | None = Field(None, max_length=2000)


class OfferAnswerBody(Body):
    accept: bool
    note: str | None = Field(None, max_length=2000)


class CarrierEventBody(Body):
    event_id: str = Field(min_length=1, max_length=100)
    tracking_number: str = Field(min_length=4, max_length=64)
    status: Literal["in_transit", "delivered", "exception"]
    at: datetime


class GatewayObject(Body):
    id: str = Field(min_length=1, max_length=255)
    status: str | None = None
    failure_reason: str | None = None
    metadata: dict[str, str] | None = None


class GatewayEventData(Body):
    object: GatewayObject


class GatewayEventEnvelope(Body):
    """The parts of a (signed) gateway event the API reads: without them the event is refused with 422."""
    id: str = Field(min_length=1, max_length=255)
    type: str
    data: GatewayEventData


class PayoutBody(Body):
    amount_cents: int = Field(gt=0, le=10_000_000)
    account_holder: str = Field(min_length=2, max_length=140)
    iban: str = Field(min_length=15, max_length=42)
    bic: str | None = Field(None, min_length=8, max_length=11)


class CareBody(Body):
    resolution: CareResolution
    reason: str = Field(min_length=3, max_length=2000)
    extend_hours: int | None = Field(None, gt=0, le=24 * 60)
