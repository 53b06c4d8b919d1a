"""The law's refund deadline of a withdrawal (domain/legal.py, workflows/case/legal_refund.py) on the
time-skipping server: the real timers fire the pre-due escalation and the marketplace's refund at
their instants, and a refund made late anyway credits the L242-4 increase once."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal


from temporalio.api.sdk.v1 import WorkflowMetadata

from domain import calendar
from domain.models import CaseKind, Outcome, SimpleAction, Stage
from domain.policy import Policy
from tests.helpers.cases import (
    deliver,
    issue_label,
    jump_to,
    mail_with,
    open_case,
    paris,
    refunds_at_gateway,
    seller,
    settle_refund,
    ship,
    state,
    timeline,
    wait_for,
    wait_stage,
)
from starter.service import CASE_VIEW
from tests.helpers.data import order_total
from workflows import search_attributes as sa
from workflows.case import CaseWorkflow
from workflows.common import fmt


# These tests read the emails' English texts: the parties read English (French: test_mail_locale.py).
PARTY_LOCALE = "en"

CARE = "care@marketplace.example"
ITEMS, DELIVERY = 24900, 599  # the test order (tests/helpers/data.py)


async def _withdrawal_shipped_on(ts_env, pool, task_queue, party, day: int, policy: Policy | None = None):
    """A withdrawal opened today (day 0), label at once, the customer ships on `day`."""
    day0 = calendar.paris_day(await ts_env.get_current_time())
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal, policy=policy)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await wait_stage(handle, Stage.awaiting_shipment)
    await jump_to(ts_env, paris(day0 + timedelta(days=day)))
    assert (await ship(handle, party)).stage == Stage.in_transit
    return handle, order_id, day0


async def _refund_requested_at(pool, case_id: str):
    return await pool.fetchval("SELECT at FROM case_timeline WHERE case_id = $1 AND event = 'refund_requested'",
                               case_id)


async def test_shipped_on_day_13_the_marketplace_refunds_on_day_14_with_the_parcel_in_transit(
        ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    handle, order_id, day0 = await _withdrawal_shipped_on(ts_env, pool, task_queue, party, 13)
    due = calendar.end_of_paris_day(day0 + timedelta(days=14))
    # Known at the shipment; the pre-due escalation instant (day 12) is already past: escalated at once.
    s = await wait_for(handle, lambda s: s.legal_refund_due is not None and s.escalated)
    assert s.legal_refund_due == due and s.deadlines["legal_refund"] == due
    assert "legal refund deadline" in s.escalation_reason
    assert await mail_with(mail_sink, CARE, "escaladée")  # care reads French
    described = await handle.describe()
    assert described.typed_search_attributes.get(sa.LEGAL_REFUND_DUE) == due
    # The Temporal UI's current details (the SDK's metadata query) show it.
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert f"legal refund due: {fmt(due)} Europe/Paris" in meta.current_details
    # The read model (what GET /v1/cases/{id} returns) has it too.
    view = await pool.fetchval(f"SELECT {CASE_VIEW} FROM cases WHERE case_id = $1", handle.id)
    assert view["legal_refund_due"] == due.isoformat() and view["deadlines"]["legal_refund"] == due.isoformat()
    act_at = due - timedelta(hours=13)  # legal_refund_margin_hours: the refund is made on the due day
    await jump_to(ts_env, act_at - timedelta(minutes=5))
    assert (await state(handle)).stage == Stage.in_transit
    assert await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}") == []
    await jump_to(ts_env, act_at + timedelta(minutes=1))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    requested = await _refund_requested_at(pool, handle.id)
    assert act_at <= requested <= act_at + timedelta(minutes=1)
    assert calendar.paris_day(requested) == calendar.paris_day(due)  # made by day 14
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert (final.outcome, final.refunded_cents, final.late_refund) == (Outcome.refunded, order_total(), None)
    events = await timeline(pool, handle.id)
    assert "legal_refund_due_reached" in events and "return_received" not in events
    assert "late_refund_increase_credited" not in events
    assert await pool.fetchval("SELECT count(*) FROM order_ledger WHERE order_id = $1 AND kind = 'late_increase'",
                               order_id) == 0


async def test_the_pre_due_escalation_and_the_refund_on_the_sellers_behalf_fire_at_their_instants(
        ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    # The parcel travels long (transit deadline beyond the law's): only the legal timer acts.
    handle, order_id, day0 = await _withdrawal_shipped_on(ts_env, pool, task_queue, party, 1,
                                                          Policy(return_transit_days=30))
    due = calendar.end_of_paris_day(day0 + timedelta(days=14))  # request + 14 days (shipment on day 1)
    s = await wait_for(handle, lambda s: s.legal_refund_due is not None)
    assert s.legal_refund_due == due and not s.escalated
    warn_at = due - timedelta(days=2)
    await jump_to(ts_env, warn_at - timedelta(minutes=1))
    assert not (await state(handle)).escalated
    await jump_to(ts_env, warn_at + timedelta(minutes=1))
    s = await wait_for(handle, lambda s: s.escalated)
    assert "legal refund deadline" in s.escalation_reason and s.stage == Stage.in_transit
    act_at = due - timedelta(hours=13)
    await jump_to(ts_env, act_at - timedelta(minutes=1))
    assert (await state(handle)).stage == Stage.in_transit
    await jump_to(ts_env, act_at + timedelta(minutes=1))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    assert act_at <= await _refund_requested_at(pool, handle.id) <= act_at + timedelta(minutes=1)
    # The parcel arriving afterwards changes nothing: one refund.
    await deliver(ts_env, handle)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    assert (await handle.result()).outcome == Outcome.refunded
    assert len(await refunds_at_gateway(gateway_sandbox.url, f"pi_{order_id}")) == 1


async def test_a_seller_activating_late_owes_the_increase_credited_once(
        ts_env, pool, case_worker, gateway_sandbox, mail_sink, party, task_queue):
    # Both switches off: the marketplace never steps in, so the seller's lateness reaches the customer.
    policy = Policy(marketplace_refunds_on_seller_behalf=False, marketplace_refunds_at_legal_due=False)
    handle, order_id, day0 = await _withdrawal_shipped_on(ts_env, pool, task_queue, party, 13, policy)
    due = calendar.end_of_paris_day(day0 + timedelta(days=14))
    await jump_to(ts_env, paris(day0 + timedelta(days=16)))
    assert (await state(handle)).stage == Stage.in_transit  # the switch is off: no refund in transit
    await deliver(ts_env, handle)
    s = await wait_stage(handle, Stage.awaiting_refund_activation)
    # The seller's deadline never lies beyond the law's: a minute before the marketplace would act
    # (13 h before the due instant), already over, escalated at once.
    assert s.deadlines["refund_activation"] == due - timedelta(hours=13, minutes=1)
    await wait_for(handle, lambda s: "did not activate" in (s.escalation_reason or ""))
    await jump_to(ts_env, paris(day0 + timedelta(days=17)))
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert final.outcome == Outcome.refunded and final.refunded_cents == order_total()
    late = final.late_refund
    assert (late.days_late, late.late_party, late.due) == (3, "seller", due)
    # Up to 10 days late: the legal interest rate of the due date's half-year, once, on all that was paid.
    rate = Decimal(Policy().legal_interest_rates.get(
        f"{due.year}-H{1 if due.month <= 6 else 2}", max(Policy().legal_interest_rates.items())[1]))
    expected = int((Decimal(order_total()) * rate / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert late.increase_cents == expected > 0 and late.percent == str(rate)
    rows = await pool.fetch("SELECT * FROM wallet_entries WHERE case_id = $1", handle.id)
    assert [(r["kind"], r["amount_cents"], r["idempotency_key"]) for r in rows] == [
        ("credit", expected, f"{handle.id}:late-increase")]
    ledger_rows = await pool.fetch("SELECT kind, amount_cents FROM order_ledger WHERE order_id = $1 ORDER BY entry_id",
                                   order_id)
    assert [(r["kind"], r["amount_cents"]) for r in ledger_rows] == [("card_refund", order_total()),
                                                                      ("late_increase", expected)]
    [mail] = await mail_with(mail_sink, party["customer_email"], "3 days late")
    assert "L242-4" in mail["body"] and f"{expected / 100:.2f}" in mail["body"]
    detail = await pool.fetchval(
        "SELECT detail FROM case_timeline WHERE case_id = $1 AND event = 'late_refund_increase_credited'", handle.id)
    assert detail["late_party"] == "seller" and detail["days_late"] == 3


async def test_a_claim_under_the_legal_guarantee_asks_for_photos_then_the_seller_repairs_or_replaces(
        ts_env, pool, case_worker, mail_sink, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty, basis="legal_guarantee",
                                description="The battery no longer holds a charge after 14 months.")
    await wait_stage(handle, Stage.awaiting_photos)  # no presumption after 12 months: evidence first
    assert await mail_with(mail_sink, party["customer_email"], "Add photos")
    await handle.signal(CaseWorkflow.attachments_added, 2)
    await wait_stage(handle, Stage.awaiting_seller_decision)
    [asked] = await mail_with(mail_sink, party["seller_email"], "legal conformity guarantee")
    assert "Photos: 2" in asked["body"] and "exchange, repair" in asked["body"]


async def test_a_commercial_warranty_claim_goes_straight_to_the_seller(ts_env, pool, case_worker, party, task_queue):
    handle, _ = await open_case(ts_env, pool, task_queue, party, CaseKind.warranty, basis="commercial_warranty")
    await wait_stage(handle, Stage.awaiting_seller_decision)


async def test_late_refunds_are_counted_by_late_party():
    from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
    from temporalio.testing import ActivityEnvironment

    from activities.metrics import count_case_event
    from domain.models import CaseState, TimelineEvent

    buffer = MetricBuffer(100)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = ActivityEnvironment()
    env.metric_meter = runtime.metric_meter
    st = CaseState(case_id="c", kind=CaseKind.withdrawal, order_id="o", customer_id="u", seller_id="s")
    ev = TimelineEvent(case_id="c", seq=9, at=datetime.now(timezone.utc), event="late_refund_increase_credited",
                       detail={"late_party": "seller", "increase_cents": 1706, "days_late": 3}, state=st)
    env.run(count_case_event, ev)
    ours = ("kind", "late_party")  # beside the SDK's own attributes (activity type, task queue...)
    got = {(u.metric.name, tuple(sorted((k, v) for k, v in u.attributes.items() if k in ours))): u.value
           for u in buffer.retrieve_updates()}
    assert got == {("aftersales_late_refunds", (("kind", "withdrawal"), ("late_party", "seller"))): 1,
                   ("aftersales_late_increase_cents", (("late_party", "seller"),)): 1706}


def test_the_marketplace_acts_13_hours_before_the_due_instant_off_the_reminders_and_after_the_sellers_deadline():
    """One instant for a reminder and the law's act made a wait cancel a timer as it fired (see
    test_case_properties.WEDGED_EXAMPLE): the act lies an hour off the 12-hour reminders."""
    p = Policy()
    due = calendar.end_of_paris_day(datetime(2027, 3, 1, 9, tzinfo=timezone.utc))  # 23:59:59 Paris
    act = p.legal_refund_act_at(due)
    assert act.astimezone(calendar.PARIS).strftime("%Y-%m-%d %H:%M:%S") == "2027-03-01 10:59:59"
    assert act != due - p.reminder_before  # a care or seller reminder of a deadline ending that day
    assert p.legal_refund_seller_deadline(due) == act - timedelta(minutes=1)
