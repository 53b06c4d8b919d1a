"""record_case_events, the read model's one writer: timeline rows once each, the case row at the last
event of the newest batch, whatever order the batches (or their retries) arrive in."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from temporalio.testing import ActivityEnvironment

from activities.cases import CaseActivities
from domain.models import CaseKind, CaseState, Stage, TimelineEvent
from tests.helpers.data import make_order, make_party

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def event(case: CaseState, seq: int, name: str, stage: Stage, **detail) -> TimelineEvent:
    return TimelineEvent(case_id=case.case_id, seq=seq, at=T0 + timedelta(minutes=seq), event=name, detail=detail,
                         state=case.model_copy(update={"stage": stage}))


async def timeline(pool, case_id: str) -> list[tuple]:
    return [tuple(r) for r in await pool.fetch(
        "SELECT seq, event, jsonb_typeof(detail), detail FROM case_timeline WHERE case_id = $1 ORDER BY seq",
        case_id)]


async def test_batches_write_each_row_once_and_the_read_model_never_goes_back(pool, test_settings):
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    case = CaseState(case_id=f"case-{uuid.uuid4().hex[:10]}", kind=CaseKind.withdrawal, order_id=order_id,
                     customer_id=party["customer_id"], seller_id=party["seller_id"])
    acts, env = CaseActivities(test_settings), ActivityEnvironment()
    first = [event(case, 1, "case_opened", Stage.opening, kind="withdrawal"),
             event(case, 2, "return_label_requested", Stage.awaiting_return_label, seller_pays_label=False)]
    await env.run(acts.record_case_events, first)
    row = await pool.fetchrow("SELECT stage, last_seq, state, opened_at FROM cases WHERE case_id = $1", case.case_id)
    assert (row["stage"], row["last_seq"], row["state"]["stage"]) == ("awaiting_return_label", 2,
                                                                      "awaiting_return_label")
    assert row["opened_at"] == T0 + timedelta(minutes=1)  # a row the API had not written: its first event
    assert await timeline(pool, case.case_id) == [
        (1, "case_opened", "object", {"kind": "withdrawal"}),
        (2, "return_label_requested", "object", {"seller_pays_label": False})]

    await env.run(acts.record_case_events, first)  # a retry: nothing twice
    await env.run(acts.record_case_events, first[:1])  # an old batch arriving late: the read model stays
    assert len(await timeline(pool, case.case_id)) == 2
    assert await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case.case_id) == "awaiting_return_label"

    await env.run(acts.record_case_events, [event(case, 3, "case_closed", Stage.closed, outcome="withdrawn")])
    row = await pool.fetchrow("SELECT stage, last_seq, closed_at FROM cases WHERE case_id = $1", case.case_id)
    assert (row["stage"], row["last_seq"], row["closed_at"]) == ("closed", 3, T0 + timedelta(minutes=3))
    assert [r[0] for r in await timeline(pool, case.case_id)] == [1, 2, 3]


async def kept_and_built(pool, case_id: str) -> tuple[dict, dict]:
    row = await pool.fetchrow("SELECT view_json::jsonb AS kept, case_view(cases) AS built FROM cases "
                              "WHERE case_id = $1", case_id)
    return row["kept"], row["built"]


async def test_the_view_text_the_lists_send_follows_every_write_of_the_row(pool, test_settings):
    """GET /v1/cases joins each row's view_json as it is: the insert, the workflow's writes and any other
    UPDATE (the erasure's scrubbing) rewrite it to what case_view builds."""
    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered")
    case = CaseState(case_id=f"case-{uuid.uuid4().hex[:10]}", kind=CaseKind.withdrawal, order_id=order_id,
                     customer_id=party["customer_id"], seller_id=party["seller_id"])
    acts, env = CaseActivities(test_settings), ActivityEnvironment()
    await env.run(acts.record_case_events, [event(case, 1, "case_opened", Stage.opening)])
    kept, built = await kept_and_built(pool, case.case_id)
    assert kept == built and (kept["stage"], kept["closed_at"]) == ("opening", None)

    closed = event(case, 2, "case_closed", Stage.closed)
    closed.state.refunded_cents = 24900
    await env.run(acts.record_case_events, [closed])
    kept, built = await kept_and_built(pool, case.case_id)
    assert kept == built
    assert (kept["stage"], kept["refunded_cents"], kept["closed_at"]) == (
        "closed", 24900, (T0 + timedelta(minutes=2)).isoformat().replace("+00:00", ".000000+00:00"))

    await pool.execute("UPDATE cases SET state = state || '{\"escalation_reason\": \"[erased]\"}' WHERE case_id = $1",
                       case.case_id)
    kept, built = await kept_and_built(pool, case.case_id)
    assert kept == built and kept["escalation_reason"] == "[erased]"
