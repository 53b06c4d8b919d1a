"""Test data in the real database: parties and orders, each test with its own fresh ids."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

from starter.auth import create_token


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


async def make_party(pool, *, seller_webhook_url: str | None = None, seller_webhook_secret: str | None = None,
                     locale: str = "fr") -> dict:
    """A customer and a seller with tokens, both reading `locale` (French, the default, or English).
    Returns ids, emails and tokens."""
    customer, seller = new_id("cust"), new_id("seller")
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO customers VALUES ($1, $2, $3)", customer, "Test Customer", f"{customer}@example.com")
        await conn.execute("INSERT INTO sellers VALUES ($1, $2, $3, $4, $5)", seller, "Test Seller",
                           f"{seller}@example.com", seller_webhook_url, seller_webhook_secret)
        await conn.execute("UPDATE customers SET locale = $2 WHERE customer_id = $1", customer, locale)
        await conn.execute("UPDATE sellers SET locale = $2 WHERE seller_id = $1", seller, locale)
        return {
            "customer_id": customer, "seller_id": seller,
            "customer_email": f"{customer}@example.com", "seller_email": f"{seller}@example.com",
            "customer_token": await create_token(conn, "customer", customer),
            "seller_token": await create_token(conn, "seller", seller),
        }


async def make_order(pool, party: dict, status: str, *, delivered_at: datetime | None = None,
                     unit_price_cents: int = 24900, delivery_fee_cents: int = 599) -> str:
    order_id = new_id("ord")
    lines = [{"sku": "IPH13-128-BLK", "title": "iPhone 13 128 GB, refurbished, very good",
              "quantity": 1, "unit_price_cents": unit_price_cents}]
    await pool.execute(
        """INSERT INTO orders (order_id, customer_id, seller_id, status, lines, delivery_fee_cents, payment_intent,
                               created_at, delivered_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        order_id, party["customer_id"], party["seller_id"], status, lines, delivery_fee_cents,
        f"pi_{order_id}", (delivered_at or datetime.now(timezone.utc)) - timedelta(days=3), delivered_at)
    return order_id


def order_total(unit_price_cents: int = 24900, delivery_fee_cents: int = 599) -> int:
    return unit_price_cents + delivery_fee_cents


def dumps(value) -> str:
    return json.dumps(value, default=str)
