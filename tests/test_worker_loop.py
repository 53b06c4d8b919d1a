"""worker.run: a worker process runs on uvloop, and the SDK's worker serves workflows and activities on it."""
from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import worker
from tests.helpers.servers import start_time_skipping_server


@activity.defn
async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@workflow.defn
class LoopProbe:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(hours=1))  # a timer, fired by the time-skipping server
        return await workflow.execute_activity(loop_module, start_to_close_timeout=timedelta(seconds=10))


def test_a_worker_process_runs_on_uvloop_and_the_sdk_serves_it():
    got: dict = {}

    async def scenario():
        env = await start_time_skipping_server()
        try:
            async with Worker(env.client, task_queue="loop-probe", workflows=[LoopProbe], activities=[loop_module],
                              workflow_runner=UnsandboxedWorkflowRunner()):
                got["activity ran on"] = await env.client.execute_workflow(
                    LoopProbe.run, id=f"probe-{uuid.uuid4().hex}", task_queue="loop-probe")
        finally:
            await env.shutdown()

    # A thread of its own: the test's loop is pytest-asyncio's, worker.run starts a new one.
    t = threading.Thread(target=worker.run, args=(scenario(),))
    t.start()
    t.join(120)
    assert got == {"activity ran on": "uvloop"}
