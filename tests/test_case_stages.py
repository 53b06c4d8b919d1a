"""What the one-workflow case guarantees, each reproduced on the time-skipping server with the real
workflow and activities (an activity held in flight where the report needed one):

- a withdrawal ends the case whatever activity is in flight (it used to hang behind a child that
  swallowed its cancellation in send());
- no withdrawal once money or goods left the customer's hands;
- every waiting stage has a deadline, also the parcel stages and the settlement after it is overdue,
  and care can act in each of them;
- an action the validator accepted always takes effect, and one that comes too late is refused;
- carrier events count before the customer clicks "shipped";
- care's extension re-arms the timer even when the deadline had passed;
- care taking over a cancellation honours the order's compare-and-set.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from domain.models import (
    CareRequest,
    CareResolution,
    CarrierEvent,
    CaseKind,
    DecisionRequest,
    Outcome,
    ShipmentRequest,
    SimpleAction,
    Stage,
)
from domain.policy import Policy
from tests.helpers.cases import (
    closed_reason,
    AGENT,
    customer,
    deliver,
    issue_label,
    jump_to,
    mail_with,
    open_case,
    refunds_at_gateway,
    seller,
    settle_refund,
    ship,
    start_case,
    state,
    timeline,
    wait_for,
    wait_stage,
)
from tests.helpers.data import make_order, order_total
from tests.helpers.gates import gated_worker, message_gate, record_gate
from workflows.case import CaseWorkflow


# These tests read the emails' English texts: the parties read English (French: test_mail_locale.py).
PARTY_LOCALE = "en"

CARE = "care@marketplace.example"


async def refused(call, expected: str):
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await call
    assert err.value.cause.type == expected, err.value.cause
    return err.value.cause


def care(resolution: CareResolution, reason: str = "Decided by care.", **extra) -> CareRequest:
    return CareRequest(actor=AGENT, resolution=resolution, reason=reason, **extra)


# ------------------------------------------------------------------ withdrawal with activities in flight
WITHDRAW_IN_FLIGHT = {
    # name: (kind, the activity to hold, the stage the case shows meanwhile, how to get there)
    "label request email": (CaseKind.withdrawal, lambda: message_gate(":label-asked"), Stage.awaiting_return_label, None),
    "label to the customer email": (CaseKind.withdrawal, lambda: message_gate(":label-to-customer"),
                                    Stage.awaiting_shipment, "label"),
    "read-model write of the stage change": (CaseKind.withdrawal, lambda: record_gate("awaiting_customer_shipment"),
                                             Stage.awaiting_shipment, "label"),
    "photos request email": (CaseKind.defect, lambda: message_gate(":photos-asked"), Stage.awaiting_photos, None),
    "seller decision email": (CaseKind.warranty, lambda: message_gate(":decision-asked"),
                              Stage.awaiting_seller_decision, None),
}


@pytest.mark.parametrize("name", list(WITHDRAW_IN_FLIGHT))
async def test_withdrawal_while_an_activity_is_in_flight_closes_the_case(name, ts_env, pool, test_settings, party,
                                                                         task_queue, mail_sink):
    kind, make_gate, stage, before = WITHDRAW_IN_FLIGHT[name]
    gate = make_gate()
    async with gated_worker(ts_env, test_settings, task_queue, gate):
        handle, _ = await open_case(ts_env, pool, task_queue, party, kind)
        if before == "label":
            await wait_stage(handle, Stage.awaiting_return_label)
            withdraw_label = asyncio.ensure_future(issue_label(handle, party))
        await gate.held()
        assert (await state(handle)).stage == stage
        withdrawal = asyncio.ensure_future(handle.execute_update(
            CaseWorkflow.withdraw, SimpleAction(actor=customer(party), note="Changed my mind.")))
        await asyncio.sleep(0.3)  # accepted by the validator while the activity is still held
        gate.open()
        answer = await asyncio.wait_for(withdrawal, 30)
        assert (answer.stage, answer.outcome) == (Stage.closed, Outcome.withdrawn)
        final = await asyncio.wait_for(handle.result(), 30)
        assert final.outcome == Outcome.withdrawn
        if before == "label":
            assert (await withdraw_label).stage in (Stage.awaiting_shipment, Stage.closed)
        assert "stopped" in await timeline(pool, handle.id)
        assert await mail_with(mail_sink, party["customer_email"], "closed (withdrawn)")


async def test_an_email_in_flight_holds_neither_the_stage_deadline_nor_the_party_action(ts_env, pool, test_settings,
                                                                                        party, task_queue, mail_sink):
    """The email asking the seller for the return label hangs (an SMTP outage): the stage's deadline timer is
    armed all the same, and the seller's label moves the case on at once. Both used to wait for the email:
    the timer was started, and the stage left, only once the email had gone (for up to a day of retries)."""
    from temporalio.api.enums.v1 import EventType

    async def timer_started() -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while loop.time() < end:
            if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in (await handle.fetch_history()).events):
                return True
            await asyncio.sleep(0.1)
        return False

    gate = message_gate(":label-asked")
    async with gated_worker(ts_env, test_settings, task_queue, gate):
        handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
        await gate.held()
        s = await state(handle)
        assert s.stage == Stage.awaiting_return_label and s.deadline is not None
        # (the time-skipping server does not skip time while an activity is held, so the timer is read
        # from the history rather than fired)
        assert await timer_started(), "the stage's deadline timer waits for the asking email"
        assert not gate.opened.is_set()  # the asking email is still held
        answer = await asyncio.wait_for(issue_label(handle, party), 20)
        assert answer.stage == Stage.awaiting_shipment
        gate.open()
        assert await mail_with(mail_sink, party["customer_email"], "return label")
    assert "return_label_issued" in await timeline(pool, handle.id)


async def test_no_withdrawal_once_a_paid_cancellation_is_being_refunded(ts_env, pool, test_settings, party,
                                                                        task_queue, gateway_sandbox):
    from tests.helpers.gates import Gate

    gate = Gate("refund_card", lambda req: True)
    async with gated_worker(ts_env, test_settings, task_queue, gate):
        order_id = await make_order(pool, party, "paid")
        handle = await start_case(ts_env, pool, task_queue, order_id)
        await gate.held()  # the order is cancelled and the card refund is on its way
        assert (await state(handle)).stage == Stage.refunding
        cause = await refused(handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party))),
                              "WrongStage")
        assert cause.details[0]["stage"] == "refunding"
        gate.open()
        await wait_stage(handle, Stage.awaiting_bank_settlement)
        await refused(handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party))), "WrongStage")
        await refused(handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.close)), "WrongStage")
        await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
        final = await handle.result()
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())


async def test_no_withdrawal_once_the_seller_holds_the_item(ts_env, pool, case_worker, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(party), decision="exchange"))
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await refused(handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party))), "WrongStage")
    await deliver(ts_env, handle)
    await wait_stage(handle, Stage.awaiting_outbound_shipment)
    await refused(handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party))), "WrongStage")
    await handle.execute_update(CaseWorkflow.declare_impossible, SimpleAction(actor=seller(party), note="No stock."))
    await wait_stage(handle, Stage.awaiting_care)
    await refused(handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party))), "WrongStage")
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.close, "Item returned to the customer."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


# ------------------------------------------------------------------ parcel stages have deadlines, care ends them
async def test_return_parcel_never_reported_escalates_then_care_marks_it_received(ts_env, pool, case_worker, party,
                                                                                  task_queue, mail_sink,
                                                                                  gateway_sandbox):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    shipped_at = await ts_env.get_current_time()
    await ship(handle, party)
    s = await wait_stage(handle, Stage.in_transit)
    assert s.waiting_for == "carrier" and s.deadline == Policy().return_transit_deadline(shipped_at)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert s.stage == Stage.in_transit and "parcel not received" in s.escalation_reason
    assert s.deadline == s.deadlines["care"] and s.deadline > await ts_env.get_current_time()
    assert await mail_with(mail_sink, CARE, "escaladée")  # care reads French
    # Nobody acts by the care deadline: care must decide.
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)
    assert s.deadline > await ts_env.get_current_time()
    answer = await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.mark_received,
                                                                          "The seller confirmed by phone."))
    assert answer.stage == Stage.awaiting_refund_activation
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded


async def test_care_declares_a_return_parcel_lost_and_the_customer_is_refunded(ts_env, pool, case_worker, party,
                                                                               task_queue, gateway_sandbox):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await wait_stage(handle, Stage.in_transit)
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.mark_lost, "Carrier lost it."))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1


async def test_outbound_parcel_in_transit_too_long_escalates_and_care_can_close(ts_env, pool, case_worker, party,
                                                                                task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(party), decision="repair"))
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await deliver(ts_env, handle)
    await wait_stage(handle, Stage.awaiting_outbound_shipment)
    await handle.execute_update(CaseWorkflow.ship_outbound, ShipmentRequest(
        actor=seller(party), carrier="Colissimo", tracking_number="OUT123456"))
    s = await wait_stage(handle, Stage.outbound_in_transit)
    assert s.deadline is not None and s.waiting_for == "carrier"
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert "not delivered" in s.escalation_reason and s.deadline > await ts_env.get_current_time()
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.close, "Delivered, signed by a neighbour."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


async def test_settlement_overdue_then_care_marks_it_settled(ts_env, pool, case_worker, party, task_queue, mail_sink):
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_bank_settlement)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert s.stage == Stage.awaiting_bank_settlement and s.deadline > await ts_env.get_current_time()
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)
    await refused(handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.force_refund)), "WrongStage")
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.mark_settled, "Bank statement seen."))
    final = await handle.result()
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())


async def test_care_waits_under_its_own_deadline_with_a_second_level_escalation(ts_env, pool, case_worker, party,
                                                                                task_queue, mail_sink):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)
    first = s.deadline
    assert s.waiting_for == "care" and first > await ts_env.get_current_time()
    await jump_to(ts_env, first + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.deadline and s.deadline > first)
    assert s.stage == Stage.awaiting_care and "second-level" in s.escalation_reason
    assert await mail_with(mail_sink, CARE, "(second niveau)")
    assert await mail_with(mail_sink, CARE, "Rappel : la demande")
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.close, "Seller reached by phone."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


# ------------------------------------------------------------------ accepted means applied; late means refused
async def test_a_decision_after_the_deadline_fired_is_refused_not_dropped(ts_env, pool, test_settings, party,
                                                                          task_queue):
    gate = record_gate("waiting_for_care")  # hold the case right after its deadline fired
    async with gated_worker(ts_env, test_settings, task_queue, gate):
        handle = await start_case(ts_env, pool, task_queue, await make_order(pool, party, "validated"))
        s = await wait_stage(handle, Stage.awaiting_seller_decision)
        jump = asyncio.ensure_future(jump_to(ts_env, s.deadline + timedelta(minutes=1)))
        await gate.held()
        await refused(handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=seller(party), decision="accept")), "WrongStage")
        gate.open()
        await jump
        s = await wait_stage(handle, Stage.awaiting_care)
        assert s.decision is None
        await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.close, "Seller unreachable."))
        assert (await handle.result()).outcome == Outcome.closed_by_care


async def test_a_decision_accepted_while_the_ask_is_in_flight_takes_effect(ts_env, pool, test_settings, party,
                                                                           task_queue):
    gate = message_gate(":decision-asked")
    async with gated_worker(ts_env, test_settings, task_queue, gate):
        handle = await start_case(ts_env, pool, task_queue, await make_order(pool, party, "validated"))
        await gate.held()
        decision = asyncio.ensure_future(handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=seller(party), decision="refuse", reason="Already shipped.")))
        await asyncio.sleep(0.3)
        gate.open()
        assert (await decision).stage == Stage.closed
        final = await handle.result()
    assert (final.outcome, final.decision) == (Outcome.refused, "refuse")


# ------------------------------------------------------------------ carrier before the customer; receipt early
async def test_carrier_delivery_without_the_customer_reporting_the_shipment(ts_env, pool, case_worker, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party, tracking="RETLBL0001")
    await wait_stage(handle, Stage.awaiting_shipment)
    await handle.signal(CaseWorkflow.carrier_event, CarrierEvent(
        event_id="c-1", tracking_number="RETLBL0001", status="in_transit", at=await ts_env.get_current_time()))
    await wait_stage(handle, Stage.in_transit)
    await deliver(ts_env, handle, tracking="RETLBL0001", event_id="c-2")
    s = await wait_stage(handle, Stage.awaiting_refund_activation)
    assert "return_received" in await timeline(pool, handle.id)
    assert s.deadline is not None


async def test_seller_confirms_receipt_before_the_customer_reports_the_shipment(ts_env, pool, case_worker, party,
                                                                                task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)
    answer = await handle.execute_update(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)))
    assert answer.stage == Stage.awaiting_refund_activation


# ------------------------------------------------------------------ care's extension and take-over
async def test_care_extends_a_deadline_that_already_passed_and_the_new_one_is_enforced(ts_env, pool, case_worker,
                                                                                       party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    s = await wait_stage(handle, Stage.awaiting_return_label)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)  # overdue, under care's deadline now
    now = await ts_env.get_current_time()
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.extend_deadline, "One more day.",
                                                                extend_hours=24))
    s = await state(handle)
    assert s.stage == Stage.awaiting_return_label and s.deadline >= now + timedelta(hours=24)
    extended = s.deadline
    await jump_to(ts_env, extended + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)  # the timer of the new deadline fired
    # Care gives the seller another day from awaiting_care: back to the label stage with a timer.
    answer = await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.extend_deadline, "Last chance.",
                                                                         extend_hours=24))
    assert answer.stage == Stage.awaiting_return_label
    s = await state(handle)
    assert s.deadline > await ts_env.get_current_time()
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)


async def test_care_forces_a_cancellation_of_an_order_shipped_meanwhile_and_it_is_refused(ts_env, pool, case_worker,
                                                                                         party, task_queue,
                                                                                         gateway_sandbox):
    order_id = await make_order(pool, party, "validated")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    await wait_stage(handle, Stage.awaiting_care)
    await pool.execute("UPDATE orders SET status = 'shipped' WHERE order_id = $1", order_id)  # the seller shipped
    await handle.execute_update(CaseWorkflow.care_resolve, care(CareResolution.force_refund, "Customer insists."))
    final = await handle.result()
    assert final.outcome == Outcome.refused and "already shipped" in closed_reason(final)
    assert await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}") == []
    assert await pool.fetchval("SELECT status FROM orders WHERE order_id = $1", order_id) == "shipped"
