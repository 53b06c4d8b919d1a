"""Cases: opening a help request, reading cases, every party's action, photos, care's queue."""
import logging

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from domain.models import Role
from starter.actions import perform
from starter.deps import Cfg, Id, Svc, Who, WhoOnCase, WhoOrSession, require
from starter.schemas import (
    CareBody,
    DecisionBody,
    HelpRequest,
    LabelBody,
    NoteBody,
    OfferAnswerBody,
    ShipmentBody,
)
from starter.service import add_attachment, thumbnail_of

log = logging.getLogger("api")
router = APIRouter(prefix="/v1", tags=["cases"])
PHOTO_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}


@router.post("/orders/{order_id}/help-requests", status_code=201)
async def open_help_request(order_id: Id, body: HelpRequest, who: Who, svc: Svc):
    case, created = await svc.open_case(who, order_id, body.kind, category=body.category,
                                        description=body.description)
    log.info("help request on %s by %s: %s", order_id, who.id, "opened" if created else "already open",
             extra={"case_id": case["case_id"]})
    return JSONResponse(case, status_code=201 if created else 200)


@router.get("/cases")
async def list_cases(who: Who, svc: Svc):
    # PostgreSQL writes the list's JSON: sent as it is, neither decoded nor encoded here.
    return Response(f'{{"cases": {await svc.list_cases_json(who)}}}', media_type="application/json")


@router.get("/cases/{case_id}")
async def get_case(case_id: Id, who: Who, svc: Svc):
    return JSONResponse(await svc.get_case(who, case_id))


@router.post("/cases/{case_id}/decision")
async def decide(case_id: Id, body: DecisionBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "decision", body, who.case)


@router.post("/cases/{case_id}/care")
async def care(case_id: Id, body: CareBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "care", body, who.case)


@router.post("/cases/{case_id}/attachments", status_code=201)
async def upload_photo(case_id: Id, who: Who, svc: Svc, s: Cfg, file: UploadFile = File(...)):
    # Read at most one byte past the limit: a huge upload is refused without being held in memory.
    content = await file.read(svc.policy.attachment_max_bytes + 1)
    return await add_attachment(svc, who, case_id, file.filename, content, s.attachments_dir)


@router.get("/attachments/{attachment_id}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}})
async def get_attachment(attachment_id: Id, who: WhoOrSession, svc: Svc, thumbnail: bool = False):
    """A photo of a case, for its customer, its seller and care (a thumbnail: at most 320 px wide)."""
    row = await svc.get_attachment(who, attachment_id)
    if thumbnail:
        return FileResponse(await thumbnail_of(row), media_type="image/jpeg", headers=PHOTO_HEADERS)
    # The type sniffed from the bytes at upload, never guessed again; nosniff keeps browsers to it.
    return FileResponse(row["storage_path"], media_type=row["content_type"], filename=row["filename"],
                        content_disposition_type="inline", headers=PHOTO_HEADERS)


@router.post("/cases/{case_id}/return-label")
async def return_label(case_id: Id, body: LabelBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "return-label", body, who.case)


@router.post("/cases/{case_id}/label-missing")
async def label_missing(case_id: Id, body: NoteBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "label-missing", body, who.case)


@router.post("/cases/{case_id}/shipment")
async def shipment(case_id: Id, body: ShipmentBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "shipment", body, who.case)


@router.post("/cases/{case_id}/receipt")
async def receipt(case_id: Id, body: NoteBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "receipt", body, who.case)


@router.post("/cases/{case_id}/refund-activation")
async def refund_activation(case_id: Id, body: NoteBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "refund-activation", body, who.case)


@router.post("/cases/{case_id}/outbound-shipment")
async def outbound_shipment(case_id: Id, body: ShipmentBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "outbound-shipment", body, who.case)


@router.post("/cases/{case_id}/outbound-impossible")
async def outbound_impossible(case_id: Id, body: NoteBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "outbound-impossible", body, who.case)


@router.post("/cases/{case_id}/offer-answer")
async def offer_answer(case_id: Id, body: OfferAnswerBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "offer-answer", body, who.case)


@router.post("/cases/{case_id}/withdraw")
async def withdraw(case_id: Id, body: NoteBody, who: WhoOnCase, svc: Svc):
    return await perform(svc, who.actor, case_id, "withdraw", body, who.case)


@router.get("/escalations")
async def escalations(who: Who, svc: Svc):
    require(who, Role.agent, "sees escalations")
    return {"cases": await svc.list_escalations()}
