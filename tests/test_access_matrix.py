"""Who may call what (docs/rules.md, section 2), table-driven over every route of the API.

Each row of MATRIX names one route, the roles allowed on it and the status they get; every other role
gets 401 (anonymous, bad token, expired token) or 403 (authenticated but not theirs). Each row gets fresh
parties (customer/seller A owning the case, customer/seller B strangers to it), a case driven through the
API into the stage where the allowed role's action fits, then:

  * every refused role is tried first, and nothing may have changed (cases, timeline position, photos,
    wallet, payouts, stored files);
  * then the allowed roles, which must get their 2xx and, for an action, must change something.

test_matrix_covers_every_route fails when a route is added without a row. The 404 (unknown resource)
and 409 (allowed role, wrong stage: the body names the stage) answers are asserted per route below the
matrix, and the signed webhooks (bad, stale, replayed) at the end.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from activities.cases import sign_webhook
from starter.api import create_app
from starter.auth import create_token
from tests.helpers.servers import api_stack
from tests.helpers.data import make_order, make_party

IBAN_FR = "FR1420041010050500013M02606"
# A real 1x1 JPEG (JFIF).
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=")

CUSTOMER_A, CUSTOMER_B, SELLER_A, SELLER_B = "customer_a", "customer_b", "seller_a", "seller_b"
AGENT, ANONYMOUS, BAD_TOKEN, EXPIRED = "agent", "anonymous", "bad_token", "expired_token"
ROLES = [CUSTOMER_A, CUSTOMER_B, SELLER_A, SELLER_B, AGENT, ANONYMOUS, BAD_TOKEN, EXPIRED]
UNAUTHENTICATED = {ANONYMOUS, BAD_TOKEN, EXPIRED}


# ----------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
async def api(api_env, pool, test_settings, tmp_path_factory):
    """The API with its own worker (on its own task queue) and attachments in a temporary directory."""
    async with api_stack(api_env.client, test_settings, "aftersales-access-test",
                         attachments_dir=str(tmp_path_factory.mktemp("attachments"))) as (served, _, s):
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            client.settings = s
            yield client


@pytest.fixture(scope="module")
async def agent_token(pool):
    async with pool.acquire() as conn:
        return await create_token(conn, "agent", "care_1")


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ----------------------------------------------------------------------------- the world of one row
@dataclass
class World:
    api: httpx.AsyncClient
    pool: object
    a: dict
    b: dict
    agent_token: str
    tokens: dict[str, str | None] = field(default_factory=dict)
    tracking: str = ""  # the parcel of the case in transit, when there is one

    def token(self, role: str) -> str | None:
        return self.tokens[role]

    @property
    def files_dir(self) -> Path:
        return Path(self.api.settings.attachments_dir)


@dataclass
class Target:
    """What a row's setup made: the id filling the path's parameter, extra headers, a check of each
    allowed role's answer and one run after all of them."""
    path: str = ""
    headers: dict = field(default_factory=dict)
    check: Callable[[str, httpx.Response], None] | None = None
    after: Callable[[], Awaitable[None]] | None = None


async def make_world(api, pool, agent_token) -> World:
    a, b = await make_party(pool), await make_party(pool)
    w = World(api=api, pool=pool, a=a, b=b, agent_token=agent_token)
    w.tokens = {CUSTOMER_A: a["customer_token"], CUSTOMER_B: b["customer_token"], SELLER_A: a["seller_token"],
                SELLER_B: b["seller_token"], AGENT: agent_token, ANONYMOUS: None,
                BAD_TOKEN: "not-a-token-" + secrets.token_hex(12), EXPIRED: None}
    return w


async def expired_token_like(w: World, role: str) -> str:
    """An expired token of the subject `role` stands for (the one that would otherwise be allowed)."""
    subject = {CUSTOMER_A: ("customer", w.a["customer_id"]), CUSTOMER_B: ("customer", w.b["customer_id"]),
               SELLER_A: ("seller", w.a["seller_id"]), SELLER_B: ("seller", w.b["seller_id"]),
               AGENT: ("agent", "care_1")}[role]
    async with w.pool.acquire() as conn:
        return await create_token(conn, subject[0], subject[1],
                                  expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))


async def fingerprint(w: World):
    """Everything an action of either party could change."""
    ids = [w.a["customer_id"], w.b["customer_id"]]
    cases = await w.pool.fetch(
        """SELECT case_id, stage, outcome, last_seq, state FROM cases
           WHERE customer_id = ANY($1::text[]) ORDER BY case_id""", ids)
    return (
        [tuple(r) for r in cases],
        await w.pool.fetchval("""SELECT count(*) FROM case_timeline t JOIN cases c USING (case_id)
                                 WHERE c.customer_id = ANY($1::text[])""", ids),
        await w.pool.fetchval("""SELECT count(*) FROM attachments t JOIN cases c USING (case_id)
                                 WHERE c.customer_id = ANY($1::text[])""", ids),
        await w.pool.fetchval("SELECT count(*) FROM wallet_entries WHERE customer_id = ANY($1::text[])", ids),
        await w.pool.fetchval("SELECT count(*) FROM payouts WHERE customer_id = ANY($1::text[])", ids),
        sorted(str(p) for p in w.files_dir.rglob("*")),
        # The parties themselves (the erasure of a customer's personal data).
        [tuple(r) for r in await w.pool.fetch(
            "SELECT customer_id, name, email FROM customers WHERE customer_id = ANY($1::text[]) ORDER BY 1", ids)],
    )


