"""Events per case, counted from its history on the time-skipping server (one workflow per case, so
one history; the seller here has no webhook, so no delivery workflows): the bound of the
one-workflow issue, in counts that no machine load can move. Before the change (case + return and
refund children): withdrawal 286 events in three histories, paid-order cancellation 125 in two."""
from __future__ import annotations

from domain.models import CaseKind, Outcome, SimpleAction, Stage
from tests.helpers.cases import (
    issue_label,
    open_case,
    seller,
    settle_refund,
    ship,
    start_case,
    wait_stage,
)
from tests.helpers.data import make_order
from workflows.case import CaseWorkflow



async def events(handle) -> int:
    return len((await handle.fetch_history()).events)


async def test_paid_cancellation_takes_at_most_100_events(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    n = await events(handle)
    print(f"\nEVENTS paid cancellation: {n}")
    assert n <= 100


async def test_withdrawal_takes_at_most_180_events(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await wait_stage(handle, Stage.in_transit)
    await handle.execute_update(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)))
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    n = await events(handle)
    print(f"\nEVENTS withdrawal: {n}")
    assert n <= 180
