"""An order's money as a whole: one ledger (order_ledger), never more out than paid, whatever the cases,
channels, retries, concurrency and gateway behaviours. Workflows run on the time-skipping server with
the real activities; the gateway sandbox plays each of Stripe's behaviours the case must handle."""
from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import ledger
from activities.cases import REFUND_REJECTED, CaseActivities
from activities.wallet import WalletActivities
from domain.models import (
    CareRequest,
    CareResolution,
    Money,
    Outcome,
    RefundRequest,
    Stage,
    WalletCredit,
)
from tests.helpers.cases import AGENT, closed_reason, refunds_at_gateway, start_case, state, wait_for, wait_stage
from tests.helpers.data import make_order, make_party, new_id, order_total
from tests.helpers.servers import api_stack
from workflows.case import CaseWorkflow

JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=")


async def fault(gateway_url: str, mode: str, count: int = 1, delay: float = 0) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{gateway_url}/_sandbox/faults", json={"mode": mode, "count": count,
                                                                    "delay_seconds": delay})
        r.raise_for_status()


@pytest.fixture(autouse=True)
async def no_faults_left(gateway_sandbox):
    yield
    await fault(gateway_sandbox.url, "none")


async def money_out(pool, order_id: str) -> int:
    async with pool.acquire() as conn:
        return order_total() - await ledger.remainder(conn, order_id)


# ---------------------------------------------------------------- the report's scenario, through the HTTP API
@pytest.fixture(scope="module")
async def api(api_env, pool, test_settings, tmp_path_factory):
    async with api_stack(api_env.client, test_settings, "aftersales-money-test", settle_after_seconds=0.3,
                         attachments_dir=str(tmp_path_factory.mktemp("attachments"))) as (served, sandbox, s):
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            client.sandbox_url = sandbox.url
            yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def until_stage(api, token: str, case_id: str, stage: str, timeout: float = 30) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        case = (await api.get(f"/v1/cases/{case_id}", headers=bearer(token))).json()
        if case["stage"] == stage or loop.time() > end:
            assert case["stage"] == stage, case
            return case
        await asyncio.sleep(0.05)