# ----------------------------------------------------------------------------- driving cases through the API
async def wait_stage(w: World, case_id: str, stage: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    current = None
    while time.monotonic() < end:
        current = await w.pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id)
        if current == stage:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"case {case_id} stayed in {current}, never reached {stage}")


async def call(w: World, role: str, method: str, path: str, **kw) -> httpx.Response:
    headers = {**kw.pop("headers", {}), **bearer(w.token(role) if role in w.tokens else role)}
    return await w.api.request(method, path, headers=headers, **kw)


async def ok(w: World, role: str, method: str, path: str, **kw) -> dict:
    r = await call(w, role, method, path, **kw)
    assert r.status_code in (200, 201), f"{method} {path} as {role}: {r.status_code} {r.text}"
    return r.json()


async def open_case(w: World, kind: str, order_status: str, stage: str, **body) -> str:
    delivered_at = datetime.now(timezone.utc) if order_status == "delivered" else None
    order_id = await make_order(w.pool, w.a, order_status, delivered_at=delivered_at)
    case = await ok(w, CUSTOMER_A, "POST", f"/v1/orders/{order_id}/help-requests", json={"kind": kind, **body})
    await wait_stage(w, case["case_id"], stage)
    return case["case_id"]


def tracking(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5).upper()}"


async def cancellation_awaiting_decision(w: World) -> str:
    return await open_case(w, "cancellation", "validated", "awaiting_seller_decision")


async def closed_case(w: World) -> str:
    """A cancellation of a shipped order: refused and closed at once."""
    return await open_case(w, "cancellation", "shipped", "closed")


async def defect_awaiting_photos(w: World) -> str:
    return await open_case(w, "defect", "delivered", "awaiting_photos", category="screen",
                           description="The screen flickers and goes black after a minute.")


async def withdrawal_awaiting_label(w: World) -> str:
    return await open_case(w, "withdrawal", "delivered", "awaiting_return_label")


async def label_and_ship(w: World, case_id: str, *, receive: bool) -> str:
    number = tracking("RET")
    await ok(w, SELLER_A, "POST", f"/v1/cases/{case_id}/return-label",
             json={"carrier": "Colissimo", "tracking_number": number, "label_url": "https://labels.example/r.pdf"})
    await wait_stage(w, case_id, "awaiting_shipment")
    await ok(w, CUSTOMER_A, "POST", f"/v1/cases/{case_id}/shipment",
             json={"carrier": "Colissimo", "tracking_number": number})
    await wait_stage(w, case_id, "in_transit")
    if receive:
        await ok(w, SELLER_A, "POST", f"/v1/cases/{case_id}/receipt", json={"note": "Received intact."})
    return number


async def withdrawal_awaiting_shipment(w: World) -> str:
    case_id = await withdrawal_awaiting_label(w)
    await ok(w, SELLER_A, "POST", f"/v1/cases/{case_id}/return-label",
             json={"carrier": "Colissimo", "tracking_number": tracking("RET"),
                   "label_url": "https://labels.example/r.pdf"})
    await wait_stage(w, case_id, "awaiting_shipment")
    return case_id


async def withdrawal_in_transit(w: World) -> str:
    case_id = await withdrawal_awaiting_label(w)
    await label_and_ship(w, case_id, receive=False)
    return case_id


async def withdrawal_awaiting_activation(w: World) -> str:
    case_id = await withdrawal_awaiting_label(w)
    await label_and_ship(w, case_id, receive=True)
    await wait_stage(w, case_id, "awaiting_refund_activation")
    return case_id


async def defect_awaiting_outbound(w: World) -> str:
    case_id = await defect_awaiting_photos(w)
    await ok(w, CUSTOMER_A, "POST", f"/v1/cases/{case_id}/attachments",
             files={"file": ("screen.jpg", JPEG, "image/jpeg")})
    await wait_stage(w, case_id, "awaiting_seller_decision")
    await ok(w, SELLER_A, "POST", f"/v1/cases/{case_id}/decision", json={"decision": "exchange"})
    await wait_stage(w, case_id, "awaiting_return_label")
    await label_and_ship(w, case_id, receive=True)
    await wait_stage(w, case_id, "awaiting_outbound_shipment")
    return case_id


