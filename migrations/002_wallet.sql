-- Wallet: one per customer, an append-only ledger; balances are derived from the entries.
--   available = credits - holds + releases      (what a payout may take)
--   held      = holds - releases - debits       (payouts on their way to the bank)
--   balance   = credits - debits                (available + held)
CREATE TABLE wallets (
    customer_id  text PRIMARY KEY REFERENCES customers,
    currency     text NOT NULL DEFAULT 'EUR',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wallet_entries (
    entry_id         bigserial PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES wallets,
    kind             text NOT NULL CHECK (kind IN ('credit', 'hold', 'release', 'debit')),
    amount_cents     integer NOT NULL CHECK (amount_cents > 0),
    currency         text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    payout_id        text,
    case_id          text,
    reason           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_entries_by_customer ON wallet_entries (customer_id, entry_id);
-- A payout holds once, and ends once: released or debited, never both.
CREATE UNIQUE INDEX wallet_one_hold_per_payout ON wallet_entries (payout_id) WHERE kind = 'hold';
CREATE UNIQUE INDEX wallet_one_end_per_payout ON wallet_entries (payout_id) WHERE kind IN ('release', 'debit');

CREATE TABLE payouts (
    payout_id            text PRIMARY KEY,
    customer_id          text NOT NULL REFERENCES wallets,
    amount_cents         integer NOT NULL CHECK (amount_cents > 0),
    currency             text NOT NULL,
    account_holder       text NOT NULL,
    iban                 text NOT NULL,
    bic                  text,
    stage                text NOT NULL,
    gateway_transfer_id  text UNIQUE,
    expected_by          timestamptz,
    failure_reason       text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
