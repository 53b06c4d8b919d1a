"""PostgreSQL access: one asyncpg pool per process and the migration runner.

DATABASE_URL points at any PostgreSQL; the dev stack and the tests set it to their embedded server.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any constant: the advisory lock that serialises migrations between processes.
MIGRATION_LOCK_ID = 7_246_001

_pool: asyncpg.Pool | None = None


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Run when a connection goes back to the pool, after asyncpg has rolled back any transaction left
    open. asyncpg's default also sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, a
    round trip and four statements on every release (an email releases three connections); our pooled
    connections never hold session state (no SET, LISTEN, cursor or session-level advisory lock: the
    migrations' lock is on a connection of their own), so there is nothing to undo."""


async def create_pool(dsn: str | None = None, **kwargs) -> asyncpg.Pool:
    dsn = dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        raise RuntimeError("DATABASE_URL is not set (make run and the tests set it to the embedded server)")
    kwargs.setdefault("min_size", 1)
    kwargs.setdefault("max_size", int(os.environ.get("DATABASE_POOL_SIZE", "10")))
    kwargs.setdefault("reset", _keep_session)
    return await asyncpg.create_pool(dsn, init=_init_connection, **kwargs)


async def get_pool() -> asyncpg.Pool:
    """The process-wide pool, created on first use."""
    global _pool
    if _pool is None:
        _pool = await create_pool()
    return _pool


def set_pool(pool: asyncpg.Pool | None) -> None:
    global _pool
    _pool = pool


async def migrate(dsn: str | None = None) -> list[str]:
    """Apply migrations/*.sql in name order, each once, under an advisory lock. Returns those applied."""
    dsn = dsn or os.environ["DATABASE_URL"]
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await conn.close()
    return applied


def main(argv: list[str] | None = None) -> int:
    """`python -m activities.db migrate`: applies pending migrations to DATABASE_URL (one-shot job)."""
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m activities.db")
    parser.add_argument("command", choices=["migrate"])
    parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL"):
        parser.error("DATABASE_URL is not set")
    applied = asyncio.run(migrate())
    print("applied:", ", ".join(applied) if applied else "nothing (schema up to date)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