async def defect_awaiting_offer_answer(w: World) -> str:
    case_id = await defect_awaiting_photos(w)
    await ok(w, CUSTOMER_A, "POST", f"/v1/cases/{case_id}/attachments",
             files={"file": ("screen.jpg", JPEG, "image/jpeg")})
    await wait_stage(w, case_id, "awaiting_seller_decision")
    await ok(w, SELLER_A, "POST", f"/v1/cases/{case_id}/decision",
             json={"decision": "partial_refund", "partial_amount_cents": 2000, "reason": "A small scratch."})
    await wait_stage(w, case_id, "awaiting_customer_answer")
    return case_id


async def credit_wallet(w: World, party: dict, cents: int, reason: str) -> None:
    from activities.wallet import add_entry, ensure_wallet

    async with w.pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, party["customer_id"])
        await add_entry(conn, customer_id=party["customer_id"], kind="credit", cents=cents, currency="EUR",
                        key=f"test-credit:{secrets.token_hex(6)}", reason=reason)


# ----------------------------------------------------------------------------- row setups
def case_action(stage_setup):
    """A case of customer/seller A in the stage where the row's action fits."""
    async def setup(w: World) -> Target:
        case_id = await stage_setup(w)
        return Target(path=f"{case_id}", check=lambda role, r: _same_case(r, case_id))
    return setup


def _same_case(r: httpx.Response, case_id: str) -> None:
    assert r.json()["case_id"] == case_id, r.text


async def setup_help_request(w: World) -> Target:
    order_id = await make_order(w.pool, w.a, "validated")

    def check(role: str, r: httpx.Response) -> None:
        assert r.json()["order_id"] == order_id and r.json()["customer_id"] == w.a["customer_id"]

    return Target(path=order_id, check=check)


async def setup_list_cases(w: World) -> Target:
    case_id = await cancellation_awaiting_decision(w)
    own = {CUSTOMER_A: ("customer_id", w.a["customer_id"]), CUSTOMER_B: ("customer_id", w.b["customer_id"]),
           SELLER_A: ("seller_id", w.a["seller_id"]), SELLER_B: ("seller_id", w.b["seller_id"])}

    def check(role: str, r: httpx.Response) -> None:
        cases = r.json()["cases"]
        # A stranger's list never shows the case; its customer, its seller and care see it.
        assert (case_id in {c["case_id"] for c in cases}) == (role in (CUSTOMER_A, SELLER_A, AGENT)), role
        if role in own:
            column, value = own[role]
            assert {c[column] for c in cases} <= {value}, role

    return Target(check=check)


async def setup_get_case(w: World) -> Target:
    case_id = await cancellation_awaiting_decision(w)

    def check(role: str, r: httpx.Response) -> None:
        assert r.json()["case_id"] == case_id and "timeline" in r.json()

    return Target(path=case_id, check=check)


async def setup_attachments(w: World) -> Target:
    case_id = await defect_awaiting_photos(w)

    def check(role: str, r: httpx.Response) -> None:
        assert r.json()["photos"] == 1 and r.json()["content_type"] == "image/jpeg"

    return Target(path=case_id, check=check)


async def setup_photo(w: World) -> Target:
    case_id = await defect_awaiting_photos(w)
    await ok(w, CUSTOMER_A, "POST", f"/v1/cases/{case_id}/attachments", files={"file": ("screen.jpg", JPEG, "image/jpeg")})
    attachment_id = await w.pool.fetchval("SELECT attachment_id FROM attachments WHERE case_id = $1", case_id)
    await wait_stage(w, case_id, "awaiting_seller_decision")  # the photo moved it on: settled before the row runs

    def check(role: str, r: httpx.Response) -> None:
        assert r.content == JPEG and r.headers["content-type"] == "image/jpeg"

    return Target(path=attachment_id, check=check)


async def setup_wallet(w: World) -> Target:
    await credit_wallet(w, w.a, 4321, "credit of customer A")
    await credit_wallet(w, w.b, 1234, "credit of customer B")

    def check(role: str, r: httpx.Response) -> None:
        body = r.json()
        (cents, mine), theirs = (((4321, "credit of customer A"), "credit of customer B") if role == CUSTOMER_A
                                 else ((1234, "credit of customer B"), "credit of customer A"))
        assert body["available_cents"] == cents
        assert [e["reason"] for e in body["entries"]] == [mine] and theirs not in r.text

    return Target(check=check)


