"""Signed webhooks: the carrier's parcel events and the payment gateway's refund and transfer events."""
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from temporalio.service import RPCError, RPCStatusCode

from activities import ledger
from activities.cases import verify_signature
from activities.gateway_client import verify_event
from domain.models import CarrierEvent, GatewayEvent
from starter.deps import Cfg, Pool, Svc
from starter.schemas import CarrierEventBody, GatewayEventEnvelope
from workflows.case import CaseWorkflow
from workflows.payout import PayoutWorkflow

log = logging.getLogger("api")
router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("/carrier")
async def carrier_webhook(request: Request, svc: Svc, pool: Pool, s: Cfg,
                          x_carrier_signature: Annotated[str | None, Header()] = None):
    payload = await request.body()
    if not x_carrier_signature or not verify_signature(s.carrier_webhook_secret, payload, x_carrier_signature):
        raise HTTPException(400, "bad or missing X-Carrier-Signature")
    try:
        ev = CarrierEventBody.model_validate_json(payload)
    except ValidationError as e:  # signed but malformed: 422 naming the field, not a 500
        raise RequestValidationError(e.errors(include_url=False, include_context=False, include_input=False))
    if await pool.fetchval("SELECT 1 FROM webhook_events WHERE source = 'carrier' AND event_id = $1", ev.event_id):
        return {"received": True, "duplicate": True}
    case_id = await svc.case_for_parcel(ev.tracking_number)
    if case_id:
        await svc.temporal.get_workflow_handle(case_id).signal(CaseWorkflow.carrier_event, CarrierEvent(**ev.model_dump()))
    await pool.execute("INSERT INTO webhook_events (source, event_id) VALUES ('carrier', $1) ON CONFLICT DO NOTHING",
                       ev.event_id)
    return {"received": True, "case_id": case_id}


@router.post("/payments")
async def payments_webhook(request: Request, s: Cfg, stripe_signature: Annotated[str | None, Header()] = None):
    payload = await request.body()
    if not stripe_signature:
        raise HTTPException(400, "missing Stripe-Signature")
    try:
        event = verify_event(payload, stripe_signature, s.gateway_webhook_secret)
    except ValueError as e:
        raise HTTPException(400, f"bad signature or payload: {e}")
    try:
        GatewayEventEnvelope.model_validate(event)
    except ValidationError as e:  # signed but not the event shape handle_gateway_event reads
        raise RequestValidationError(e.errors(include_url=False, include_context=False, include_input=False))
    return await handle_gateway_event(request.app, event)


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
    if kind in ("refund.updated", "refund.failed") and ledger.final_state(obj.get("status")) is not None:
        status = obj["status"]
        await ledger.apply_refund_status(pool, obj["id"], status, obj.get("failure_reason"))
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
