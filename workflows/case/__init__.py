"""The case workflow package: one workflow per case (workflow.py), its stage functions over one case
state (cancellation.py, claim.py, returns.py, refund.py) and THE stage table (stages.py)."""
from workflows.case.base import ALLOWED_DECISIONS, FORBIDDEN, INVALID, KIND_TITLES, WRONG_STAGE  # noqa: F401
from workflows.case.workflow import CaseWorkflow  # noqa: F401
