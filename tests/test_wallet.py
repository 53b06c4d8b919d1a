"""Wallet ledger, partial refunds and payouts: exactly once, never below zero."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.wallet import balances
from domain.models import Actor, GatewayEvent, PayoutStage, Role, WalletCredit, Money
from domain.policy import Policy
from starter.service import Forbidden, Invalid
from starter.wallet import request_payout, validate_bank_account
from tests.helpers.data import make_party
from tests.helpers.cases import STARTED, jump_to, mail_with, mails_to
from workflows.payout import PayoutWorkflow

IBAN_FR = "FR1420041010050500013M02606"
IBAN_DE = "DE89370400440532013000"


async def credit(pool, customer_id, cents, key):
    from activities.wallet import WalletActivities
    from activities import db

    db.set_pool(pool)
    await WalletActivities().credit_wallet(WalletCredit(idempotency_key=key, customer_id=customer_id,
                                                        amount=Money(cents=cents), reason="test credit"))


async def wallet_of(pool, customer_id) -> dict:
    async with pool.acquire() as conn:
        return await balances(conn, customer_id)


async def payout(ts_env, pool, task_queue, party, cents, key=None, iban=IBAN_FR, bic=None):
    actor = Actor(role=Role.customer, id=party["customer_id"])
    view, created = await request_payout(pool, ts_env.client, task_queue, Policy(), actor, amount_cents=cents,
                                         account_holder="Alice Martin", iban=iban, bic=bic, idempotency_key=key)
    STARTED.append(ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"]))
    return view, created


async def transfers_at_gateway(gateway_url, payout_id=None) -> list[dict]:
    async with httpx.AsyncClient() as http:
        data = (await http.get(f"{gateway_url}/_sandbox/state")).json()
    return [t for t in data["transfers"] if payout_id is None or t["metadata"].get("payout_id") == payout_id]


async def wait_payout(ts_env, payout_id, stage: PayoutStage, timeout=15.0):
    handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, payout_id)
    for _ in range(int(timeout / 0.05)):
        try:
            s = await handle.query(PayoutWorkflow.get_state)
            if s and s.stage == stage:
                return s
        except Exception:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"payout never reached {stage}")


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("iban, bic, field", [
    ("FR1420041010050500013M02607", None, "iban"),       # bad checksum
    ("BR1800360305000010009795493C1", None, "iban"),     # valid, but outside SEPA
    ("FR14200410100505000", None, "iban"),               # wrong length
    ("FR1420041010050500013M0260X", None, "iban"),       # letter in the wrong place
    (IBAN_FR, "DEUTDEFF", "bic"),                        # BIC of another country
    (IBAN_FR, "BN!AFRPP", "bic"),                        # malformed BIC
])
def test_invalid_bank_accounts_name_the_field(iban, bic, field):
    with pytest.raises(Invalid) as err:
        validate_bank_account(iban, bic)
    assert err.value.extra["field"] == field


def test_valid_accounts_are_normalised():
    assert validate_bank_account("fr14 2004 1010 0505 0001 3m02 606", "BNPAFRPP") == (IBAN_FR, "BNPAFRPP")
    assert validate_bank_account(IBAN_DE, None) == (IBAN_DE, None)


# ------------------------------------------------------------------------------ holds
async def test_amount_above_the_balance_and_other_roles_are_refused(ts_env, pool, case_worker, task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 1000, f"{party['customer_id']}:c1")
    with pytest.raises(Invalid) as err:
        await payout(ts_env, pool, task_queue, party, 1001)
    assert err.value.extra["field"] == "amount_cents"
    with pytest.raises(Forbidden):
        await request_payout(pool, ts_env.client, task_queue, Policy(), Actor(role=Role.seller, id=party["seller_id"]),
                             amount_cents=10, account_holder="x y", iban=IBAN_FR, bic=None, idempotency_key=None)
    assert (await wallet_of(pool, party["customer_id"]))["available_cents"] == 1000


async def test_concurrent_payouts_never_overdraw(ts_env, pool, case_worker, task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 1000, f"{party['customer_id']}:c1")
    results = await asyncio.gather(*[payout(ts_env, pool, task_queue, party, 300, key=f"k{i}") for i in range(8)],
                                   return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Invalid)]
    assert len(accepted) == 3 and len(refused) == 5
    w = await wallet_of(pool, party["customer_id"])
    assert w["available_cents"] == 100 and w["held_cents"] == 900 and w["balance_cents"] == 1000


# ------------------------------------------------------------------------------ payout workflow
async def test_payout_settled_on_day_three(ts_env, pool, case_worker, gateway_sandbox, mail_sink, task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 5000, f"{party['customer_id']}:c1")
    view, created = await payout(ts_env, pool, task_queue, party, 4000, key="p1", bic="PSSTFRPP")
    assert created and view["iban"].endswith("2606") and IBAN_FR not in str(view)
    again, created_again = await payout(ts_env, pool, task_queue, party, 4000, key="p1", bic="PSSTFRPP")
    assert not created_again and again["payout_id"] == view["payout_id"]
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement)
    assert s.expected_by == Policy().payout_settlement_deadline(await ts_env.get_current_time())
    await ts_env.sleep(timedelta(days=3))
    handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"])
    await handle.signal(PayoutWorkflow.gateway_event, GatewayEvent(object_id=s.transfer_id, status="succeeded"))
    final = await handle.result()
    assert final.stage == PayoutStage.settled and not final.escalated
    w = await wallet_of(pool, party["customer_id"])
    assert (w["balance_cents"], w["available_cents"], w["held_cents"]) == (1000, 1000, 0)
    assert len(await transfers_at_gateway(gateway_sandbox.url, view["payout_id"])) == 1
    sent = await mail_with(mail_sink, party["customer_email"], "transfer of 40.00 EUR")
    assert sent and IBAN_FR not in sent[0]["body"] and "2606" in sent[0]["body"]


async def test_payout_not_settled_after_five_business_days_alerts_care(ts_env, pool, case_worker, mail_sink, task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 2000, f"{party['customer_id']}:c1")
    view, _ = await payout(ts_env, pool, task_queue, party, 2000, key="p-late")
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement)
    await jump_to(ts_env, s.expected_by - timedelta(hours=1))
    assert not any(view["payout_id"] in m["subject"] for m in mails_to(mail_sink, "care@marketplace.example"))
    await jump_to(ts_env, s.expected_by + timedelta(minutes=1))
    handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"])
    for _ in range(200):
        if (await handle.query(PayoutWorkflow.get_state)).escalated:
            break
        await asyncio.sleep(0.05)
    assert (await handle.query(PayoutWorkflow.get_state)).escalated
    assert await mail_with(mail_sink, "care@marketplace.example", view["payout_id"])
    # Still nothing from the bank by care's deadline: care is told again (the payout never waits on nobody).
    await jump_to(ts_env, Policy().care_deadline(s.expected_by + timedelta(minutes=1)) + timedelta(minutes=1))
    for _ in range(200):
        if len(await mail_with(mail_sink, "care@marketplace.example", view["payout_id"])) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(await mail_with(mail_sink, "care@marketplace.example", view["payout_id"])) == 2


async def test_payout_whose_settlement_event_is_lost_is_looked_up_at_its_deadline(ts_env, pool, case_worker,
                                                                                  gateway_sandbox, mail_sink,
                                                                                  task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 2000, f"{party['customer_id']}:c1")
    async with httpx.AsyncClient() as http:
        await http.post(f"{gateway_sandbox.url}/_sandbox/faults", json={"mode": "no_event", "count": 1})
    view, _ = await payout(ts_env, pool, task_queue, party, 2000, key="p-lost-event")
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement)
    async with httpx.AsyncClient() as http:  # the bank pays; the event never comes
        settled = (await http.post(f"{gateway_sandbox.url}/_sandbox/settle/{s.transfer_id}")).json()
    assert settled["status"] == "settled"
    await jump_to(ts_env, s.expected_by + timedelta(minutes=1))
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.settled)
    assert not s.escalated
    assert not any(view["payout_id"] in m["subject"] for m in mails_to(mail_sink, "care@marketplace.example"))


async def test_payout_rejected_puts_the_money_back(ts_env, pool, case_worker, mail_sink, task_queue):
    party = await make_party(pool)
    await credit(pool, party["customer_id"], 2500, f"{party['customer_id']}:c1")
    view, _ = await payout(ts_env, pool, task_queue, party, 2500, key="p-rej")
    s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement)
    assert (await wallet_of(pool, party["customer_id"]))["available_cents"] == 0
    handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"])
    await handle.signal(PayoutWorkflow.gateway_event, GatewayEvent(object_id=s.transfer_id, status="failed",
                                                                   failure_reason="account_closed"))
    assert (await handle.result()).stage == PayoutStage.rejected
    w = await wallet_of(pool, party["customer_id"])
    assert (w["available_cents"], w["held_cents"], w["balance_cents"]) == (2500, 0, 2500)
    assert await mail_with(mail_sink, party["customer_email"], "was rejected")


# ------------------------------------------------------------------------------ ledger property
OPS = st.lists(st.tuples(st.sampled_from(["credit", "payout", "settle", "reject", "fail_next"]),
                         st.integers(min_value=1, max_value=3000)), min_size=1, max_size=12)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS)
async def test_ledger_property_any_sequence_with_failures_and_retries(ts_env, pool, case_worker, gateway_sandbox, ops, task_queue):
    """Credits, payouts, settlements and rejections in any order, with the gateway failing calls (the
    activities retry): balance = credits − settled payouts, never below zero; one transfer per payout."""
    party = await make_party(pool)
    cid = party["customer_id"]
    credited = settled = 0
    pending: list[tuple[str, int, str]] = []
    async with httpx.AsyncClient() as http:
        for i, (op, amount) in enumerate(ops):
            if op == "credit":
                await credit(pool, cid, amount, f"{cid}:credit:{i}")
                await credit(pool, cid, amount, f"{cid}:credit:{i}")  # a retried credit writes once
                credited += amount
            elif op == "fail_next":
                await http.post(f"{gateway_sandbox.url}/_sandbox/faults",
                                json={"mode": "accept_then_error" if amount % 2 else "error", "count": 1})
            elif op == "payout":
                try:
                    view, _ = await payout(ts_env, pool, task_queue, party, amount, key=f"{i}")
                except Invalid:
                    continue
                s = await wait_payout(ts_env, view["payout_id"], PayoutStage.awaiting_bank_settlement, timeout=30)
                pending.append((view["payout_id"], amount, s.transfer_id))
            elif pending:
                payout_id, cents, transfer_id = pending.pop(0)
                handle = ts_env.client.get_workflow_handle_for(PayoutWorkflow.run, payout_id)
                ok = op == "settle"
                await handle.signal(PayoutWorkflow.gateway_event, GatewayEvent(
                    object_id=transfer_id, status="succeeded" if ok else "failed", failure_reason=None if ok else "x"))
                await handle.result()
                settled += cents if ok else 0
            w = await wallet_of(pool, cid)
            assert w["available_cents"] >= 0 and w["held_cents"] >= 0
        await http.post(f"{gateway_sandbox.url}/_sandbox/faults", json={"mode": "none"})
    w = await wallet_of(pool, cid)
    assert w["balance_cents"] == credited - settled
    assert w["held_cents"] == sum(c for _, c, _ in pending)
    for payout_id, _, _ in pending:
        assert len(await transfers_at_gateway(gateway_sandbox.url, payout_id)) == 1


async def test_card_refund_refused_for_good_falls_back_to_the_wallet(ts_env, pool, case_worker, gateway_sandbox,
                                                                      mail_sink, task_queue):
    from tests.helpers.data import make_order, order_total
    from tests.helpers.cases import settle_refund, start_case, wait_stage
    from domain.models import Outcome, Stage

    party = await make_party(pool)
    order_id = await make_order(pool, party, "paid")
    handle = await start_case(ts_env, pool, task_queue, order_id)
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    # The bank reports the card closed: the gateway's refund ends "failed".
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}", status="failed")
    final = await handle.result()
    assert (final.outcome, final.wallet_credited_cents, final.refunded_cents) == (
        Outcome.refunded_to_wallet, order_total(), 0)
    w = await wallet_of(pool, party["customer_id"])
    assert w["available_cents"] == order_total()
    # French (the customer's default locale); the payout emails above stay English (workflows/payout.py).
    closing = await mail_with(mail_sink, party["customer_email"], "est close (remboursée sur le porte-monnaie)")
    assert closing and "n'a pas pu être remboursée" in closing[0]["body"] and "porte-monnaie" in closing[0]["body"]
