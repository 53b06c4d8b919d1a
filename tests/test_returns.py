"""Returns, defect claims and warranty claims on the time-skipping server with the real activities.
At every waiting stage the deadline is let pass, and the reminder, escalation or expiry is asserted."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from activities.mail import message_id
from bench.scenarios import ASKED_BY
from domain.models import (
    Actor,
    CareRequest,
    CareResolution,
    CarrierEvent,
    CaseKind,
    DecisionRequest,
    LabelRequest,
    OfferAnswer,
    Outcome,
    Role,
    ShipmentRequest,
    SimpleAction,
    Stage,
)
from domain.policy import Policy
from tests.helpers.cases import (
    AGENT,
    customer,
    deliver,
    issue_label,
    jump_to,
    mail_with,
    mails_to,
    open_case,
    refunds_at_gateway,
    seller,
    settle_refund,
    ship,
    state,
    timeline,
    wait_for,
    wait_stage,
    walk_to_received,
)
from tests.helpers.data import order_total
from workflows.case import CaseWorkflow
from workflows.common import message_key


# These tests read the emails' English texts: the parties read English (French: test_mail_locale.py).
PARTY_LOCALE = "en"

CARE = "care@marketplace.example"


# ------------------------------------------------------------------------------------ happy paths
async def test_withdrawal_happy_path_refunds_once(ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    s = await wait_stage(handle, Stage.awaiting_return_label)
    assert s.waiting_for == "seller" and s.deadline is not None
    asked = await mail_with(mail_sink, party["seller_email"], "Return label needed")
    # the benchmark's parties act when the email asking them arrives, known by its Message-ID
    assert asked and asked[0]["message_id"] == message_id(message_key(handle.id, ASKED_BY["return-label"]))
    answer = await issue_label(handle, party)
    assert answer.stage == Stage.awaiting_shipment
    label_mail = await mail_with(mail_sink, party["customer_email"], "return label")
    assert label_mail and "https://labels.example/ret.pdf" in label_mail[0]["body"]
    assert label_mail[0]["message_id"] == message_id(message_key(handle.id, ASKED_BY["shipment"]))
    assert (await ship(handle, party)).stage == Stage.in_transit
    await deliver(ts_env, handle)
    s = await wait_stage(handle, Stage.awaiting_refund_activation)
    assert s.waiting_for == "seller"
    activation_mail = await mail_with(mail_sink, party["seller_email"], "Activate the refund")
    assert activation_mail[0]["message_id"] == message_id(message_key(handle.id, ASKED_BY["refund-activation"]))
    assert (await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))).stage \
        in (Stage.refunding, Stage.awaiting_bank_settlement)
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1
    events = await timeline(pool, handle.id)
    for e in ["return_label_requested", "return_label_issued", "awaiting_customer_shipment", "return_shipped",
              "return_received", "refund_activation_requested", "refund_activated", "refund_accepted",
              "refund_settled", "case_closed"]:
        assert e in events


async def test_defect_claim_refund_path(ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    await wait_stage(handle, Stage.awaiting_photos)
    await handle.signal(CaseWorkflow.attachments_added, 2)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    assert s.attachments == 2
    asked = await mail_with(mail_sink, party["seller_email"], "Claim: Defective item on order")
    assert asked and "Screen — The screen flickers" in asked[0]["body"] and "Photos: 2" in asked[0]["body"]
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(party), decision="refund"))
    s = await wait_stage(handle, Stage.awaiting_return_label)
    row = await pool.fetchval("SELECT detail FROM case_timeline WHERE case_id = $1 AND event = 'return_label_requested'",
                              handle.id)
    assert row["seller_pays_label"] is True  # a defect: the label is at the seller's cost
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)
    await ship(handle, party)
    await wait_stage(handle, Stage.in_transit)
    # The seller confirms receipt before the carrier's event: either ends the transit.
    await handle.execute_update(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_refund_activation)
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded


async def test_defect_claim_exchange_closes_on_delivery_of_the_replacement(ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    await handle.signal(CaseWorkflow.attachments_added, 1)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(party), decision="exchange"))
    await walk_to_received(ts_env, handle, party)
    s = await wait_stage(handle, Stage.awaiting_outbound_shipment)
    # Deadline passes: reminder then escalation; the seller can still ship.
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert "did not ship" in s.escalation_reason
    assert await mail_with(mail_sink, party["seller_email"], "Reminder: ship the replacement")
    answer = await handle.execute_update(CaseWorkflow.ship_outbound, ShipmentRequest(
        actor=seller(party), carrier="DPD", tracking_number="OUT987654"))
    assert answer.stage == Stage.outbound_in_transit
    await handle.signal(CaseWorkflow.carrier_event, CarrierEvent(
        event_id="o1", tracking_number="OUT987654", status="delivered", at=await ts_env.get_current_time()))
    final = await handle.result()
    assert final.outcome == Outcome.exchanged
    assert await mail_with(mail_sink, party["customer_email"], "replacement is on its way")


async def test_partial_refund_credits_the_wallet_once(ts_env, pool, case_worker, gateway_sandbox, mail_sink, party,
                                                      task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    await handle.signal(CaseWorkflow.attachments_added, 1)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    with pytest.raises(WorkflowUpdateFailedError) as err:  # more than paid
        await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
            actor=seller(party), decision="partial_refund", partial_amount_cents=order_total()))
    assert err.value.cause.type == "InvalidAction"
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=seller(party), decision="partial_refund", partial_amount_cents=3000, reason="Scratch on the back."))
    s = await wait_stage(handle, Stage.awaiting_customer_answer)  # an offer: the customer decides
    assert s.waiting_for == "customer" and s.wallet_credited_cents == 0
    assert await mail_with(mail_sink, party["customer_email"], "A partial refund of €30.00 is offered")
    await handle.execute_update(CaseWorkflow.answer_offer, OfferAnswer(actor=customer(party), accept=True))
    final = await handle.result()
    assert (final.outcome, final.wallet_credited_cents) == (Outcome.partially_refunded, 3000)
    assert await mail_with(mail_sink, party["seller_email"], "Partial refund accepted")
    credits = await pool.fetch("SELECT amount_cents FROM wallet_entries WHERE customer_id = $1 AND kind = 'credit'",
                               party["customer_id"])
    assert [r["amount_cents"] for r in credits] == [3000]
    assert await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}") == []


async def test_a_refused_partial_offer_becomes_a_return_with_a_full_refund(ts_env, pool, case_worker, gateway_sandbox,
                                                                           party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    await handle.signal(CaseWorkflow.attachments_added, 1)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=seller(party), decision="partial_refund", partial_amount_cents=3000))
    await wait_stage(handle, Stage.awaiting_customer_answer)
    with pytest.raises(WorkflowUpdateFailedError) as err:  # only the customer answers
        await handle.execute_update(CaseWorkflow.answer_offer, OfferAnswer(actor=seller(party), accept=True))
    assert err.value.cause.type == "Forbidden"
    answer = await handle.execute_update(CaseWorkflow.answer_offer, OfferAnswer(
        actor=customer(party), accept=False, note="I want my money back."))
    assert answer.stage == Stage.awaiting_return_label
    await issue_label(handle, party)
    await ship(handle, party)
    await deliver(ts_env, handle)
    await wait_stage(handle, Stage.awaiting_refund_activation)
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.outcome, final.refunded_cents, final.wallet_credited_cents) == (Outcome.refunded, order_total(), 0)


async def test_a_partial_offer_left_unanswered_goes_to_care(ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    await handle.signal(CaseWorkflow.attachments_added, 1)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=seller(party), decision="partial_refund", partial_amount_cents=3000))
    s = await wait_stage(handle, Stage.awaiting_customer_answer)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)
    assert "did not answer the partial refund offer" in s.escalation_reason
    assert await mail_with(mail_sink, party["customer_email"], "Reminder: a partial refund")


async def test_warranty_never_refunds_and_impossible_repair_goes_to_care(ts_env, pool, case_worker, gateway_sandbox,
                                                                         party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    for decision in ("refund", "partial_refund"):
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
                actor=seller(party), decision=decision, partial_amount_cents=100))
        assert err.value.cause.type == "InvalidAction"
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(party), decision="repair"))
    await walk_to_received(ts_env, handle, party)
    await wait_stage(handle, Stage.awaiting_outbound_shipment)
    await handle.execute_update(CaseWorkflow.declare_impossible, SimpleAction(
        actor=seller(party), note="No spare parts, no stock."))
    s = await wait_stage(handle, Stage.awaiting_care)
    assert s.escalated and "impossible" in s.escalation_reason
    await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=AGENT, resolution=CareResolution.force_refund, reason="Repair and exchange impossible."))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded


# ------------------------------------------------------------------------------------ deadlines
async def test_photos_deadline_expires_the_claim(ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.defect)
    s = await wait_stage(handle, Stage.awaiting_photos)
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    final = await handle.result()
    assert final.outcome == Outcome.expired
    assert await mail_with(mail_sink, party["customer_email"], "closed (expired)")
    subjects = [m["subject"] for m in mails_to(mail_sink, party["customer_email"])]
    assert "Reminder: add photos to your claim" in subjects and any("closed (expired)" in x for x in subjects)


async def test_claim_seller_silent_escalates(ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty)
    s = await wait_stage(handle, Stage.awaiting_seller_decision)
    await jump_to(ts_env, s.deadline - timedelta(hours=1))
    assert not (await state(handle)).escalated
    assert await mail_with(mail_sink, party["seller_email"], "Reminder")
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_stage(handle, Stage.awaiting_care)
    assert s.escalated
    assert await mail_with(mail_sink, CARE, handle.id)
    await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=AGENT, resolution=CareResolution.close, reason="Handled by phone with the customer."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


async def test_label_deadline_reminds_then_escalates_and_the_label_still_counts(ts_env, pool, case_worker, mail_sink,
                                                                                party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    s = await wait_stage(handle, Stage.awaiting_return_label)
    await jump_to(ts_env, s.deadline - timedelta(hours=1))
    s2 = await state(handle)
    assert not s2.escalated
    assert await mail_with(mail_sink, party["seller_email"], "Reminder: return label")
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s2 = await wait_for(handle, lambda s: s.escalated)
    assert s2.stage == Stage.awaiting_return_label and "return label" in s2.escalation_reason
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)


async def test_label_missing_renotifies_then_escalates_on_the_second_report(ts_env, pool, case_worker, mail_sink,
                                                                            party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await handle.execute_update(CaseWorkflow.report_label_missing, SimpleAction(actor=customer(party)))
    await wait_for(handle, lambda s: s.stage == Stage.awaiting_return_label)
    seller_mails = lambda: [m for m in mails_to(mail_sink, party["seller_email"]) if "has no return label" in m["subject"]]  # noqa
    for _ in range(100):
        if seller_mails():
            break
        await __import__("asyncio").sleep(0.05)
    assert len(seller_mails()) == 1
    assert not (await state(handle)).escalated
    await handle.execute_update(CaseWorkflow.report_label_missing, SimpleAction(actor=customer(party)))
    s = await wait_for(handle, lambda s: s.escalated)
    assert "missing 2 times" in s.escalation_reason
    assert len(seller_mails()) == 2


async def test_shipment_deadline_reminds_customer_then_expires(ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    s = await wait_stage(handle, Stage.awaiting_shipment)
    assert s.deadline - await ts_env.get_current_time() > timedelta(days=13)
    await jump_to(ts_env, s.deadline - timedelta(hours=24))
    assert (await state(handle)).stage == Stage.awaiting_shipment
    assert await mail_with(mail_sink, party["customer_email"], "Reminder: ship your return")
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    final = await handle.result()
    assert final.outcome == Outcome.expired
    assert await mail_with(mail_sink, party["customer_email"], "has expired")


@pytest.mark.parametrize("on_behalf", [True, False])
async def test_refund_activation_missed(ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, on_behalf, task_queue):
    policy = Policy(marketplace_refunds_on_seller_behalf=on_behalf)
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal, policy=policy)
    await walk_to_received(ts_env, handle, party)
    s = await wait_stage(handle, Stage.awaiting_refund_activation)
    await jump_to(ts_env, s.deadline - timedelta(hours=1))
    assert await mail_with(mail_sink, party["seller_email"], "Reminder: activate the refund")
    assert not (await state(handle)).escalated
    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    if on_behalf:
        s = await wait_stage(handle, Stage.awaiting_bank_settlement)
        assert s.escalated and "on the seller's behalf" in s.escalation_reason
    else:
        s = await wait_for(handle, lambda s: s.escalated)
        assert s.stage == Stage.awaiting_refund_activation
        assert await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}") == []
        await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
            actor=AGENT, resolution=CareResolution.force_refund, reason="Seller unresponsive."))
        await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1


async def test_care_extends_the_label_deadline(ts_env, pool, case_worker, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    s = await wait_stage(handle, Stage.awaiting_return_label)
    answer = await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=AGENT, resolution=CareResolution.extend_deadline, reason="Seller on holiday.", extend_hours=48))
    assert answer.stage == Stage.awaiting_return_label
    s2 = await state(handle)
    assert s2.deadline == s.deadline + timedelta(hours=48)
    await jump_to(ts_env, s.deadline + timedelta(hours=2))
    assert not (await state(handle)).escalated  # the old deadline no longer fires
    await jump_to(ts_env, s2.deadline + timedelta(minutes=1))
    assert (await wait_for(handle, lambda s: s.escalated)).stage == Stage.awaiting_return_label


# ------------------------------------------------------------------------------------ wrong actions
async def test_duplicate_and_out_of_order_actions_change_nothing(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)

    async def refused(update, arg, error_type):
        before = await state(handle)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(update, arg)
        assert err.value.cause.type == error_type
        assert (await state(handle)).stage == before.stage

    await refused(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)), "WrongStage")  # before shipment
    await refused(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)), "WrongStage")
    other = Actor(role=Role.seller, id="seller_someone_else")
    await refused(CaseWorkflow.issue_return_label, LabelRequest(
        actor=other, carrier="UPS", tracking_number="X1234", label_url="https://x.example/l"), "Forbidden")
    await issue_label(handle, party)
    await refused(CaseWorkflow.issue_return_label, LabelRequest(
        actor=seller(party), carrier="UPS", tracking_number="X1234", label_url="https://x.example/l"), "WrongStage")
    await ship(handle, party)
    await wait_stage(handle, Stage.in_transit)
    await deliver(ts_env, handle)
    await deliver(ts_env, handle, event_id="evt-dup")  # a duplicate carrier event is harmless
    await wait_stage(handle, Stage.awaiting_refund_activation)
    await refused(CaseWorkflow.activate_refund, SimpleAction(actor=other), "Forbidden")
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await refused(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)), "WrongStage")
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1


async def test_customer_withdraws_while_waiting_for_shipment(ts_env, pool, case_worker, party, task_queue):
    await asyncio.wait_for(_withdraw_while_waiting_for_shipment(ts_env, pool, task_queue, party), 90)


async def _withdraw_while_waiting_for_shipment(ts_env, pool, task_queue, party):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)
    answer = await handle.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(party), note="Keeping it."))
    assert answer.stage == Stage.closed and answer.outcome == Outcome.withdrawn
    assert (await handle.result()).outcome == Outcome.withdrawn
