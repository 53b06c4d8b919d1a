"""The parties' actions on a case, one table shared by the JSON API and the pages: who may take each
one, the body it takes, the workflow Update it runs, and the stages the pages offer it in (display
only: the workflow's validator has the last word, and its refusal is what the caller sees)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel

from domain.models import (
    Actor,
    CareRequest,
    DecisionRequest,
    LabelRequest,
    OfferAnswer,
    Role,
    ShipmentRequest,
    SimpleAction,
    Stage,
)
from starter.deps import require
from starter.schemas import Body, CareBody, DecisionBody, LabelBody, NoteBody, OfferAnswerBody, ShipmentBody
from starter.service import UNREAD, CaseService
from workflows.case import CaseWorkflow
from workflows.case.stages import STAGES, WITHDRAWABLE


@dataclass(frozen=True)
class Action:
    role: Role
    what: str  # "only the <role> <what>" when another role tries
    body: type[Body]
    update: Callable
    request: Callable[[Actor, BaseModel], BaseModel]
    stages: frozenset[Stage]


def _simple(who: Actor, b: NoteBody) -> SimpleAction:
    return SimpleAction(actor=who, note=b.note)


def _decision(who: Actor, b: DecisionBody) -> DecisionRequest:
    return DecisionRequest(actor=who, decision=b.decision, reason=b.reason, partial_amount_cents=b.partial_amount_cents)


def _with(model):
    return lambda who, b: model(actor=who, **b.model_dump())


def _at(*stages: Stage) -> frozenset[Stage]:
    return frozenset(stages)


# Keyed by the API's path segment (POST /v1/cases/{case_id}/<name>).
ACTIONS: dict[str, Action] = {
    "decision": Action(Role.seller, "decides", DecisionBody, CaseWorkflow.decide, _decision,
                       _at(Stage.awaiting_seller_decision)),
    "care": Action(Role.agent, "resolves escalations", CareBody, CaseWorkflow.care_resolve, _with(CareRequest),
                   frozenset(STAGES) - {Stage.closed}),
    "return-label": Action(Role.seller, "issues return labels", LabelBody, CaseWorkflow.issue_return_label,
                           _with(LabelRequest), _at(Stage.awaiting_return_label)),
    "label-missing": Action(Role.customer, "reports a missing label", NoteBody, CaseWorkflow.report_label_missing,
                            _simple, _at(Stage.awaiting_return_label)),
    "shipment": Action(Role.customer, "reports the return shipment", ShipmentBody, CaseWorkflow.report_shipment,
                       _with(ShipmentRequest), _at(Stage.awaiting_shipment)),
    "receipt": Action(Role.seller, "confirms receipt", NoteBody, CaseWorkflow.confirm_receipt, _simple,
                      _at(Stage.awaiting_shipment, Stage.in_transit)),
    "refund-activation": Action(Role.seller, "activates refunds", NoteBody, CaseWorkflow.activate_refund, _simple,
                                _at(Stage.awaiting_refund_activation)),
    "outbound-shipment": Action(Role.seller, "ships replacements", ShipmentBody, CaseWorkflow.ship_outbound,
                                _with(ShipmentRequest), _at(Stage.awaiting_outbound_shipment)),
    "outbound-impossible": Action(Role.seller, "declares exchange and repair impossible", NoteBody,
                                  CaseWorkflow.declare_impossible, _simple, _at(Stage.awaiting_outbound_shipment)),
    "offer-answer": Action(Role.customer, "answers a partial refund offer", OfferAnswerBody, CaseWorkflow.answer_offer,
                           _with(OfferAnswer), _at(Stage.awaiting_customer_answer)),
    "withdraw": Action(Role.customer, "withdraws the request", NoteBody, CaseWorkflow.withdraw, _simple,
                       frozenset(WITHDRAWABLE)),
}


async def perform(svc: CaseService, who: Actor, case_id: str, name: str, body: BaseModel, case=UNREAD):
    """Takes the action `name` on the case: the role first, then the service's checks and the Update.
    `case`: the case's row as read with the caller's token (deps.CaseCaller), if it was."""
    action = ACTIONS[name]
    require(who, action.role, action.what)
    return await svc.act(who, case_id, action.update, action.request(who, body), case)


def offered(role: Role, stage: Stage | str) -> list[str]:
    """The actions the pages offer `role` in `stage`."""
    return [name for name, a in ACTIONS.items() if a.role == role and Stage(stage) in a.stages]