async def test_partial_refund_then_withdrawal_refunds_the_remainder_then_nothing_is_left(api, api_env, pool):
    party = await make_party(pool)
    customer, seller = bearer(party["customer_token"]), bearer(party["seller_token"])
    now = await api_env.get_current_time()
    # 392.90 + 6.99 delivery = 399.89 EUR paid, as ord_alice_delivered_yesterday.
    order_id = await make_order(pool, party, "delivered", delivered_at=now - timedelta(days=1),
                                unit_price_cents=39290, delivery_fee_cents=699)
    r = await api.post(f"/v1/orders/{order_id}/help-requests", headers=customer, json={
        "kind": "defect", "category": "cosmetic", "description": "A deep scratch across the back glass."})
    defect = r.json()["case_id"]
    assert r.status_code == 201, r.text
    await until_stage(api, party["customer_token"], defect, "awaiting_photos")
    r = await api.post(f"/v1/cases/{defect}/attachments", headers=customer, files={"file": ("back.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 201, r.text
    await until_stage(api, party["customer_token"], defect, "awaiting_seller_decision")
    r = await api.post(f"/v1/cases/{defect}/decision", headers=seller, json={
        "decision": "partial_refund", "partial_amount_cents": 3000, "reason": "A goodwill gesture for the scratch."})
    assert r.status_code == 200, r.text
    await until_stage(api, party["customer_token"], defect, "awaiting_customer_answer")  # an offer
    r = await api.post(f"/v1/cases/{defect}/offer-answer", headers=customer, json={"accept": True})
    assert r.status_code == 200, r.text
    closed = await until_stage(api, party["customer_token"], defect, "closed")
    assert (closed["outcome"], closed["wallet_credited_cents"]) == ("partially_refunded", 3000)

    r = await api.post(f"/v1/orders/{order_id}/help-requests", headers=customer, json={"kind": "withdrawal"})
    assert r.status_code == 201, r.text
    withdrawal = r.json()["case_id"]
    await until_stage(api, party["customer_token"], withdrawal, "awaiting_return_label")
    assert (await api.post(f"/v1/cases/{withdrawal}/return-label", headers=seller, json={
        "carrier": "Colissimo", "tracking_number": "6A0000000001", "label_url": "https://labels.example/1.pdf"})
            ).status_code == 200
    assert (await api.post(f"/v1/cases/{withdrawal}/shipment", headers=customer, json={
        "carrier": "Colissimo", "tracking_number": "6A0000000001"})).status_code == 200
    assert (await api.post(f"/v1/cases/{withdrawal}/receipt", headers=seller, json={})).status_code == 200
    assert (await api.post(f"/v1/cases/{withdrawal}/refund-activation", headers=seller, json={})).status_code == 200
    closed = await until_stage(api, party["customer_token"], withdrawal, "closed")
    assert (closed["outcome"], closed["refunded_cents"]) == ("refunded", 36989)
    why = closed_reason(closed, "fr").replace("\xa0", " ")  # the party reads French (the default)
    assert "déjà remboursés" in why and "le remboursement est donc de 369,89 €" in why
    assert [r["amount"] for r in await refunds_at_gateway(api.sandbox_url, f"pi_{order_id}")] == [36989]
    async with pool.acquire() as conn:
        assert await ledger.remainder(conn, order_id) == 0  # 30.00 + 369.89 = 399.89: all of it, no more

    r = await api.post(f"/v1/orders/{order_id}/help-requests", headers=customer, json={"kind": "withdrawal"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert (body["field"], body["reason"]) == ("kind", "already_refunded")
    assert "defect" in body["still_possible"]  # an exchange or a repair may still be claimed


# ---------------------------------------------------------------- the ledger under concurrency and at random
def refund_request(order_id: str, case_id: str, key: str, cents: int) -> RefundRequest:
    return RefundRequest(idempotency_key=key, case_id=case_id, workflow_id=case_id, order_id=order_id,
                         customer_id="unused", payment_intent=f"pi_{order_id}", amount=Money(cents=cents),
                         reason="test")


async def a_case_row(pool, party, order_id: str) -> str:
    """A read-model row for a case (refund rows reference it)."""
    from domain.models import CaseKind, CaseState

    case_id = new_id("case")
    state = CaseState(case_id=case_id, kind=CaseKind.withdrawal, order_id=order_id, customer_id=party["customer_id"],
                      seller_id=party["seller_id"], stage=Stage.closed)
    await pool.execute(
        """INSERT INTO cases (case_id, order_id, kind, customer_id, seller_id, stage, state, last_seq, opened_at, closed_at)
           VALUES ($1, $2, 'withdrawal', $3, $4, 'closed', $5, 0, now(), now())""",
        case_id, order_id, party["customer_id"], party["seller_id"], state.model_dump(mode="json"))
    return case_id


async def test_concurrent_refunds_and_credits_on_one_order_never_overdraw_it(pool, test_settings, gateway_sandbox):
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    acts, wallet, env = CaseActivities(test_settings), WalletActivities(), ActivityEnvironment()
    cases = [await a_case_row(pool, party, order_id) for _ in range(6)]
    # Six cases at once: three full card refunds, three wallet credits of 100.00.
    steps = [env.run(acts.refund_card, refund_request(order_id, c, f"{c}:refund:1", order_total())) for c in cases[:3]]
    steps += [env.run(wallet.credit_wallet, WalletCredit(
        idempotency_key=f"{c}:credit", customer_id=party["customer_id"], case_id=c, order_id=order_id,
        amount=Money(cents=10000), reason="test")) for c in cases[3:]]
    results = await asyncio.gather(*steps, return_exceptions=True)
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert all(r.type == ledger.MONEY_EXCEEDS_PAID for r in refused)
    assert len(results) - len(refused) >= 1
    async with pool.acquire() as conn:
        assert await ledger.remainder(conn, order_id) >= 0
    refunds = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    credits = await pool.fetchval("SELECT coalesce(sum(amount_cents), 0) FROM wallet_entries WHERE case_id = ANY($1)",
                                  cases)
    assert sum(r["amount"] for r in refunds) + credits <= order_total()


LEDGER_STEPS = st.lists(st.one_of(
    st.tuples(st.just("refund"), st.integers(1, order_total()), st.integers(0, 3)),  # amount, which key (retries)
    st.tuples(st.just("credit"), st.integers(1, order_total()), st.integers(0, 3)),
    st.tuples(st.just("fault"), st.sampled_from(["error", "accept_then_error", "charge_already_refunded",
                                                 "succeed_at_once", "invalid_api_key"])),
    st.tuples(st.just("settle"), st.sampled_from(["succeeded", "failed"]), st.booleans()),  # twice: a duplicate
), max_size=12)
LEDGER_RUNS = {"sequences": 0, "steps": 0}


async def test_a_stale_success_after_a_refund_failed_changes_neither_its_row_nor_its_entry(
        pool, test_settings, gateway_sandbox):
    """Gateway events are not ordered: a refund's "failed" may come before an older "succeeded". Once final,
    the refund's row keeps its status as its ledger entry keeps its state (the case property test met a
    row `succeeded` beside an entry `failed`, the order refunded again by care: more out than paid)."""
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    c = await a_case_row(pool, party, order_id)
    await ActivityEnvironment().run(CaseActivities(test_settings).refund_card,
                                    refund_request(order_id, c, f"{c}:refund", order_total()))
    [refund] = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    for status, reason in (("failed", "insufficient_funds"), ("succeeded", None)):
        await ledger.apply_refund_status(pool, refund["id"], status, reason)
    row = await pool.fetchrow("""SELECT r.status, r.failure_reason, l.state FROM refunds r
                                 JOIN order_ledger l USING (idempotency_key) WHERE r.idempotency_key = $1""",
                              f"{c}:refund")
    assert (row["status"], row["failure_reason"], row["state"]) == ("failed", "insufficient_funds", "failed")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=LEDGER_STEPS)
async def test_ledger_property_any_sequence_of_money_steps(pool, test_settings, gateway_sandbox, steps):
    """Card refunds and wallet credits of several cases on one order, retried under the same keys, with
    the gateway failing, losing answers, refusing (already refunded, bad key), settling at once, and
    settlement events failing or coming twice: money out (card refunds not failed + wallet credits)
    never exceeds what was paid; one gateway refund per refund row; each wallet credit once."""
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    acts, wallet, env = CaseActivities(test_settings), WalletActivities(), ActivityEnvironment()
    cases = [await a_case_row(pool, party, order_id) for _ in range(4)]
    LEDGER_RUNS["sequences"] += 1
    for step in steps:
        LEDGER_RUNS["steps"] += 1
        if step[0] == "fault":
            await fault(gateway_sandbox.url, step[1])
        elif step[0] == "refund":
            c = cases[step[2]]
            for attempt in range(3):  # Temporal retries what is not refused for good
                try:
                    await env.run(acts.refund_card, refund_request(order_id, c, f"{c}:refund", step[1]))
                    break
                except ApplicationError as e:
                    assert e.type in (ledger.MONEY_EXCEEDS_PAID, REFUND_REJECTED), e
                    break
                except Exception:  # noqa: BLE001 — a 5xx or a lost answer: retried
                    continue
        elif step[0] == "credit":
            c = cases[step[2]]
            try:
                await env.run(wallet.credit_wallet, WalletCredit(
                    idempotency_key=f"{c}:credit", customer_id=party["customer_id"], case_id=c, order_id=order_id,
                    amount=Money(cents=step[1]), reason="test"))
            except ApplicationError as e:
                assert e.type == ledger.MONEY_EXCEEDS_PAID
        elif step[0] == "settle":
            for refund in await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}"):
                for _ in range(2 if step[2] else 1):
                    async with pool.acquire() as conn, conn.transaction():
                        await ledger.apply_refund_status(conn, refund["id"], step[1], None if step[1] == "succeeded"
                                                         else "insufficient_funds")
        if step[0] != "fault":
            await fault(gateway_sandbox.url, "none")
        # The invariants, after every step.
        out = await pool.fetchval(
            "SELECT coalesce(sum(amount_cents), 0) FROM order_ledger WHERE order_id = $1 AND state <> 'failed' "
            "AND kind IN ('card_refund', 'wallet_credit')", order_id)
        assert out <= order_total()
        gateway = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
        rows = await pool.fetch("SELECT gateway_refund_id FROM refunds WHERE order_id = $1", order_id)
        assert len(gateway) <= len(rows)
        assert len({r["gateway_refund_id"] for r in rows if r["gateway_refund_id"]}) == \
            len([r for r in rows if r["gateway_refund_id"]])
        credits = await pool.fetch("SELECT idempotency_key FROM wallet_entries WHERE case_id = ANY($1)", cases)
        assert len(credits) == len({r["idempotency_key"] for r in credits}) <= len(cases)
        # A refund the gateway made: its entry is `made` while its status is pending, final once it is.
        for r in await pool.fetch(
                """SELECT r.status, l.state FROM refunds r JOIN order_ledger l USING (idempotency_key)
                   WHERE r.order_id = $1 AND r.gateway_refund_id IS NOT NULL""", order_id):
            assert (r["state"] in ledger.FINAL_STATES) == (ledger.final_state(r["status"]) is not None), dict(r)
            assert ledger.final_state(r["status"]) in (None, r["state"]), dict(r)
            assert r["state"] in (*ledger.FINAL_STATES, "made"), dict(r)
    await fault(gateway_sandbox.url, "none")


@pytest.fixture(scope="module", autouse=True)
def ledger_property_report():
    yield
    print(f"\nLEDGER PROPERTY: {LEDGER_RUNS}")  # quoted in the closing note


# ---------------------------------------------------------------- Stripe's behaviours, each to the case's right end
async def test_refund_succeeded_at_creation_closes_without_any_event(ts_env, pool, case_worker, gateway_sandbox,
                                                                     party, task_queue):
    await fault(gateway_sandbox.url, "succeed_at_once")
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    final = await asyncio.wait_for(handle.result(), 30)  # no settlement event is ever sent
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())
    assert await pool.fetchval("SELECT state FROM order_ledger WHERE case_id = $1", handle.id) == "succeeded"


async def test_a_lost_settlement_event_is_looked_up_at_the_deadline(ts_env, pool, case_worker, gateway_sandbox,
                                                                    party, task_queue):
    await fault(gateway_sandbox.url, "no_event")
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_bank_settlement)
    [refund] = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    async with httpx.AsyncClient() as http:  # the bank settles; the event is lost
        assert (await http.post(f"{gateway_sandbox.url}/_sandbox/settle/{refund['id']}")).json()["status"] == "succeeded"
    from tests.helpers.cases import jump_to

    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    final = await asyncio.wait_for(handle.result(), 30)
    assert (final.outcome, final.refunded_cents, final.escalated) == (Outcome.refunded, order_total(), False)


async def test_still_pending_at_the_deadline_escalates_and_is_looked_up_every_day(ts_env, pool, case_worker,
                                                                                  gateway_sandbox, party, task_queue):
    await fault(gateway_sandbox.url, "no_event")
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_bank_settlement)
    from tests.helpers.cases import jump_to, timeline

    await jump_to(ts_env, s.deadline + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert s.stage == Stage.awaiting_bank_settlement
    [refund] = await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")
    async with httpx.AsyncClient() as http:
        await http.post(f"{gateway_sandbox.url}/_sandbox/settle/{refund['id']}")
    await jump_to(ts_env, await ts_env.get_current_time() + timedelta(hours=25))  # the next daily look-up
    final = await asyncio.wait_for(handle.result(), 30)
    assert final.outcome == Outcome.refunded
    assert (await timeline(pool, handle.id)).count("refund_looked_up") >= 2


@pytest.mark.parametrize("mode, reason", [("charge_already_refunded", "charge_already_refunded"),
                                          ("invalid_api_key", "api_key_invalid")])
async def test_a_permanent_refusal_other_than_a_closed_card_goes_to_care_and_credits_nothing(
        mode, reason, ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    await fault(gateway_sandbox.url, mode)
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    s = await wait_stage(handle, Stage.awaiting_care)
    assert reason in s.escalation_reason and s.wallet_credited_cents == 0
    assert await pool.fetchval("SELECT count(*) FROM wallet_entries WHERE case_id = $1", handle.id) == 0
    assert await money_out(pool, order_id) == 0
    await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=AGENT, resolution=CareResolution.close, reason="Refunded by hand at the gateway."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


async def test_an_answer_slower_than_the_activity_timeout_still_refunds_once(ts_env, pool, case_worker,
                                                                             gateway_sandbox, party, task_queue):
    # The refund is made, its answer comes after the 30 s start-to-close: the retry finds it by its key.
    await fault(gateway_sandbox.url, "slow", delay=32)
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_bank_settlement, timeout=60)
    from tests.helpers.cases import settle_refund

    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.outcome, final.refunded_cents) == (Outcome.refunded, order_total())
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1


