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


def left(paid: int, money_out: int) -> int:
    """The refundable remainder: what the order paid less what counts against it (MONEY_OUT)."""
    return paid - money_out


async def remainder(conn, order_id: str) -> int:
    """What can still be refunded on the order (no lock: for display and the case's own checks)."""
    order = await conn.fetchrow("SELECT lines, delivery_fee_cents FROM orders WHERE order_id = $1", order_id)
    if order is None:
        return 0
    return left(paid_cents(order), await _money_out(conn, order_id))


# What counts against the paid: card refunds not failed and wallet credits (the order, the kinds: parameters).
MONEY_OUT = ("SELECT coalesce(sum(amount_cents), 0) FROM order_ledger WHERE order_id = {order} "
             "AND kind = ANY({kinds}::text[]) AND state <> 'failed'")


async def _money_out(conn, order_id: str) -> int:
    return await conn.fetchval(MONEY_OUT.format(order="$1", kinds="$2"), order_id, list(COUNTS_AGAINST_PAID))


async def reserve(conn, *, order_id: str, case_id: str | None, kind: str, key: str, cents: int, currency: str,
                  reason: str, state: str = "reserved", at_most_remainder: bool = False):
    """Enters a money step (inside the caller's transaction). Returns its ledger entry as a dict, `new`
    False when the key was entered before (a retry: the existing entry). Raises MoneyExceedsPaid
    (non-retryable) when it would take more than what is left; with `at_most_remainder` it takes what is
    left, at most `cents` (MoneyExceedsPaid when nothing is)."""
    order = await conn.fetchrow("SELECT lines, delivery_fee_cents FROM orders WHERE order_id = $1 FOR UPDATE",
                                order_id)
    if order is None:
        raise ApplicationError(f"unknown order {order_id}", type="UnknownOrder", non_retryable=True)
    # Read once the lock is held (a statement of its own: its snapshot then holds what the step before
    # ours committed): this key's entry, if any, and the money out.
    seen = await conn.fetchrow(
        f"""SELECT (SELECT to_jsonb(l) FROM order_ledger l WHERE idempotency_key = $2) AS existing,
                   ({MONEY_OUT.format(order="$1", kinds="$3")}) AS out""", order_id, key, list(COUNTS_AGAINST_PAID))
    if seen["existing"] is not None:
        return {**seen["existing"], "new": False}
    if kind in COUNTS_AGAINST_PAID:
        remaining = left(paid_cents(order), seen["out"])
        if at_most_remainder and remaining > 0:
            cents = min(cents, remaining)
        if cents > remaining:
            raise ApplicationError(f"{cents} cents exceed what is left to refund on order {order_id} ({remaining})",
                                   {"left_cents": remaining}, type=MONEY_EXCEEDS_PAID, non_retryable=True)
    entry = await conn.fetchrow(
        """INSERT INTO order_ledger (order_id, case_id, kind, state, amount_cents, currency, idempotency_key, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
        order_id, case_id, kind, state, cents, currency, key, reason)
    return {**entry, "new": True}


# A step's final states: once there, it stays (a late or repeated report changes nothing).
FINAL_STATES = ("succeeded", "failed")


# A card refund's final gateway statuses → the ledger state each ends it in.
_FINAL_BY_STATUS = {"succeeded": "succeeded", "failed": "failed", "canceled": "failed"}


def final_state(gateway_status: str) -> str | None:
    """The ledger state a card refund's gateway status ends it in; None while it is under way."""
    return _FINAL_BY_STATUS.get(gateway_status)


async def set_state(conn, key: str, state: str, failure_reason: str | None = None) -> None:
    """A step's outcome. A failed step no longer counts against the paid; a final state stays final."""
    await conn.execute(
        """UPDATE order_ledger SET state = $2, failure_reason = coalesce($3, failure_reason), updated_at = now()
           WHERE idempotency_key = $1 AND state <> ALL($4::text[])""", key, state, failure_reason, list(FINAL_STATES))


async def apply_refund_status(conn, gateway_refund_id: str, status: str, failure_reason: str | None,
                              key: str | None = None) -> None:
    """A card refund's status as the gateway reports it (webhook, look-up, creation): its refunds row and,
    when final, its ledger entry, in one statement (atomic by itself, no transaction needed). `key`: the
    refund's idempotency key when the gateway has just created it: its row is found by key and takes the
    gateway's id, and its entry becomes `made` unless the status is final already. `conn`: a connection
    (inside the caller's transaction) or the pool. A row whose status is final keeps it, as its entry
    keeps its state: the gateway's events are not ordered (a stale "succeeded" after "failed")."""
    found_by = "gateway_refund_id" if key is None else "idempotency_key"  # two statements, each on its index
    await conn.execute(
        f"""WITH refund AS (
               UPDATE refunds SET status = $2, failure_reason = coalesce($3, failure_reason), updated_at = now(),
                                  gateway_refund_id = $1
               WHERE {found_by} = $4 AND status <> ALL($7::text[]) RETURNING idempotency_key)
           UPDATE order_ledger SET state = $5, failure_reason = coalesce($3, order_ledger.failure_reason),
                                   updated_at = now()
           FROM refund WHERE order_ledger.idempotency_key = refund.idempotency_key AND $5::text IS NOT NULL
                         AND order_ledger.state <> ALL($6::text[])""",
        gateway_refund_id, status, failure_reason, gateway_refund_id if key is None else key,
        final_state(status) or ("made" if key else None), list(FINAL_STATES), list(_FINAL_BY_STATUS))
