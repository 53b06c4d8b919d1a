"""Wallet and payouts for the API: validation (schwifty), the hold under a row lock, the workflow start."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import asyncpg
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities.wallet import add_entry, balances, ensure_wallet, seal_bank_details
from codec import KeyRing, keyring
from domain.models import Actor, Money, PayoutInput, Role
from domain.policy import Policy
from starter.service import Conflict, Forbidden, Invalid, NotFound
from workflows import search_attributes as sa
from workflows.payout import PayoutWorkflow


def validate_bank_account(iban_text: str, bic_text: str | None) -> tuple[str, str | None]:
    """Normalised (IBAN, BIC), or Invalid naming the field: checksum/format, SEPA zone, BIC of the IBAN's country."""
    try:
        iban = IBAN(iban_text)
    except SchwiftyException as e:
        raise Invalid(f"invalid IBAN: {e}", field="iban")
    if not iban.in_sepa_zone:
        raise Invalid(f"the IBAN's country ({iban.country_code}) is outside the SEPA zone", field="iban")
    bic_value = None
    if bic_text:
        try:
            bic = BIC(bic_text)
        except SchwiftyException as e:
            raise Invalid(f"invalid BIC: {e}", field="bic")
        if bic.country_code != iban.country_code:
            raise Invalid(f"the BIC ({bic.country_code}) does not match the IBAN's country ({iban.country_code})",
                          field="bic")
        bic_value = str(bic)
    return str(iban.compact), bic_value


async def wallet_view(pool: asyncpg.Pool, customer_id: str) -> dict:
    async with pool.acquire() as conn:
        view = await balances(conn, customer_id)
        view["currency"] = "EUR"
        view["entries"] = [
            {"kind": r["kind"], "amount_cents": r["amount_cents"], "currency": r["currency"], "reason": r["reason"],
             "payout_id": r["payout_id"], "case_id": r["case_id"], "at": r["created_at"].isoformat()}
            for r in await conn.fetch("SELECT * FROM wallet_entries WHERE customer_id = $1 ORDER BY entry_id",
                                      customer_id)]
        view["payouts"] = [payout_view(r) for r in await conn.fetch(
            "SELECT * FROM payouts WHERE customer_id = $1 ORDER BY created_at DESC", customer_id)]
    return view


def payout_view(row) -> dict:
    return {"payout_id": row["payout_id"], "amount_cents": row["amount_cents"], "currency": row["currency"],
            "iban": row["iban_masked"], "account_holder": row["holder_masked"], "stage": row["stage"],
            "expected_by": row["expected_by"].isoformat() if row["expected_by"] else None,
            "failure_reason": row["failure_reason"], "created_at": row["created_at"].isoformat()}


async def get_payout(pool, actor: Actor, payout_id: str) -> dict:
    row = await pool.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
    if row is None:
        raise NotFound(f"payout {payout_id} not found")
    # (role, id) together: a seller or agent id equal to a customer id is not that customer.
    if actor.role != Role.agent and (actor.role != Role.customer or actor.id != row["customer_id"]):
        raise Forbidden("this payout is not yours")
    return payout_view(row)


async def request_payout(pool: asyncpg.Pool, temporal: Client, task_queue: str, policy: Policy, actor: Actor, *,
                         amount_cents: int, account_holder: str, iban: str, bic: str | None,
                         idempotency_key: str | None, keys: KeyRing | None = None) -> tuple[dict, bool]:
    """Holds the amount and starts the payout workflow. The same Idempotency-Key returns the same payout.
    The bank details are stored sealed (keys: the settings' CODEC_KEYS) and never enter Temporal."""
    if actor.role != Role.customer:
        raise Forbidden("only customers pay out their own wallet")
    iban, bic = validate_bank_account(iban, bic)
    seed = idempotency_key or f"{datetime.now(timezone.utc).isoformat()}:{iban}:{amount_cents}"
    payout_id = "po_" + hashlib.sha256(f"{actor.id}:{seed}".encode()).hexdigest()[:16]
    async with pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, actor.id)
        # The wallet row lock serialises payouts of one customer: two concurrent requests cannot both
        # pass the balance check.
        await conn.execute("SELECT 1 FROM wallets WHERE customer_id = $1 FOR UPDATE", actor.id)
        existing = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
        if existing is None:
            available = (await balances(conn, actor.id))["available_cents"]
            if amount_cents > available:
                raise Invalid(f"the amount exceeds the available balance ({available} cents)", field="amount_cents",
                              available_cents=available)
            bank = seal_bank_details(keys or keyring(), payout_id, account_holder, iban, bic)
            await conn.execute(
                """INSERT INTO payouts (payout_id, customer_id, amount_cents, currency, account_holder, iban, bic,
                                        iban_masked, holder_masked, stage)
                   VALUES ($1, $2, $3, 'EUR', $4, $5, $6, $7, $8, 'requested')""",
                payout_id, actor.id, amount_cents, bank["account_holder"], bank["iban"], bank["bic"],
                bank["iban_masked"], bank["holder_masked"])
            await add_entry(conn, customer_id=actor.id, kind="hold", cents=amount_cents, currency="EUR",
                            key=f"{payout_id}:hold", reason="payout requested", payout_id=payout_id)
        row = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
    if row["customer_id"] != actor.id:
        raise Conflict("idempotency key already used", stage=row["stage"])
    inp = PayoutInput(payout_id=payout_id, customer_id=actor.id, amount=Money(cents=row["amount_cents"]),
                      iban_masked=row["iban_masked"], policy=policy)
    await temporal.start_workflow(
        PayoutWorkflow.run, inp, id=payout_id, task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.CASE_KIND, "payout"),
                                                 SearchAttributePair(sa.CUSTOMER_ID, actor.id)]),
        static_summary=f"Wallet payout {row['amount_cents'] / 100:.2f} EUR · customer {actor.id} → {row['iban_masked']}")
    return payout_view(row), existing is None