async def setup_payouts(w: World) -> Target:
    await credit_wallet(w, w.a, 5000, "credit of customer A")
    await credit_wallet(w, w.b, 5000, "credit of customer B")
    seen: dict[str, str] = {}

    async def after() -> None:
        # Each customer's payout is theirs, held on their own wallet.
        assert len(seen) == 2
        for payout_id, owner in seen.items():
            assert await w.pool.fetchval("SELECT customer_id FROM payouts WHERE payout_id = $1", payout_id) == owner
            assert await w.pool.fetchval("SELECT customer_id FROM wallet_entries WHERE payout_id = $1 AND kind = 'hold'",
                                         payout_id) == owner

    def check(role: str, r: httpx.Response) -> None:
        seen[r.json()["payout_id"]] = (w.a if role == CUSTOMER_A else w.b)["customer_id"]

    # The same Idempotency-Key for both customers: still two payouts, one each.
    return Target(headers={"Idempotency-Key": secrets.token_hex(8)}, check=check, after=after)


async def setup_payout_status(w: World) -> Target:
    await credit_wallet(w, w.a, 5000, "credit of customer A")
    payout = await ok(w, CUSTOMER_A, "POST", "/v1/wallet/payouts", headers={"Idempotency-Key": "p1"},
                      json={"amount_cents": 1500, "account_holder": "Test Customer", "iban": IBAN_FR})

    def check(role: str, r: httpx.Response) -> None:
        assert r.json()["payout_id"] == payout["payout_id"] and r.json()["amount_cents"] == 1500
        assert IBAN_FR not in r.text  # masked

    return Target(path=payout["payout_id"], check=check)


async def setup_escalations(w: World) -> Target:
    return Target(check=lambda role, r: r.json()["cases"] is not None)


async def setup_webhook(w: World) -> Target:
    """A parcel in transit: its carrier "delivered" event would move the case if it were accepted."""
    case_id = await withdrawal_in_transit(w)
    w.tracking = (await w.pool.fetchval("SELECT state FROM cases WHERE case_id = $1", case_id))["tracking_numbers"][0]
    return Target()


async def setup_erasure(w: World) -> Target:
    """Customer A with a closed case: erasable."""
    await closed_case(w)

    def check(role: str, r: httpx.Response) -> None:
        assert r.json()["customer_id"] == w.a["customer_id"] and r.json()["cases"] == 1

    return Target(path=w.a["customer_id"], check=check)


async def setup_nothing(w: World) -> Target:
    return Target()


# ----------------------------------------------------------------------------- the matrix
@dataclass
class Row:
    method: str
    path: str
    setup: Callable[[World], Awaitable[Target]]
    allowed: dict[str, int] = field(default_factory=dict)  # role -> its 2xx
    body: dict | Callable[[World], dict] | None = None
    photo: bool = False  # multipart upload of a JPEG
    auth: str = "bearer"  # bearer | public (no token needed) | signed (HMAC webhook, bearer tokens ignored)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def expected(self, role: str) -> int:
        if self.auth == "public":
            return 200
        if self.auth == "signed":
            return 400  # no signature: refused whoever calls
        if role in UNAUTHENTICATED:
            return 401
        return self.allowed.get(role, 403)

    def url(self, resource_id: str) -> str:
        """The path with its one parameter (case, order or payout id) filled in."""
        return re.sub(r"\{[a-z_]+\}", resource_id, self.path)

    def request(self, w: World, path: str, role: str, headers: dict | None = None) -> Awaitable[httpx.Response]:
        body = self.body(w) if callable(self.body) else self.body
        files = {"file": ("screen.jpg", JPEG, "image/jpeg")} if self.photo else None
        return w.api.request(self.method, path, json=body, files=files,
                             headers={**(headers or {}), **bearer(w.token(role))})


def note(text: str) -> dict:
    return {"note": text}


def webhook_body(w: World) -> dict:
    # Both a carrier "delivered" event for A's parcel and a settled-refund gateway event, unsigned.
    return {"event_id": f"evt_{secrets.token_hex(6)}", "tracking_number": w.tracking, "status": "delivered",
            "at": datetime.now(timezone.utc).isoformat(), "id": f"evt_{secrets.token_hex(6)}",
            "type": "refund.updated", "object": "event",
            "data": {"object": {"id": "re_x", "status": "succeeded", "metadata": {}}}}


LABEL = lambda w: {"carrier": "Colissimo", "tracking_number": tracking("RET"),  # noqa: E731
                   "label_url": "https://labels.example/r.pdf"}
