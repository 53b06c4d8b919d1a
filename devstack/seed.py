"""Demo data for the local stack: two customers, two sellers, a care agent, their bearer tokens and
orders in every status (and at every distance from delivery, so each kind of case can be tried).

Idempotent: every row has a fixed id and is inserted with ON CONFLICT DO NOTHING, so seeding again
changes nothing — including orders a demo has since moved on (a cancelled `ord_alice_paid` stays
cancelled). Dates are relative to the FIRST seeding: after a few weeks "delivered yesterday" is no
longer yesterday; `python -m devstack --reset` starts from fresh data.

    python -m devstack.seed            # seeds DATABASE_URL and prints the tokens
"""
from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timedelta, timezone

import asyncpg

# One implementation of the token hashing, shared with the API's authentication.
from starter.auth import create_token, hash_token

__all__ = ["seed", "hash_token", "create_token", "CUSTOMERS", "SELLERS", "DEMO_TOKENS", "SCENARIOS", "order_id"]

CUSTOMERS = [
    # customer_id, name, email, seller of their orders
    ("cust_alice", "Alice Martin", "alice@example.com", "seller_refurbco"),
    ("cust_bob", "Bob Durand", "bob@example.com", "seller_phonefix"),
]
SELLERS = [
    # seller_id, name, email, webhook_url, webhook_secret (no webhook: they are notified by email)
    ("seller_refurbco", "RefurbCo", "orders@refurbco.example", None, None),
    ("seller_phonefix", "PhoneFix Atelier", "support@phonefix.example", None, None),
]
DEMO_TOKENS = {
    "demo-customer-alice": ("customer", "cust_alice"),
    "demo-customer-bob": ("customer", "cust_bob"),
    "demo-seller-refurbco": ("seller", "seller_refurbco"),
    "demo-seller-phonefix": ("seller", "seller_phonefix"),
    "demo-agent-care": ("agent", "agent_care"),
}

_DAY = timedelta(days=1)
# scenario -> (order status, delivered this long ago or None, what the demo can do with it)
SCENARIOS: dict[str, tuple[str, timedelta | None, str]] = {
    "paid": ("paid", None, "cancellation, automatic"),
    "validated": ("validated", None, "cancellation, the seller decides"),
    "shipped": ("shipped", None, "cancellation refused (already shipped)"),
    "delivered_yesterday": ("delivered", _DAY, "defect claim (3 business days)"),
    "delivered_20d": ("delivered", 20 * _DAY, "withdrawal (30 days)"),
    "delivered_2mo": ("delivered", 60 * _DAY, "warranty (12 months)"),
    "delivered_3y": ("delivered", 3 * 365 * _DAY, "nothing possible any more"),
    "cancelled": ("cancelled", None, "nothing possible"),
}
# How long before now (or before delivery) each order was placed.
_PLACED_BEFORE = {"paid": timedelta(hours=2), "validated": _DAY, "shipped": 2 * _DAY, "cancelled": 6 * _DAY}

_PHONE = {
    "IPH13-128-MID-A": ("iPhone 13 128 GB Midnight, refurbished, excellent condition", 42900),
    "IPH12-64-BLU-B": ("iPhone 12 64 GB Blue, refurbished, very good condition", 29900),
    "SGS22-256-GRN-B": ("Samsung Galaxy S22 256 GB Green, refurbished, very good condition", 37900),
    "PIX7-128-SNW-A": ("Google Pixel 7 128 GB Snow, refurbished, excellent condition", 31900),
    "IPD9-64-SLV-B": ("iPad (9th gen) 64 GB Wi-Fi Silver, refurbished, very good condition", 26900),
}
_LAPTOP = {
    "MBA-M1-8-256-SG-C": ('MacBook Air 13" M1 8 GB / 256 GB Space Grey, refurbished, good condition', 64900),
    "X1C-G9-I7-16-512-B": ("Lenovo ThinkPad X1 Carbon Gen 9 i7 16 GB / 512 GB, refurbished, very good condition",
                           79900),
    "XPS13-9310-I5-8-256-A": ("Dell XPS 13 9310 i5 8 GB / 256 GB, refurbished, excellent condition", 58900),
}
_ACCESSORY = {
    "CHG-USBC-20W": ("20 W USB-C power adapter", 1490),
    "CASE-IPH13-CLR": ("Clear case for iPhone 13", 990),
    "SLV-13-GRY": ('13" laptop sleeve, grey', 1990),
}


def _line(sku: str, quantity: int = 1) -> dict:
    title, price = {**_PHONE, **_LAPTOP, **_ACCESSORY}[sku]
    return {"sku": sku, "title": title, "quantity": quantity, "unit_price_cents": price}


# (customer, scenario) -> (lines, delivery fee in cents)
_BASKETS: dict[tuple[str, str], tuple[list[dict], int]] = {
    ("cust_alice", "paid"): ([_line("IPH13-128-MID-A"), _line("CASE-IPH13-CLR")], 599),
    ("cust_alice", "validated"): ([_line("MBA-M1-8-256-SG-C")], 0),
    ("cust_alice", "shipped"): ([_line("PIX7-128-SNW-A")], 499),
    ("cust_alice", "delivered_yesterday"): ([_line("SGS22-256-GRN-B"), _line("CHG-USBC-20W")], 599),
    ("cust_alice", "delivered_20d"): ([_line("X1C-G9-I7-16-512-B"), _line("SLV-13-GRY")], 0),
    ("cust_alice", "delivered_2mo"): ([_line("IPH12-64-BLU-B")], 499),
    ("cust_alice", "delivered_3y"): ([_line("IPD9-64-SLV-B")], 499),
    ("cust_alice", "cancelled"): ([_line("XPS13-9310-I5-8-256-A")], 0),
    ("cust_bob", "paid"): ([_line("PIX7-128-SNW-A"), _line("CHG-USBC-20W")], 499),
    ("cust_bob", "validated"): ([_line("IPH12-64-BLU-B")], 599),
    ("cust_bob", "shipped"): ([_line("XPS13-9310-I5-8-256-A")], 0),
    ("cust_bob", "delivered_yesterday"): ([_line("IPH13-128-MID-A")], 999),
    ("cust_bob", "delivered_20d"): ([_line("IPD9-64-SLV-B"), _line("CHG-USBC-20W")], 499),
    ("cust_bob", "delivered_2mo"): ([_line("MBA-M1-8-256-SG-C"), _line("SLV-13-GRY")], 0),
    ("cust_bob", "delivered_3y"): ([_line("SGS22-256-GRN-B")], 599),
    ("cust_bob", "cancelled"): ([_line("CASE-IPH13-CLR", 2)], 399),
}


