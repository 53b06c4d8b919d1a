"""The customer's wallet and its payouts."""
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from domain.models import Role
from starter.deps import Cfg, Id, Svc, Who, require
from starter.schemas import PayoutBody
from starter.wallet import get_payout, request_payout, wallet_view

router = APIRouter(prefix="/v1/wallet", tags=["wallet"])


@router.get("")
async def wallet(who: Who, svc: Svc):
    require(who, Role.customer, "has a wallet")
    return await wallet_view(svc.pool, who.id)


@router.post("/payouts", status_code=201)
async def payout(body: PayoutBody, who: Who, svc: Svc, s: Cfg,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None):
    view, created = await request_payout(svc.pool, svc.temporal, s.task_queue, svc.policy, who,
                                         idempotency_key=idempotency_key, **body.model_dump())
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/payouts/{payout_id}")
async def payout_status(payout_id: Id, who: Who, svc: Svc):
    return await get_payout(svc.pool, who, payout_id)
