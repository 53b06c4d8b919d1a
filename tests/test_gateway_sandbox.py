"""The gateway sandbox through the real client (the official `stripe` package for refunds, httpx for
bank transfers): idempotency, lost answers, faults, signed events, failures, persistence."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe
import uvicorn

from activities.gateway_client import GatewayClient, GatewayPermanentError, verify_event
from devstack.gateway_sandbox import create_app, stripe_signature

API_KEY, SECRET = "sk_test_sandbox", "whsec_test_gateway"
IBAN_FR, IBAN_DE = "FR1420041010050500013M02606", "DE89370400440532013000"


# ----------------------------------------------------------------------------- fixtures
class Receiver:
    """A webhook endpoint in a thread: keeps every POST; answers 503 to the first `fail_next` ones."""

    def __init__(self):
        self.received: list[dict] = []
        self.fail_next = 0
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(503)
                else:
                    outer.received.append({"body": body, "signature": self.headers.get("Stripe-Signature")})
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/payments"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.received]

    async def wait_events(self, n: int, timeout: float = 3.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"expected {n} events, got {self.events()}"
            await asyncio.sleep(0.02)
        return self.events()


class Served:
    """A sandbox app served by uvicorn on a free loopback port, in the test loop."""

    def __init__(self, **kwargs):
        self.app = create_app(api_key=API_KEY, webhook_secret=SECRET, delivery_backoff_seconds=0.05, **kwargs)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))

    async def start(self) -> Served:
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task

    async def control(self, path: str, body: dict | None = None) -> dict:
        async with httpx.AsyncClient(base_url=self.url) as http:
            r = await (http.post(path, json=body) if path != "/_sandbox/state" else http.get(path))
            r.raise_for_status()
            return r.json()

    async def state(self) -> dict:
        return await self.control("/_sandbox/state")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
async def sandbox(receiver):
    served = await Served(webhook_url=receiver.url, settle_after_seconds=None).start()
    yield served
    await served.stop()


@pytest.fixture
async def client(sandbox):
    async with GatewayClient(sandbox.url, API_KEY) as c:
        yield c


async def refund(client, key: str, amount: int = 2500, pi: str = "pi_1") -> dict:
    return await client.refund_once(payment_intent=pi, amount_cents=amount, currency="EUR", idempotency_key=key,
                                    metadata={"case_id": "c1", "workflow_id": "c1-refund-1"})


async def transfer(client, key: str, amount: int = 1200, iban: str = IBAN_FR) -> dict:
    return await client.transfer_once(amount_cents=amount, currency="EUR", iban=iban, bic="BNPAFRPP",
                                      account_holder="Alice Martin", idempotency_key=key,
                                      metadata={"payout_id": "po_1", "workflow_id": "po_1"})


# ----------------------------------------------------------------------------- refunds
async def test_same_key_twice_is_one_refund(sandbox, client):
    args = dict(payment_intent="pi_1", amount_cents=2500, currency="EUR", idempotency_key="k1",
                metadata={"case_id": "c1"})
    first = await client.create_refund(**args)
    second = await client.create_refund(**args)  # replayed by the Idempotency-Key
    assert first["id"] == second["id"] and first["id"].startswith("re_")
    assert first["status"] == "pending" and first["amount"] == 2500 and first["currency"] == "eur"
    assert first["metadata"] == {"case_id": "c1", "idempotency_key": "k1"}
    with pytest.raises(GatewayPermanentError) as e:  # same key, other parameters
        await client.create_refund(**{**args, "amount_cents": 100})
    assert e.value.code == "idempotency_error"
    st = await sandbox.state()
    assert len(st["refunds"]) == 1 and st["refunded_by_payment_intent"] == {"pi_1": 2500}


async def test_lost_answer_then_retry_finds_the_refund_by_metadata(sandbox, client):
    await sandbox.control("/_sandbox/faults", {"mode": "accept_then_error", "count": 1})
    with pytest.raises(stripe.APIError):  # a 5xx: not permanent, the activity retries
        await refund(client, "k-lost")
    [made] = (await sandbox.state())["refunds"]
    # Stripe forgot the key (24 h): only the metadata lookup prevents a second refund.
    await sandbox.control("/_sandbox/forget_idempotency_keys")
    again = await refund(client, "k-lost")
    assert again["id"] == made["id"]
    assert len((await sandbox.state())["refunds"]) == 1
    assert await client.find_refund("pi_1", "k-other") is None


async def test_error_fault_does_nothing_then_the_retry_refunds(sandbox, client):
    await sandbox.control("/_sandbox/faults", {"mode": "error", "count": 1})
    with pytest.raises(stripe.APIError):
        await refund(client, "k-err")
    assert (await sandbox.state())["refunds"] == []
    made = await refund(client, "k-err")
    assert [r["id"] for r in (await sandbox.state())["refunds"]] == [made["id"]]


async def test_slow_answer_times_out_then_the_retry_finds_the_refund(sandbox):
    await sandbox.control("/_sandbox/faults", {"mode": "slow", "count": 1, "delay_seconds": 0.5})
    async with GatewayClient(sandbox.url, API_KEY, timeout=0.2) as impatient:
        with pytest.raises(stripe.APIConnectionError):
            await refund(impatient, "k-slow")
        assert len((await sandbox.state())["refunds"]) == 1  # the work was done
        await asyncio.sleep(0.4)
        await refund(impatient, "k-slow")
    assert len((await sandbox.state())["refunds"]) == 1


async def test_find_refund_reads_every_page(sandbox, client):
    ids = [(await refund(client, f"k{i}", amount=100 + i))["id"] for i in range(5)]
    await refund(client, "k-elsewhere", pi="pi_2")
    client.page_size = 2
    assert (await client.find_refund("pi_1", "k0"))["id"] == ids[0]  # the oldest: on the last page
    assert await client.find_refund("pi_1", "k-elsewhere") is None
    assert (await sandbox.state())["refunded_by_payment_intent"] == {"pi_1": 510, "pi_2": 2500}


async def test_settled_refund_sends_a_signed_event(sandbox, client, receiver):
    made = await refund(client, "k-ev")
    await asyncio.sleep(0.1)
    assert receiver.received == []  # nothing settles by itself here
    settled = await sandbox.control(f"/_sandbox/settle/{made['id']}")
    assert settled["status"] == "succeeded"
    [raw] = (await receiver.wait_events(1)) and receiver.received
    event = verify_event(raw["body"], raw["signature"], SECRET)
    assert event["type"] == "refund.updated" and event["object"] == "event" and event["id"].startswith("evt_")
    obj = event["data"]["object"]
    assert obj["id"] == made["id"] and obj["status"] == "succeeded" and obj["object"] == "refund"
    assert obj["metadata"]["workflow_id"] == "c1-refund-1" and obj["metadata"]["idempotency_key"] == "k-ev"
    assert (await client.find_refund("pi_1", "k-ev"))["status"] == "succeeded"

    tampered = raw["body"].replace(b'"succeeded"', b'"failed"')
    with pytest.raises(ValueError, match="Stripe-Signature"):
        verify_event(tampered, raw["signature"], SECRET)
    with pytest.raises(ValueError):
        verify_event(raw["body"], raw["signature"], "whsec_other")
    stale = stripe_signature(SECRET, raw["body"].decode(), timestamp=int(time.time()) - 1000)
    with pytest.raises(ValueError):
        verify_event(raw["body"], stale, SECRET)

    await sandbox.control(f"/_sandbox/settle/{made['id']}")  # settled already: the same event again
    events = await receiver.wait_events(2)
    assert events[1]["id"] == event["id"]


async def test_closed_card_refund_fails_with_refund_failed(sandbox, client, receiver):
    await sandbox.control("/_sandbox/fail_refunds_for", {"payment_intent": "pi_closed"})
    made = await refund(client, "k-closed", pi="pi_closed")
    await sandbox.control(f"/_sandbox/settle/{made['id']}")
    [raw] = (await receiver.wait_events(1)) and receiver.received
    event = verify_event(raw["body"], raw["signature"], SECRET)
    assert event["type"] == "refund.failed"
    assert event["data"]["object"]["status"] == "failed"
    assert event["data"]["object"]["failure_reason"] == "expired_or_canceled_card"
    assert (await sandbox.state())["refunded_by_payment_intent"] == {}


async def test_event_delivery_retries_until_the_webhook_answers(sandbox, client, receiver):
    receiver.fail_next = 3  # the API is down for a while
    made = await refund(client, "k-down")
    await sandbox.control(f"/_sandbox/settle/{made['id']}")
    [event] = await receiver.wait_events(1)
    assert event["data"]["object"]["id"] == made["id"] and receiver.attempts == 4
    [record] = (await sandbox.state())["events"]
    assert record["delivered"] and record["attempts"] == 4


async def test_bad_api_key_is_permanent(sandbox):
    async with GatewayClient(sandbox.url, "sk_test_wrong") as bad:
        with pytest.raises(GatewayPermanentError) as e:
            await refund(bad, "k-auth")
        assert e.value.http_status == 401
        with pytest.raises(GatewayPermanentError) as e:
            await transfer(bad, "t-auth")
        assert e.value.http_status == 401 and e.value.code == "api_key_invalid"
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{sandbox.url}/v1/refunds")
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    st = await sandbox.state()
    assert st["refunds"] == [] and st["transfers"] == []


async def test_invalid_refund_is_permanent(sandbox, client):
    with pytest.raises(GatewayPermanentError) as e:
        await refund(client, "k-zero", amount=0)
    assert e.value.code == "parameter_invalid_integer" and e.value.http_status == 400


# ----------------------------------------------------------------------------- bank transfers
async def test_transfers_once_settled_and_rejected(sandbox, client, receiver):
    first = await transfer(client, "t1")
    assert (await transfer(client, "t1"))["id"] == first["id"]
    await sandbox.control("/_sandbox/faults", {"mode": "accept_then_error", "count": 1})
    with pytest.raises(httpx.HTTPStatusError):  # a 5xx: retried by the activity
        await transfer(client, "t2")
    await sandbox.control("/_sandbox/forget_idempotency_keys")
    second = await transfer(client, "t2")
    assert len((await sandbox.state())["transfers"]) == 2
    assert first["status"] == "pending" and first["metadata"]["idempotency_key"] == "t1"

    await sandbox.control("/_sandbox/reject_transfers_to", {"iban": "DE89 3704 0044 0532 0130 00"})
    rejected = await transfer(client, "t3", iban=IBAN_DE)
    for obj in (first, second, rejected):
        await sandbox.control(f"/_sandbox/settle/{obj['id']}")
    raws = (await receiver.wait_events(3)) and receiver.received
    events = {e["data"]["object"]["id"]: e for e in (verify_event(r["body"], r["signature"], SECRET) for r in raws)}
    assert events[first["id"]]["type"] == events[second["id"]]["type"] == "bank_transfer.settled"
    assert events[first["id"]]["data"]["object"]["status"] == "settled"
    bad = events[rejected["id"]]
    assert bad["type"] == "bank_transfer.rejected"
    assert bad["data"]["object"]["status"] == "rejected" and bad["data"]["object"]["failure_reason"] == "account_closed"
    assert (await client.find_transfer("t3"))["status"] == "rejected"
    assert len((await sandbox.state())["transfers"]) == 3

    with pytest.raises(GatewayPermanentError) as e:
        await transfer(client, "t4", iban="FR1420041010050500013M02607")  # wrong check digits
    assert e.value.code == "invalid_iban"


# ----------------------------------------------------------------------------- persistence
async def test_state_file_survives_a_restart_and_pending_settles(tmp_path, receiver):
    state_file = tmp_path / "gateway.json"
    first = await Served(webhook_url=receiver.url, settle_after_seconds=None, state_file=state_file).start()
    async with GatewayClient(first.url, API_KEY) as c:
        made = await refund(c, "k-persist")
    await first.stop()

    second = await Served(webhook_url=receiver.url, settle_after_seconds=0.1, state_file=state_file).start()
    try:
        [event] = await receiver.wait_events(1)  # re-scheduled at start
        assert event["data"]["object"]["id"] == made["id"] and event["type"] == "refund.updated"
        async with GatewayClient(second.url, API_KEY) as c:
            again = await c.create_refund("pi_1", 2500, "eur", "k-persist",
                                          {"case_id": "c1", "workflow_id": "c1-refund-1"})  # key remembered
        assert again["id"] == made["id"]
        assert [r["status"] for r in (await second.state())["refunds"]] == ["succeeded"]
    finally:
        await second.stop()
