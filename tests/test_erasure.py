"""Erasure of a customer's personal data through the API, against the real database: refused while a case
or payout is open (409 with the stage), agents only; afterwards nothing personal is left in the read model,
the messages, the payouts and the attachments, and the money ledger is untouched."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from activities.wallet import add_entry, ensure_wallet
from starter.auth import create_token
from tests.helpers.data import make_order, make_party
from tests.helpers.servers import api_stack
from tests.test_hostile_input import JPEG

DESCRIPTION = "The screen of my phone flickers since my trip to Lisbon."
NOTE = "I bought another one, call me at 06 12 34 56 78."
IBAN = "FR1420041010050500013M02606"


@pytest.fixture(scope="module")
async def api(api_env, pool, test_settings, tmp_path_factory):
    photos = tmp_path_factory.mktemp("erasure") / "attachments"
    async with api_stack(api_env.client, test_settings, "aftersales-erasure-test", attachments_dir=str(photos)) as (
            served, _, _):
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            client.photos = photos
            async with pool.acquire() as conn:
                client.agent = await create_token(conn, "agent", "care_erasure")
            yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def until(fetch, predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while not predicate(value := await fetch()):
        assert time.monotonic() < end, f"never reached: {value}"
        await asyncio.sleep(0.1)
    return value


async def ledger_of(pool, customer_id: str) -> list:
    return [tuple(r) for r in await pool.fetch(
        """SELECT 'order', l.order_id, l.case_id, l.kind, l.state, l.amount_cents, l.idempotency_key FROM order_ledger l
             JOIN orders o USING (order_id) WHERE o.customer_id = $1
           UNION ALL SELECT 'wallet', payout_id, case_id, kind, '', amount_cents, idempotency_key FROM wallet_entries
             WHERE customer_id = $1 ORDER BY 7""", customer_id)]


async def test_erasure_after_the_cases_closed_keeps_the_ledger(api, pool):
    party = await make_party(pool)
    customer, cid = bearer(party["customer_token"]), party["customer_id"]
    erase = f"/v1/customers/{cid}/erasure"
    # A defect claim with a photo, still open; a cancellation refunded in full; a payout on its way.
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    r = await api.post(f"/v1/orders/{order_id}/help-requests", headers=customer,
                       json={"kind": "defect", "category": "screen", "description": DESCRIPTION})
    defect = r.json()["case_id"]
    await until(lambda: pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", defect),
                lambda s: s == "awaiting_photos")
    r = await api.post(f"/v1/cases/{defect}/attachments", headers=customer, files={"file": ("me.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 201, r.text
    [photo] = list(api.photos.rglob("*.jpg"))
    paid = await make_order(pool, party, "paid")
    cancellation = (await api.post(f"/v1/orders/{paid}/help-requests", headers=customer,
                                   json={"kind": "cancellation"})).json()["case_id"]
    async with pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, cid)
        await add_entry(conn, customer_id=cid, kind="credit", cents=5000, currency="EUR", key=f"{cid}:erasure",
                        reason="test credit")
    r = await api.post("/v1/wallet/payouts", headers=customer,
                       json={"amount_cents": 2000, "account_holder": "Zoé Erasable", "iban": IBAN, "bic": "PSSTFRPP"})
    payout_id = r.json()["payout_id"]

    # Refused while anything is open, and to anyone but an agent.
    assert (await api.post(erase)).status_code == 401
    for role in ("customer_token", "seller_token"):
        assert (await api.post(erase, headers=bearer(party[role]))).status_code == 403
    assert (await api.post("/v1/customers/cust_nobody/erasure", headers=bearer(api.agent))).status_code == 404
    r = await api.post(erase, headers=bearer(api.agent))
    assert r.status_code == 409 and r.json()["stage"] != "closed", r.text

    # Everything closes: the defect withdrawn with a note, the refund and the payout settled by the sandbox.
    r = await api.post(f"/v1/cases/{defect}/withdraw", headers=customer, json={"note": NOTE})
    assert r.status_code == 200, r.text
    for case_id in (defect, cancellation):
        await until(lambda: pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id),
                    lambda s: s == "closed")
    await until(lambda: pool.fetchval("SELECT stage FROM payouts WHERE payout_id = $1", payout_id),
                lambda s: s == "settled")
    ledger = await ledger_of(pool, cid)
    assert len(ledger) >= 4  # card refund, credit, hold, debit

    r = await api.post(erase, headers=bearer(api.agent))
    assert r.status_code == 200, r.text
    assert (r.json()["cases"], r.json()["payouts"], r.json()["photos_deleted"]) == (2, 1, 1)

    # Nothing personal left in the read model, the messages, the payouts, the attachments.
    dump = ""
    for query in (
        "SELECT * FROM customers WHERE customer_id = $1",
        "SELECT * FROM cases WHERE customer_id = $1",
        "SELECT t.* FROM case_timeline t JOIN cases c USING (case_id) WHERE c.customer_id = $1",
        "SELECT m.* FROM sent_messages m WHERE m.case_id IN (SELECT case_id FROM cases WHERE customer_id = $1) "
        "OR m.case_id IN (SELECT payout_id FROM payouts WHERE customer_id = $1)",
        "SELECT * FROM payouts WHERE customer_id = $1",
        "SELECT a.* FROM attachments a JOIN cases c USING (case_id) WHERE c.customer_id = $1",
    ):
        dump += " ".join(str(dict(row)) for row in await pool.fetch(query, cid))
    for personal in (party["customer_email"], "Test Customer", DESCRIPTION, NOTE, "Zoé", "2606", "me.jpg", "enc:"):
        assert personal not in dump, personal
    assert "[erased]" in dump and not photo.exists()
    # The ledger, the stages and outcomes are intact; an agent still reads the cases.
    assert await ledger_of(pool, cid) == ledger
    view = (await api.get(f"/v1/cases/{cancellation}", headers=bearer(api.agent))).json()
    assert (view["stage"], view["outcome"], view["refunded_cents"]) == ("closed", "refunded", 24900 + 599)
    # Again: nothing more to erase, same answer.
    again = await api.post(erase, headers=bearer(api.agent))
    assert again.status_code == 200 and again.json()["erased_at"] == r.json()["erased_at"]


async def test_the_retention_purge_finds_customers_closed_long_enough_ago(pool, test_settings, tmp_path):
    from starter.erasure import due_for_erasure, erase

    old, recent, still_open = [await make_party(pool) for _ in range(3)]
    for party, closed_days_ago in ((old, 1200), (recent, 10), (still_open, None)):
        order_id = await make_order(pool, party, "paid")
        await pool.execute(
            """INSERT INTO cases (case_id, order_id, kind, customer_id, seller_id, stage, state, closed_at)
               VALUES ($1, $2, 'cancellation', $3, $4, $5, '{}', now() - make_interval(days => $6))""",
            f"case_{order_id}", order_id, party["customer_id"], party["seller_id"],
            "closed" if closed_days_ago else "opening", closed_days_ago)
    due = await due_for_erasure(pool, 1095)
    assert old["customer_id"] in due and recent["customer_id"] not in due and still_open["customer_id"] not in due
    await erase(pool, old["customer_id"], str(tmp_path))
    assert old["customer_id"] not in await due_for_erasure(pool, 1095)  # erased once
    assert recent["customer_id"] in await due_for_erasure(pool, 5)
