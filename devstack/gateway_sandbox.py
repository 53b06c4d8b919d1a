"""Payment-gateway sandbox: plays Stripe's part for the subset the project uses, behind the same client.

- Stripe Refunds API (form-encoded, as the `stripe` package sends it, `Authorization: Bearer <key>`):
  POST /v1/refunds (payment_intent, amount, currency, metadata[...], reason), GET /v1/refunds/{id},
  GET /v1/refunds?payment_intent=…&limit=…&starting_after=… (newest first, Stripe list object).
  Refunds go pending → succeeded/failed; then a Stripe event (refund.updated / refund.failed) is
  POSTed to the webhook, signed `Stripe-Signature: t=…,v1=…`, retried with backoff until 2xx.
- Bank-transfer port for wallet payouts (JSON): POST /v1/bank_transfers (amount, currency, iban, bic,
  account_holder, metadata), GET /v1/bank_transfers/{id}, GET /v1/bank_transfers?idempotency_key=…
  (filter on metadata["idempotency_key"]; limit/starting_after as above). pending → settled/rejected,
  events bank_transfer.settled / bank_transfer.rejected, signed the same way.
- Idempotency-Key as Stripe: same key + same params → the first answer replayed (header
  `Idempotent-Replayed: true`); same key + other params → 400 idempotency_error. Kept until
  /_sandbox/forget_idempotency_keys (what Stripe does after 24 h).
- Control API, no auth: POST /_sandbox/faults {"mode": none|error|slow|accept_then_error|succeed_at_once|
  no_event|charge_already_refunded|invalid_api_key, "count": N,
  "delay_seconds": x}, POST /_sandbox/fail_refunds_for {"payment_intent"}, POST
  /_sandbox/reject_transfers_to {"iban"}, POST /_sandbox/settle/{id} (settle now; on a settled object:
  send its event again), POST /_sandbox/forget_idempotency_keys, GET /_sandbox/state, POST /_sandbox/reset.
- With a state file, everything but the faults is saved after each change and reloaded at start;
  pending settlements and undelivered events are resumed.

    python -m devstack.gateway_sandbox --port 8100 --api-key sk_test_sandbox \
        --webhook-url http://127.0.0.1:8000/v1/webhooks/payments --webhook-secret whsec_sandbox \
        --settle-after 3 --state-file .data/gateway.json
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import stripe
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from schwifty import IBAN

log = logging.getLogger("gateway_sandbox")

REFUND_PARAMS = {"payment_intent", "amount", "currency", "metadata", "reason"}
REFUND_REASONS = {"duplicate", "fraudulent", "requested_by_customer"}
TRANSFER_PARAMS = {"amount", "currency", "iban", "bic", "account_holder", "metadata"}
FAULT_MODES = {"none", "error", "slow", "accept_then_error",
               # Stripe behaviours the cases must handle (refunds; count = how many calls they apply to):
               "succeed_at_once",  # the refund is created `succeeded` (no event follows)
               "no_event",  # created pending, settled later, but its event is never sent (a lost webhook)
               "charge_already_refunded",  # 400 charge_already_refunded: refunded elsewhere
               "invalid_api_key"}  # 401 api_key_invalid


def stripe_signature(secret: str, payload: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value that `stripe.Webhook.construct_event` checks."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
           param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "code": code, "message": message, "param": param}},
                        status_code=status)


def _parse_form(body: bytes) -> dict:
    """Stripe's form encoding (`metadata[key]=value`) back to a dict."""
    out: dict = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        m = re.fullmatch(r"(\w+)\[([^\]]*)\]", key)
        if m:
            if not isinstance(out.get(m[1]), dict):
                out[m[1]] = {}
            out[m[1]][m[2]] = value
        elif key == "metadata" and value == "":
            out[key] = {}  # how the lib sends an empty dict
        else:
            out[key] = value
    return out


def _check_metadata(metadata) -> str | None:
    if not isinstance(metadata, dict):
        return "metadata must be a dictionary"
    for k, v in metadata.items():
        if not isinstance(v, str) or len(k) > 40 or len(v) > 500:  # Stripe's limits
            return f"metadata[{k}]: keys up to 40 characters, string values up to 500"
    return None


def _page(items: list[dict], limit: int, starting_after: str | None, url: str) -> dict:
    """A Stripe list object over `items` (already newest first)."""
    if starting_after:
        ids = [x["id"] for x in items]
        items = items[ids.index(starting_after) + 1:] if starting_after in ids else []
    page = items[:max(1, min(limit, 100))]
    return {"object": "list", "url": url, "data": page, "has_more": len(items) > len(page)}


