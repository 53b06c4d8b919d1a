"""Bulk test data in one SQL statement per table: customers, sellers, their bearer tokens, orders.

Each batch has its own prefix, so every case of the benchmark is opened on a fresh order.
Tokens are `bench-<prefix>-c<i>` / `bench-<prefix>-s<i>` (stored hashed, like starter.auth does).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

LINES = json.dumps([{"sku": "IPH13-128-BLK", "title": "iPhone 13 128 GB, refurbished, very good",
                     "quantity": 1, "unit_price_cents": 24900}])
AGENT_TOKEN = "bench-agent"


@dataclass(frozen=True)
class SeededOrder:
    order_id: str
    customer_id: str
    customer_token: str
    seller_token: str


async def seed_agent(pool) -> str:
    await pool.execute(
        """INSERT INTO api_tokens (token_sha256, role, subject_id)
           VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), 'agent', 'agent_bench') ON CONFLICT DO NOTHING""",
        AGENT_TOKEN)
    return AGENT_TOKEN


async def seed_orders(pool, prefix: str, count: int, status: str, *, per_customer: int = 5,
                      sellers: int = 20) -> list[SeededOrder]:
    """`count` orders in `status` (delivered ones: delivered yesterday), one customer per `per_customer`
    orders, spread over `sellers` sellers."""
    customers = max(1, -(-count // per_customer))
    sellers = max(1, min(sellers, count))
    now = datetime.now(timezone.utc)
    delivered_at = now - timedelta(days=1) if status == "delivered" else None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO customers (customer_id, name, email)
               SELECT $1 || '_c' || i, 'Bench customer ' || i, $1 || '_c' || i || '@bench.example'
               FROM generate_series(0, $2 - 1) AS i""", f"b{prefix}", customers)
        await conn.execute(
            """INSERT INTO sellers (seller_id, name, email)
               SELECT $1 || '_s' || i, 'Bench seller ' || i, $1 || '_s' || i || '@bench.example'
               FROM generate_series(0, $2 - 1) AS i""", f"b{prefix}", sellers)
        await conn.execute(
            """INSERT INTO api_tokens (token_sha256, role, subject_id)
               SELECT encode(sha256(convert_to('bench-' || $1 || '-c' || i, 'UTF8')), 'hex'), 'customer', $2 || '_c' || i
               FROM generate_series(0, $3 - 1) AS i
               UNION ALL
               SELECT encode(sha256(convert_to('bench-' || $1 || '-s' || i, 'UTF8')), 'hex'), 'seller', $2 || '_s' || i
               FROM generate_series(0, $4 - 1) AS i""", prefix, f"b{prefix}", customers, sellers)
        await conn.execute(
            """INSERT INTO orders (order_id, customer_id, seller_id, status, lines, delivery_fee_cents, payment_intent,
                                   created_at, delivered_at)
               SELECT $1 || '_o' || i, $1 || '_c' || (i / $2), $1 || '_s' || (i % $3), $4, $5::text::jsonb, 599,
                      'pi_' || $1 || '_o' || i, $6::timestamptz, $7::timestamptz
               FROM generate_series(0, $8 - 1) AS i""",
            f"b{prefix}", per_customer, sellers, status, LINES, (delivered_at or now) - timedelta(days=3),
            delivered_at, count)
    return [SeededOrder(f"b{prefix}_o{i}", f"b{prefix}_c{i // per_customer}", f"bench-{prefix}-c{i // per_customer}",
                        f"bench-{prefix}-s{i % sellers}") for i in range(count)]