def order_id(customer_id: str, scenario: str) -> str:
    """`ord_alice_paid`, `ord_bob_delivered_20d`, ..."""
    return f"ord_{customer_id.removeprefix('cust_')}_{scenario}"


def _inserted(status: str) -> int:
    return int(status.split()[-1])  # "INSERT 0 1"


async def _seed(conn: asyncpg.Connection, now: datetime) -> dict:
    counts = {"customers": 0, "sellers": 0, "api_tokens": 0, "orders": 0}
    for seller_id, name, email, webhook_url, webhook_secret in SELLERS:
        counts["sellers"] += _inserted(await conn.execute(
            """INSERT INTO sellers (seller_id, name, email, webhook_url, webhook_secret) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT DO NOTHING""", seller_id, name, email, webhook_url, webhook_secret))
    for customer_id, name, email, _ in CUSTOMERS:
        counts["customers"] += _inserted(await conn.execute(
            "INSERT INTO customers (customer_id, name, email) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            customer_id, name, email))
    for token, (role, subject) in DEMO_TOKENS.items():
        counts["api_tokens"] += _inserted(await conn.execute(
            """INSERT INTO api_tokens (token_sha256, role, subject_id, expires_at) VALUES ($1, $2, $3, NULL)
               ON CONFLICT DO NOTHING""", hash_token(token), role, subject))

    by_scenario: dict[str, list[str]] = {s: [] for s in SCENARIOS}
    by_customer: dict[str, dict[str, str]] = {}
    for customer_id, _, _, seller_id in CUSTOMERS:
        for scenario, (status, delivered_ago, _) in SCENARIOS.items():
            oid = order_id(customer_id, scenario)
            lines, fee = _BASKETS[(customer_id, scenario)]
            delivered_at = now - delivered_ago if delivered_ago is not None else None
            created_at = delivered_at - 3 * _DAY if delivered_at is not None else now - _PLACED_BEFORE[scenario]
            # lines as JSON text cast in SQL: works whether or not the connection has a jsonb codec.
            counts["orders"] += _inserted(await conn.execute(
                """INSERT INTO orders (order_id, customer_id, seller_id, status, currency, lines, delivery_fee_cents,
                                       payment_intent, created_at, delivered_at, updated_at)
                   VALUES ($1, $2, $3, $4, 'EUR', $5::text::jsonb, $6, $7, $8::timestamptz, $9::timestamptz,
                           coalesce($9::timestamptz, $8::timestamptz))
                   ON CONFLICT DO NOTHING""",
                oid, customer_id, seller_id, status, json.dumps(lines), fee, f"pi_{oid}", created_at, delivered_at))
            by_scenario[scenario].append(oid)
            by_customer.setdefault(customer_id, {})[scenario] = oid
    return {
        "tokens": dict(DEMO_TOKENS),
        "orders": by_scenario,
        "orders_by_customer": by_customer,
        "inserted": counts,
    }


async def seed(pool_or_dsn: asyncpg.Pool | asyncpg.Connection | str, now: datetime | None = None) -> dict:
    """Inserts the demo data (idempotent) in one transaction. Returns
    {"tokens": {token: (role, subject_id)}, "orders": {scenario: [order ids]},
     "orders_by_customer": {customer_id: {scenario: order id}}, "inserted": {table: rows new this time}}.
    Scenarios: paid, validated, shipped, delivered_yesterday, delivered_20d, delivered_2mo, delivered_3y,
    cancelled (see SCENARIOS)."""
    now = now or datetime.now(timezone.utc)
    if isinstance(pool_or_dsn, str):
        conn = await asyncpg.connect(pool_or_dsn)
        try:
            async with conn.transaction():
                return await _seed(conn, now)
        finally:
            await conn.close()
    if isinstance(pool_or_dsn, asyncpg.Pool):
        async with pool_or_dsn.acquire() as conn, conn.transaction():
            return await _seed(conn, now)
    async with pool_or_dsn.transaction():
        return await _seed(pool_or_dsn, now)


def describe(result: dict) -> str:
    """The tokens and orders as text, for the launcher's banner."""
    lines = ["Demo tokens (Authorization: Bearer <token>):"]
    for token, (role, subject) in result["tokens"].items():
        lines.append(f"  {token:<24} {role:<8} {subject}")
    lines.append("Demo orders (the same for bob: ord_bob_*):")
    for scenario, (status, _, what) in SCENARIOS.items():
        lines.append(f"  {order_id('cust_alice', scenario):<30} {status:<10} {what}")
    return "\n".join(lines)


async def _main() -> None:
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit("DATABASE_URL is not set")
    result = await seed(dsn)
    print(describe(result))
    print("rows inserted:", result["inserted"])


if __name__ == "__main__":
    asyncio.run(_main())