class Sandbox:
    """The gateway's state and its background work (settlements, event deliveries)."""

    def __init__(self, webhook_url: str | None, webhook_secret: str, settle_after: float | None,
                 state_file: Path | None, delivery_attempts: int, delivery_backoff: float):
        self.webhook_url, self.webhook_secret = webhook_url, webhook_secret
        self.settle_after = settle_after
        self.state_file = Path(state_file) if state_file else None
        self.delivery_attempts, self.delivery_backoff = delivery_attempts, delivery_backoff
        self.refunds: dict[str, dict] = {}
        self.transfers: dict[str, dict] = {}
        self.idempotency: dict[str, dict] = {}  # key → {"fingerprint", "status", "body"}
        self.closed_cards: set[str] = set()
        self.silent: set[str] = set()  # objects whose settlement event is never sent (fault no_event)
        self.rejected_ibans: set[str] = set()
        self.events: list[dict] = []  # {"event", "object_id", "delivered", "attempts"}
        self.fault = {"mode": "none", "count": 0, "delay_seconds": 0.0}
        self.tasks: set[asyncio.Task] = set()
        self.http: httpx.AsyncClient | None = None

    # -------------------------------------------------------------- persistence
    def load(self) -> None:
        if not (self.state_file and self.state_file.exists()):
            return
        data = json.loads(self.state_file.read_text())
        self.refunds, self.transfers = data["refunds"], data["transfers"]
        self.idempotency, self.events = data["idempotency"], data["events"]
        self.closed_cards, self.rejected_ibans = set(data["closed_cards"]), set(data["rejected_ibans"])

    def save(self) -> None:
        if not self.state_file:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({
            "refunds": self.refunds, "transfers": self.transfers, "idempotency": self.idempotency,
            "events": self.events, "closed_cards": sorted(self.closed_cards),
            "rejected_ibans": sorted(self.rejected_ibans)}))
        tmp.replace(self.state_file)  # atomic: a crash never leaves half a file

    def resume(self) -> None:
        """After a restart: settle what was pending, deliver what was not delivered."""
        for obj in [*self.refunds.values(), *self.transfers.values()]:
            if obj["status"] == "pending" and self.settle_after is not None:
                self.spawn(self._settle_later(obj["id"], obj["created"] + self.settle_after - time.time()))
        for record in self.events:
            if not record["delivered"] and record["attempts"] < self.delivery_attempts:
                self.spawn(self.deliver(record))

    def clear(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.refunds.clear(), self.transfers.clear(), self.idempotency.clear(), self.events.clear()
        self.closed_cards.clear(), self.rejected_ibans.clear(), self.silent.clear()
        self.fault = {"mode": "none", "count": 0, "delay_seconds": 0.0}
        self.save()

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -------------------------------------------------------------- faults
    def take_fault(self) -> tuple[str, float]:
        """The fault applying to this money-moving call (consumes one of `count`), and its delay."""
        mode, delay = self.fault["mode"], self.fault["delay_seconds"]
        if mode == "none" or self.fault["count"] <= 0:
            return "none", 0.0
        self.fault["count"] -= 1
        if self.fault["count"] == 0:
            self.fault = {"mode": "none", "count": 0, "delay_seconds": 0.0}
        return mode, delay

    # -------------------------------------------------------------- settlement and events
    def created(self, obj: dict) -> None:
        self.save()
        if self.settle_after is not None:
            self.spawn(self._settle_later(obj["id"], self.settle_after))

    async def _settle_later(self, object_id: str, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        if object_id in self.refunds or object_id in self.transfers:  # not reset meanwhile
            self.settle(object_id)

    def settle(self, object_id: str) -> dict:
        """Pending → final now (failed if the card/IBAN is so marked) and send the event; an object
        already final gets its event sent again (same event id, as Stripe's "resend")."""
        if object_id in self.refunds:
            obj = self.refunds[object_id]
            if obj["status"] == "pending":
                failed = obj["payment_intent"] in self.closed_cards
                obj["status"] = "failed" if failed else "succeeded"
                obj["failure_reason"] = "expired_or_canceled_card" if failed else None
                if object_id not in self.silent:
                    self.new_event("refund.failed" if failed else "refund.updated", obj)
                return obj
        else:
            obj = self.transfers[object_id]
            if obj["status"] == "pending":
                rejected = obj["iban"] in self.rejected_ibans
                obj["status"] = "rejected" if rejected else "settled"
                obj["failure_reason"] = "account_closed" if rejected else None
                obj["settled_at" if not rejected else "rejected_at"] = int(time.time())
                if object_id not in self.silent:
                    self.new_event(f"bank_transfer.{obj['status']}", obj)
                return obj
        for record in reversed(self.events):
            if record["object_id"] == object_id:
                record["attempts"] = 0
                self.spawn(self.deliver(record))
                break
        return obj

    def new_event(self, event_type: str, obj: dict) -> None:
        event = {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "type": event_type,
                 "api_version": stripe.api_version, "created": int(time.time()), "livemode": False,
                 "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
                 "data": {"object": json.loads(json.dumps(obj))}}  # a snapshot, as Stripe sends
        record = {"event": event, "object_id": obj["id"], "delivered": False, "attempts": 0}
        self.events.append(record)
        self.save()
        self.spawn(self.deliver(record))

    async def deliver(self, record: dict) -> None:
        """POST until a 2xx, with a bounded exponential backoff (Stripe retries for days)."""
        if not self.webhook_url:
            return
        payload = json.dumps(record["event"])
        while record["attempts"] < self.delivery_attempts:
            record["attempts"] += 1
            try:
                resp = await self.http.post(self.webhook_url, content=payload, headers={
                    "Content-Type": "application/json",
                    # signed at each attempt: a late retry must not fall out of the receiver's tolerance
                    "Stripe-Signature": stripe_signature(self.webhook_secret, payload)})
                if resp.is_success:
                    record["delivered"] = True
                    self.save()
                    return
                log.warning("event %s: webhook answered %s", record["event"]["id"], resp.status_code)
            except httpx.HTTPError as e:
                log.warning("event %s: webhook unreachable (%s)", record["event"]["id"], e)
            self.save()
            if record["attempts"] < self.delivery_attempts:
                await asyncio.sleep(min(self.delivery_backoff * 2 ** (record["attempts"] - 1), 60))
        log.error("event %s: given up after %d attempts", record["event"]["id"], record["attempts"])

    # -------------------------------------------------------------- inspection
    def state(self) -> dict:
        totals: dict[str, int] = {}
        for r in self.refunds.values():
            if r["status"] != "failed":
                totals[r["payment_intent"]] = totals.get(r["payment_intent"], 0) + r["amount"]
        return {
            "refunds": list(self.refunds.values()), "transfers": list(self.transfers.values()),
            "refunded_by_payment_intent": totals,
            "events": [{"id": e["event"]["id"], "type": e["event"]["type"], "object_id": e["object_id"],
                        "delivered": e["delivered"], "attempts": e["attempts"]} for e in self.events],
            "fault": self.fault, "closed_cards": sorted(self.closed_cards),
            "rejected_ibans": sorted(self.rejected_ibans),
        }


class _ApiKey:
    """The API key check of /v1/, as plain ASGI (`@app.middleware` runs every request through extra
    tasks and streams: a third of this stand-in's CPU per request in the benchmark)."""

    def __init__(self, app, api_key: str):
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/") \
                and dict(scope["headers"]).get(b"authorization") != self.expected:
            return await _error(401, "Invalid API Key provided.", code="api_key_invalid")(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(*, api_key: str, webhook_url: str | None, webhook_secret: str,
               settle_after_seconds: float | None = 2.0, state_file: Path | None = None,
               delivery_attempts: int = 8, delivery_backoff_seconds: float = 1.0) -> FastAPI:
    """The sandbox app. `settle_after_seconds=None`: nothing settles unless told (/_sandbox/settle).
    Event delivery: `delivery_attempts` tries, waiting backoff·2ⁿ (at most 60 s) between them."""
    box = Sandbox(webhook_url, webhook_secret, settle_after_seconds, state_file, delivery_attempts,
                  delivery_backoff_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with httpx.AsyncClient(timeout=10) as http:
            box.http = http
            box.load()
            box.resume()
            yield
            for task in list(box.tasks):
                task.cancel()
            await asyncio.gather(*box.tasks, return_exceptions=True)

    app = FastAPI(title="Payment gateway sandbox", lifespan=lifespan)
    app.state.sandbox = box

    app.add_middleware(_ApiKey, api_key=api_key)

    async def money_call(request: Request, params: dict, validate, create) -> JSONResponse:
        """One money-moving call: faults, Idempotency-Key, validation, then `create`."""
        fault, delay = box.take_fault()
        if fault == "error":
            return _error(500, "Sandbox fault: nothing was done.", "api_error", "sandbox_fault")
        if fault == "invalid_api_key":
            return _error(401, "Invalid API Key provided: sk_test_****", code="api_key_invalid")
        if fault == "charge_already_refunded":
            return _error(400, "Charge ch_sandbox has already been refunded.", code="charge_already_refunded")
        key = request.headers.get("idempotency-key")
        fingerprint = json.dumps([request.url.path, params], sort_keys=True)
        seen = box.idempotency.get(key) if key else None
        if seen and seen["fingerprint"] != fingerprint:
            response = _error(400, f"Keys for idempotent requests can only be used with the same parameters they "
                                   f"were first used with. Try using a key other than '{key}'.", "idempotency_error")
        elif seen:
            response = JSONResponse(seen["body"], seen["status"], headers={"Idempotent-Replayed": "true"})
        elif problem := validate():
            response = problem  # like Stripe, a request refused by validation is not remembered
        else:
            obj = create()
            if fault == "succeed_at_once" and obj.get("object") == "refund":
                obj["status"] = "succeeded"
            if fault == "no_event":
                box.silent.add(obj["id"])  # settles, but sends no event
            if key:
                box.idempotency[key] = {"fingerprint": fingerprint, "status": 200, "body": obj}
            if obj["status"] == "pending":
                box.created(obj)
            else:
                box.save()
            response = JSONResponse(obj)
        if fault == "slow":
            await asyncio.sleep(delay)  # the work is done, the answer is late
        if fault == "accept_then_error":
            return _error(500, "Sandbox fault: done, but the answer was lost.", "api_error", "sandbox_fault")
        return response

    # ---------------------------------------------------------------- Stripe refunds
    @app.post("/v1/refunds")
    async def create_refund(request: Request):
        params = _parse_form(await request.body())

        def validate():
            if unknown := set(params) - REFUND_PARAMS:
                name = sorted(unknown)[0]
                return _error(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
            if not params.get("payment_intent"):
                return _error(400, "Missing required param: payment_intent.", code="parameter_missing",
                              param="payment_intent")
            if not re.fullmatch(r"[1-9]\d*", params.get("amount", "")):  # the sandbox knows no charge to default to
                return _error(400, "amount: a positive integer (cents) is required.", code="parameter_invalid_integer",
                              param="amount")
            if "currency" in params and not re.fullmatch(r"[a-z]{3}", params["currency"]):
                return _error(400, "Invalid currency.", code="parameter_invalid_string", param="currency")
            if params.get("reason") not in (None, *REFUND_REASONS):
                return _error(400, "Invalid reason.", code="parameter_invalid_string", param="reason")
            if problem := _check_metadata(params.get("metadata", {})):
                return _error(400, problem, code="parameter_invalid_string", param="metadata")
            return None

        def create():
            refund = {"id": f"re_{secrets.token_hex(12)}", "object": "refund", "amount": int(params["amount"]),
                      "currency": params.get("currency", "eur"), "payment_intent": params["payment_intent"],
                      "charge": None, "status": "pending", "metadata": params.get("metadata", {}),
                      "reason": params.get("reason"), "failure_reason": None, "created": int(time.time())}
            box.refunds[refund["id"]] = refund
            return refund

        return await money_call(request, params, validate, create)

    @app.get("/v1/refunds/{refund_id}")
    async def get_refund(refund_id: str):
        if refund_id not in box.refunds:
            return _error(404, f"No such refund: '{refund_id}'", code="resource_missing", param="id")
        return box.refunds[refund_id]

    @app.get("/v1/refunds")
    async def list_refunds(payment_intent: str | None = None, limit: int = 10, starting_after: str | None = None):
        items = [r for r in reversed(box.refunds.values())
                 if payment_intent is None or r["payment_intent"] == payment_intent]
        return _page(items, limit, starting_after, "/v1/refunds")

    # ---------------------------------------------------------------- bank transfers
    @app.post("/v1/bank_transfers")
    async def create_transfer(request: Request):
        try:
            params = await request.json()
        except ValueError:
            params = None

        def validate():
            if not isinstance(params, dict):
                return _error(400, "The body must be a JSON object.", code="parameter_invalid")
            if unknown := set(params) - TRANSFER_PARAMS:
                name = sorted(unknown)[0]
                return _error(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
            amount = params.get("amount")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
                return _error(400, "amount: a positive integer (cents) is required.", code="parameter_invalid_integer",
                              param="amount")
            if not re.fullmatch(r"[a-z]{3}", str(params.get("currency", "eur"))):
                return _error(400, "Invalid currency.", code="parameter_invalid_string", param="currency")
            try:
                IBAN(str(params.get("iban", "")))
            except ValueError as e:
                return _error(400, f"Invalid IBAN: {e}", code="invalid_iban", param="iban")
            if not str(params.get("account_holder") or "").strip():
                return _error(400, "Missing required param: account_holder.", code="parameter_missing",
                              param="account_holder")
            if problem := _check_metadata(params.get("metadata") or {}):
                return _error(400, problem, code="parameter_invalid_string", param="metadata")
            return None

        def create():
            transfer = {"id": f"bt_{secrets.token_hex(12)}", "object": "bank_transfer", "amount": params["amount"],
                        "currency": params.get("currency", "eur"), "iban": IBAN(params["iban"]).compact,
                        "bic": params.get("bic"), "account_holder": params["account_holder"], "status": "pending",
                        "metadata": params.get("metadata") or {}, "failure_reason": None,
                        "created": int(time.time())}
            box.transfers[transfer["id"]] = transfer
            return transfer

        return await money_call(request, params, validate, create)

    @app.get("/v1/bank_transfers/{transfer_id}")
    async def get_transfer(transfer_id: str):
        if transfer_id not in box.transfers:
            return _error(404, f"No such bank transfer: '{transfer_id}'", code="resource_missing", param="id")
        return box.transfers[transfer_id]

    @app.get("/v1/bank_transfers")
    async def list_transfers(idempotency_key: str | None = None, limit: int = 10, starting_after: str | None = None):
        items = [t for t in reversed(box.transfers.values())
                 if idempotency_key is None or t["metadata"].get("idempotency_key") == idempotency_key]
        return _page(items, limit, starting_after, "/v1/bank_transfers")

    # ---------------------------------------------------------------- control API (no auth)
    @app.post("/_sandbox/faults")
    async def faults(request: Request):
        body = await request.json()
        if body.get("mode", "none") not in FAULT_MODES:
            return _error(400, f"mode: one of {sorted(FAULT_MODES)}")
        box.fault = {"mode": body.get("mode", "none"), "count": int(body.get("count", 1)),
                     "delay_seconds": float(body.get("delay_seconds", 0))}
        return box.fault

    @app.post("/_sandbox/fail_refunds_for")
    async def fail_refunds_for(request: Request):
        box.closed_cards.add((await request.json())["payment_intent"])
        box.save()
        return {"closed_cards": sorted(box.closed_cards)}

    @app.post("/_sandbox/reject_transfers_to")
    async def reject_transfers_to(request: Request):
        box.rejected_ibans.add(IBAN((await request.json())["iban"]).compact)
        box.save()
        return {"rejected_ibans": sorted(box.rejected_ibans)}

    @app.post("/_sandbox/settle/{object_id}")
    async def settle_now(object_id: str):
        if object_id not in box.refunds and object_id not in box.transfers:
            return _error(404, f"No such refund or bank transfer: '{object_id}'", code="resource_missing")
        return box.settle(object_id)

    @app.post("/_sandbox/forget_idempotency_keys")
    async def forget_idempotency_keys():
        box.idempotency.clear()
        box.save()
        return {"forgotten": True}

    @app.get("/_sandbox/state")
    async def state():
        return box.state()

    @app.post("/_sandbox/reset")
    async def reset():
        box.clear()
        return {"reset": True}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m devstack.gateway_sandbox",
                                description="Payment gateway sandbox (Stripe refunds subset + bank transfers)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY", "sk_test_sandbox"))
    p.add_argument("--webhook-url", default=os.environ.get("GATEWAY_WEBHOOK_URL") or None)
    p.add_argument("--webhook-secret", default=os.environ.get("GATEWAY_WEBHOOK_SECRET", "whsec_sandbox"))
    p.add_argument("--settle-after", type=float, default=2.0,
                   help="seconds before a refund/transfer settles by itself; negative: only on /_sandbox/settle")
    p.add_argument("--state-file", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(api_key=args.api_key, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret,
                     settle_after_seconds=None if args.settle_after < 0 else args.settle_after,
                     state_file=args.state_file)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
