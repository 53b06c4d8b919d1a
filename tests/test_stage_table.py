"""THE stage table (workflows/case/stages.py) covers every Stage, every waiting stage has an owner, a
deadline and a timeout action, and README.md and docs/rules.md show exactly that table."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from domain.calendar import PARIS
from domain.models import CaseKind, Stage
from domain.policy import Policy
from workflows.case.stages import STAGES, AtDeadline, Owner, markdown_table

ROOT = Path(__file__).resolve().parent.parent
TRANSIENT = {Stage.opening, Stage.closed}


def test_every_stage_is_in_the_table():
    assert set(STAGES) == set(Stage)


@pytest.mark.parametrize("stage", [s for s in Stage if s not in TRANSIENT])
def test_every_waiting_stage_has_an_owner_a_deadline_and_a_timeout_action(stage):
    rule = STAGES[stage]
    assert rule.waiting and rule.owner != Owner.nobody and rule.at_deadline != AtDeadline.none
    assert rule.deadline_name and rule.escalation
    since = datetime(2026, 12, 4, 10, 0, tzinfo=PARIS)  # a Friday
    for kind in CaseKind:
        assert rule.deadline(Policy(), since, kind) > since
    # A person who must act is reminded before the deadline; carriers and the gateway are not.
    assert (rule.reminder_to is not None) == (rule.owner in (Owner.seller, Owner.customer, Owner.care))


def test_transient_stages_have_no_deadline():
    assert all(not STAGES[s].waiting and STAGES[s].at_deadline == AtDeadline.none for s in TRANSIENT)


@pytest.mark.parametrize("doc", ["README.md", "docs/rules.md"])
def test_the_docs_show_the_stage_table_of_the_code(doc):
    assert markdown_table() in (ROOT / doc).read_text()
