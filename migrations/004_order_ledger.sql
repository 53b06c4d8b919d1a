-- One ledger of an order's money (docs/rules.md, section 4). What the order paid comes from the order
-- (items + delivery fee). Every money step of its cases (card refund, wallet credit) is entered here
-- BEFORE it calls the gateway or credits the wallet, in one transaction under a lock on the order row,
-- and is refused when it would take more than what is left:
--   refundable remainder = paid − card refunds not failed − wallet credits.
-- Legal late-refund increases are kept apart (kind late_increase): they never count against the paid.
CREATE TABLE order_ledger (
    entry_id         bigserial PRIMARY KEY,
    order_id         text NOT NULL REFERENCES orders,
    case_id          text,
    kind             text NOT NULL CHECK (kind IN ('card_refund', 'wallet_credit', 'late_increase')),
    -- reserved: entered, the gateway not asked yet (or its answer unknown); made: the gateway took it;
    -- succeeded: settled (wallet credits at once); failed: refused for good (no longer counts).
    state            text NOT NULL CHECK (state IN ('reserved', 'made', 'succeeded', 'failed')),
    amount_cents     integer NOT NULL CHECK (amount_cents > 0),
    currency         text NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    reason           text NOT NULL,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_ledger_by_order ON order_ledger (order_id);

-- Earlier card refunds and wallet credits of cases enter the ledger as they stand.
INSERT INTO order_ledger (order_id, case_id, kind, state, amount_cents, currency, idempotency_key, reason,
                          failure_reason, created_at)
SELECT order_id, case_id, 'card_refund',
       CASE status WHEN 'failed' THEN 'failed' WHEN 'succeeded' THEN 'succeeded' ELSE 'made' END,
       amount_cents, currency, idempotency_key, 'card refund', failure_reason, created_at
FROM refunds;
INSERT INTO order_ledger (order_id, case_id, kind, state, amount_cents, currency, idempotency_key, reason, created_at)
SELECT c.order_id, w.case_id, 'wallet_credit', 'succeeded', w.amount_cents, w.currency, w.idempotency_key, w.reason,
       w.created_at
FROM wallet_entries w JOIN cases c ON c.case_id = w.case_id
WHERE w.kind = 'credit' AND w.case_id IS NOT NULL;
