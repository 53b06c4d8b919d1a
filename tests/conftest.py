"""Session fixtures: a real PostgreSQL (embedded), migrated once; the Temporal test servers."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

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