SHIPMENT = lambda w: {"carrier": "Colissimo", "tracking_number": tracking("SHP")}  # noqa: E731
OUTBOUND = lambda w: {"carrier": "DHL", "tracking_number": tracking("OUT")}  # noqa: E731
PAYOUT = {"amount_cents": 1000, "account_holder": "Test Customer", "iban": IBAN_FR}
C = "/v1/cases/{case_id}"
MATRIX = [
    Row("GET", "/openapi.json", setup_nothing, auth="public"),
    Row("GET", "/docs", setup_nothing, auth="public"),
    Row("GET", "/docs/oauth2-redirect", setup_nothing, auth="public"),
    Row("GET", "/redoc", setup_nothing, auth="public"),
    Row("GET", "/healthz", setup_nothing, auth="public"),
    Row("GET", "/readyz", setup_nothing, auth="public"),
    Row("POST", "/v1/orders/{order_id}/help-requests", setup_help_request, {CUSTOMER_A: 201},
        body={"kind": "cancellation"}),
    Row("GET", "/v1/cases", setup_list_cases,
        {CUSTOMER_A: 200, CUSTOMER_B: 200, SELLER_A: 200, SELLER_B: 200, AGENT: 200}),
    Row("GET", C, setup_get_case, {CUSTOMER_A: 200, SELLER_A: 200, AGENT: 200}),
    Row("POST", C + "/decision", case_action(cancellation_awaiting_decision), {SELLER_A: 200},
        body={"decision": "refuse", "reason": "Shipped already."}),
    Row("POST", C + "/care", case_action(cancellation_awaiting_decision), {AGENT: 200},
        body={"resolution": "extend_deadline", "reason": "The seller asked for a day.", "extend_hours": 24}),
    Row("POST", C + "/attachments", setup_attachments, {CUSTOMER_A: 201}, photo=True),
    Row("GET", "/v1/attachments/{attachment_id}", setup_photo, {CUSTOMER_A: 200, SELLER_A: 200, AGENT: 200}),
    Row("POST", C + "/return-label", case_action(withdrawal_awaiting_label), {SELLER_A: 200}, body=LABEL),
    Row("POST", C + "/label-missing", case_action(withdrawal_awaiting_label), {CUSTOMER_A: 200},
        body=note("No label yet.")),
    Row("POST", C + "/shipment", case_action(withdrawal_awaiting_shipment), {CUSTOMER_A: 200}, body=SHIPMENT),
    Row("POST", C + "/receipt", case_action(withdrawal_in_transit), {SELLER_A: 200}, body=note("Received.")),
    Row("POST", C + "/refund-activation", case_action(withdrawal_awaiting_activation), {SELLER_A: 200}, body={}),
    Row("POST", C + "/outbound-shipment", case_action(defect_awaiting_outbound), {SELLER_A: 200}, body=OUTBOUND),
    Row("POST", C + "/outbound-impossible", case_action(defect_awaiting_outbound), {SELLER_A: 200},
        body=note("No spare parts left.")),
    Row("POST", C + "/withdraw", case_action(cancellation_awaiting_decision), {CUSTOMER_A: 200},
        body=note("Changed my mind.")),
    Row("POST", C + "/offer-answer", case_action(defect_awaiting_offer_answer), {CUSTOMER_A: 200},
        body={"accept": True, "note": "Fine by me."}),
    Row("GET", "/v1/wallet", setup_wallet, {CUSTOMER_A: 200, CUSTOMER_B: 200}),
    Row("POST", "/v1/wallet/payouts", setup_payouts, {CUSTOMER_A: 201, CUSTOMER_B: 201}, body=PAYOUT),
    Row("GET", "/v1/wallet/payouts/{payout_id}", setup_payout_status, {CUSTOMER_A: 200, AGENT: 200}),
    Row("GET", "/v1/escalations", setup_escalations, {AGENT: 200}),
    Row("POST", "/v1/customers/{customer_id}/erasure", setup_erasure, {AGENT: 200}),
    Row("POST", "/v1/webhooks/carrier", setup_webhook, body=webhook_body, auth="signed"),
    Row("POST", "/v1/webhooks/payments", setup_webhook, body=webhook_body, auth="signed"),
]


def app_routes() -> set[tuple[str, str]]:
    """The JSON API's routes (the pages have their own matrix, in tests/test_pages.py)."""
    from fastapi import routing

    from config import Settings
    from starter.routes import pages

    app = create_app(Settings(temporal_address="unused"))
    found = set()
    # Routes of included routers: FastAPI ≥ 0.16x keeps them behind the router (iter_route_contexts
    # flattens them), older versions copy them into app.routes.
    for route in getattr(routing, "iter_route_contexts", iter)(app.routes):
        if route.path in {r.path for r in pages.router.routes}:
            continue
        methods = getattr(route, "methods", None) or {"<no method: websocket or mount>"}
        found |= {(m, route.path) for m in methods - {"HEAD"}}
    return found


# The codec server answers every role the same way whatever the resource and changes nothing, which the
# rows above cannot express: tests/test_codec_server.py covers its 401/403/200 (and its fuzzing).
CODEC_ROUTES = {("POST", "/codec/decode"), ("POST", "/codec/encode"), ("GET", "/codec/session"),
                ("POST", "/codec/session"), ("POST", "/codec/logout")}


