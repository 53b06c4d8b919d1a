"""Helpers for workflow tests on the time-skipping server."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.client import WorkflowHandle

from domain.calendar import PARIS
from domain.models import (
    Actor,
    CarrierEvent,
    CaseInput,
    CaseKind,
    CaseState,
    DefectCategory,
    GatewayEvent,
    LabelRequest,
    Role,
    ShipmentRequest,
    Stage,
)
from domain.policy import Policy
from starter.service import order_from_row
from tests.helpers.data import make_order, new_id
from workflows.case import CaseWorkflow


async def start_case(env, pool, task_queue: str, order_id: str, kind: CaseKind = CaseKind.cancellation,
                     policy: Policy | None = None, **extra) -> WorkflowHandle:
    row = await pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", order_id)
    order = order_from_row(row)
    case_id = new_id("case")
    inp = CaseInput(case_id=case_id, kind=kind, order=order, opened_at=await env.get_current_time(),
                    opened_by=Actor(role=Role.customer, id=order.customer_id), policy=policy or Policy(), **extra)
    handle = await env.client.start_workflow(CaseWorkflow.run, inp, id=case_id, task_queue=task_queue)
    STARTED.append(handle)
    return handle


async def state(handle: WorkflowHandle) -> CaseState:
    return await handle.query(CaseWorkflow.get_state)


async def wait_for(handle: WorkflowHandle, predicate, timeout: float = 30.0) -> CaseState:
    """Polls the case's query in real time (no time skipping) until predicate(state) holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last = None
    while loop.time() < end:
        try:
            last = await state(handle)
            if last is not None and predicate(last):
                return last
        except Exception:  # the first workflow task may not have run yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not reached; last state: {last}")


async def wait_stage(handle: WorkflowHandle, stage: Stage, timeout: float = 30.0) -> CaseState:
    return await wait_for(handle, lambda s: s.stage == stage, timeout)


async def refunds_at_gateway(gateway_url: str, payment_intent: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        st = (await http.get(f"{gateway_url}/_sandbox/state")).json()
    return [r for r in st["refunds"] if r["payment_intent"] == payment_intent]


async def settle_refund(env, gateway_url: str, case_id: str, payment_intent: str, status: str = "succeeded") -> None:
    """What the payments webhook does once the bank settles: the refund's row and the order's ledger,
    then a signal to the case (the refund's metadata names its workflow)."""
    from activities import db, ledger

    [refund] = await refunds_at_gateway(gateway_url, payment_intent)
    reason = None if status == "succeeded" else "expired_or_canceled_card"
    async with (await db.get_pool()).acquire() as conn, conn.transaction():
        await ledger.apply_refund_status(conn, refund["id"], status, reason)
    await env.client.get_workflow_handle(case_id).signal(
        CaseWorkflow.gateway_event, GatewayEvent(object_id=refund["id"], status=status, failure_reason=reason))


async def jump_to(env, moment: datetime) -> None:
    """Moves the time-skipping server's clock forward to `moment` (it never goes back), firing every
    timer on the way; the timers' activities run for real, hence the generous RPC timeout."""
    now = await env.get_current_time()
    if moment > now:
        req = SleepRequest()
        req.duration.FromTimedelta(moment - now)
        await env.client.test_service.unlock_time_skipping_with_sleep(req, timeout=timedelta(seconds=120))


STARTED: list[WorkflowHandle] = []  # the test's workflows (histories recorded with RECORD_HISTORIES=1)


def paris(d, hour: int = 10) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=PARIS)


def mails_to(sink, address: str) -> list[dict]:
    return [m for m in sink.messages if address in m["to"]]


async def timeline(pool, case_id: str) -> list[str]:
    return [r["event"] for r in await pool.fetch("SELECT event FROM case_timeline WHERE case_id = $1 ORDER BY seq",
                                                 case_id)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


ONE_HOUR = timedelta(hours=1)


async def mail_with(sink, address: str, subject_part: str, timeout: float = 10.0) -> list[dict]:
    """The messages to `address` whose subject contains `subject_part`, waiting for the first one
    (a stage change is recorded before its email is sent)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = [m for m in mails_to(sink, address) if subject_part in m["subject"]]
        if found or loop.time() > end:
            return found
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- the parties' actions
def seller(party):
    return Actor(role=Role.seller, id=party["seller_id"])


def customer(party):
    return Actor(role=Role.customer, id=party["customer_id"])


AGENT = Actor(role=Role.agent, id="care_1")


async def delivered_order(ts_env, pool, party, days_ago: float = 1) -> str:
    now = await ts_env.get_current_time()
    return await make_order(pool, party, "delivered", delivered_at=now - timedelta(days=days_ago))


async def open_case(ts_env, pool, task_queue, party, kind: CaseKind, policy: Policy | None = None, **extra):
    order_id = await delivered_order(ts_env, pool, party)
    if kind == CaseKind.defect:
        extra.setdefault("category", DefectCategory.screen)
        extra.setdefault("description", "The screen flickers and goes black after a minute.")
    return await start_case(ts_env, pool, task_queue, order_id, kind, policy=policy, **extra), order_id


async def issue_label(handle, party, tracking="RET123456"):
    return await handle.execute_update(CaseWorkflow.issue_return_label, LabelRequest(
        actor=seller(party), carrier="Colissimo", tracking_number=tracking,
        label_url="https://labels.example/ret.pdf"))


async def ship(handle, party, tracking="RET123456"):
    return await handle.execute_update(CaseWorkflow.report_shipment, ShipmentRequest(
        actor=customer(party), carrier="Colissimo", tracking_number=tracking))


async def deliver(ts_env, handle, tracking="RET123456", event_id="evt-1"):
    await handle.signal(CaseWorkflow.carrier_event, CarrierEvent(
        event_id=event_id, tracking_number=tracking, status="delivered", at=await ts_env.get_current_time()))


async def walk_to_received(ts_env, handle, party):
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)
    await ship(handle, party)
    await wait_stage(handle, Stage.in_transit)
    await deliver(ts_env, handle)


def closed_reason(state, locale: str = "en") -> str:
    """Why a case closed (a CaseState or its read-model dict), as the reader of `locale` reads it."""
    from starter import i18n

    s = state if isinstance(state, dict) else state.model_dump(mode="json")
    return i18n.render_text(s["closed_reason_key"], s["closed_reason_params"], locale)
