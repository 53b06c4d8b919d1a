"""Wallet ledger activities. Every entry has a unique idempotency key, so a retried activity writes once;
holds are taken under a row lock on the wallet, so concurrent payouts never overdraw it."""
from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import db, ledger
from activities.metrics import count_payout
from codec import KeyRing, keyring
from domain.models import PayoutStage, PayoutStep, TransferRequest, WalletCredit, mask_iban, mask_name

INSUFFICIENT_FUNDS = "InsufficientFunds"


async def ensure_wallet(conn, customer_id: str, currency: str = "EUR") -> None:
    await conn.execute("INSERT INTO wallets (customer_id, currency) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                       customer_id, currency)


async def balances(conn, customer_id: str) -> dict:
    row = await conn.fetchrow(
        """SELECT coalesce(sum(amount_cents) FILTER (WHERE kind = 'credit'), 0)  AS credits,
                  coalesce(sum(amount_cents) FILTER (WHERE kind = 'hold'), 0)    AS holds,
                  coalesce(sum(amount_cents) FILTER (WHERE kind = 'release'), 0) AS releases,
                  coalesce(sum(amount_cents) FILTER (WHERE kind = 'debit'), 0)   AS debits
           FROM wallet_entries WHERE customer_id = $1""", customer_id)
    return {
        "available_cents": row["credits"] - row["holds"] + row["releases"],
        "held_cents": row["holds"] - row["releases"] - row["debits"],
        "balance_cents": row["credits"] - row["debits"],
    }


async def add_entry(conn, *, customer_id: str, kind: str, cents: int, currency: str, key: str, reason: str,
                    payout_id: str | None = None, case_id: str | None = None) -> bool:
    """Appends one ledger entry; False when the key was already written (a retry)."""
    status = await conn.execute(
        """INSERT INTO wallet_entries (customer_id, kind, amount_cents, currency, idempotency_key, payout_id,
                                       case_id, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING""",
        customer_id, kind, cents, currency, key, payout_id, case_id, reason)
    return status.endswith(" 1")


class WalletActivities:
    def all(self) -> list:
        return [self.credit_wallet]

    @activity.defn
    async def credit_wallet(self, credit: WalletCredit) -> None:
        """A credit from a case enters the order's ledger in the same transaction (never more than the
        order paid, MoneyExceedsPaid otherwise; a legal late-refund increase is outside the paid); the
        same key twice credits once."""
        pool = await db.get_pool()
        async with pool.acquire() as conn, conn.transaction():
            if credit.order_id:
                await ledger.reserve(conn, order_id=credit.order_id, case_id=credit.case_id, kind=credit.ledger_kind,
                                     key=credit.idempotency_key, cents=credit.amount.cents,
                                     currency=credit.amount.currency, reason=credit.reason, state="succeeded")
            await ensure_wallet(conn, credit.customer_id, credit.amount.currency)
            await add_entry(conn, customer_id=credit.customer_id, kind="credit", cents=credit.amount.cents,
                            currency=credit.amount.currency, key=credit.idempotency_key, reason=credit.reason,
                            case_id=credit.case_id)


TRANSFER_REJECTED = "TransferRejected"
BANK_COLUMNS = ("account_holder", "iban", "bic")


def seal_bank_details(keys: KeyRing, payout_id: str, account_holder: str, iban: str, bic: str | None) -> dict:
    """The payouts columns of a bank account: sealed values (each bound to its column and payout) and
    the masked forms that are ever shown."""
    clear = {"account_holder": account_holder, "iban": iban, "bic": bic}
    sealed = {col: keys.seal(v, f"payouts.{col}:{payout_id}") if v is not None else None for col, v in clear.items()}
    return sealed | {"iban_masked": mask_iban(iban), "holder_masked": mask_name(account_holder)}


def open_bank_details(keys: KeyRing, payout_id: str, row) -> dict:
    """The clear bank details of a payout row: only the transfer activity calls this."""
    return {col: keys.open(row[col], f"payouts.{col}:{payout_id}") if row[col] is not None else None
            for col in BANK_COLUMNS}


class PayoutActivities:
    """Payout side effects: the bank transfer (exactly once) and the ledger/stage writes."""

    def __init__(self, gateway, keys: KeyRing | None = None):
        self.gateway = gateway
        self.keys = keys or keyring()

    def all(self) -> list:
        return [self.send_transfer, self.record_payout_step, self.lookup_transfer]

    @activity.defn
    async def lookup_transfer(self, transfer_id: str) -> str:
        """The transfer as the bank-transfer port has it now (its event may have been lost):
        pending, settled or rejected."""
        return (await self.gateway.get_transfer(transfer_id))["status"]

    @activity.defn
    async def send_transfer(self, req: TransferRequest) -> str:
        """The one place the bank details are decrypted: read sealed from the payout's row, sent to the bank."""
        from activities.gateway_client import GatewayPermanentError

        pool = await db.get_pool()
        row = await pool.fetchrow("SELECT account_holder, iban, bic FROM payouts WHERE payout_id = $1", req.payout_id)
        if row is None or row["iban"] == "erased":
            raise ApplicationError(f"payout {req.payout_id}: no bank details (unknown payout, or erased)",
                                   type=TRANSFER_REJECTED, non_retryable=True)
        bank = open_bank_details(self.keys, req.payout_id, row)
        try:
            transfer = await self.gateway.transfer_once(
                amount_cents=req.amount.cents, currency=req.amount.currency, idempotency_key=req.idempotency_key,
                metadata={"payout_id": req.payout_id, "workflow_id": req.workflow_id}, **bank)
        except GatewayPermanentError as e:
            raise ApplicationError(f"bank transfer refused: {e}", type=TRANSFER_REJECTED, non_retryable=True)
        return transfer["id"]

    @activity.defn
    async def record_payout_step(self, step: PayoutStep) -> None:
        """Stage + ledger in one transaction; the ledger's unique keys make a retry write nothing twice."""
        pool = await db.get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE payouts SET stage = $2, gateway_transfer_id = coalesce($3, gateway_transfer_id),
                          expected_by = coalesce($4, expected_by), failure_reason = $5, updated_at = now()
                   WHERE payout_id = $1""",
                step.payout_id, step.stage.value, step.transfer_id, step.expected_by, step.failure_reason)
            kind = {PayoutStage.settled: "debit", PayoutStage.rejected: "release"}.get(step.stage)
            if kind and await add_entry(conn, customer_id=step.customer_id, kind=kind, cents=step.amount.cents,
                                        currency=step.amount.currency, key=f"{step.payout_id}:{kind}",
                                        reason=f"payout {step.stage.value}", payout_id=step.payout_id):
                count_payout(step.stage.value, step.amount.cents)