def test_matrix_covers_every_route():
    rows = [(r.method, r.path) for r in MATRIX] + sorted(CODEC_ROUTES)
    assert len(rows) == len(set(rows)), "a route has two rows"
    routes = app_routes()
    assert not routes - set(rows), f"routes without a row in MATRIX: {sorted(routes - set(rows))}"
    assert not set(rows) - routes, f"rows for routes that no longer exist: {sorted(set(rows) - routes)}"


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: r.id)
async def test_access(api, pool, agent_token, row: Row):
    w = await make_world(api, pool, agent_token)
    target = await row.setup(w)
    path = row.url(target.path)
    w.tokens[EXPIRED] = await expired_token_like(w, next(iter(row.allowed), CUSTOMER_A))
    before = await fingerprint(w)

    refused = [r for r in ROLES if not 200 <= row.expected(r) < 300]
    wrong = []
    for role in refused:
        r = await row.request(w, path, role, target.headers)
        if r.status_code != row.expected(role):
            wrong.append(f"{role}: expected {row.expected(role)}, got {r.status_code} {r.text[:200]}")
        elif r.status_code == 401 and r.headers.get("www-authenticate") != "Bearer":
            wrong.append(f"{role}: 401 without WWW-Authenticate: Bearer")
    assert not wrong, "\n".join(wrong)
    assert await fingerprint(w) == before, "a refused call changed something"

    for role in [r for r in ROLES if r not in refused]:
        r = await row.request(w, path, role, target.headers)
        assert r.status_code == row.expected(role), f"{role}: {r.status_code} {r.text[:300]}"
        if target.check:
            target.check(role, r)
    if target.after:
        await target.after()
    if row.method == "POST" and row.auth == "bearer":
        # The allowed action did something (a read-model write can trail the answer a little).
        end = time.monotonic() + 10
        while await fingerprint(w) == before:
            assert time.monotonic() < end, "the allowed action changed nothing"
            await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- 404 and 409
@pytest.mark.parametrize("row", [r for r in MATRIX if "{" in r.path], ids=lambda r: r.id)
async def test_unknown_resource_is_404_for_an_allowed_role(api, pool, agent_token, row: Row):
    w = await make_world(api, pool, agent_token)
    for role in row.allowed:
        r = await row.request(w, row.url("doesnotexist_42"), role)
        assert r.status_code == 404, f"{role}: {r.status_code} {r.text}"
        assert "doesnotexist_42" in r.json()["error"]


CASE_ACTIONS = [r for r in MATRIX if r.path.startswith(C + "/") and r.method == "POST"]


@pytest.mark.parametrize("row", CASE_ACTIONS, ids=lambda r: r.id)
async def test_allowed_role_in_the_wrong_stage_gets_409_naming_the_stage(api, pool, agent_token, row: Row):
    """A closed case refuses every action with 409 and its stage, whoever is allowed to act on it."""
    w = await make_world(api, pool, agent_token)
    case_id = await closed_case(w)
    before = await fingerprint(w)
    for role in row.allowed:
        r = await row.request(w, row.url(case_id), role)
        assert r.status_code == 409, f"{role}: {r.status_code} {r.text}"
        assert r.json()["stage"] == "closed"
    assert await fingerprint(w) == before


WRONG_STAGE = {  # action -> (a case where it does not fit, its stage, a body that is valid otherwise)
    "/decision": (withdrawal_awaiting_label, "awaiting_return_label", None),
    "/care": (cancellation_awaiting_decision, "awaiting_seller_decision",
              {"resolution": "mark_settled", "reason": "No refund under way yet."}),
    "/attachments": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/return-label": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/label-missing": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/shipment": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/receipt": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/refund-activation": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/outbound-shipment": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/outbound-impossible": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
    "/withdraw": (withdrawal_in_transit, "in_transit", None),  # the parcel is on its way: too late
    "/offer-answer": (cancellation_awaiting_decision, "awaiting_seller_decision", None),
}


def test_every_case_action_has_a_wrong_stage_case():
    assert {r.path.removeprefix(C) for r in CASE_ACTIONS} == set(WRONG_STAGE)


@pytest.mark.parametrize("row", CASE_ACTIONS, ids=lambda r: r.id)
async def test_allowed_role_on_an_open_case_in_another_stage_gets_409_naming_it(api, pool, agent_token, row: Row):
    setup, stage, body = WRONG_STAGE[row.path.removeprefix(C)]
    w = await make_world(api, pool, agent_token)
    case_id = await setup(w)
    before = await fingerprint(w)
    if body is not None:
        row = replace(row, body=body)
    for role in row.allowed:
        r = await row.request(w, row.url(case_id), role)
        assert r.status_code == 409, f"{role}: {r.status_code} {r.text}"
        assert r.json()["stage"] == stage, r.text
    assert await fingerprint(w) == before


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("header", ["Basic Y2FyZV8xOnNlY3JldA==", "Bearer", "bearer", "Token abc",
                                    "Bearer a b c", "Bearer " + "x" * 5000])
async def test_malformed_authorization_is_401(api, header):
    r = await api.get("/v1/cases", headers={"Authorization": header})
    assert r.status_code == 401, r.text


