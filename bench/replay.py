"""The workflow side of a worker's cost, measured without the server: replaying recorded histories of real
cases with temporalio's Replayer, one workflow runner after the other, in this process. CPU time per case
here does not depend on the server, the network or the activities, so the sandbox variants can be compared
even on a busy machine (where live throughput figures move by tens of percent)."""
from __future__ import annotations

import time

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer


async def fetch_histories(client, workflow_ids: list[str]) -> list[WorkflowHistory]:
    out = []
    for wid in workflow_ids:
        out.append(await client.get_workflow_handle(wid).fetch_history())
    return out


async def replay_cpu_ms(histories: list[WorkflowHistory], runner_name: str, cases: int) -> float:
    """CPU milliseconds per case to replay `histories` (the workflows of `cases` cases) with a fresh Replayer
    using the runner `runner_name` (see bench/procs.py). Replayed twice; the faster pass counts."""
    import worker
    from bench.procs import _runner
    from codec import data_converter

    replayer = Replayer(workflows=worker.WORKFLOWS, data_converter=data_converter(),
                        workflow_runner=_runner(runner_name))
    async def each():
        for h in histories:
            yield h

    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()
        results = await replayer.replay_workflows(each(), raise_on_replay_failure=True)
        best = min(best, time.process_time() - t0)
        del results
    return best / cases * 1000
