"""HTTP API of the after-sales cases: customers, sellers and care agents with bearer tokens;
the payment gateway with signed webhooks. Errors: 401 no/bad token, 403 not yours, 404 unknown,
409 wrong stage (with the stage), 422 invalid input (naming the field)."""
import json
import logging
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Header, HTTPException, Path as PathParam, Request, Response, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import Headers
from temporalio.service import RPCError, RPCStatusCode

from activities import db, ledger
from activities.gateway_client import verify_event
from config import Settings, settings
from domain.models import (
    Actor,
    CancellationDecision,
    CareRequest,
    CareResolution,
    CarrierEvent,
    CaseKind,
    ClaimDecision,
    DecisionRequest,
    DefectCategory,
    GatewayEvent,
    LabelRequest,
    OfferAnswer,
    Role,
    ShipmentRequest,
    SimpleAction,
)
from domain.policy import load_policy
from starter.auth import actor_for_token
from starter.codec_server import include_codec_server
from starter.erasure import include_erasure
from activities.cases import verify_signature
from starter.service import CaseService, ServiceError, add_attachment
from starter.wallet import get_payout, request_payout, wallet_view
from workflows.case import CaseWorkflow
from workflows.payout import PayoutWorkflow

log = logging.getLogger("api")


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


# Ids in paths: no control characters (PostgreSQL refuses NUL), so a hostile id is a 422, not a 500.
Id = Annotated[str, PathParam(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


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


JSON_BODY_LIMIT = 64 * 1024  # every JSON body of the API (webhooks included) is a few KiB
MULTIPART_FRAMING = 1024 * 1024  # room for the multipart boundaries and headers around one photo


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


class BodySizeLimit:
    """Refuses a request body over its limit with 413: on the declared Content-Length before reading anything,
    and on the bytes actually received (a chunked body declares none). JSON bodies are small; a multipart
    upload may carry one photo of the policy's maximum size."""

    def __init__(self, app, *, json_limit: int, multipart_limit: int):
        self.app, self.json_limit, self.multipart_limit = app, json_limit, multipart_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.multipart_limit if multipart else self.json_limit
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(limit, scope, receive, send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI lets an HTTPException met while reading the body through
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:  # raised where no exception handler was around (e.g. an endpoint's own read)
            if started:
                raise
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope, receive, send):
        await JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)(scope, receive, send)


def _service(request: Request) -> CaseService:
    return request.app.state.service


async def _actor(request: Request, authorization: Annotated[str | None, Header()] = None) -> Actor:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    found = await actor_for_token(request.app.state.pool, authorization[7:].strip())
    if found is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    return found


Who = Annotated[Actor, Depends(_actor)]
Svc = Annotated[CaseService, Depends(_service)]


def require(who: Actor, role: Role, what: str) -> None:
    if who.role != role:
        raise HTTPException(403, f"only the {role.value} {what}")


def create_app(s: Settings | None = None, temporal_client=None) -> FastAPI:
    s = s or settings()
    policy = load_policy()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from worker import connect

        app.state.pool = await db.get_pool()
        app.state.temporal = temporal_client or await connect(s)
        app.state.service = CaseService(app.state.pool, app.state.temporal, s.task_queue, policy)
        yield

    app = FastAPI(title="After-sales cases", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, json_limit=JSON_BODY_LIMIT,
                       multipart_limit=policy.attachment_max_bytes + MULTIPART_FRAMING)
    include_codec_server(app, s)
    include_erasure(app, s.attachments_dir)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(_: Request, e: RequestValidationError):
        # FastAPI's own 422, ASCII-escaped: an echoed input holding an unpaired surrogate is not UTF-8 encodable.
        return Response(json.dumps({"detail": jsonable_encoder(e.errors())}, ensure_ascii=True, separators=(",", ":")),
                        status_code=422, media_type="application/json")

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, e: ServiceError):
        return JSONResponse({"error": e.message, **e.extra}, status_code=e.status)

    @app.exception_handler(RPCError)
    async def temporal_error(_: Request, e: RPCError):
        if e.status == RPCStatusCode.NOT_FOUND:
            return JSONResponse({"error": "case workflow not found"}, status_code=404)
        log.exception("Temporal unavailable")
        return JSONResponse({"error": "case engine unavailable, try again"}, status_code=503)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        try:
            await request.app.state.pool.fetchval("SELECT 1")
            await request.app.state.temporal.service_client.check_health()
        except Exception as e:  # readiness reports, never raises
            return JSONResponse({"status": "not ready", "error": str(e)}, status_code=503)
        return {"status": "ready"}

    @app.post("/v1/orders/{order_id}/help-requests", status_code=201)
    async def open_help_request(order_id: Id, body: HelpRequest, who: Who, svc: Svc):
        case, created = await svc.open_case(who, order_id, body.kind, category=body.category,
                                            description=body.description)
        log.info("help request on %s by %s: %s", order_id, who.id, "opened" if created else "already open",
                 extra={"case_id": case["case_id"]})
        return JSONResponse(case, status_code=201 if created else 200)

    @app.get("/v1/cases")
    async def list_cases(who: Who, svc: Svc):
        return {"cases": await svc.list_cases(who)}

    @app.get("/v1/cases/{case_id}")
    async def get_case(case_id: Id, who: Who, svc: Svc):
        return await svc.get_case(who, case_id)

    @app.post("/v1/cases/{case_id}/decision")
    async def decide(case_id: Id, body: DecisionBody, who: Who, svc: Svc):
        require(who, Role.seller, "decides")
        req = DecisionRequest(actor=who, decision=body.decision, reason=body.reason,
                              partial_amount_cents=body.partial_amount_cents)
        return await svc.act(who, case_id, CaseWorkflow.decide, req)

    @app.post("/v1/cases/{case_id}/care")
    async def care(case_id: Id, body: CareBody, who: Who, svc: Svc):
        require(who, Role.agent, "resolves escalations")
        req = CareRequest(actor=who, **body.model_dump())
        return await svc.act(who, case_id, CaseWorkflow.care_resolve, req)

    @app.post("/v1/cases/{case_id}/attachments", status_code=201)
    async def upload_photo(case_id: Id, who: Who, svc: Svc, file: UploadFile = File(...)):
        # Read at most one byte past the limit: a huge upload is refused without being held in memory.
        content = await file.read(svc.policy.attachment_max_bytes + 1)
        return await add_attachment(svc, who, case_id, file.filename, content, s.attachments_dir)

    @app.post("/v1/cases/{case_id}/return-label")
    async def return_label(case_id: Id, body: LabelBody, who: Who, svc: Svc):
        require(who, Role.seller, "issues return labels")
        return await svc.act(who, case_id, CaseWorkflow.issue_return_label, LabelRequest(actor=who, **body.model_dump()))

    @app.post("/v1/cases/{case_id}/label-missing")
    async def label_missing(case_id: Id, body: NoteBody, who: Who, svc: Svc):
        require(who, Role.customer, "reports a missing label")
        return await svc.act(who, case_id, CaseWorkflow.report_label_missing, SimpleAction(actor=who, note=body.note))

    @app.post("/v1/cases/{case_id}/shipment")
    async def shipment(case_id: Id, body: ShipmentBody, who: Who, svc: Svc):
        require(who, Role.customer, "reports the return shipment")
        return await svc.act(who, case_id, CaseWorkflow.report_shipment, ShipmentRequest(actor=who, **body.model_dump()))

    @app.post("/v1/cases/{case_id}/receipt")
    async def receipt(case_id: Id, body: NoteBody, who: Who, svc: Svc):
        require(who, Role.seller, "confirms receipt")
        return await svc.act(who, case_id, CaseWorkflow.confirm_receipt, SimpleAction(actor=who, note=body.note))

    @app.post("/v1/cases/{case_id}/refund-activation")
    async def refund_activation(case_id: Id, body: NoteBody, who: Who, svc: Svc):
        require(who, Role.seller, "activates refunds")
        return await svc.act(who, case_id, CaseWorkflow.activate_refund, SimpleAction(actor=who, note=body.note))

    @app.post("/v1/cases/{case_id}/outbound-shipment")
    async def outbound_shipment(case_id: Id, body: ShipmentBody, who: Who, svc: Svc):
        require(who, Role.seller, "ships replacements")
        return await svc.act(who, case_id, CaseWorkflow.ship_outbound, ShipmentRequest(actor=who, **body.model_dump()))

    @app.post("/v1/cases/{case_id}/outbound-impossible")
    async def outbound_impossible(case_id: Id, body: NoteBody, who: Who, svc: Svc):
        require(who, Role.seller, "declares exchange and repair impossible")
        return await svc.act(who, case_id, CaseWorkflow.declare_impossible, SimpleAction(actor=who, note=body.note))

    @app.post("/v1/cases/{case_id}/offer-answer")
    async def offer_answer(case_id: Id, body: OfferAnswerBody, who: Who, svc: Svc):
        require(who, Role.customer, "answers a partial refund offer")
        return await svc.act(who, case_id, CaseWorkflow.answer_offer, OfferAnswer(actor=who, **body.model_dump()))

    @app.post("/v1/cases/{case_id}/withdraw")
    async def withdraw(case_id: Id, body: NoteBody, who: Who, svc: Svc):
        require(who, Role.customer, "withdraws the request")
        return await svc.act(who, case_id, CaseWorkflow.withdraw, SimpleAction(actor=who, note=body.note))

    @app.get("/v1/wallet")
    async def wallet(who: Who, request: Request):
        require(who, Role.customer, "has a wallet")
        return await wallet_view(request.app.state.pool, who.id)

    @app.post("/v1/wallet/payouts", status_code=201)
    async def payout(body: PayoutBody, who: Who, svc: Svc,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None):
        view, created = await request_payout(svc.pool, svc.temporal, s.task_queue, svc.policy, who,
                                             idempotency_key=idempotency_key, **body.model_dump())
        return JSONResponse(view, status_code=201 if created else 200)

    @app.get("/v1/wallet/payouts/{payout_id}")
    async def payout_status(payout_id: Id, who: Who, svc: Svc):
        return await get_payout(svc.pool, who, payout_id)

    @app.get("/v1/escalations")
    async def escalations(who: Who, svc: Svc):
        require(who, Role.agent, "sees escalations")
        return {"cases": await svc.list_escalations()}

    @app.post("/v1/webhooks/carrier")
    async def carrier_webhook(request: Request, svc: Svc,
                              x_carrier_signature: Annotated[str | None, Header()] = None):
        payload = await request.body()
        if not x_carrier_signature or not verify_signature(s.carrier_webhook_secret, payload, x_carrier_signature):
            raise HTTPException(400, "bad or missing X-Carrier-Signature")
        try:
            ev = CarrierEventBody.model_validate_json(payload)
        except ValidationError as e:  # signed but malformed: 422 naming the field, not a 500
            raise RequestValidationError(e.errors(include_url=False, include_context=False, include_input=False))
        pool = request.app.state.pool
        if await pool.fetchval("SELECT 1 FROM webhook_events WHERE source = 'carrier' AND event_id = $1", ev.event_id):
            return {"received": True, "duplicate": True}
        case_id = await svc.case_for_parcel(ev.tracking_number)
        if case_id:
            await svc.temporal.get_workflow_handle(case_id).signal(CaseWorkflow.carrier_event, CarrierEvent(**ev.model_dump()))
        await pool.execute("INSERT INTO webhook_events (source, event_id) VALUES ('carrier', $1) ON CONFLICT DO NOTHING",
                           ev.event_id)
        return {"received": True, "case_id": case_id}

    @app.post("/v1/webhooks/payments")
    async def payments_webhook(request: Request, stripe_signature: Annotated[str | None, Header()] = None):
        payload = await request.body()
        if not stripe_signature:
            raise HTTPException(400, "missing Stripe-Signature")
        try:
            event = verify_event(payload, stripe_signature, s.gateway_webhook_secret)
        except ValueError as e:
            raise HTTPException(400, f"bad signature or payload: {e}")
        except (AttributeError, TypeError):  # signed, but not a JSON object: Stripe's parser assumes one
            raise HTTPException(400, "bad event payload: not a JSON object")
        try:
            GatewayEventEnvelope.model_validate(event)
        except ValidationError as e:  # signed but not the event shape handle_gateway_event reads
            raise RequestValidationError(e.errors(include_url=False, include_context=False, include_input=False))
        return await handle_gateway_event(request.app, event)

    return app


