"""Hostile input against the served API: never a 5xx, never a write outside the attachments directory.

* Every operation of the OpenAPI schema is fuzzed with schemathesis (valid and invalid data, MAX_EXAMPLES
  each), mostly with the token of the role allowed on it (else another role's or a fuzzed Authorization
  header), path parameters fuzzed, hostile or pointing at real orders, cases and payouts, and strings
  PostgreSQL refuses planted in the body's text fields, so requests reach the service, the case workflows
  and PostgreSQL, not only the validation layer. Check: schemathesis' not_a_server_error.
* The signed webhooks are fuzzed with arbitrary JSON that carries a valid signature.
* Uploads: over the size limit (413), a fake type (422 naming `file`), path traversal in the file name
  (stored under the checksum, name sanitised), and bodies over the API's size limits (413), declared or
  streamed without a Content-Length.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from urllib.parse import quote
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from activities.cases import sign_webhook
from config import Settings
from domain.policy import Policy
from starter.api import JSON_BODY_LIMIT, create_app
from starter.auth import create_token
from tests.helpers.servers import api_stack
from tests.helpers.data import make_order, make_party

MAX_EXAMPLES = 25
MAX_PHOTO = Policy().attachment_max_bytes  # 10 MiB
JPEG = base64.b64decode(  # a real 1x1 JPEG (JFIF)
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=")

OPENAPI = create_app(Settings(temporal_address="unused")).openapi()
SCHEMA = schemathesis.openapi.from_dict(OPENAPI)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
# Strings PostgreSQL, the logs, templates or a shell would choke on. The schema fuzzer rarely produces them
# in the fields that reach storage, so they are also planted there on purpose.
STORAGE_BREAKERS = ["\x00", "nul\x00byte", "\ud800", "lone \udfff low"]  # PostgreSQL refuses these
HOSTILE = [*STORAGE_BREAKERS, "\u202eexe.jpg", "'; DROP TABLE cases; --",
           "{{7*7}}${7*7}", "${jndi:ldap://x/a}", "../../../etc/passwd", "%00%0d%0a", "line\r\nX-Injected: 1",
           "\U0001F600" * 3, "\uffff\ufffe", "   ", "", "a" * 6000, "\\", '"quoted"', "<script>alert(1)</script>"]


def text_fields(method: str, path: str) -> list[str]:
    """The JSON body's properties that may hold a string (directly or as one choice of anyOf)."""
    ref = (OPENAPI["paths"][path][method.lower()].get("requestBody", {}).get("content", {})
           .get("application/json", {}).get("schema", {}).get("$ref"))
    if not ref:
        return []
    props = OPENAPI["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("properties", {})
    return [name for name, spec in props.items()
            if spec.get("type") == "string" or any(c.get("type") == "string" for c in spec.get("anyOf", []))]


# ----------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
async def served(api_env, pool, test_settings, tmp_path_factory):
    """The API with its own worker (on its own task queue). Attachments go to <tmp>/root/attachments, so a
    path traversal would land in <tmp>/root or <tmp>: both are watched."""
    tmp = tmp_path_factory.mktemp("hostile")
    async with api_stack(api_env.client, test_settings, "aftersales-hostile-test",
                         attachments_dir=str(tmp / "root" / "attachments")) as (app, _, s):
        yield app, s, tmp


@pytest.fixture(scope="module")
async def api(served):
    app, s, tmp = served
    async with httpx.AsyncClient(base_url=app.url, timeout=60) as client:
        client.settings, client.tmp = s, tmp
        yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def wait_stage(pool, case_id: str, stage: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while (current := await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id)) != stage:
        assert time.monotonic() < end, f"case {case_id} stayed in {current}, never reached {stage}"
        await asyncio.sleep(0.05)


async def open_case(api, pool, party, kind: str, order_status: str, stage: str, **body) -> str:
    delivered_at = datetime.now(timezone.utc) if order_status == "delivered" else None
    order_id = await make_order(pool, party, order_status, delivered_at=delivered_at)
    r = await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": kind, **body},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 201, r.text
    await wait_stage(pool, r.json()["case_id"], stage)
    return r.json()["case_id"]


async def defect_case(api, pool, party) -> str:
    return await open_case(api, pool, party, "defect", "delivered", "awaiting_photos", category="screen",
                           description="The screen flickers and goes black after a minute.")


# ----------------------------------------------------------------------------- schema fuzzing
@dataclass
class Targets:
    tokens: dict[str, str]
    ids: dict[str, list[str]]  # path parameter -> real ids


@pytest.fixture(scope="module")
async def targets(api, pool) -> Targets:
    """Real things for the fuzzer to hit: orders in each status, cases waiting in several stages, a payout."""
    party = await make_party(pool)
    async with pool.acquire() as conn:
        agent = await create_token(conn, "agent", "care_1")
    # Many orders: opening a case uses one up (the next request on it returns the open case).
    orders = [await make_order(pool, party, status, delivered_at=datetime.now(timezone.utc) if status == "delivered"
                               else None) for _ in range(10) for status in ("paid", "validated", "shipped", "delivered")]
    cases = [
        await open_case(api, pool, party, "cancellation", "validated", "awaiting_seller_decision"),
        await defect_case(api, pool, party),
        await open_case(api, pool, party, "withdrawal", "delivered", "awaiting_return_label"),
    ]
    from activities.wallet import add_entry, ensure_wallet

    async with pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, party["customer_id"])
        await add_entry(conn, customer_id=party["customer_id"], kind="credit", cents=100_000, currency="EUR",
                        key=f"fuzz-credit:{party['customer_id']}", reason="fuzz credit")
    r = await api.post("/v1/wallet/payouts", headers=bearer(party["customer_token"]),
                       json={"amount_cents": 1000, "account_holder": "Fuzz Customer", "iban": "FR1420041010050500013M02606"})
    assert r.status_code == 201, r.text
    return Targets(tokens={"customer": party["customer_token"], "seller": party["seller_token"], "agent": agent},
                   ids={"order_id": orders, "case_id": cases, "payout_id": [r.json()["payout_id"]]})


