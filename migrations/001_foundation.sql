-- Foundation schema: parties, orders, the case read model and timeline, money movements, messages.

CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    name         text NOT NULL,
    email        text NOT NULL
);

CREATE TABLE sellers (
    seller_id       text PRIMARY KEY,
    name            text NOT NULL,
    email           text NOT NULL,
    webhook_url     text,
    webhook_secret  text
);

-- Bearer tokens of customers, sellers and care agents (stored as sha256 hex, never in clear).
CREATE TABLE api_tokens (
    token_sha256  text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('customer', 'seller', 'agent')),
    subject_id    text NOT NULL,
    expires_at    timestamptz
);

CREATE TABLE orders (
    order_id            text PRIMARY KEY,
    customer_id         text NOT NULL REFERENCES customers,
    seller_id           text NOT NULL REFERENCES sellers,
    status              text NOT NULL CHECK (status IN ('paid', 'validated', 'shipped', 'delivered', 'cancelled')),
    currency            text NOT NULL DEFAULT 'EUR',
    lines               jsonb NOT NULL,
    delivery_fee_cents  integer NOT NULL DEFAULT 0 CHECK (delivery_fee_cents >= 0),
    payment_intent      text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    delivered_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The read model the API serves; the workflow is the truth and writes it through activities.
CREATE TABLE cases (
    case_id        text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders,
    kind           text NOT NULL,
    customer_id    text NOT NULL,
    seller_id      text NOT NULL,
    stage          text NOT NULL,
    outcome        text,
    state          jsonb NOT NULL,
    input          jsonb,            -- the workflow input, so a start lost to an outage can be redone
    last_seq       integer NOT NULL DEFAULT 0,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- One open case per order: a double click or a race opens one case, never two.
CREATE UNIQUE INDEX cases_one_open_per_order ON cases (order_id) WHERE closed_at IS NULL;
CREATE INDEX cases_by_seller ON cases (seller_id, stage);
CREATE INDEX cases_by_customer ON cases (customer_id);

CREATE TABLE case_timeline (
    case_id  text NOT NULL REFERENCES cases,
    seq      integer NOT NULL,
    at       timestamptz NOT NULL,
    event    text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (case_id, seq)
);

-- Card refunds. idempotency_key is the project's own truth (the gateway forgets keys after 24 h).
CREATE TABLE refunds (
    idempotency_key    text PRIMARY KEY,
    case_id            text NOT NULL REFERENCES cases,
    order_id           text NOT NULL,
    payment_intent     text NOT NULL,
    amount_cents       integer NOT NULL CHECK (amount_cents > 0),
    currency           text NOT NULL,
    gateway_refund_id  text UNIQUE,
    status             text NOT NULL DEFAULT 'pending',
    failure_reason     text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Every message sent (email or seller webhook), once per message key.
CREATE TABLE sent_messages (
    message_key   text NOT NULL,
    channel       text NOT NULL CHECK (channel IN ('email', 'webhook')),
    recipient     text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    case_id       text,
    status        text NOT NULL DEFAULT 'pending',
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    PRIMARY KEY (message_key, channel)
);

-- Events received on webhooks, to refuse replays.
CREATE TABLE webhook_events (
    source       text NOT NULL,
    event_id     text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