async def handle_gateway_event(app: FastAPI, event: dict) -> dict:
    """Refund settled/failed → signal the case named in the refund's metadata (a transfer: the payout).
    A repeated event is acknowledged without acting again."""
    pool = app.state.pool
    event_id, kind = event["id"], event["type"]
    if await pool.fetchval("SELECT 1 FROM webhook_events WHERE source = 'gateway' AND event_id = $1", event_id):
        return {"received": True, "duplicate": True}
    obj = event["data"]["object"]
    workflow_id = (obj.get("metadata") or {}).get("workflow_id")
    status: Literal["succeeded", "failed", "canceled"] | None = None
    if kind in ("refund.updated", "refund.failed") and obj.get("status") in ("succeeded", "failed", "canceled"):
        status = obj["status"]
        async with pool.acquire() as conn, conn.transaction():
            await ledger.apply_refund_status(conn, obj["id"], status, obj.get("failure_reason"))
    elif kind == "bank_transfer.settled":
        status = "succeeded"
    elif kind == "bank_transfer.rejected":
        status = "failed"
    if status and workflow_id:
        try:
            # Refund events go to the case, bank transfer events to the payout (metadata.workflow_id).
            signal = PayoutWorkflow.gateway_event if kind.startswith("bank_transfer.") else CaseWorkflow.gateway_event
            await app.state.temporal.get_workflow_handle(workflow_id).signal(
                signal, GatewayEvent(object_id=obj["id"], status=status,
                                              failure_reason=obj.get("failure_reason")))
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise  # the gateway retries the event
            log.warning("event %s for unknown workflow %s", event_id, workflow_id)
    # Recorded only once acted upon, so a failure above is retried by the gateway.
    await pool.execute("INSERT INTO webhook_events (source, event_id) VALUES ('gateway', $1) ON CONFLICT DO NOTHING",
                       event_id)
    return {"received": True}


app = create_app()
