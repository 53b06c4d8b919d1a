import asyncio

import asyncpg

from activities import db


async def test_migrations_are_applied_once_even_when_two_processes_race(database_url):
    # The session fixture already migrated: two concurrent runs now apply nothing and do not fail.
    results = await asyncio.gather(db.migrate(database_url), db.migrate(database_url))
    assert results == [[], []]
    conn = await asyncpg.connect(database_url)
    try:
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == sorted(p.name for p in db.MIGRATIONS_DIR.glob("*.sql"))
    finally:
        await conn.close()


async def test_a_pooled_connection_goes_back_without_a_reset_round_trip_and_without_its_open_transaction(database_url):
    # The pool's release sends nothing to the server (asyncpg's default sends RESET ALL and three more):
    # a session setting survives, which shows no reset ran. A transaction left open is still rolled back.
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept-session'")
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS release_probe (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO release_probe VALUES (1)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "kept-session"
            assert await conn.fetchval("SELECT count(*) FROM release_probe") == 0
            assert not conn.is_in_transaction()
    finally:
        await pool.close()