async def test_an_expired_token_is_refused_where_its_fresh_twin_is_accepted(api, pool):
    party = await make_party(pool)
    async with pool.acquire() as conn:
        expired = await create_token(conn, "customer", party["customer_id"],
                                     expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        later = await create_token(conn, "customer", party["customer_id"],
                                   expires_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert (await api.get("/v1/wallet", headers=bearer(expired))).status_code == 401
    assert (await api.get("/v1/wallet", headers=bearer(later))).status_code == 200


async def test_a_seller_named_like_a_customer_sees_nothing_of_that_customer(api, pool, agent_token):
    """Identities are (role, id): a seller whose id happens to equal a customer's id is not that customer."""
    w = await make_world(api, pool, agent_token)
    target = await setup_payout_status(w)
    case_id = await cancellation_awaiting_decision(w)
    async with pool.acquire() as conn:
        twin = await create_token(conn, "seller", w.a["customer_id"])
    assert (await api.get(f"/v1/wallet/payouts/{target.path}", headers=bearer(twin))).status_code == 403
    assert (await api.get("/v1/wallet", headers=bearer(twin))).status_code == 403
    assert (await api.get(f"/v1/cases/{case_id}", headers=bearer(twin))).status_code == 403
    assert case_id not in (await api.get("/v1/cases", headers=bearer(twin))).text
    r = await api.post(f"/v1/cases/{case_id}/withdraw", json={}, headers=bearer(twin))
    assert r.status_code == 403


# ----------------------------------------------------------------------------- signed webhooks
def carrier_request(api, body: bytes, signature: str | None):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Carrier-Signature"] = signature
    return api.post("/v1/webhooks/carrier", content=body, headers=headers)


async def test_carrier_webhook_signatures_and_replays(api, pool, agent_token):
    w = await make_world(api, pool, agent_token)
    case_id = await withdrawal_in_transit(w)
    number = (await pool.fetchval("SELECT state FROM cases WHERE case_id = $1", case_id))["tracking_numbers"][0]
    secret = api.settings.carrier_webhook_secret

    def event(event_id: str, status: str) -> bytes:
        return json.dumps({"event_id": event_id, "tracking_number": number, "status": status,
                           "at": datetime.now(timezone.utc).isoformat()}).encode()

    delivered = event(f"evt_{secrets.token_hex(6)}", "delivered")
    now = int(time.time())
    refused = {
        "missing": None,
        "empty": "",
        "garbage": "nonsense",
        "bad mac": f"t={now},v1=" + "0" * 64,
        "other secret": sign_webhook("not-the-secret", delivered),
        "other body": sign_webhook(secret, event("evt_other", "delivered")),
        "stale (6 min old)": sign_webhook(secret, delivered, now - 360),
        "from the future (6 min)": sign_webhook(secret, delivered, now + 360),
    }
    for name, signature in refused.items():
        r = await carrier_request(api, delivered, signature)
        assert r.status_code == 400, f"{name}: {r.status_code} {r.text}"
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE source = 'carrier' AND event_id = $1",
                               json.loads(delivered)["event_id"]) == 0

    # A valid event, then its exact replay (same body, same signature, still within 5 minutes).
    first_id = f"evt_{secrets.token_hex(6)}"
    in_transit = event(first_id, "in_transit")
    signature = sign_webhook(secret, in_transit)
    r = await carrier_request(api, in_transit, signature)
    assert r.status_code == 200 and r.json() == {"received": True, "case_id": case_id}, r.text
    r = await carrier_request(api, in_transit, signature)
    assert r.status_code == 200 and r.json() == {"received": True, "duplicate": True}, r.text
    # The same event id carrying "delivered" is a duplicate too: acknowledged, not acted upon.
    reused = event(first_id, "delivered")
    r = await carrier_request(api, reused, sign_webhook(secret, reused))
    assert r.status_code == 200 and r.json()["duplicate"] is True
    await asyncio.sleep(1.0)
    assert await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id) == "in_transit"
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE source = 'carrier' AND event_id = $1",
                               first_id) == 1

    # The properly signed, new "delivered" event is acted upon (so the checks above could have failed).
    r = await carrier_request(api, delivered, sign_webhook(secret, delivered))
    assert r.status_code == 200 and r.json() == {"received": True, "case_id": case_id}
    await wait_stage(w, case_id, "awaiting_refund_activation")


@pytest.mark.parametrize("body, fields", [
    (b"not json", set()), (b"[]", set()), (b"{}", {"event_id", "tracking_number", "status", "at"}),
    (b'{"event_id": "e1"}', {"tracking_number", "status", "at"}),
    (b'{"event_id": "e1", "tracking_number": "RET1234", "status": "lost", "at": "x"}', {"status", "at"}),
])
async def test_carrier_webhook_signed_but_malformed_is_422_naming_the_field(api, pool, body, fields):
    r = await carrier_request(api, body, sign_webhook(api.settings.carrier_webhook_secret, body))
    assert r.status_code == 422, r.text
    assert fields <= {e["loc"][-1] for e in r.json()["detail"] if e["loc"]}
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE source = 'carrier' AND event_id = 'e1'") == 0


