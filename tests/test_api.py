"""The HTTP API against the real stack pieces: PostgreSQL, the time-skipping Temporal server with the
worker, the SMTP sink, and a gateway sandbox that settles by calling the API's signed webhook."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import stripe

from config import Settings
from tests.helpers.servers import api_stack
from tests.helpers.data import make_order, make_party, order_total
from tests.helpers.cases import mail_with


@pytest.fixture(scope="module")
async def api(api_env, pool, test_settings):
    async with api_stack(api_env.client, test_settings, "aftersales-api-test") as (served, sandbox, _):
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            client.sandbox = sandbox
            yield client




def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def wait_case(api, token, case_id, predicate, timeout=20.0) -> dict:
    end = time.monotonic() + timeout
    body = None
    while time.monotonic() < end:
        body = (await api.get(f"/v1/cases/{case_id}", headers=bearer(token))).json()
        if predicate(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"case never matched: {body}")


async def test_unknown_order_is_404(api, party):
    r = await api.post("/v1/orders/ord_nope/help-requests", json={"kind": "cancellation"},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 404 and "ord_nope" in r.json()["error"]


async def test_another_customers_order_is_403(api, pool, party):
    other = await make_party(pool)
    order_id = await make_order(pool, other, "paid")
    r = await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 403
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE order_id = $1", order_id) == 0


@pytest.mark.parametrize("body, field", [({"kind": "teleport"}, "kind"), ({}, "kind"),
                                         ({"kind": "defect", "category": "sticky"}, "category")])
async def test_malformed_body_is_422_naming_the_field(api, pool, party, body, field):
    order_id = await make_order(pool, party, "paid")
    r = await api.post(f"/v1/orders/{order_id}/help-requests", json=body, headers=bearer(party["customer_token"]))
    assert r.status_code == 422
    assert field in [e["loc"][-1] for e in r.json()["detail"]]


async def test_no_token_401_bad_token_401(api, pool, party):
    order_id = await make_order(pool, party, "paid")
    assert (await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"})).status_code == 401
    r = await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                       headers=bearer("not-a-token"))
    assert r.status_code == 401


async def test_double_click_opens_one_case(api, pool, party):
    order_id = await make_order(pool, party, "validated")
    responses = await asyncio.gather(*[
        api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                 headers=bearer(party["customer_token"])) for _ in range(5)])
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["case_id"] for r in responses}) == 1
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE order_id = $1", order_id) == 1


async def test_decision_wrong_stage_409_other_seller_403_customer_403(api, pool, party):
    order_id = await make_order(pool, party, "validated")
    case = (await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                           headers=bearer(party["customer_token"]))).json()
    case_id = case["case_id"]
    await wait_case(api, party["customer_token"], case_id, lambda c: c["stage"] == "awaiting_seller_decision")
    other = await make_party(pool)
    r = await api.post(f"/v1/cases/{case_id}/decision", json={"decision": "accept"},
                       headers=bearer(other["seller_token"]))
    assert r.status_code == 403
    r = await api.post(f"/v1/cases/{case_id}/decision", json={"decision": "accept"},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 403
    r = await api.post(f"/v1/cases/{case_id}/decision", json={"decision": "maybe"},
                       headers=bearer(party["seller_token"]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "decision"
    r = await api.post(f"/v1/cases/{case_id}/decision", json={"decision": "refuse", "reason": "Shipped already."},
                       headers=bearer(party["seller_token"]))
    assert r.status_code == 200, r.text
    closed = await wait_case(api, party["customer_token"], case_id, lambda c: c["stage"] == "closed")
    assert closed["outcome"] == "refused"
    r = await api.post(f"/v1/cases/{case_id}/decision", json={"decision": "accept"},
                       headers=bearer(party["seller_token"]))
    assert r.status_code == 409 and r.json()["stage"] == "closed"


async def test_case_is_private_to_its_customer_seller_and_care(api, pool, party):
    order_id = await make_order(pool, party, "shipped")
    case_id = (await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                              headers=bearer(party["customer_token"]))).json()["case_id"]
    other = await make_party(pool)
    assert (await api.get(f"/v1/cases/{case_id}", headers=bearer(other["customer_token"]))).status_code == 403
    assert (await api.get(f"/v1/cases/{case_id}", headers=bearer(other["seller_token"]))).status_code == 403
    assert (await api.get(f"/v1/cases/{case_id}", headers=bearer(party["seller_token"]))).status_code == 200
    assert (await api.get("/v1/cases/case_nope", headers=bearer(party["customer_token"]))).status_code == 404


async def test_paid_order_help_request_ends_refunded_through_the_signed_webhook(api, pool, party, mail_sink):
    order_id = await make_order(pool, party, "paid")
    r = await api.post(f"/v1/orders/{order_id}/help-requests", json={"kind": "cancellation"},
                       headers=bearer(party["customer_token"]))
    assert r.status_code == 201
    case_id = r.json()["case_id"]
    # The sandbox settles 0.5 s after the refund and calls the API's webhook, which signals the case.
    final = await wait_case(api, party["customer_token"], case_id, lambda c: c["stage"] == "closed")
    assert final["outcome"] == "refunded" and final["refunded_cents"] == order_total()
    assert [e["event"] for e in final["timeline"]][-2:] == ["refund_settled", "case_closed"]
    async with httpx.AsyncClient() as http:
        refunds = [x for x in (await http.get(f"{api.sandbox.url}/_sandbox/state")).json()["refunds"]
                   if x["payment_intent"] == f"pi_{order_id}"]
    assert len(refunds) == 1 and refunds[0]["status"] == "succeeded"
    assert await pool.fetchval("SELECT status FROM refunds WHERE case_id = $1", case_id) == "succeeded"
    assert await mail_with(mail_sink, party["customer_email"], "est close (remboursée)")  # French, the default


async def test_payment_webhook_refuses_bad_and_stale_signatures(api):
    payload = json.dumps({"id": "evt_x", "type": "refund.updated", "object": "event",
                          "data": {"object": {"id": "re_x", "status": "succeeded", "metadata": {}}}})
    r = await api.post("/v1/webhooks/payments", content=payload,
                       headers={"Stripe-Signature": "t=1,v1=deadbeef", "Content-Type": "application/json"})
    assert r.status_code == 400
    old = int(time.time()) - 3600  # a replay of an hour-old event
    sig = stripe.WebhookSignature._compute_signature(f"{old}.{payload}", "whsec_test")
    r = await api.post("/v1/webhooks/payments", content=payload,
                       headers={"Stripe-Signature": f"t={old},v1={sig}", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert (await api.post("/v1/webhooks/payments", content=payload)).status_code == 400


def test_no_api_route_hops_to_a_thread_for_its_dependencies():
    # FastAPI runs a plain `def` endpoint or dependency in its thread pool: a thread hop (and a wake-up of
    # the event loop) per request and dependency. The JSON API's are all coroutines.
    import inspect

    from fastapi.routing import APIRoute

    from starter.api import create_app

    def calls(dependant):
        yield dependant.call
        for sub in dependant.dependencies:
            yield from calls(sub)

    def api_routes(routes):
        for r in routes:
            if isinstance(r, APIRoute):
                yield r
            elif hasattr(r, "original_router"):  # an included router (FastAPI ≥ 0.16x)
                yield from api_routes(r.original_router.routes)

    routes = [r for r in api_routes(create_app(Settings()).routes)
              if r.endpoint.__module__.startswith("starter.routes.") and r.endpoint.__module__ != "starter.routes.pages"]
    assert len(routes) > 10
    sync = {f"{r.path}: {c.__qualname__}" for r in routes for c in calls(r.dependant)
            if c is not None and not inspect.iscoroutinefunction(c)}
    assert not sync
