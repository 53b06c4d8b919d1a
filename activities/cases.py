"""Case activities: every side effect of a case workflow. Each one is idempotent, so Temporal may retry it.

- record_case_events: timeline rows keyed by (case_id, seq) + read-model upsert guarded by last_seq
- notify: email (and the seller's signed webhook) once per message key
- set_order_status: compare-and-set on the order's status
- refund_card: one gateway refund per idempotency key, reserved in the order's ledger first (never
  more than paid), looked up before it is created
- refundable_cents, lookup_refund: the order's remainder; a refund's status fetched from the gateway
  (reconciliation when its settlement event is late)
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import db, ledger
from activities.mail import Mailer, message_id, text_message
from activities.metrics import count_case_event
from activities.gateway_client import GatewayClient, GatewayPermanentError
from config import Settings
from starter import i18n
from domain.models import (
    Notification,
    OrderStatusChange,
    OrderStatusResult,
    RefundRequest,
    RefundResult,
    Role,
    TimelineEvent,
)

# Error types the workflows handle (never retried).
REFUND_REJECTED = "RefundRejected"  # details: {"code": the gateway's error code}
REFUND_EXCEEDS_PAID = ledger.MONEY_EXCEEDS_PAID


def sign_webhook(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The seller webhook signature: `t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, tolerance_seconds: int = 300) -> bool:
    """Checks a `t=...,v1=...` signature made by sign_webhook; an old timestamp (a replay) fails."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - t) > tolerance_seconds:
        return False
    expected = sign_webhook(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class Recipient:
    email: str
    webhook_url: str | None
    webhook_secret: str | None
    locale: str
    sent: bool  # the message went already on the channel asked


# A customer's or seller's address and locale, with the status of the message on a channel ($2, $3).
_RECIPIENT = {
    Role.customer: """SELECT c.email, NULL AS webhook_url, NULL AS webhook_secret, c.locale, m.status
                      FROM customers c LEFT JOIN sent_messages m ON m.message_key = $2 AND m.channel = $3
                      WHERE c.customer_id = $1""",
    Role.seller: """SELECT s.email, s.webhook_url, s.webhook_secret, s.locale, m.status
                    FROM sellers s LEFT JOIN sent_messages m ON m.message_key = $2 AND m.channel = $3
                    WHERE s.seller_id = $1""",
}
_SENT_STATUS = "SELECT status FROM sent_messages WHERE message_key = $1 AND channel = $2"
# A message that went ($7 'sent') or an attempt that failed ('pending'); `attempts` counts the tries after
# the first. Sent stays sent; an erased row keeps its erased recipient and body.
_RECORD = """INSERT INTO sent_messages (message_key, channel, recipient, subject, body, case_id, status, sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7 = 'sent' THEN now() END)
             ON CONFLICT (message_key, channel) DO UPDATE SET
                 attempts = sent_messages.attempts + 1, status = EXCLUDED.status, sent_at = EXCLUDED.sent_at
             WHERE sent_messages.status <> 'sent'"""


def rendered(n: Notification, locale: str) -> Notification:
    """The message in the recipient's locale (a keyed text), or as written (the payout's)."""
    if n.text is None:
        return n
    subject, body = i18n.render_message(n.text, n.params, locale)
    return n.model_copy(update={"subject": subject, "body": body})


class CaseActivities:
    def __init__(self, settings: Settings, gateway: GatewayClient | None = None,
                 http: httpx.AsyncClient | None = None):
        self.settings = settings
        self.gateway = gateway or GatewayClient(settings.gateway_url, settings.gateway_api_key)
        self.http = http or httpx.AsyncClient(timeout=10)
        self.mailer = Mailer(settings.smtp_host, settings.smtp_port)

    def all(self) -> list:
        return [self.record_case_events, self.notify, self.deliver_seller_webhook, self.set_order_status,
                self.refund_card, self.refundable_cents, self.lookup_refund]

    @activity.defn
    async def record_case_events(self, events: list[TimelineEvent]) -> None:
        """Timeline rows (the case batches the events of one step) and the read model at the last of
        them, in one statement, atomic by itself: each row once (case_id, seq), the read model never
        behind (last_seq). One round trip instead of a transaction's four or more. The row the API inserted
        is updated in place; an upsert would run the view's trigger twice (for the insert it tries, then
        for the update), so the insert runs only for a case with no row yet (a race with another insert
        still ends in the upsert)."""
        s, last = events[-1].state, events[-1]
        pool = await db.get_pool()
        inserted = await pool.fetch(
            """WITH timeline AS (
                   INSERT INTO case_timeline (case_id, seq, at, event, detail)
                   SELECT $1, * FROM unnest($12::int[], $13::timestamptz[], $14::text[], $15::jsonb[])
                   ON CONFLICT (case_id, seq) DO NOTHING
                   RETURNING seq),
               updated AS (
                   UPDATE cases SET stage = $6, outcome = $7, state = $8, last_seq = $9, updated_at = now(),
                                    closed_at = CASE WHEN $6 = 'closed' THEN $10::timestamptz END
                   WHERE case_id = $1 AND last_seq < $9),
               inserted AS (
                   INSERT INTO cases (case_id, order_id, kind, customer_id, seller_id, stage, outcome, state,
                                      last_seq, opened_at, closed_at, updated_at)
                   SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $11,
                          CASE WHEN $6 = 'closed' THEN $10::timestamptz END, now()
                   WHERE NOT EXISTS (SELECT 1 FROM cases WHERE case_id = $1)
                   ON CONFLICT (case_id) DO UPDATE SET
                       stage = EXCLUDED.stage, outcome = EXCLUDED.outcome, state = EXCLUDED.state,
                       last_seq = EXCLUDED.last_seq, updated_at = now(),
                       closed_at = CASE WHEN EXCLUDED.stage = 'closed' THEN $10::timestamptz END
                   WHERE cases.last_seq < EXCLUDED.last_seq)
               SELECT seq FROM timeline""",
            s.case_id, s.order_id, s.kind.value, s.customer_id, s.seller_id, s.stage.value,
            s.outcome.value if s.outcome else None, s.model_dump(mode="json"), last.seq, last.at, events[0].at,
            [ev.seq for ev in events], [ev.at for ev in events], [ev.event for ev in events],
            [ev.detail for ev in events],
        )
        new = {r["seq"] for r in inserted}
        for ev in events:
            if ev.seq in new:
                count_case_event(ev)

    @activity.defn
    async def notify(self, n: Notification) -> bool:
        """Sends the email; True when the recipient is a seller with a webhook to call as well (the
        workflow then delivers it separately, so a failing seller endpoint never holds the case)."""
        pool = await db.get_pool()
        to = await self._recipient(pool, n, "email")
        if to.sent:
            return bool(to.webhook_url)
        n = rendered(n, to.locale)
        headers = {"Message-ID": message_id(n.message_key)}
        if n.case_id:
            headers["X-Case-Id"] = n.case_id
        await self._sending(pool, n, "email", to.email,
                            self.mailer.send(text_message(self.settings.mail_from, to.email, n.subject, n.body, headers)))
        return bool(to.webhook_url)

    @activity.defn
    async def deliver_seller_webhook(self, n: Notification) -> None:
        pool = await db.get_pool()
        to = await self._recipient(pool, n, "webhook")
        if to.webhook_url and not to.sent:
            n = rendered(n, to.locale)
            await self._sending(pool, n, "webhook", to.webhook_url,
                                self._post_webhook(n, to.webhook_url, to.webhook_secret or "", to.locale))

    async def _recipient(self, pool, n: Notification, channel: str) -> Recipient:
        """Who the message goes to (email, webhook, locale; care reads the marketplace's default, French)
        and whether it went already on `channel` (a retry, a replayed step): one read."""
        if n.recipient_role == Role.agent:
            status = await pool.fetchval(_SENT_STATUS, n.message_key, channel)
            return Recipient(self.settings.care_email, None, None, i18n.DEFAULT_LOCALE, status == "sent")
        row = await pool.fetchrow(_RECIPIENT[n.recipient_role], n.recipient_id, n.message_key, channel)
        if row is None:
            raise ApplicationError(f"unknown {n.recipient_role.value} {n.recipient_id}", type="UnknownRecipient",
                                   non_retryable=True)
        return Recipient(row["email"], row["webhook_url"], row["webhook_secret"], row["locale"], row["status"] == "sent")

    async def _sending(self, pool, n: Notification, channel: str, recipient: str, send) -> None:
        """Awaits `send` (the email or webhook going out), then records the message as sent; a failed
        attempt is recorded as pending (with the attempts) and raises, for Temporal to retry it. A message
        is recorded once it went, not claimed before: one write per message instead of two. Its row,
        once erased (starter/erasure.py), keeps its erased recipient and body."""
        try:
            await send
        except BaseException:
            with contextlib.suppress(Exception):  # the send's own error is the one to retry on
                await pool.execute(_RECORD, n.message_key, channel, recipient, n.subject, n.body, n.case_id,
                                   "pending")
            raise
        await pool.execute(_RECORD, n.message_key, channel, recipient, n.subject, n.body, n.case_id, "sent")

    async def _post_webhook(self, n: Notification, url: str, secret: str, locale: str) -> None:
        body = json.dumps({
            "id": n.message_key, "message_key": n.message_key, "event": n.event or "case.updated",
            "case_id": n.case_id, "text": n.text, "locale": locale,
            "subject": n.subject, "message": n.body,
        }).encode()
        resp = await self.http.post(url, content=body, headers={
            "Content-Type": "application/json",
            "X-Aftersales-Signature": sign_webhook(secret, body),
            "Idempotency-Key": n.message_key,
        })
        if resp.status_code >= 300:
            raise RuntimeError(f"seller webhook answered {resp.status_code}")  # retried by Temporal

    @activity.defn
    async def set_order_status(self, change: OrderStatusChange) -> OrderStatusResult:
        """Compare-and-set: moves the order to `new` only from one of `expected`. Repeating it is harmless."""
        pool = await db.get_pool()
        row = await pool.fetchrow(
            """UPDATE orders SET status = $2, updated_at = now()
               WHERE order_id = $1 AND status = ANY($3::text[]) RETURNING status""",
            change.order_id, change.new.value, [s.value for s in change.expected],
        )
        if row is not None:
            return OrderStatusResult(applied=True, status=change.new)
        current = await pool.fetchval("SELECT status FROM orders WHERE order_id = $1", change.order_id)
        if current is None:
            raise ApplicationError(f"unknown order {change.order_id}", type="UnknownOrder", non_retryable=True)
        # Already at the target (a retry after success) counts as applied.
        return OrderStatusResult(applied=current == change.new.value, status=current)

    @activity.defn
    async def refund_card(self, req: RefundRequest) -> RefundResult:
        """The refund, reserved in the order's ledger in the same transaction as its row, then asked of
        the gateway once (looked up by its key first). The status at creation counts: a refund can be
        `succeeded` (or `failed`) at once."""
        pool = await db.get_pool()
        async with pool.acquire() as conn, conn.transaction():
            entry = await ledger.reserve(conn, order_id=req.order_id, case_id=req.case_id, kind="card_refund",
                                         key=req.idempotency_key, cents=req.amount.cents,
                                         currency=req.amount.currency, reason=req.reason,
                                         at_most_remainder=req.at_most_remainder)
            cents = entry["amount_cents"]
            # The refund's row is written in the transaction that enters its ledger entry: a new entry has none.
            existing = None if entry["new"] else await conn.fetchrow(
                "SELECT * FROM refunds WHERE idempotency_key = $1", req.idempotency_key)
            if existing is None:
                await conn.execute(
                    """INSERT INTO refunds (idempotency_key, case_id, order_id, payment_intent, amount_cents, currency)
                       VALUES ($1, $2, $3, $4, $5, $6)""",
                    req.idempotency_key, req.case_id, req.order_id, req.payment_intent,
                    cents, req.amount.currency)
            elif existing["gateway_refund_id"]:
                return RefundResult(refund_id=existing["gateway_refund_id"], status=existing["status"],
                                    failure_reason=existing["failure_reason"], amount_cents=cents)
            elif entry["state"] == "failed":  # refused for good before: the same answer again
                raise ApplicationError(f"gateway refused the refund: {entry['failure_reason']}",
                                       {"code": entry["failure_reason"]}, type=REFUND_REJECTED, non_retryable=True)
        # A row inserted just now: no attempt before this one reached the gateway (each writes the row and
        # commits before asking), so there is no refund to look up by its key first.
        ask = self.gateway.create_refund if existing is None else self.gateway.refund_once
        try:
            refund = await ask(
                payment_intent=req.payment_intent, amount_cents=cents,
                currency=req.amount.currency, idempotency_key=req.idempotency_key,
                metadata={"case_id": req.case_id, "workflow_id": req.workflow_id, "order_id": req.order_id},
            )
        except GatewayPermanentError as e:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("UPDATE refunds SET status = 'failed', failure_reason = $2, updated_at = now() "
                                   "WHERE idempotency_key = $1", req.idempotency_key, e.code or str(e))
                await ledger.set_state(conn, req.idempotency_key, "failed", e.code or str(e))
            raise ApplicationError(f"gateway refused the refund: {e}", {"code": e.code}, type=REFUND_REJECTED,
                                   non_retryable=True)
        await ledger.apply_refund_status(pool, refund["id"], refund["status"], refund.get("failure_reason"),
                                         key=req.idempotency_key)
        activity.logger.info("refund %s of %s cents accepted by the gateway (%s)", refund["id"], cents,
                             refund["status"])
        return RefundResult(refund_id=refund["id"], status=refund["status"], failure_reason=refund.get("failure_reason"),
                            amount_cents=cents)

    @activity.defn
    async def refundable_cents(self, order_id: str) -> int:
        """What is left to refund on the order (paid − card refunds not failed − wallet credits)."""
        pool = await db.get_pool()
        async with pool.acquire() as conn:
            return await ledger.remainder(conn, order_id)

    @activity.defn
    async def lookup_refund(self, refund_id: str) -> RefundResult:
        """The refund as the gateway has it now (its settlement event may have been lost), applied to the
        refunds row and the ledger."""
        refund = await self.gateway.get_refund(refund_id)
        pool = await db.get_pool()
        await ledger.apply_refund_status(pool, refund_id, refund["status"], refund.get("failure_reason"))
        return RefundResult(refund_id=refund_id, status=refund["status"], failure_reason=refund.get("failure_reason"))