async def test_care_forced_refund_runs_once_per_decision(ts_env, pool, case_worker, gateway_sandbox, party, task_queue):
    await fault(gateway_sandbox.url, "invalid_api_key", count=100)  # every refund refused
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_care)
    for decision in (1, 2):
        await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
            actor=AGENT, resolution=CareResolution.force_refund, reason=f"Try again ({decision})."))
        await wait_for(handle, lambda s: s.stage == Stage.awaiting_care)
        await asyncio.sleep(0.5)  # would a loop start another attempt, it would show now
        attempts = await pool.fetchval("SELECT count(*) FROM refunds WHERE case_id = $1", handle.id)
        assert attempts == 1 + decision  # the first refund, then exactly one per care decision
    assert (await state(handle)).refunded_cents == 0
    await handle.execute_update(CaseWorkflow.care_resolve, CareRequest(
        actor=AGENT, resolution=CareResolution.close, reason="Refunded by bank transfer."))
    assert (await handle.result()).outcome == Outcome.closed_by_care


async def test_a_refund_looks_for_an_earlier_attempt_at_the_gateway_only_when_there_was_one(pool, test_settings,
                                                                                        gateway_sandbox):
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    case_id = await a_case_row(pool, party, order_id)
    acts, env = CaseActivities(test_settings), ActivityEnvironment()
    looked_up: list[str] = []
    find = acts.gateway.find_refund

    async def counting_find(payment_intent, key):
        looked_up.append(key)
        return await find(payment_intent, key)
    acts.gateway.find_refund = counting_find
    req = refund_request(order_id, case_id, f"{case_id}:refund:1", 5000)
    first = await env.run(acts.refund_card, req)
    assert looked_up == []  # the first attempt: nothing to look for
    # An attempt that reached the gateway but died before writing down the refund's id: the next one
    # finds that refund by its key instead of asking for a second.
    await pool.execute("UPDATE refunds SET gateway_refund_id = NULL WHERE idempotency_key = $1", req.idempotency_key)
    again = await env.run(acts.refund_card, req)
    assert looked_up == [req.idempotency_key] and again.refund_id == first.refund_id
    assert [r["id"] for r in await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")] == [first.refund_id]
