"""Operations on the REAL dev server (`temporal server start-dev`, not the time-skipping one): the
visibility filters operators paste into the Temporal UI / `temporal workflow list --query`, and the
worker's Prometheus endpoint (SDK metrics + the business counters of activities/metrics.py).

The filters below are the ones docs/operations.md gives, character for character. A deadline cannot be
made to pass in real time (every policy duration is at least a day or an hour), so the filters whose
time bound is "now" are run with the instant substituted: the moment just after the refund-activation
deadlines, which is what "now" is for an operator looking at the list once they have passed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle

from devstack.temporal_server import ensure_search_attributes, list_custom_search_attributes
from domain.models import (
    Actor,
    CaseKind,
    DecisionRequest,
    DefectCategory,
    GatewayEvent,
    LabelRequest,
    OfferAnswer,
    Outcome,
    PayoutStage,
    Role,
    ShipmentRequest,
    SimpleAction,
    Stage,
)
from domain.policy import Policy
from starter.service import CaseService
from starter.wallet import request_payout
from tests.helpers.servers import start_dev_server, start_metrics_runtime
from tests.helpers.data import make_order, make_party, order_total
from tests.helpers.cases import settle_refund, state, wait_for, wait_stage
from workflows import search_attributes as sa
from workflows.case import CaseWorkflow
from workflows.payout import PayoutWorkflow

IBAN = "FR1420041010050500013M02606"

# ---------------------------------------------------------------- the filters of docs/operations.md
# {now}: the current instant in RFC 3339 UTC, e.g. 2025-03-14T09:30:00Z.
REFUNDS_NOT_ACTIVATED_LATE = ("ExecutionStatus = 'Running' AND CaseStage = 'awaiting_refund_activation' "
                              "AND NextDeadline < '{now}'")
ESCALATED = "Escalated = true"
ESCALATED_OPEN = "ExecutionStatus = 'Running' AND Escalated = true"
SELLER_CASES = "SellerId = '{seller_id}'"
SELLER_OPEN_CASES = "ExecutionStatus = 'Running' AND SellerId = '{seller_id}'"
PAYOUTS_AWAITING_SETTLEMENT = "CaseKind = 'payout' AND CaseStage = 'awaiting_bank_settlement'"
WAITING_FOR_CARE = "ExecutionStatus = 'Running' AND CaseStage = 'awaiting_care'"
OVERDUE = "ExecutionStatus = 'Running' AND NextDeadline < '{now}'"
CUSTOMER_CASES = "CustomerId = '{customer_id}'"
SELLER_STAGES = "('awaiting_seller_decision', 'awaiting_return_label', 'awaiting_refund_activation', 'awaiting_outbound_shipment')"
WAITING_FOR_SELLERS = "ExecutionStatus = 'Running' AND CaseStage IN " + SELLER_STAGES
SELLER_TODO = "ExecutionStatus = 'Running' AND SellerId = '{seller_id}' AND CaseStage IN " + SELLER_STAGES
LARGE_REFUNDS = "CaseKind != 'payout' AND RefundAmountCents >= {cents}"
ORDER_CASES = "OrderId = '{order_id}'"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- the dev server, the worker, metrics
@dataclasses.dataclass
class Ops:
    client: Client
    service: CaseService
    metrics_url: str
    gateway_url: str
    task_queue: str


@pytest.fixture(scope="module")
async def ops(pool, test_settings, gateway_sandbox, tmp_path_factory):
    from worker import build_worker, connect

    # The metrics exporter binds its port first; the dev server then picks its own ports around it.
    runtime, metrics_port = start_metrics_runtime()
    server = await start_dev_server(tmp_path_factory.mktemp("temporal-dev") / "server.log",
                                    start_new_session=True)  # in memory, headless
    try:
        admin = await Client.connect(server.address)
        await ensure_search_attributes(admin)
        task_queue = "ops-test"
        s = dataclasses.replace(test_settings, task_queue=task_queue, temporal_address=server.address)
        client = await connect(s, runtime)
        async with build_worker(client, s):
            yield Ops(client=client, service=CaseService(pool, client, task_queue, Policy()),
                      metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", gateway_url=gateway_sandbox.url,
                      task_queue=task_queue)
    finally:
        server.stop()


# ---------------------------------------------------------------- driving cases (as test_returns.py)
def seller(party) -> Actor:
    return Actor(role=Role.seller, id=party["seller_id"])


def customer(party) -> Actor:
    return Actor(role=Role.customer, id=party["customer_id"])


async def open_case(ops: Ops, pool, party, kind: CaseKind, status: str = "delivered",
                    delivered_days_ago: float | None = 1, **extra) -> tuple[WorkflowHandle, str]:
    """Opens a case the way the API does (CaseService: read model row, start with search attributes)."""
    now = datetime.now(timezone.utc)
    delivered_at = now - timedelta(days=delivered_days_ago) if status == "delivered" else None
    order_id = await make_order(pool, party, status, delivered_at=delivered_at)
    if kind == CaseKind.defect:
        extra.setdefault("category", DefectCategory.screen)
        extra.setdefault("description", "The screen flickers and goes black after a minute.")
    view, created = await ops.service.open_case(customer(party), order_id, kind, **extra)
    assert created
    return ops.client.get_workflow_handle_for(CaseWorkflow.run, view["case_id"]), order_id


async def label_issued(handle, party, tracking: str):
    await wait_stage(handle, Stage.awaiting_return_label)
    await handle.execute_update(CaseWorkflow.issue_return_label, LabelRequest(
        actor=seller(party), carrier="Colissimo", tracking_number=tracking,
        label_url="https://labels.example/ret.pdf"))
    await wait_stage(handle, Stage.awaiting_shipment)


async def returned_to_seller(handle, party, tracking: str):
    await label_issued(handle, party, tracking)
    await handle.execute_update(CaseWorkflow.report_shipment, ShipmentRequest(
        actor=customer(party), carrier="Colissimo", tracking_number=tracking))
    await wait_stage(handle, Stage.in_transit)
    await handle.execute_update(CaseWorkflow.confirm_receipt, SimpleAction(actor=seller(party)))


async def label_missing_twice(handle, party):
    await wait_stage(handle, Stage.awaiting_return_label)
    for _ in range(2):
        await handle.execute_update(CaseWorkflow.report_label_missing, SimpleAction(actor=customer(party)))
    return await wait_for(handle, lambda s: s.escalated)


async def partial_refund(handle, party, cents: int):
    await wait_stage(handle, Stage.awaiting_photos)
    await handle.signal(CaseWorkflow.attachments_added, 2)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    await handle.execute_update(CaseWorkflow.decide, DecisionRequest(
        actor=seller(party), decision="partial_refund", partial_amount_cents=cents, reason="Scratch on the back."))
    await wait_stage(handle, Stage.awaiting_customer_answer)
    await handle.execute_update(CaseWorkflow.answer_offer, OfferAnswer(actor=customer(party), accept=True))
    final = await handle.result()
    assert (final.outcome, final.wallet_credited_cents) == (Outcome.partially_refunded, cents)


async def start_payout(ops: Ops, pool, party, cents: int, key: str) -> WorkflowHandle:
    view, _ = await request_payout(pool, ops.client, ops.task_queue, Policy(), customer(party), amount_cents=cents,
                                   account_holder="Alice Martin", iban=IBAN, bic=None, idempotency_key=key)
    handle = ops.client.get_workflow_handle_for(PayoutWorkflow.run, view["payout_id"])
    for _ in range(300):
        try:
            s = await handle.query(PayoutWorkflow.get_state)
            if s and s.stage == PayoutStage.awaiting_bank_settlement:
                return handle
        except Exception:  # first workflow task not run yet
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"payout {view['payout_id']} never awaited settlement")


async def settle_payout(handle: WorkflowHandle) -> None:
    s = await handle.query(PayoutWorkflow.get_state)
    await handle.signal(PayoutWorkflow.gateway_event, GatewayEvent(object_id=s.transfer_id, status="succeeded"))
    assert (await handle.result()).stage == PayoutStage.settled


# ---------------------------------------------------------------- visibility (eventually consistent)
async def listed(client: Client, query: str) -> set[str]:
    return {w.id async for w in client.list_workflows(query)}


async def until_listed(client: Client, query: str, expected: set[str], timeout: float = 10.0,
                       scope: set[str] | None = None) -> set[str]:
    """The ids the query returns (those in `scope` when given: a filter that also matches closed
    workflows of other tests), polled until they are `expected` (visibility lags behind the workflows)
    or `timeout` seconds passed; the caller asserts."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await listed(client, query)
        if scope is not None:
            got &= scope
        if got == expected or loop.time() > end:
            return got
        await asyncio.sleep(0.2)


