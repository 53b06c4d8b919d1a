"""Cases: opening a help request, reading cases, every party's action, photos, care's queue."""
import logging

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import JSONResponse

from domain.models import CareRequest, DecisionRequest, LabelRequest, OfferAnswer, Role, ShipmentRequest, SimpleAction
from starter.deps import Cfg, Id, Svc, Who, require
from starter.schemas import (
    CareBody,
    DecisionBody,
    HelpRequest,
    LabelBody,
    NoteBody,
    OfferAnswerBody,
    ShipmentBody,
)
from starter.service import add_attachment
from workflows.case import CaseWorkflow

log = logging.getLogger("api")
router = APIRouter(prefix="/v1", tags=["cases"])


@router.post("/orders/{order_id}/help-requests", status_code=201)
async def open_help_request(order_id: Id, body: HelpRequest, who: Who, svc: Svc):
    case, created = await svc.open_case(who, order_id, body.kind, category=body.category,
                                        description=body.description)
    log.info("help request on %s by %s: %s", order_id, who.id, "opened" if created else "already open",
             extra={"case_id": case["case_id"]})
    return JSONResponse(case, status_code=201 if created else 200)


@router.get("/cases")
async def list_cases(who: Who, svc: Svc):
    return {"cases": await svc.list_cases(who)}


@router.get("/cases/{case_id}")
async def get_case(case_id: Id, who: Who, svc: Svc):
    return await svc.get_case(who, case_id)


@router.post("/cases/{case_id}/decision")
async def decide(case_id: Id, body: DecisionBody, who: Who, svc: Svc):
    require(who, Role.seller, "decides")
    req = DecisionRequest(actor=who, decision=body.decision, reason=body.reason,
                          partial_amount_cents=body.partial_amount_cents)
    return await svc.act(who, case_id, CaseWorkflow.decide, req)


@router.post("/cases/{case_id}/care")
async def care(case_id: Id, body: CareBody, who: Who, svc: Svc):
    require(who, Role.agent, "resolves escalations")
    req = CareRequest(actor=who, **body.model_dump())
    return await svc.act(who, case_id, CaseWorkflow.care_resolve, req)


@router.post("/cases/{case_id}/attachments", status_code=201)
async def upload_photo(case_id: Id, who: Who, svc: Svc, s: Cfg, file: UploadFile = File(...)):
    # Read at most one byte past the limit: a huge upload is refused without being held in memory.
    content = await file.read(svc.policy.attachment_max_bytes + 1)
    return await add_attachment(svc, who, case_id, file.filename, content, s.attachments_dir)


@router.post("/cases/{case_id}/return-label")
async def return_label(case_id: Id, body: LabelBody, who: Who, svc: Svc):
    require(who, Role.seller, "issues return labels")
    return await svc.act(who, case_id, CaseWorkflow.issue_return_label, LabelRequest(actor=who, **body.model_dump()))


@router.post("/cases/{case_id}/label-missing")
async def label_missing(case_id: Id, body: NoteBody, who: Who, svc: Svc):
    require(who, Role.customer, "reports a missing label")
    return await svc.act(who, case_id, CaseWorkflow.report_label_missing, SimpleAction(actor=who, note=body.note))


@router.post("/cases/{case_id}/shipment")
async def shipment(case_id: Id, body: ShipmentBody, who: Who, svc: Svc):
    require(who, Role.customer, "reports the return shipment")
    return await svc.act(who, case_id, CaseWorkflow.report_shipment, ShipmentRequest(actor=who, **body.model_dump()))


@router.post("/cases/{case_id}/receipt")
async def receipt(case_id: Id, body: NoteBody, who: Who, svc: Svc):
    require(who, Role.seller, "confirms receipt")
    return await svc.act(who, case_id, CaseWorkflow.confirm_receipt, SimpleAction(actor=who, note=body.note))


@router.post("/cases/{case_id}/refund-activation")
async def refund_activation(case_id: Id, body: NoteBody, who: Who, svc: Svc):
    require(who, Role.seller, "activates refunds")
    return await svc.act(who, case_id, CaseWorkflow.activate_refund, SimpleAction(actor=who, note=body.note))


@router.post("/cases/{case_id}/outbound-shipment")
async def outbound_shipment(case_id: Id, body: ShipmentBody, who: Who, svc: Svc):
    require(who, Role.seller, "ships replacements")
    return await svc.act(who, case_id, CaseWorkflow.ship_outbound, ShipmentRequest(actor=who, **body.model_dump()))


@router.post("/cases/{case_id}/outbound-impossible")
async def outbound_impossible(case_id: Id, body: NoteBody, who: Who, svc: Svc):
    require(who, Role.seller, "declares exchange and repair impossible")
    return await svc.act(who, case_id, CaseWorkflow.declare_impossible, SimpleAction(actor=who, note=body.note))


@router.post("/cases/{case_id}/offer-answer")
async def offer_answer(case_id: Id, body: OfferAnswerBody, who: Who, svc: Svc):
    require(who, Role.customer, "answers a partial refund offer")
    return await svc.act(who, case_id, CaseWorkflow.answer_offer, OfferAnswer(actor=who, **body.model_dump()))


@router.post("/cases/{case_id}/withdraw")
async def withdraw(case_id: Id, body: NoteBody, who: Who, svc: Svc):
    require(who, Role.customer, "withdraws the request")
    return await svc.act(who, case_id, CaseWorkflow.withdraw, SimpleAction(actor=who, note=body.note))


@router.get("/escalations")
async def escalations(who: Who, svc: Svc):
    require(who, Role.agent, "sees escalations")
    return {"cases": await svc.list_escalations()}
