"""Cancellation cases end to end on the time-skipping server, with the real activities: PostgreSQL,
SMTP and the gateway sandbox. Every timer fires for real (seller silence, settlement overdue)."""
from __future__ import annotations

from datetime import date, timedelta

import holidays
import httpx
import pytest
from fastapi import FastAPI, Request
from temporalio.client import WorkflowUpdateFailedError

from activities.cases import verify_signature
from domain import calendar
from domain.models import (
    Actor,
    CareRequest,
    CareResolution,
    DecisionRequest,
    Outcome,
    Role,
    Stage,
)
from domain.policy import Policy
from tests.helpers.servers import ServedApp, closed_port
from tests.helpers.data import make_order, make_party, order_total
from tests.helpers.cases import (
    closed_reason,
    jump_to,
    mail_with,
    mails_to,
    paris,
    refunds_at_gateway,
    settle_refund,
    start_case,
    state,
    timeline,
    wait_for,
    wait_stage,
)
from workflows.case import CaseWorkflow


# These tests read the emails' English texts: the parties read English (French: test_mail_locale.py).
PARTY_LOCALE = "en"





async def order_status(pool, order_id) -> str:
    return await pool.fetchval("SELECT status FROM orders WHERE order_id = $1", order_id)


async def test_paid_order_is_cancelled_and_refunded_in_full_once(ts_env, pool, case_worker, gateway_sandbox,
                                                                 mail_sink, party, task_queue):
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_bank_settlement)
    assert s.refund_cents == order_total()  # items + original delivery fee
    assert await order_status(pool, order_id) == "cancelled"
    refunds = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    assert [r["amount"] for r in refunds] == [order_total()]

    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.stage, final.outcome, final.refunded_cents) == (Stage.closed, Outcome.refunded, order_total())
    assert not final.escalated

    row = await pool.fetchrow("SELECT stage, outcome, closed_at FROM cases WHERE case_id = $1", handle.id)
    assert (row["stage"], row["outcome"]) == ("closed", "refunded") and row["closed_at"] is not None
    assert await timeline(pool, handle.id) == [
        "case_opened", "order_cancelled", "refund_requested", "refund_accepted", "refund_settled", "case_closed"]
    assert await mail_with(mail_sink, party["customer_email"], "closed (refunded)")
    subjects = [m["subject"] for m in mails_to(mail_sink, party["customer_email"])]
    assert any("received" in s for s in subjects)
    assert any("refund of €254.99 is on its way" in s for s in subjects)
    assert any("closed (refunded)" in s for s in subjects)
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1
    # The seller is told too, in a message of its own: the customer's closing email under the same
    # message key once kept it from being sent (its key already marked sent).
    assert await mail_with(mail_sink, party["seller_email"], f"Case {handle.id} closed (refunded)")
    keys = await pool.fetch("SELECT message_key, recipient FROM sent_messages WHERE case_id = $1 AND status = 'sent'",
                            handle.id)
    assert {r["recipient"] for r in keys if r["message_key"].endswith(":closed")} == {party["customer_email"]}
    assert {r["recipient"] for r in keys if r["message_key"].endswith(":closed-seller")} == {party["seller_email"]}


async def test_compare_and_set_loses_to_a_validation_before_the_case_acts(ts_env, pool, case_worker, party, task_queue):
    order_id = await make_order(pool, party, "paid")
    await pool.execute("UPDATE orders SET status = 'validated' WHERE order_id = $1", order_id)
    handle = await start_case(ts_env, pool, task_queue, order_id)  # input snapshot still says "paid"
    await wait_stage(handle, Stage.awaiting_seller_decision)
    assert await order_status(pool, order_id) == "validated"
    assert "order_cancelled" not in await timeline(pool, handle.id)


async def test_validated_order_seller_accepts(ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    assert await mail_with(mail_sink, party["seller_email"], "Cancellation requested")
    answer = await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=Actor(role=Role.seller, id=party["seller_id"]), decision="accept"))
    assert answer.stage in (Stage.refunding, Stage.awaiting_bank_settlement)
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    assert await order_status(pool, order_id) == "cancelled"
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert final.outcome == Outcome.refunded


async def test_validated_order_seller_refuses_already_shipped(ts_env, pool, case_worker, gateway_sandbox, mail_sink,
                                                              party, task_queue):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=Actor(role=Role.seller, id=party["seller_id"]), decision="refuse", reason="Parcel left this morning."))
    final = await handle.result()
    assert (final.stage, final.outcome) == (Stage.closed, Outcome.refused)
    assert "withdrawal period" in closed_reason(final)
    assert await order_status(pool, order_id) == "validated"
    assert await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}") == []
    closing = await mail_with(mail_sink, party["customer_email"], "closed (refused)")
    assert closing and "Parcel left this morning." in closing[0]["body"]


