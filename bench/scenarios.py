"""The cases the benchmark drives, each from "Get help" to closed.

(a) cancellation of a paid order: POST help-request → the case cancels the order, refunds the card
    (refund child), the gateway sandbox settles after a moment and calls the API's signed webhook →
    the API signals the refund → the case closes.
(b) withdrawal of a delivered order: POST help-request → seller POSTs return-label → customer POSTs
    shipment → seller POSTs receipt → seller POSTs refund-activation → settlement webhook → closed.
(c) the baseline of each (bench/baseline.py), started and acted on with the Temporal client directly.

A case is complete when its workflow returns (awaited with the Temporal client's long poll, which
costs the API nothing).
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Awaitable

from bench.seed import SeededOrder


# An action refused because the case is not in its stage yet (409; a rejected Update for the baseline) is
# tried again this long after the previous attempt started, for the real and the baseline cases alike.
RETRY_EVERY = 0.1
# A party acts when the email asking for the action arrives (the SMTP sink announces each message,
# MailWatch; ASKED_BY), as the baseline's Update follows the activity before it; an action no email asks
# for follows the stage the last answer showed (an action answers with the stage the case moved on to),
# and one whose stage that is not is first sent RETRY_EVERY later. (The label sent blindly 0.1 s after
# the help request, whose answer shows the case still `opening`, met a 409 in nearly every withdrawal,
# ~0.2 s and a refused Update per case; reading the case while waiting cost ~5 GETs of the case and its
# timeline per withdrawal.)
ASKED_WAIT = 30.0  # at most this long for the asking email, then the action is sent anyway (and retried)


class BenchError(RuntimeError):
    pass


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Counters:
    conflicts: int = 0  # 409 answers retried (an action sent before the case reached its stage)
    accepted: int = 0  # 202 answers (the action was taken; the case had not moved on within the API's wait)
    errors: list[str] = field(default_factory=list)


@dataclass
class Answer:
    status_code: int
    content: bytes

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class ApiClient:
    """The driver's HTTP client of the API: aiohttp, whose C parser costs the driver a fraction of httpx's
    transport per request (the driver shares the two CPUs with what it measures: with httpx it took 13 ms
    of CPU per withdrawal, the baseline's driver 2)."""

    def __init__(self, base_url: str, connections: int = 200):
        self.base_url = base_url
        self.session = read_client(connections)  # the same aiohttp session as the reads'

    async def post(self, path: str, json: dict, headers: dict, timeout: float | None = None) -> Answer:
        import aiohttp

        kw = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        async with self.session.post(self.base_url + path, json=json, headers=headers, **kw) as r:
            return Answer(r.status, await r.read())

    async def __aenter__(self) -> "ApiClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()


def api_client(base_url: str, connections: int = 200) -> ApiClient:
    return ApiClient(base_url, connections)


class MailWatch(asyncio.DatagramProtocol):
    """The Message-IDs the SMTP sink announces (devstack/smtp_sink.py --announce), one UDP datagram per
    message kept: `arrived(message_id)` waits for one (at once if it came already)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.waiting: dict[str, asyncio.Future] = {}
        self.transport = None
        self.port = 0

    async def start(self, host: str) -> "MailWatch":
        self.transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr) -> None:
        mid = data.decode()
        self.seen.add(mid)
        fut = self.waiting.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def arrived(self, message_id: str, timeout: float) -> bool:
        if message_id not in self.seen:
            fut = self.waiting.setdefault(message_id, asyncio.get_running_loop().create_future())
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            except asyncio.TimeoutError:
                self.waiting.pop(message_id, None)
                return False
        self.seen.discard(message_id)
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def read_client(connections: int = 50):
    """The client of the waiting phase's reads: aiohttp, whose C parser costs the driver ~0.45 ms of CPU per
    93 KB list where httpx's transport costs ~2.9 ms — on two CPUs shared with the API and PostgreSQL, the
    driver's own cost was the largest share of a list (BENCHMARKS.md, "Afternoon of 2026-12-02")."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def open_case(http: ApiClient, order: SeededOrder, kind: str) -> dict:
    r = await http.post(f"/v1/orders/{order.order_id}/help-requests", json={"kind": kind},
                        headers=bearer(order.customer_token))
    if r.status_code != 201:
        raise BenchError(f"help request on {order.order_id}: {r.status_code} {r.text[:300]}")
    return r.json()


async def act(http: ApiClient, counters: Counters, case_id: str, stage: str, path: str, token: str,
              body: dict, timeout: float = 60, asked: Awaitable | None = None) -> dict:
    """POSTs an action once `asked` (the email asking for it) arrived, or at once when `stage` (the last one
    seen) is one of the action's, else RETRY_EVERY later; again every RETRY_EVERY seconds while the case is
    not in the stage yet (409)."""
    from starter.actions import ACTIONS

    end = time.monotonic() + timeout
    ready = stage in {s.value for s in ACTIONS[path].stages}
    if asked is not None:  # the party waits for the email (not there in time: the stage decides)
        ready = await asked or ready
    while True:
        if not ready:
            await asyncio.sleep(RETRY_EVERY)
        r = await http.post(f"/v1/cases/{case_id}/{path}", json=body, headers=bearer(token))
        if r.status_code == 200:
            return r.json()
        if r.status_code == 202:  # taken, but the case took long to move on (a slow machine): go on
            counters.accepted += 1
            return r.json()
        if r.status_code != 409 or time.monotonic() > end:
            raise BenchError(f"{path} on {case_id}: {r.status_code} {r.text[:300]}")
        counters.conflicts += 1
        ready = False


async def wait_closed(client, case_id: str, expected: str = "refunded") -> dict:
    result = await client.get_workflow_handle(case_id).result()
    outcome = result.get("outcome") if isinstance(result, dict) else getattr(result, "outcome", None)
    if str(outcome) != expected:
        raise BenchError(f"case {case_id} closed with {outcome!r}, expected {expected!r}")
    return result


async def cancellation_case(http, client, counters: Counters, order: SeededOrder, mail: MailWatch | None = None) -> str:
    case_id = (await open_case(http, order, "cancellation"))["case_id"]
    await wait_closed(client, case_id)
    return case_id


# The actions of a withdrawal an email asks for, and that email's key (workflows/case/returns.py, refund.py):
# the seller's label, the customer's shipment (the label sent to them), the seller's refund activation.
ASKED_BY = {"return-label": "label-asked", "shipment": "label-to-customer", "refund-activation": "activation-asked"}


async def withdrawal_case(http, client, counters: Counters, order: SeededOrder, mail: MailWatch | None = None) -> str:
    from activities.mail import message_id
    from workflows.common import message_key

    opened = await open_case(http, order, "withdrawal")
    case_id, stage = opened["case_id"], opened["stage"]
    tracking = f"RET{case_id[-10:]}"
    for path, token, body in (
            ("return-label", order.seller_token,
             {"carrier": "Colissimo", "tracking_number": tracking, "label_url": "https://labels.example/r.pdf"}),
            ("shipment", order.customer_token, {"carrier": "Colissimo", "tracking_number": tracking}),
            ("receipt", order.seller_token, {}),
            ("refund-activation", order.seller_token, {})):
        asked = (mail.arrived(message_id(message_key(case_id, ASKED_BY[path])), ASKED_WAIT)
                 if mail is not None and path in ASKED_BY else None)
        stage = (await act(http, counters, case_id, stage, path, token, body, asked=asked))["stage"]
    await wait_closed(client, case_id)
    return case_id


@dataclass
class LoadResult:
    cases: int
    seconds: float
    concurrency: int
    durations: list[float]
    conflicts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # component → CPU seconds during the run
    case_ids: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def add(self, other: "LoadResult") -> "LoadResult":
        """Two runs of the same kind as one (cases, seconds and CPU summed)."""
        return LoadResult(cases=self.cases + other.cases, seconds=self.seconds + other.seconds,
                          concurrency=self.concurrency, durations=self.durations + other.durations,
                          conflicts=self.conflicts + other.conflicts, case_ids=self.case_ids + other.case_ids,
                          cpu={k: self.cpu.get(k, 0.0) + other.cpu.get(k, 0.0) for k in {*self.cpu, *other.cpu}})


async def closed_loop(items: list, concurrency: int, run_one) -> tuple[float, list[float]]:
    """`concurrency` clients, each taking the next item and running its case to the end, until none is
    left. Returns (wall seconds, per-case seconds). The first error stops the run."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    durations: list[float] = []

    async def client_loop():
        while True:
            try:
                it = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            await run_one(it)
            durations.append(time.perf_counter() - t0)

    start = time.perf_counter()
    tasks = [asyncio.create_task(client_loop()) for _ in range(min(concurrency, len(items)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return time.perf_counter() - start, durations


async def baseline_case(client, counters: Counters, case_id: str, key: str, spec: dict, task_queue: str) -> str:
    """A baseline case (bench/baseline.py) of the shape `spec` (its scripts saved under `key`), started and acted on with the Temporal
    client, the Updates retried while the case is not ready for them, as the API's callers do on 409."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    from bench.baseline import script_input
    from workflows import search_attributes as sa

    handle = await client.start_workflow(
        "BaselineScript", script_input(key, spec["scripts"], 0, spec["settle_after"]), id=case_id, task_queue=task_queue,
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(sa.CASE_KIND, "baseline"), SearchAttributePair(sa.CASE_STAGE, "opening"),
            SearchAttributePair(sa.ORDER_ID, f"o-{case_id}"), SearchAttributePair(sa.SELLER_ID, "s"),
            SearchAttributePair(sa.CUSTOMER_ID, "c"), SearchAttributePair(sa.ESCALATED, False),
        ]),
        static_summary=f"Baseline · {case_id}", static_details="Baseline case of the benchmark")
    for name in spec["updates"]:
        end = time.monotonic() + 60
        while True:
            t0 = time.monotonic()
            try:
                await handle.execute_update("act", name)
                break
            except WorkflowUpdateFailedError:
                if time.monotonic() > end:
                    raise
                counters.conflicts += 1
                await asyncio.sleep(max(0.0, t0 + RETRY_EVERY - time.monotonic()))
    await handle.result()
    return case_id
