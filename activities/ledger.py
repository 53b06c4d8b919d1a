"""The money ledger of an order (migrations/004_order_ledger.sql; docs/rules.md, section 4).

Every money step reserves its amount against the order's refundable remainder in the caller's
transaction, under a lock on the order row, before it asks the gateway or credits the wallet:
concurrent cases or retries on one order cannot overdraw it. Entries are keyed by the step's own
idempotency key, so a retried step finds its entry instead of reserving twice.
"""
from __future__ import annotations

from temporalio.exceptions import ApplicationError

# The typed, non-retryable refusal of a step that would take more than the order has left.
MONEY_EXCEEDS_PAID = "MoneyExceedsPaid"
COUNTS_AGAINST_PAID = ("card_refund", "wallet_credit")


def paid_cents(order) -> int:
    """Items + delivery fee, from an orders row."""
    return sum(line["quantity"] * line["unit_price_cents"] for line in order["lines"]) + order["delivery_fee_cents"]


async def remainder(conn, order_id: str, paid: int | None = None) -> int:
    """What can still be refunded on the order (no lock: for display and opening checks). `paid`: what
    the order paid, when the caller has just read the order (its row is then not read again)."""
    if paid is None:
        order = await conn.fetchrow("SELECT lines, delivery_fee_cents FROM orders WHERE order_id = $1", order_id)
        if order is None:
            return 0
        paid = paid_cents(order)
    return paid - await _money_out(conn, order_id)


async def _money_out(conn, order_id: str) -> int:
    return await conn.fetchval(
        "SELECT coalesce(sum(amount_cents), 0) FROM order_ledger WHERE order_id = $1 AND kind = ANY($2::text[]) "
        "AND state <> 'failed'", order_id, list(COUNTS_AGAINST_PAID))


async def reserve(conn, *, order_id: str, case_id: str | None, kind: str, key: str, cents: int, currency: str,
                  reason: str, state: str = "reserved", at_most_remainder: bool = False):
    """Enters a money step (inside the caller's transaction). Returns its ledger row — the existing one
    when the key was entered before (a retry). Raises MoneyExceedsPaid (non-retryable) when it would
    take more than what is left; with `at_most_remainder` it takes what is left, at most `cents`
    (MoneyExceedsPaid when nothing is)."""
    order = await conn.fetchrow("SELECT lines, delivery_fee_cents FROM orders WHERE order_id = $1 FOR UPDATE",
                                order_id)
    if order is None:
        raise ApplicationError(f"unknown order {order_id}", type="UnknownOrder", non_retryable=True)
    existing = await conn.fetchrow("SELECT * FROM order_ledger WHERE idempotency_key = $1", key)
    if existing is not None:
        return existing
    if kind in COUNTS_AGAINST_PAID:
        left = paid_cents(order) - await _money_out(conn, order_id)
        if at_most_remainder and left > 0:
            cents = min(cents, left)
        if cents > left:
            raise ApplicationError(f"{cents} cents exceed what is left to refund on order {order_id} ({left})",
                                   {"left_cents": left}, type=MONEY_EXCEEDS_PAID, non_retryable=True)
    return await conn.fetchrow(
        """INSERT INTO order_ledger (order_id, case_id, kind, state, amount_cents, currency, idempotency_key, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        order_id, case_id, kind, state, cents, currency, key, reason)


async def set_state(conn, key: str, state: str, failure_reason: str | None = None) -> None:
    """A step's outcome. A failed step no longer counts against the paid; a final state stays final."""
    await conn.execute(
        """UPDATE order_ledger SET state = $2, failure_reason = coalesce($3, failure_reason), updated_at = now()
           WHERE idempotency_key = $1 AND state NOT IN ('succeeded', 'failed')""", key, state, failure_reason)


async def apply_refund_status(conn, gateway_refund_id: str, status: str, failure_reason: str | None) -> None:
    """A card refund's status as the gateway reports it (webhook or look-up): refunds row and ledger."""
    key = await conn.fetchval(
        """UPDATE refunds SET status = $2, failure_reason = coalesce($3, failure_reason), updated_at = now()
           WHERE gateway_refund_id = $1 RETURNING idempotency_key""", gateway_refund_id, status, failure_reason)
    if key is not None and status in ("succeeded", "failed", "canceled"):
        await set_state(conn, key, "succeeded" if status == "succeeded" else "failed", failure_reason)
