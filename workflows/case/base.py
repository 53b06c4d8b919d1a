"""Names shared by the case workflow and its stage functions (no Temporal import)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from domain.models import CancellationDecision, CaseKind, ClaimDecision, Role

FORBIDDEN = "Forbidden"
WRONG_STAGE = "WrongStage"
INVALID = "InvalidAction"

KIND_TITLES = {
    CaseKind.cancellation: "Cancellation",
    CaseKind.defect: "Defect claim",
    CaseKind.withdrawal: "Withdrawal (return)",
    CaseKind.warranty: "Warranty claim",
}
ALLOWED_DECISIONS = {
    CaseKind.cancellation: {d.value for d in CancellationDecision},
    CaseKind.defect: {d.value for d in ClaimDecision},
    # Warranty: exchange or repair only, never a refund (care decides when both are impossible).
    CaseKind.warranty: {ClaimDecision.exchange.value, ClaimDecision.repair.value},
}


def text(key: str, **params) -> dict:
    """A catalog text named by key (starter/locales/*.po) with JSON-able params, rendered in the reader's
    locale outside the workflow (starter/i18n.render_text): a closing reason, or a part of a message."""
    return {"text": key, "params": params}


@dataclass
class Msg:
    """A message of a stage: to whom, idempotency key (per case), catalog text key (`<text>.subject`,
    `<text>.body`) with its params, seller webhook event."""
    to: Role
    key: str
    text: str
    params: dict
    event: str | None = None


MsgAt = Callable[[datetime], Msg]  # a message that states the stage's deadline


@dataclass
class Stop:
    """What interrupts the waits: a withdrawal, or a care decision that ends the current stage."""
    kind: str  # "withdrawn" | "care_close" | "force_refund" | "parcel_lost"
    reason: str
    by: str


class Interrupted(Exception):
    """Raised out of every wait when a stop was accepted; `run` applies it."""
