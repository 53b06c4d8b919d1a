"""Payment gateway client.

Card refunds speak Stripe's Refunds API through the official `stripe` package (its async client), so a
marketplace with a Stripe key gets real refunds by configuration alone; locally it points at the
sandbox (devstack/gateway_sandbox.py). Wallet payouts (SEPA credit transfers to any IBAN, which Stripe
does not offer) go through a bank-transfer port with the same rules (Idempotency-Key, events signed
with `Stripe-Signature`), served by the sandbox locally.

Stripe forgets idempotency keys after 24 hours while a case lives for weeks: `refund_once` and
`transfer_once` first look the movement up by the key stored in its metadata, then create it (with the
key as Idempotency-Key too, which covers a retry racing an attempt still in flight).

Errors: `GatewayPermanentError` when no retry can succeed (invalid request, card error, bad key,
idempotency key reused with other parameters); anything else (5xx, 409, 429, timeouts, connection
errors) propagates as is, for the caller (a Temporal activity) to retry.
"""
from __future__ import annotations

import json

import httpx
import stripe

KEY = "idempotency_key"  # metadata entry holding the project's own key


class GatewayPermanentError(Exception):
    """An answer that no retry will change. `code` is the gateway's error code (or type)."""

    def __init__(self, message: str, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


def _plain(obj) -> dict:
    """A StripeObject (or a JSON dict) as a plain dict with the fields callers rely on."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    data["metadata"] = dict(data.get("metadata") or {})
    data.setdefault("failure_reason", None)  # Stripe omits it until a refund fails
    return data


def _retryable_status(status: int | None) -> bool:
    return status is None or status >= 500 or status in (408, 409, 429)


class GatewayClient:
    page_size = 100  # list page size of the look-ups (Stripe's maximum)

    def __init__(self, base_url: str, api_key: str, timeout: float = 20.0):
        self.base_url = base_url.rstrip("/")
        # No retries inside the stripe lib: Temporal retries the activity, which looks up first.
        self._stripe_http = stripe.HTTPXClient(timeout=timeout)
        self.stripe = stripe.StripeClient(api_key, base_addresses={"api": self.base_url},
                                          http_client=self._stripe_http, max_network_retries=0)
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                      headers={"Authorization": f"Bearer {api_key}"})

    async def aclose(self) -> None:
        await self.http.aclose()
        await self._stripe_http.close_async()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ card refunds (Stripe)
    async def find_refund(self, payment_intent: str, idempotency_key: str) -> dict | None:
        """The refund of this payment intent carrying this key in its metadata, if any (all pages)."""
        params: dict = {"payment_intent": payment_intent, "limit": self.page_size}
        while True:
            page = await _stripe_call(self.stripe.v1.refunds.list_async(params))
            for refund in map(_plain, page.data):  # StripeObjects are no dicts (stripe >= 15)
                if refund["metadata"].get(KEY) == idempotency_key:
                    return refund
            if not page.has_more or not page.data:
                return None
            params["starting_after"] = page.data[-1]["id"]

    async def create_refund(self, payment_intent: str, amount_cents: int, currency: str, idempotency_key: str,
                            metadata: dict[str, str]) -> dict:
        refund = await _stripe_call(self.stripe.v1.refunds.create_async(
            {"payment_intent": payment_intent, "amount": amount_cents, "currency": currency.lower(),
             "metadata": {**metadata, KEY: idempotency_key}},
            {"idempotency_key": idempotency_key}))
        return _plain(refund)

    async def get_refund(self, refund_id: str) -> dict:
        return _plain(await _stripe_call(self.stripe.v1.refunds.retrieve_async(refund_id)))

    async def refund_once(self, payment_intent: str, amount_cents: int, currency: str, idempotency_key: str,
                          metadata: dict[str, str]) -> dict:
        found = await self.find_refund(payment_intent, idempotency_key)
        if found is not None:
            return found
        return await self.create_refund(payment_intent, amount_cents, currency, idempotency_key, metadata)

    # ------------------------------------------------------------------ bank transfers (payouts)
    async def find_transfer(self, idempotency_key: str) -> dict | None:
        params: dict = {KEY: idempotency_key, "limit": self.page_size}
        while True:
            page = _json_or_raise(await self.http.get("/v1/bank_transfers", params=params))
            for transfer in page["data"]:
                if (transfer.get("metadata") or {}).get(KEY) == idempotency_key:
                    return _plain(transfer)
            if not page.get("has_more") or not page["data"]:
                return None
            params["starting_after"] = page["data"][-1]["id"]

    async def create_transfer(self, amount_cents: int, currency: str, iban: str, bic: str | None,
                              account_holder: str, idempotency_key: str, metadata: dict[str, str]) -> dict:
        resp = await self.http.post("/v1/bank_transfers", headers={"Idempotency-Key": idempotency_key}, json={
            "amount": amount_cents, "currency": currency.lower(), "iban": iban, "bic": bic,
            "account_holder": account_holder, "metadata": {**metadata, KEY: idempotency_key}})
        return _plain(_json_or_raise(resp))

    async def get_transfer(self, transfer_id: str) -> dict:
        return _plain(_json_or_raise(await self.http.get(f"/v1/bank_transfers/{transfer_id}")))

    async def transfer_once(self, amount_cents: int, currency: str, iban: str, bic: str | None, account_holder: str,
                            idempotency_key: str, metadata: dict[str, str]) -> dict:
        found = await self.find_transfer(idempotency_key)
        if found is not None:
            return found
        return await self.create_transfer(amount_cents, currency, iban, bic, account_holder, idempotency_key, metadata)


async def _stripe_call(coro):
    try:
        return await coro
    except stripe.StripeError as e:
        if isinstance(e, (stripe.RateLimitError, stripe.APIConnectionError)) or _retryable_status(e.http_status):
            raise
        err = e.error
        code = e.code or (err.code if err else None) or (err.type if err else None) or type(e).__name__
        raise GatewayPermanentError(str(e.user_message or e), code, e.http_status) from e


def _json_or_raise(resp: httpx.Response) -> dict:
    if resp.status_code < 400:
        return resp.json()
    if _retryable_status(resp.status_code):
        resp.raise_for_status()  # httpx.HTTPStatusError: the activity retries
    try:
        error = resp.json().get("error") or {}
    except ValueError:
        error = {}
    raise GatewayPermanentError(error.get("message") or resp.text, error.get("code") or error.get("type"),
                                resp.status_code)


def verify_event(payload: bytes, signature_header: str, secret: str, tolerance: int = 300) -> dict:
    """A gateway event (refund or bank transfer) checked with Stripe's own verifier
    (`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 of "t.payload"); a timestamp older than `tolerance`
    seconds fails too. Raises ValueError. The verified JSON is read as a dict: `construct_event` would
    build a StripeObject from it only for us to turn it back into one (over half of this check's CPU,
    measured: BENCHMARKS.md)."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance)
    except stripe.SignatureVerificationError as e:
        raise ValueError(f"bad Stripe-Signature: {e.user_message or e}") from e
    try:
        event = json.loads(payload)
    except ValueError as e:  # signed but not JSON
        raise ValueError(f"bad event payload: {e}") from e
    if not isinstance(event, dict):
        raise ValueError("bad event payload: not a JSON object")
    return event
