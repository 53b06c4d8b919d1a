"""Erasure of a customer's personal data (GDPR art. 17), by a care agent, once all their cases are closed.

Erased: the customer's name and email, the free texts of their cases (description, notes, reasons,
parcels and labels) in the read model and timeline, the messages sent about their cases and payouts
(recipient and body), their payouts' bank details, their photos (files and rows). Kept: the money
ledger (order ledger, refunds, wallet entries: amounts, ids, states), case and payout ids, stages,
outcomes and dates, which the law requires for accounting. Temporal's histories hold ciphertext only and
leave with the namespace's retention (README "Personal data"). Idempotent: erasing twice erases nothing more.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, HTTPException, Path as PathParam, Request

from domain.models import Role
from starter.auth import authenticate, bearer_token
from starter.service import Conflict, NotFound

router = APIRouter(tags=["personal data"])
ERASED = "[erased]"
# Timeline keys that may carry free text or a parcel (the rest: ids, stages, amounts, dates), and the
# read model's: emptied, so the case still reads as a case.
FREE_TEXT_KEYS = ["description", "note", "reason", "carrier", "tracking_number", "label_url"]
STATE_ERASED = {"escalation_reason": None, "closed_reason": None, "return_label_url": None, "tracking_numbers": []}
FINAL_PAYOUT_STAGES = ("settled", "rejected")


def include_erasure(app: FastAPI, attachments_dir: str) -> None:
    app.state.erasure_attachments_dir = attachments_dir
    app.include_router(router)


@router.post("/v1/customers/{customer_id}/erasure")
async def erase_customer(request: Request, customer_id: Annotated[str, PathParam(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")],
        authorization: Annotated[str | None, Header()] = None) -> dict:
    """Agent only. 409 (with the stage) while a case or a payout of the customer is still open."""
    pool = request.app.state.pool
    who = await authenticate(pool, bearer_token(authorization))
    if who.role != Role.agent:
        raise HTTPException(403, "only care agents erase personal data")
    return await erase(pool, customer_id, request.app.state.erasure_attachments_dir)


async def erase(pool, customer_id: str, attachments_dir: str) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        # The customer's row lock serialises two erasures, and an erasure with a payout request (which
        # locks the wallet, whose row references it).
        if await conn.fetchval("SELECT 1 FROM customers WHERE customer_id = $1 FOR UPDATE", customer_id) is None:
            raise NotFound(f"customer {customer_id} not found")
        open_case = await conn.fetchrow(
            "SELECT case_id, stage FROM cases WHERE customer_id = $1 AND closed_at IS NULL LIMIT 1", customer_id)
        if open_case:
            raise Conflict(f"case {open_case['case_id']} is still open: erase once all the customer's cases are closed",
                           stage=open_case["stage"], case_id=open_case["case_id"])
        open_payout = await conn.fetchrow(
            "SELECT payout_id, stage FROM payouts WHERE customer_id = $1 AND stage <> ALL($2::text[]) LIMIT 1",
            customer_id, list(FINAL_PAYOUT_STAGES))
        if open_payout:
            raise Conflict(f"payout {open_payout['payout_id']} is still under way", stage=open_payout["stage"],
                           payout_id=open_payout["payout_id"])
        case_ids = [r["case_id"] for r in await conn.fetch("SELECT case_id FROM cases WHERE customer_id = $1",
                                                           customer_id)]
        payout_ids = [r["payout_id"] for r in await conn.fetch("SELECT payout_id FROM payouts WHERE customer_id = $1",
                                                               customer_id)]
        erased_at = await conn.fetchval(
            """UPDATE customers SET name = $2, email = 'erased+' || customer_id || '@erased.invalid',
                      erased_at = coalesce(erased_at, now())
               WHERE customer_id = $1 RETURNING erased_at""", customer_id, ERASED)
        await conn.execute("UPDATE cases SET input = input - 'description', state = state || $2 "
                           "WHERE case_id = ANY($1::text[])", case_ids, STATE_ERASED)
        # A keyed closing reason carries people's words as params (a note, a reason): erased in place,
        # so the reason still renders.
        for row in await conn.fetch("SELECT case_id, state->'closed_reason_params' AS params FROM cases "
                                    "WHERE case_id = ANY($1::text[]) AND state ? 'closed_reason_params'", case_ids):
            await conn.execute("UPDATE cases SET state = jsonb_set(state, '{closed_reason_params}', $2) "
                               "WHERE case_id = $1", row["case_id"], _scrub(row["params"]))
        await conn.execute("UPDATE case_timeline SET detail = detail - $2::text[] WHERE case_id = ANY($1::text[])",
                           case_ids, FREE_TEXT_KEYS)
        await conn.execute("UPDATE sent_messages SET recipient = $2, body = $2 WHERE case_id = ANY($1::text[])",
                           case_ids + payout_ids, ERASED)
        await conn.execute(
            """UPDATE payouts SET account_holder = 'erased', iban = 'erased', bic = NULL, holder_masked = '•',
                      iban_masked = '••••', updated_at = now() WHERE customer_id = $1""", customer_id)
        photos = await conn.fetch("DELETE FROM attachments WHERE case_id = ANY($1::text[]) RETURNING storage_path",
                                  case_ids)
        # The files go before the rows are committed: a failure here leaves both, and a retry erases them.
        root = Path(attachments_dir).resolve()
        for photo in photos:
            path = Path(photo["storage_path"]).resolve()
            if path.is_relative_to(root):
                path.unlink(missing_ok=True)
                if path.parent != root and not any(path.parent.iterdir()):
                    path.parent.rmdir()
    return {"customer_id": customer_id, "erased_at": erased_at.isoformat(), "cases": len(case_ids),
            "payouts": len(payout_ids), "photos_deleted": len(photos)}


def _scrub(value):
    """Free-text values (FREE_TEXT_KEYS) replaced by [erased], at any depth (nested keyed texts)."""
    if isinstance(value, dict):
        return {k: ERASED if k in FREE_TEXT_KEYS and isinstance(v, str) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


async def due_for_erasure(pool, older_than_days: int) -> list[str]:
    """Customers not erased yet whose cases are all closed, the last one more than `older_than_days` ago
    (the retention of docs/rules.md, section 7), with no payout under way."""
    rows = await pool.fetch(
        """SELECT c.customer_id FROM customers c JOIN cases k USING (customer_id)
           WHERE c.erased_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM payouts p WHERE p.customer_id = c.customer_id
                             AND p.stage <> ALL($2::text[]))
           GROUP BY c.customer_id
           HAVING bool_and(k.closed_at IS NOT NULL) AND max(k.closed_at) < now() - make_interval(days => $1)
           ORDER BY c.customer_id""", older_than_days, list(FINAL_PAYOUT_STAGES))
    return [r["customer_id"] for r in rows]


def main(argv: list[str] | None = None) -> int:
    """`python -m starter.erasure [--older-than-days 1095]`: the retention's purge, to run daily (cron)."""
    import argparse
    import asyncio

    from activities import db
    from config import settings

    parser = argparse.ArgumentParser(prog="python -m starter.erasure")
    parser.add_argument("--older-than-days", type=int, default=3 * 365)
    args = parser.parse_args(argv)

    async def run() -> list[str]:
        pool = await db.create_pool()
        try:
            due = await due_for_erasure(pool, args.older_than_days)
            for customer_id in due:
                await erase(pool, customer_id, settings().attachments_dir)
            return due
        finally:
            await pool.close()

    due = asyncio.run(run())
    print(f"erased: {', '.join(due) if due else 'nobody'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
