"""The benchmark's baselines (bench/shape.py, bench/baseline.py): a case's shape read from its histories and
replayed with no-op activities has the same steps, so the bench compares like with like. Checked on a
recorded history of the current case and on the old design's shape kept as data (bench/old_shape.json)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from codec import data_converter
from temporalio.worker import Worker

from bench import scenarios as sc
from bench.baseline import ACTIVITIES, WORKFLOWS
from bench.shape import baseline_spec, old_shapes, read_shape, save_scripts, shape_of_history
from devstack.temporal_server import ensure_search_attributes
from tests.helpers.servers import start_dev_server

HISTORIES = Path(__file__).parent / "histories"
COUNTS = ("activities", "local_activities", "signals", "updates", "signals_sent", "upserts", "histories")


def same_steps(got: dict, want: dict) -> None:
    assert {k: got[k] for k in COUNTS} == {k: want[k] for k in COUNTS}
    # A deadline started and cancelled within one workflow task leaves no event, and workflow tasks (3 events
    # each) merge or split with the timing of activities, signals and Updates.
    assert abs(got["timers"] - want["timers"]) <= 1, (got, want)
    assert abs(got["events"] - want["events"]) <= 0.1 * want["events"], (got, want)


@pytest.fixture(scope="module")
async def baseline_worker(tmp_path_factory):
    """A dev server (real time: the baseline's deadlines must not be skipped) and a baseline worker."""
    import worker

    server = await start_dev_server(tmp_path_factory.mktemp("temporal") / "server.log")
    try:
        client = await Client.connect(server.address, data_converter=data_converter())
        await ensure_search_attributes(client)
        queue = f"bench-baseline-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=ACTIVITIES,
                          workflow_runner=worker.workflow_runner()):
            yield client, queue
    finally:
        server.stop()


async def run_baseline(client, queue: str, key: str, spec: dict, scripts_dir: Path, monkeypatch):
    monkeypatch.setenv("BENCH_SCRIPTS_DIR", str(scripts_dir))
    save_scripts(scripts_dir, key, spec["scripts"])
    case_id = f"base-{key}"
    await sc.baseline_case(client, sc.Counters(), case_id, key, spec, queue)
    return await read_shape(client, case_id)


async def test_the_baseline_of_a_recorded_case_has_its_steps(baseline_worker, tmp_path, monkeypatch):
    client, queue = baseline_worker
    # The withdrawal of the shape test (tests/test_case_shape.py; its name carries its bound).
    # Recorded for the newest release (tests/histories/r<N>/).
    recorded = sorted(HISTORIES.glob("r*/test_withdrawal_takes_at_most_*_events.json"),
                      key=lambda p: int(p.parent.name.removeprefix("r")))
    raw = json.loads(recorded[-1].read_text())
    real = shape_of_history(WorkflowHistory.from_json("case", raw))
    assert real.summary()["updates"] >= 3 and real.summary()["signals"] >= 1  # Updates and the settlement
    spec = baseline_spec(real, settle_after=0.2)

    base = await run_baseline(client, queue, f"new-{uuid.uuid4().hex[:6]}", spec, tmp_path, monkeypatch)

    want, got = real.summary(), base.summary()
    same_steps(got, want)
    assert abs(got["payload_kib"] - want["payload_kib"]) <= 0.15 * want["payload_kib"] + 0.5, (got, want)
    # Each activity, local activity and timer carries a summary of the real one's size (the UI's text).
    assert len(real.summaries()) >= 15
    assert len(base.summaries()) == len(real.summaries())
    assert all(abs(g - w) <= 2 for g, w in zip(base.summaries(), real.summaries())), (base.summaries(), real.summaries())


async def test_the_old_shape_baseline_has_the_recorded_events(baseline_worker, tmp_path, monkeypatch):
    """The withdrawal before the one-workflow change: a case, its return and refund children, signals both
    ways and four Updates forwarded to the children."""
    client, queue = baseline_worker
    old = old_shapes()["b"]
    spec = {**old["spec"], "settle_after": 0.2}

    base = await run_baseline(client, queue, f"old-{uuid.uuid4().hex[:6]}", spec, tmp_path, monkeypatch)

    want, got = old["summary"], base.summary()
    assert want["histories"] == 3 and want["events"] == 280
    same_steps(got, want)
