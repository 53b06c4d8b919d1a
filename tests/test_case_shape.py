"""Events per case, counted from its history on the time-skipping server (one workflow per case, so
one history; the seller here has no webhook, so no delivery workflows): the bounds of the lighter-case
issue, in counts that no machine load can move. Before the one-workflow change (case + return and
refund children): withdrawal 286 events in three histories, paid-order cancellation 125 in two; with
one workflow and regular activities for every write: 154 / 84.

The tests wait on the read model in PostgreSQL, not on the workflow's query: the time-skipping test
server answers a query that arrives during a workflow task with an extra (empty) workflow task in
history, which a production server does not."""
from __future__ import annotations

import asyncio
import json

from google.protobuf.json_format import MessageToDict

from domain.models import CaseKind, Outcome, SimpleAction, Stage
from tests.helpers.cases import issue_label, open_case, seller, settle_refund, ship, start_case
from tests.helpers.data import make_order
from workflows.case import CaseWorkflow

MAX_EVENT_BYTES = 4096


async def stage_in_read_model(pool, case_id: str, stage: Stage, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id) != stage.value:
        assert loop.time() < end, f"{case_id} never reached {stage.value}"
        await asyncio.sleep(0.05)


async def shape(handle) -> tuple[int, int]:
    """Events in the history, and the size of the largest one (its JSON form, payloads included)."""
    events = (await handle.fetch_history()).events
    return len(events), max(len(json.dumps(MessageToDict(e))) for e in events)


async def test_paid_cancellation_takes_at_most_60_events(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await stage_in_read_model(pool, handle.id, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    n, largest = await shape(handle)
    print(f"\nEVENTS paid cancellation: {n}, largest {largest} bytes")
    assert n <= 60 and largest <= MAX_EVENT_BYTES


async def test_withdrawal_takes_at_most_120_events(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await stage_in_read_model(pool, handle.id, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await stage_in_read_model(pool, handle.id, Stage.in_transit)
    await handle.execute_update(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)))
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await stage_in_read_model(pool, handle.id, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    n, largest = await shape(handle)
    print(f"\nEVENTS withdrawal: {n}, largest {largest} bytes")
    assert n <= 120 and largest <= MAX_EVENT_BYTES
