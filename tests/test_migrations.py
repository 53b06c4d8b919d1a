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
