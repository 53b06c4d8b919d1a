"""Histories recorded by the workflow tests (tests/histories, `RECORD_HISTORIES=1 make test`) replay
with the current code: a change that would break running cases (non-determinism) fails here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from codec import data_converter
from tests.helpers.keys import TEST_CODEC_KEYS
from worker import WORKFLOWS, workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_workflow_kind_has_recorded_histories():
    types = {json.loads(p.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
             for p in HISTORIES}
    assert types == {w.__name__ for w in WORKFLOWS}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_with_current_code(path: Path):
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(TEST_CODEC_KEYS),
                        workflow_runner=workflow_runner())
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