async def until_visible(client: Client, handles: dict[str, WorkflowHandle], timeout: float = 10.0) -> None:
    """Waits until visibility shows every case's current stage and escalation (a barrier before
    asserting that a filter returns nothing)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    want = {}
    for h in handles.values():
        s = await state(h)
        want[h.id] = (s.stage.value, s.escalated)
    while True:
        seen = {}
        async for w in client.list_workflows(" OR ".join(f"WorkflowId = '{i}'" for i in want)):
            attrs = w.typed_search_attributes
            seen[w.id] = (attrs.get(sa.CASE_STAGE), attrs.get(sa.ESCALATED))
        if seen == want:
            return
        if loop.time() > end:
            raise AssertionError(f"visibility did not catch up: {seen} != {want}")
        await asyncio.sleep(0.2)


async def test_search_attributes_are_registered(ops):
    assert await list_custom_search_attributes(ops.client) == {
        "CaseKind": "KEYWORD", "CaseStage": "KEYWORD", "OrderId": "KEYWORD", "SellerId": "KEYWORD",
        "CustomerId": "KEYWORD", "NextDeadline": "DATETIME", "Escalated": "BOOL", "RefundAmountCents": "INT",
        "LegalRefundDue": "DATETIME"}


async def test_operator_filters(ops, pool):
    a, b = await make_party(pool), await make_party(pool)
    c = {}  # the 10 cases, by role in this test
    # Seller A: three withdrawals the seller received, waiting for the refund activation (3 days) ...
    for n in (1, 2, 3):
        c[f"activation{n}"], _ = await open_case(ops, pool, a, CaseKind.withdrawal)
    # ... a withdrawal the customer must ship (14 days), a defect claim waiting for photos (48 h),
    # a cancellation of a paid order whose card refund waits for the bank (5 business days).
    c["shipment"], _ = await open_case(ops, pool, a, CaseKind.withdrawal)
    c["photos"], _ = await open_case(ops, pool, a, CaseKind.defect)
    c["settlement"], _ = await open_case(ops, pool, a, CaseKind.cancellation, status="paid")
    # Seller B: a withdrawal whose label the customer reported missing twice (escalated, 1 business day),
    # a cancellation of a validated order waiting for the seller (1 business day), a warranty claim the
    # seller can neither repair nor exchange (escalated, waiting for care), a defect claim settled with a
    # partial refund to the wallet (closed).
    c["label_missing"], label_order = await open_case(ops, pool, b, CaseKind.withdrawal)
    c["decision"], _ = await open_case(ops, pool, b, CaseKind.cancellation, status="validated")
    c["care"], _ = await open_case(ops, pool, b, CaseKind.warranty, delivered_days_ago=60)
    c["partial"], _ = await open_case(ops, pool, b, CaseKind.defect)
    assert len(c) == 10

    async def warranty_to_care():
        h = c["care"]
        await wait_stage(h, Stage.awaiting_seller_decision)
        await h.execute_update(CaseWorkflow.decide, DecisionRequest(actor=seller(b), decision="repair"))
        await returned_to_seller(h, b, "RETCARE01")
        await wait_stage(h, Stage.awaiting_outbound_shipment)
        await h.execute_update(CaseWorkflow.declare_impossible, SimpleAction(actor=seller(b), note="No parts."))
        await wait_stage(h, Stage.awaiting_care)

    async def wallet_and_payouts():
        await partial_refund(c["partial"], b, 3000)
        waiting = await start_payout(ops, pool, b, 1000, "ops-waiting")
        settled = await start_payout(ops, pool, b, 1500, "ops-settled")
        await settle_payout(settled)
        return waiting, settled

    *_, (payout_waiting, payout_settled) = await asyncio.gather(
        *(returned_to_seller(c[f"activation{n}"], a, f"RETACT0{n}") for n in (1, 2, 3)),
        label_issued(c["shipment"], a, "RETSHIP01"),
        wait_stage(c["photos"], Stage.awaiting_photos),
        wait_stage(c["settlement"], Stage.awaiting_bank_settlement),
        label_missing_twice(c["label_missing"], b),
        wait_stage(c["decision"], Stage.awaiting_seller_decision),
        warranty_to_care(),
        wallet_and_payouts(),
    )
    activation = {n: await wait_stage(c[f"activation{n}"], Stage.awaiting_refund_activation) for n in (1, 2, 3)}
    assert (await wait_stage(c["shipment"], Stage.awaiting_shipment)).deadline
    states = {k: await state(h) for k, h in c.items()}
    await until_visible(ops.client, c)
    ids = {k: h.id for k, h in c.items()}

    # "Refunds the sellers have not activated and whose deadline passed". "Now" stands for the moment
    # just after the three activation deadlines; cases of other stages had earlier deadlines.
    passed = max(s.deadline for s in activation.values()) + timedelta(minutes=1)
    earlier = {k for k, s in states.items() if s.deadline and s.deadline < passed and not k.startswith("activation")}
    assert {"photos", "decision", "label_missing"} <= earlier  # 48 h, 1 business day
    late = {ids[f"activation{n}"] for n in (1, 2, 3)}
    q = REFUNDS_NOT_ACTIVATED_LATE.format(now=rfc3339(passed))
    assert await until_listed(ops.client, q, late) == late
    # Before the deadlines (the real now, and one second before the earliest), none of them.
    for moment in (datetime.now(timezone.utc), min(s.deadline for s in activation.values()) - timedelta(seconds=1)):
        assert await listed(ops.client, REFUNDS_NOT_ACTIVATED_LATE.format(now=rfc3339(moment))) == set()

    # Everything overdue at that instant, whatever the stage: what the states say.
    overdue = {ids[k] for k, s in states.items() if s.stage != Stage.closed and s.deadline and s.deadline < passed}
    assert overdue >= late | {ids[k] for k in earlier}
    assert ids["shipment"] not in overdue  # 14 days
    assert await until_listed(ops.client, OVERDUE.format(now=rfc3339(passed)), overdue) == overdue

    # Escalated cases: open ones exactly; all of them (closed included: other tests' too) among ours.
    ours = set(ids.values()) | {payout_waiting.id, payout_settled.id}
    escalated = {ids["label_missing"], ids["care"]}
    assert {k for k, s in states.items() if s.escalated} == {"label_missing", "care"}
    assert await until_listed(ops.client, ESCALATED_OPEN, escalated) == escalated
    assert await until_listed(ops.client, ESCALATED, escalated, scope=ours) == escalated
    assert await until_listed(ops.client, WAITING_FOR_CARE, {ids["care"]}) == {ids["care"]}

    # One seller's cases (the children and payouts carry no SellerId), and its open ones.
    b_cases = {ids[k] for k in ("label_missing", "decision", "care", "partial")}
    assert await until_listed(ops.client, SELLER_CASES.format(seller_id=b["seller_id"]), b_cases) == b_cases
    b_open = b_cases - {ids["partial"]}
    assert await until_listed(ops.client, SELLER_OPEN_CASES.format(seller_id=b["seller_id"]), b_open) == b_open
    a_cases = set(ids.values()) - b_cases
    assert await until_listed(ops.client, SELLER_CASES.format(seller_id=a["seller_id"]), a_cases) == a_cases

    # Waiting for a seller's action, all sellers and one seller.
    at_sellers = {ids[k] for k in ("activation1", "activation2", "activation3", "label_missing", "decision")}
    assert await until_listed(ops.client, WAITING_FOR_SELLERS, at_sellers) == at_sellers
    b_todo = {ids["label_missing"], ids["decision"]}
    assert await until_listed(ops.client, SELLER_TODO.format(seller_id=b["seller_id"]), b_todo) == b_todo

    # Refunds of at least 200 EUR (the three activations and the cancelled order; not the partial
    # refund to the wallet, nor the payouts, whose amount is in the same attribute).
    large = {ids[k] for k, s in states.items() if s.refund_cents >= 20000}
    assert large == {ids[k] for k in ("activation1", "activation2", "activation3", "settlement")}
    assert await until_listed(ops.client, LARGE_REFUNDS.format(cents=20000), large, scope=ours) == large

    # One customer: cases and wallet payouts. One order: its case.
    b_all = b_cases | {payout_waiting.id, payout_settled.id}
    assert await until_listed(ops.client, CUSTOMER_CASES.format(customer_id=b["customer_id"]), b_all) == b_all
    assert await until_listed(ops.client, ORDER_CASES.format(order_id=label_order),
                              {ids["label_missing"]}) == {ids["label_missing"]}

    # Payouts awaiting settlement: the waiting one, not the settled one (nor the case refund also
    # awaiting its bank settlement).
    assert states["settlement"].stage == Stage.awaiting_bank_settlement
    assert await until_listed(ops.client, PAYOUTS_AWAITING_SETTLEMENT, {payout_waiting.id}) == {payout_waiting.id}


# ---------------------------------------------------------------- metrics
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


async def scrape(url: str) -> list[tuple[str, dict, float]]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(url)
    resp.raise_for_status()
    samples = []
    for line in resp.text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def total(samples, name: str, **labels) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == str(x) for k, x in labels.items()))


async def test_metrics_endpoint_exports_sdk_and_business_metrics(ops, pool):
    before = await scrape(ops.metrics_url)
    p = await make_party(pool)
    # A paid order cancelled and refunded to the card.
    cancel, order_id = await open_case(ops, pool, p, CaseKind.cancellation, status="paid")
    await wait_stage(cancel, Stage.awaiting_bank_settlement)
    await settle_refund(ops, ops.gateway_url, cancel.id, f"pi_{order_id}")
    assert (await cancel.result()).outcome == Outcome.refunded
    # A withdrawal escalated (label missing twice), then withdrawn by the customer.
    ret, _ = await open_case(ops, pool, p, CaseKind.withdrawal)
    await label_missing_twice(ret, p)
    await ret.execute_update(CaseWorkflow.withdraw, SimpleAction(actor=customer(p), note="Kept it."))
    assert (await ret.result()).outcome == Outcome.withdrawn
    # A defect claim settled by a partial refund to the wallet, paid out to the bank.
    claim, _ = await open_case(ops, pool, p, CaseKind.defect)
    await partial_refund(claim, p, 2500)
    await settle_payout(await start_payout(ops, pool, p, 2500, "ops-metrics"))
    after = await scrape(ops.metrics_url)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    # Business counters (activities/metrics.py), labelled by kind (and outcome / stage).
    assert delta("aftersales_cases_opened", kind="cancellation") == 1
    assert delta("aftersales_cases_opened", kind="withdrawal") == 1
    assert delta("aftersales_cases_opened", kind="defect") == 1
    assert delta("aftersales_cases_closed", kind="cancellation", outcome="refunded") == 1
    assert delta("aftersales_cases_closed", kind="withdrawal", outcome="withdrawn") == 1
    assert delta("aftersales_cases_closed", kind="defect", outcome="partially_refunded") == 1
    assert delta("aftersales_escalations", kind="withdrawal", stage="awaiting_return_label") == 1
    assert delta("aftersales_refunded_cents", kind="cancellation") == order_total()
    assert delta("aftersales_wallet_credited_cents", kind="defect") == 2500
    assert delta("aftersales_payouts", stage="settled") == 1
    assert delta("aftersales_payouts_settled_cents") == 2500
    # The worker's task queue labels them, as the SDK's own metrics.
    assert total(after, "aftersales_cases_opened", task_queue=ops.task_queue, kind="defect") >= 1
    # SDK metrics from the same endpoint.
    assert delta("temporal_workflow_completed", workflow_type="CaseWorkflow", task_queue=ops.task_queue) >= 3
    assert delta("temporal_workflow_completed", workflow_type="PayoutWorkflow", task_queue=ops.task_queue) >= 1
    assert delta("temporal_activity_execution_latency_count", activity_type="notify") > 0
    # The read-model writes are local activities (workflows/case/workflow.py write()).
    assert delta("temporal_local_activity_execution_latency_count", activity_type="record_case_events") > 0
    assert delta("temporal_workflow_task_execution_latency_count", workflow_type="CaseWorkflow") > 0
    assert total(after, "temporal_worker_start", task_queue=ops.task_queue) >= 1


def test_each_missed_deadline_counts_once(monkeypatch):
    """A child's missed deadline has its own event and then escalates: one miss, not two. The case's own
    deadlines (seller answer, outbound shipment, photos) show as their escalation or expiry."""
    from activities import metrics
    from domain.models import CaseState, TimelineEvent

    counted = []

    class Counter:
        def __init__(self, name):
            self.name = name

        def add(self, value, labels=None):
            if self.name == "aftersales_deadlines_missed":
                counted.append((labels["kind"], labels["stage"]))

    monkeypatch.setattr(metrics, "_counter", lambda name, description: Counter(name))
    now = datetime.now(timezone.utc)

    def events(kind, stage, *evs, deadlines=(), outcome=None):
        st = CaseState(case_id="c", kind=kind, order_id="o", customer_id="cu", seller_id="s", stage=stage,
                       outcome=outcome, deadlines={d: now for d in deadlines})
        for seq, (event, detail) in enumerate(evs, 1):
            metrics.count_case_event(TimelineEvent(case_id="c", seq=seq, at=now, event=event, detail=detail,
                                                   state=st))

    def reason(text):
        return "escalated", {"reason": text}

    w, d = CaseKind.withdrawal, CaseKind.defect
    events(w, Stage.awaiting_refund_activation, ("refund_activation_missed", {}),
           reason("seller did not activate the refund in time: the marketplace refunds on the seller's behalf"))
    events(w, Stage.awaiting_return_label, ("return_label_overdue", {}),
           reason("seller did not issue the return label in time"))
    events(w, Stage.awaiting_bank_settlement, ("settlement_overdue", {}),
           reason("refund re_1 (254.99 EUR) not settled by the bank by its deadline"))
    events(w, Stage.closed, ("return_expired", {}), ("case_closed", {"outcome": "expired"}),
           deadlines=("return_label", "customer_shipment"), outcome=Outcome.expired)
    events(d, Stage.awaiting_seller_decision, reason("seller did not answer in time"))
    events(d, Stage.awaiting_outbound_shipment, reason("seller did not ship the replacement in time"))
    events(d, Stage.awaiting_outbound_shipment, reason("seller declared exchange and repair impossible: -"))
    events(d, Stage.awaiting_return_label, reason("customer reported the return label missing 2 times"))
    events(d, Stage.closed, ("case_closed", {"outcome": "expired"}), deadlines=("photos",), outcome=Outcome.expired)
    assert counted == [
        ("withdrawal", "awaiting_refund_activation"), ("withdrawal", "awaiting_return_label"),
        ("withdrawal", "awaiting_bank_settlement"), ("withdrawal", "awaiting_shipment"),
        ("defect", "awaiting_seller_decision"), ("defect", "awaiting_outbound_shipment"),
        ("defect", "awaiting_photos"),
    ]