def stripe_signed(api, payload: bytes, t: int | None = None) -> dict:
    # The gateway signs like Stripe: t=<unix>,v1=<hmac-sha256(secret, "<t>.<payload>")>, the scheme of sign_webhook.
    return {"Stripe-Signature": sign_webhook(api.settings.gateway_webhook_secret, payload, t),
            "Content-Type": "application/json"}


async def test_payment_webhook_signatures_and_replays(api, pool, agent_token):
    w = await make_world(api, pool, agent_token)
    case_id = await closed_case(w)
    order_id = await pool.fetchval("SELECT order_id FROM cases WHERE case_id = $1", case_id)
    refund_id = f"re_{secrets.token_hex(6)}"
    await pool.execute(
        """INSERT INTO refunds (idempotency_key, case_id, order_id, payment_intent, amount_cents, currency,
                                gateway_refund_id, status)
           VALUES ($1, $2, $3, $4, 1000, 'EUR', $5, 'pending')""",
        f"test:{refund_id}", case_id, order_id, f"pi_{order_id}", refund_id)
    event_id = f"evt_{secrets.token_hex(6)}"
    payload = json.dumps({"id": event_id, "object": "event", "type": "refund.failed",
                          "data": {"object": {"id": refund_id, "object": "refund", "status": "failed",
                                              "failure_reason": "expired_or_canceled_card", "metadata": {}}}}
                         ).encode()

    async def status() -> str:
        return await pool.fetchval("SELECT status FROM refunds WHERE gateway_refund_id = $1", refund_id)

    now = int(time.time())
    refused = {
        "missing": {"Content-Type": "application/json"},
        "bad mac": {"Stripe-Signature": f"t={now},v1={'0' * 64}"},
        "other secret": {"Stripe-Signature": sign_webhook("whsec_other", payload)},
        "stale (6 min old)": stripe_signed(api, payload, now - 360),
        # (A timestamp in the future is accepted: Stripe's verifier only bounds the age; the event id still
        # makes a replay a duplicate.)
    }
    for name, headers in refused.items():
        r = await api.post("/v1/webhooks/payments", content=payload, headers=headers)
        assert r.status_code == 400, f"{name}: {r.status_code} {r.text}"
    assert await status() == "pending"

    headers = stripe_signed(api, payload)
    r = await api.post("/v1/webhooks/payments", content=payload, headers=headers)
    assert r.status_code == 200 and r.json() == {"received": True}, r.text
    assert await status() == "failed"
    # Replayed as is within the 5 minutes: acknowledged as a duplicate, nothing applied again.
    await pool.execute("UPDATE refunds SET status = 'pending' WHERE gateway_refund_id = $1", refund_id)
    r = await api.post("/v1/webhooks/payments", content=payload, headers=headers)
    assert r.status_code == 200 and r.json() == {"received": True, "duplicate": True}, r.text
    assert await status() == "pending"
    assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE source = 'gateway' AND event_id = $1",
                               event_id) == 1


@pytest.mark.parametrize("event", [
    {"object": "event", "type": "refund.updated"},
    {"id": "evt_no_data", "object": "event", "type": "refund.updated"},
    {"id": "evt_bad_data", "object": "event", "type": "refund.updated", "data": "nope"},
    {"id": "evt_no_object", "object": "event", "type": "refund.updated", "data": {}},
    {"id": "evt_object_list", "object": "event", "type": "refund.updated", "data": {"object": [1]}},
    {"id": 12, "object": "event", "type": "refund.updated", "data": {"object": {"id": "re_1"}}},
    {"id": "evt_no_obj_id", "object": "event", "type": "refund.updated",
     "data": {"object": {"status": "succeeded", "metadata": {"workflow_id": "wf-nope"}}}},
    {"id": "evt_meta_list", "object": "event", "type": "bank_transfer.settled",
     "data": {"object": {"id": "tr_1", "metadata": ["x"]}}},
    [{"id": "evt_in_a_list"}], "evt_a_string", 12,  # signed JSON, but not an object
])
async def test_payment_webhook_signed_but_malformed_is_refused_without_5xx(api, pool, event):
    payload = json.dumps(event).encode()
    r = await api.post("/v1/webhooks/payments", content=payload, headers=stripe_signed(api, payload))
    assert r.status_code in (400, 422), r.text
    if isinstance(event, dict) and "id" in event:  # not recorded: the gateway's retry of a corrected event is not a "duplicate"
        assert await pool.fetchval("SELECT count(*) FROM webhook_events WHERE source = 'gateway' AND event_id = $1",
                                   str(event["id"])) == 0
