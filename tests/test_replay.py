"""The recorded histories of every released shape replay with the current code.

tests/histories/<release>/ holds the histories the workflow tests recorded for one release (one build
deployed as a Worker Deployment Version) and a manifest.json naming it. Every release folder replays
here: a change that would break the cases still open on an old version, or the cases an
operator moves to a new version (README "Shipping new workflow code"), fails CI. New recordings go
into the release being prepared (tests/conftest.py HISTORIES_RELEASE, `RECORD_HISTORIES=1 make test`);
a folder is retired once its version has drained (`python -m starter.deploy drained BUILD_ID`).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from codec import data_converter
from tests.helpers.keys import TEST_CODEC_KEYS
from worker import WORKFLOWS, workflow_runner

ROOT = Path(__file__).parent / "histories"
MANIFEST = "manifest.json"
RELEASES = sorted(p for p in ROOT.iterdir() if p.is_dir())
HISTORIES = [h for release in RELEASES for h in sorted(release.glob("*.json")) if h.name != MANIFEST]


def workflow_type(path: Path) -> str:
    return json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_histories_are_kept_per_release():
    assert RELEASES, "no release folder in tests/histories"
    assert not list(ROOT.glob("*.json")), "a history outside a release folder would never be replayed"


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_every_release_names_its_build_and_covers_every_workflow_kind(release: Path):
    manifest = json.loads((release / MANIFEST).read_text())
    assert manifest["release"] == release.name and manifest["build_id"]
    kinds = {workflow_type(p) for p in release.glob("*.json") if p.name != MANIFEST}
    assert kinds == {w.__name__ for w in WORKFLOWS}


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays_with_current_code(path: Path):
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(TEST_CODEC_KEYS),
                        workflow_runner=workflow_runner("strict"))
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.parametrize("path", HISTORIES, ids=[f"{p.parent.name}/{p.stem}" for p in HISTORIES])
async def test_history_replays_with_the_production_runner(path: Path):
    """Production passes the workflow modules through the sandbox (worker.py): same replay."""
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(TEST_CODEC_KEYS),
                        workflow_runner=workflow_runner("fast"))
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