@pytest.mark.parametrize("status", ["shipped", "delivered"])
async def test_shipped_or_delivered_order_is_refused_with_the_reason(ts_env, pool, case_worker, party, status, task_queue):
    order_id = await make_order(pool, party, status)
    handle = await start_case(ts_env, pool, task_queue, order_id)
    final = await handle.result()
    assert (final.stage, final.outcome) == (Stage.closed, Outcome.refused)
    assert f"already {status}" in closed_reason(final)
    assert await order_status(pool, order_id) == status


def next_friday_before_holiday_monday(after: date) -> date:
    """The next Friday followed by a weekend and a public-holiday Monday (Easter/Whit Monday, ...)."""
    d = after + timedelta(days=1)
    while True:
        if d.weekday() == 0 and d in holidays.France(years=d.year):
            return d - timedelta(days=3)
        d += timedelta(days=1)


async def test_seller_silent_across_a_weekend_and_a_holiday_escalates_at_the_business_deadline(
        ts_env, pool, case_worker, mail_sink, party, task_queue):
    now = await ts_env.get_current_time()
    friday = next_friday_before_holiday_monday(calendar.paris_day(now))
    await jump_to(ts_env, paris(friday, hour=15))
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    tuesday = friday + timedelta(days=4)  # Sat, Sun, holiday Monday skipped
    assert s.deadline == calendar.end_of_paris_day(tuesday)
    assert s.deadline.astimezone(calendar.PARIS).hour == 23

    # Monday (holiday) evening: nothing yet.
    await jump_to(ts_env, paris(friday + timedelta(days=3), hour=20))
    s = await state(handle)
    assert s.stage == Stage.awaiting_seller_decision and not s.escalated
    # Reminder before the deadline (Tuesday noon, 12 h before), then escalation after it.
    await jump_to(ts_env, paris(tuesday, hour=13))
    await wait_for(handle, lambda s: s.stage == Stage.awaiting_seller_decision)
    reminders = await mail_with(mail_sink, party["seller_email"], "Reminder")
    assert len(reminders) == 1
    assert not (await state(handle)).escalated
    await jump_to(ts_env, calendar.end_of_paris_day(tuesday) + timedelta(seconds=2))
    s = await wait_stage(handle, Stage.awaiting_care)
    assert s.escalated and "did not answer" in s.escalation_reason
    assert await mail_with(mail_sink, "care@marketplace.example", f"Demande {handle.id} escaladée")  # care reads French
    row = await pool.fetchrow("SELECT stage, state FROM cases WHERE case_id = $1", handle.id)
    assert row["stage"] == "awaiting_care" and row["state"]["escalated"] is True

    # A decision now is too late: the seller is told so (WrongStage), care resolves.
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=Actor(role=Role.seller, id=party["seller_id"]), decision="accept"))
    await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=Actor(role=Role.agent, id="care_1"), resolution=CareResolution.close, reason="Seller unreachable; "
        "customer agreed to wait for delivery."))
    final = await handle.result()
    assert final.outcome == Outcome.closed_by_care


async def test_settlement_overdue_alerts_care_then_settles(ts_env, pool, case_worker, gateway_sandbox, mail_sink,
                                                           party, task_queue):
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_bank_settlement)
    expected = Policy().bank_settlement_deadline(await ts_env.get_current_time())
    assert abs(s.deadline - expected) < timedelta(minutes=5)
    await jump_to(ts_env, s.deadline - timedelta(hours=1))
    assert not (await state(handle)).escalated
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert s.stage == Stage.awaiting_bank_settlement and "not settled" in s.escalation_reason
    assert await mail_with(mail_sink, "care@marketplace.example", f"Demande {handle.id} escaladée")  # care reads French
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert final.outcome == Outcome.refunded and final.refunded_cents == order_total()


async def test_care_forces_the_refund_after_escalation(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    await jump_to(ts_env, s.deadline + timedelta(seconds=2))
    await wait_stage(handle, Stage.awaiting_care)
    answer = await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=Actor(role=Role.agent, id="care_1"), resolution=CareResolution.force_refund, reason="Seller silent."))
    assert answer.stage != Stage.awaiting_care
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    assert await order_status(pool, order_id) == "cancelled"
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded


async def test_decisions_refused_for_another_seller_a_customer_and_twice(ts_env, pool, case_worker, party, task_queue):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    for actor, error_type in [(Actor(role=Role.seller, id="seller_other"), "Forbidden"),
                              (Actor(role=Role.customer, id=party["customer_id"]), "Forbidden")]:
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=actor, decision="accept"))
        assert err.value.cause.type == error_type
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=Actor(role=Role.seller, id=party["seller_id"]), decision="exchange"))
    assert err.value.cause.type == "InvalidAction"
    assert (await state(handle)).stage == Stage.awaiting_seller_decision  # nothing applied
    seller = Actor(role=Role.seller, id=party["seller_id"])
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller, decision="refuse"))
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller, decision="accept"))
    assert err.value.cause.type == "WrongStage"
    assert (await handle.result()).outcome == Outcome.refused


async def test_refund_retried_after_the_gateway_accepted_moves_money_once(ts_env, pool, case_worker, gateway_sandbox,
                                                                          party, task_queue):
    async with httpx.AsyncClient() as http:
        # The gateway makes the refund, then the answer is lost (500).
        await http.post(f"{gateway_sandbox.url}/_sandbox/faults", json={"mode": "accept_then_error", "count": 1})
        order_id = await make_order(pool, party, "paid")
        handle = await start_case(ts_env, pool, task_queue, order_id)
        await wait_stage(handle, Stage.awaiting_bank_settlement, timeout=30)
        await http.post(f"{gateway_sandbox.url}/_sandbox/faults", json={"mode": "none"})
    refunds = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    assert [r["amount"] for r in refunds] == [order_total()]
    row = await pool.fetchrow("SELECT gateway_refund_id, amount_cents FROM refunds WHERE case_id = $1", handle.id)
    assert row["gateway_refund_id"] == refunds[0]["id"]
    # It really was retried: the case's history shows refund_card's second attempt succeeding (it
    # found the refund by its metadata instead of creating another).
    history = await handle.fetch_history()
    refund_card = {e.event_id for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
                   and e.activity_task_scheduled_event_attributes.activity_type.name == "refund_card"}
    attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                if e.HasField("activity_task_started_event_attributes")
                and e.activity_task_started_event_attributes.scheduled_event_id in refund_card]
    assert attempts == [2]
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded


async def test_seller_webhook_is_signed_and_a_failing_endpoint_does_not_hold_the_case(ts_env, pool, case_worker, task_queue):
    received = []
    hook = FastAPI()

    @hook.post("/hook")
    async def receive(request: Request):
        body = await request.body()
        received.append((body, request.headers["X-Aftersales-Signature"], request.headers["Idempotency-Key"]))
        return {"ok": True}

    served = await ServedApp(hook).start()
    try:
        good = await make_party(pool, seller_webhook_url=f"{served.url}/hook", seller_webhook_secret="s3cret")
        handle = await start_case(ts_env, pool, task_queue, await make_order(pool, good, "validated"))
        await wait_stage(handle, Stage.awaiting_seller_decision)
        for _ in range(100):
            if received:
                break
            await __import__("asyncio").sleep(0.05)
        body, signature, key = received[0]
        assert verify_signature("s3cret", body, signature) and not verify_signature("other", body, signature)
        assert key == f"{handle.id}:decision-asked"
        payload = __import__("json").loads(body)
        assert payload["event"] == "cancellation.requested"
        # In the seller's locale (French by default), with the message's key and the text's key.
        assert (payload["message_key"], payload["text"], payload["locale"]) == (
            key, "mail.cancellation_asked", "fr")
        order_id = (await handle.query(CaseWorkflow.get_state)).order_id
        assert payload["subject"] == f"Annulation demandée sur la commande {order_id}"
        assert "Acceptez ou refusez avant le" in payload["message"] and "heure de Paris" in payload["message"]
    finally:
        await served.stop()

    # A seller whose endpoint is down: the case goes on regardless (the webhook retries on its own).
    with closed_port() as port:
        down = await make_party(pool, seller_webhook_url=f"http://127.0.0.1:{port}/hook", seller_webhook_secret="x")
        handle = await start_case(ts_env, pool, task_queue, await make_order(pool, down, "validated"))
        await wait_stage(handle, Stage.awaiting_seller_decision)
        answer = await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=Actor(role=Role.seller, id=down["seller_id"]), decision="refuse"))
        assert answer.stage == Stage.closed