def actor_of(label: str) -> str:
    """Who may call the operation: the fuzzer uses that role most of the time, so requests get past the
    role checks into the service, the case workflows and PostgreSQL."""
    if any(action in label for action in ("/decision", "/return-label", "/receipt", "/refund-activation",
                                          "/outbound-")):
        return "seller"
    if "/care" in label or "/escalations" in label or "/codec/" in label or "/erasure" in label:
        return "agent"
    return "customer"


def fuzz(operation, base_url: str, t: Targets) -> None:
    """Runs in a thread: the served app lives on the test's event loop, which stays free meanwhile."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))
    actor = actor_of(operation.label)
    texts = text_fields(operation.method, operation.path)
    session = requests.Session()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=strategy, who=st.sampled_from([actor] * 4 + ["customer", "seller", "agent", "fuzzed"]),
           ids=st.sampled_from(["real", "real", "hostile", "fuzzed"]), pick=st.integers(0, 39),
           poison=st.none() | st.sampled_from(STORAGE_BREAKERS) | st.sampled_from(HOSTILE),
           where=st.sampled_from(texts) if texts else st.none())
    def run(case, who, ids, pick, poison, where):
        if who != "fuzzed":
            case.headers = {**(case.headers or {}), "authorization": f"Bearer {t.tokens[who]}"}
        for name in case.path_parameters or {}:
            if ids == "real" and name in t.ids:  # a real order, case or payout
                case.path_parameters[name] = t.ids[name][pick % len(t.ids[name])]
            elif ids == "hostile" and poison:  # path parameters are sent as generated: quoted
                case.path_parameters[name] = quote(poison.encode("utf-8", "surrogatepass"), safe="")
        if poison is not None and where is not None and isinstance(case.body, dict):
            case.body[where] = poison
        case.call_and_validate(base_url=base_url, session=session, checks=[not_a_server_error], timeout=30)

    try:
        run()
    finally:
        session.close()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
async def test_fuzzed_requests_never_get_a_server_error(api, targets, operation):
    await asyncio.to_thread(fuzz, operation, str(api.base_url), targets)


def test_every_operation_is_fuzzed():
    assert len(OPERATIONS) >= 20 and any(op.label == "POST /v1/cases/{case_id}/attachments" for op in OPERATIONS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
carrier_like = st.fixed_dictionaries({}, optional={
    "event_id": st.text(max_size=120) | json_values, "tracking_number": st.text(max_size=70) | json_values,
    "status": st.sampled_from(["in_transit", "delivered", "exception", "lost"]) | json_values,
    "at": st.datetimes().map(lambda d: d.isoformat()) | json_values})
gateway_like = st.fixed_dictionaries({"object": st.just("event")}, optional={
    "id": st.text(max_size=40) | json_values,
    "type": st.sampled_from(["refund.updated", "refund.failed", "bank_transfer.settled", "bank_transfer.rejected"])
    | json_values,
    "data": st.fixed_dictionaries({}, optional={"object": st.fixed_dictionaries({}, optional={
        "id": st.text(max_size=20) | json_values, "status": json_values | st.sampled_from(["succeeded", "failed"]),
        "failure_reason": json_values, "metadata": json_values | st.dictionaries(
            st.sampled_from(["workflow_id", "payout_id"]), st.text(max_size=20) | json_values)}) | json_values})
    | json_values})


def fuzz_signed(base_url: str, path: str, secret: str, header: str, bodies) -> None:
    with requests.Session() as session:
        @settings(max_examples=60, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(body=bodies | json_values)
        def run(body):
            payload = json.dumps(body).encode()
            r = session.post(base_url + path, data=payload, timeout=30,
                             headers={header: sign_webhook(secret, payload), "Content-Type": "application/json"})
            assert r.status_code < 500, (payload, r.status_code, r.text)

        run()


async def test_signed_but_arbitrary_carrier_events_never_get_a_server_error(api):
    await asyncio.to_thread(fuzz_signed, str(api.base_url), "/v1/webhooks/carrier",
                            api.settings.carrier_webhook_secret, "X-Carrier-Signature", carrier_like)


async def test_signed_but_arbitrary_gateway_events_never_get_a_server_error(api):
    await asyncio.to_thread(fuzz_signed, str(api.base_url), "/v1/webhooks/payments",
                            api.settings.gateway_webhook_secret, "Stripe-Signature", gateway_like)


# ----------------------------------------------------------------------------- uploads
def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def upload(api, party, case_id: str, name: str, content: bytes, ctype: str = "image/jpeg") -> httpx.Response:
    return await api.post(f"/v1/cases/{case_id}/attachments", files={"file": (name, content, ctype)},
                          headers=bearer(party["customer_token"]))


async def test_photo_over_the_size_limit_is_413_and_nothing_is_stored(api, pool):
    party = await make_party(pool)
    case_id = await defect_case(api, pool, party)
    before = all_files(api.tmp)
    for size in (MAX_PHOTO + 1, MAX_PHOTO + 3 * 1024 * 1024):  # refused by the service, then by the body limit
        r = await upload(api, party, case_id, "big.jpg", JPEG + b"\0" * (size - len(JPEG)))
        assert r.status_code == 413, r.text
    assert r.status_code == 413
    assert await pool.fetchval("SELECT count(*) FROM attachments WHERE case_id = $1", case_id) == 0
    assert all_files(api.tmp) == before
    # Exactly at the limit is accepted: the limit is the policy's, not lower.
    r = await upload(api, party, case_id, "max.jpg", JPEG + b"\0" * (MAX_PHOTO - len(JPEG)))
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == MAX_PHOTO


async def test_photo_over_the_limit_streamed_without_length_is_413(api, pool):
    party = await make_party(pool)
    case_id = await defect_case(api, pool, party)
    boundary = "hostile" + secrets.token_hex(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + JPEG
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def chunks():  # no Content-Length: the server has to count
        yield head
        for _ in range(12):
            yield b"\0" * (1024 * 1024)
        yield tail

    r = await api.post(f"/v1/cases/{case_id}/attachments", content=chunks(),
                       headers={**bearer(party["customer_token"]),
                                "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    assert await pool.fetchval("SELECT count(*) FROM attachments WHERE case_id = $1", case_id) == 0


@pytest.mark.parametrize("name, content, ctype", [
    ("photo.jpg", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n", "image/jpeg"),
    ("photo.jpg", b"just some text pretending to be a photo", "image/jpeg"),
    ("photo.png", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/png"),
    ("photo.jpg", b"", "image/jpeg"),
    ("photo.jpg", JPEG[:2], "image/jpeg"),  # a truncated signature
])
async def test_fake_image_type_is_422_naming_file(api, pool, name, content, ctype):
    party = await make_party(pool)
    case_id = await defect_case(api, pool, party)
    before = all_files(api.tmp)
    r = await upload(api, party, case_id, name, content, ctype)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "file"
    assert await pool.fetchval("SELECT count(*) FROM attachments WHERE case_id = $1", case_id) == 0
    assert all_files(api.tmp) == before


@pytest.mark.parametrize("name, shown", [
    ("../../etc/passwd.jpg", "passwd.jpg"),
    ("../../../../../../tmp/evil.jpg", "evil.jpg"),
    ("..\\..\\windows\\evil.jpg", "evil.jpg"),
    ("/etc/cron.d/evil.jpg", "evil.jpg"),
    ("..", "photo"),
    ("photo\x00.jpg\x07", "photo.jpg"),
    ("<img src=x onerror=alert(1)>.jpg", "img srcx onerroralert1.jpg"),
    ("\u202egpj.exe", "gpj.exe"),
])
async def test_path_traversal_in_the_file_name_is_stored_under_the_checksum(api, pool, name, shown):
    party = await make_party(pool)
    case_id = await defect_case(api, pool, party)
    content = JPEG + secrets.token_bytes(16)  # trailing bytes after EOI: still a JPEG, a distinct checksum
    digest = hashlib.sha256(content).hexdigest()
    before = all_files(api.tmp)
    # The multipart body is written by hand so the name reaches the server byte for byte (no client escaping).
    boundary = "b" + secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    r = await api.post(f"/v1/cases/{case_id}/attachments", content=body,
                       headers={**bearer(party["customer_token"]),
                                "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == digest
    stored = Path(api.settings.attachments_dir) / case_id / f"{digest}.jpg"
    # Exactly one new file anywhere under the temporary tree: the checksum-named one inside ATTACHMENTS_DIR.
    assert all_files(api.tmp) - before == {stored}
    assert stored.read_bytes() == content
    row = await pool.fetchrow("SELECT filename, storage_path FROM attachments WHERE case_id = $1", case_id)
    assert row["storage_path"] == str(stored) and row["filename"] == shown
    assert not Path("/etc/passwd.jpg").exists() and not Path("/tmp/evil.jpg").exists()
    listed = (await api.get(f"/v1/cases/{case_id}", headers=bearer(party["customer_token"]))).json()["attachments"]
    assert [a["filename"] for a in listed] == [shown]


# ----------------------------------------------------------------------------- oversized JSON
HUGE = json.dumps({"kind": "cancellation", "description": "x" * (5 * 1024 * 1024)}).encode()


async def test_huge_json_body_is_refused_with_413(api, pool):
    party = await make_party(pool)
    order_id = await make_order(pool, party, "validated")
    r = await api.post(f"/v1/orders/{order_id}/help-requests", content=HUGE,
                       headers={**bearer(party["customer_token"]), "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE order_id = $1", order_id) == 0
    # Just under the limit: read and answered by validation (the description is at most 5000 characters).
    small = json.dumps({"kind": "cancellation", "description": "x" * (JSON_BODY_LIMIT - 100)}).encode()
    r = await api.post(f"/v1/orders/{order_id}/help-requests", content=small,
                       headers={**bearer(party["customer_token"]), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "description", r.text


@pytest.mark.parametrize("path", ["/v1/orders/ord_x/help-requests", "/v1/webhooks/carrier", "/v1/webhooks/payments",
                                  "/v1/wallet/payouts"])
async def test_huge_json_streamed_without_length_is_refused_with_413(api, pool, path):
    party = await make_party(pool)

    async def chunks():
        for i in range(0, len(HUGE), 64 * 1024):
            yield HUGE[i:i + 64 * 1024]

    r = await api.post(path, content=chunks(), headers={**bearer(party["customer_token"]),
                                                        "Content-Type": "application/json",
                                                        "X-Carrier-Signature": "t=1,v1=0",
                                                        "Stripe-Signature": "t=1,v1=0"})
    assert r.status_code == 413, r.text


async def test_huge_body_with_another_content_type_is_refused_with_413(api, pool):
    party = await make_party(pool)
    r = await api.post("/v1/wallet/payouts", content=b"a=" + b"b" * (2 * 1024 * 1024),
                       headers={**bearer(party["customer_token"]),
                                "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413, r.text


# ----------------------------------------------------------------------------- text PostgreSQL cannot store
@pytest.mark.parametrize("text", ["before\u0000after", "lone \ud800 surrogate"])
async def test_text_postgres_cannot_store_is_422_naming_the_field(api, pool, text):
    """PostgreSQL text and jsonb refuse NUL characters and unpaired surrogates: refused up front, never a 500."""
    party = await make_party(pool)
    order_id = await make_order(pool, party, "validated")
    payload = json.dumps({"kind": "cancellation", "description": text})  # ensure_ascii: valid JSON escapes
    r = await api.post(f"/v1/orders/{order_id}/help-requests", content=payload,
                       headers={**bearer(party["customer_token"]), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "description"
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE order_id = $1", order_id) == 0
    case_id = await open_case(api, pool, party, "cancellation", "validated", "awaiting_seller_decision")
    r = await api.post(f"/v1/cases/{case_id}/decision", content=json.dumps({"decision": "refuse", "reason": text}),
                       headers={**bearer(party["seller_token"]), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == "reason"


@pytest.mark.parametrize("method, path, field", [
    ("GET", "/v1/cases/case%00x", "case_id"), ("POST", "/v1/cases/case%00x/withdraw", "case_id"),
    ("POST", "/v1/orders/ord%00x/help-requests", "order_id"), ("GET", "/v1/wallet/payouts/po%00x", "payout_id"),
    ("GET", "/v1/cases/case%1Bx", "case_id"), ("GET", "/v1/cases/" + "c" * 201, "case_id"),
    # An action reads its token and its case in one statement; a hostile id is not looked up.
    ("POST", "/v1/cases/case%1Bx/refund-activation", "case_id"),
    ("POST", "/v1/cases/" + "c" * 201 + "/receipt", "case_id"),
])
async def test_control_characters_in_a_path_id_are_422_naming_it(api, pool, method, path, field):
    party = await make_party(pool)
    r = await api.request(method, path, json={"kind": "cancellation"}, headers=bearer(party["customer_token"]))
    assert r.status_code == 422, r.text
    assert field in [e["loc"][-1] for e in r.json()["detail"]]


async def test_invalid_utf8_in_a_path_id_is_not_a_server_error(api, pool):
    party = await make_party(pool)
    r = await api.get("/v1/cases/%ED%A0%80%FF", headers=bearer(party["customer_token"]))
    assert r.status_code in (404, 422), r.text
    r = await api.post("/v1/cases/%ED%A0%80%FF/withdraw", json={}, headers=bearer(party["customer_token"]))
    assert r.status_code in (404, 422), r.text


@pytest.mark.parametrize("path", ["/v1/cases/case%00x/withdraw", "/v1/cases/" + "c" * 201 + "/withdraw",
                                  "/v1/cases/case_nosuch/withdraw"])
async def test_an_action_without_a_valid_token_is_401_whatever_its_case_id(api, pool, path):
    for headers in ({}, bearer("not-a-token")):
        r = await api.post(path, json={}, headers=headers)
        assert r.status_code == 401, r.text


@pytest.mark.parametrize("path, payload", [
    ("/v1/webhooks/carrier", b'{"event_id": "\\u0000", "tracking_number": "RET1234", "status": "delivered",'
                             b' "at": "2026-01-01T00:00:00Z"}'),
    ("/v1/webhooks/carrier", b'{"event_id": "\xff\xfe", "tracking_number": "RET1234"}'),
    ("/v1/webhooks/carrier", b'{"event_id": "\\ud800", "tracking_number": "RET1234", "status": "delivered",'
                             b' "at": "2026-01-01T00:00:00Z"}'),
    ("/v1/webhooks/payments", b'{"id": "evt\\u0000", "object": "event", "type": "refund.updated",'
                              b' "data": {"object": {"id": "re_1", "status": "succeeded"}}}'),
    ("/v1/webhooks/payments", b'{"id": "evt_1", "object": "event", "type": "refund.updated",'
                              b' "data": {"object": {"id": "re_1", "status": "failed", "failure_reason": "\\ud800"}}}'),
    ("/v1/webhooks/payments", b'\xff\xfe{"id": "evt_1"}'),
])
async def test_signed_webhook_text_postgres_cannot_store_is_refused_without_5xx(api, path, payload):
    secret = api.settings.carrier_webhook_secret if "carrier" in path else api.settings.gateway_webhook_secret
    header = "X-Carrier-Signature" if "carrier" in path else "Stripe-Signature"
    r = await api.post(path, content=payload, headers={header: sign_webhook(secret, payload),
                                                       "Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text


@pytest.mark.parametrize("field, path, role, body", [
    ("note", "/withdraw", "customer_token", {"note": "changed my mind\u0000"}),
    ("reason", "/decision", "seller_token", {"decision": "refuse", "reason": "no\u0000"}),
])
async def test_unstorable_text_in_an_action_is_refused_before_it_reaches_the_case(api, pool, field, path, role, body):
    """A note the case would record is refused up front: accepted, it would be applied by the workflow and
    then its timeline write would fail on every retry, leaving the case's read model behind for good."""
    party = await make_party(pool)
    case_id = await open_case(api, pool, party, "cancellation", "validated", "awaiting_seller_decision")
    r = await api.post(f"/v1/cases/{case_id}{path}", json=body, headers=bearer(party[role]))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == field
    # The case is intact and still acts.
    r = await api.post(f"/v1/cases/{case_id}/withdraw", json={"note": "changed my mind"},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 200, r.text
    await wait_stage(pool, case_id, "closed")
