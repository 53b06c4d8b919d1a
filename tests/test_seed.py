"""The dev stack's demo data (idempotent seeding, tokens) and its Temporal dev server."""
from __future__ import annotations

import hashlib
import subprocess
import time
from datetime import timedelta

import pytest
from temporalio.client import Client

from devstack import seed as demo
from devstack.temporal_server import (
    dev_server_command,
    ensure_search_attributes,
    list_custom_search_attributes,
    start_dev_server,
    stop_process,
    temporal_cli_path,
    test_server_path,
    wait_until_ready,
)
from domain.models import Order
from domain.policy import Policy
from starter.auth import actor_for_token
from tests.helpers.servers import log_tail, retry_on_port_clash_async
from tests.helpers.servers import start_dev_server as start_test_dev_server
from workflows import search_attributes as sa

DEMO_CUSTOMERS = ["cust_alice", "cust_bob"]
DEMO_SELLERS = ["seller_refurbco", "seller_phonefix"]


async def snapshot(pool) -> dict:
    """Every demo row, in full, plus the table sizes."""
    tokens = [demo.hash_token(t) for t in demo.DEMO_TOKENS]
    return {
        "customers": [dict(r) for r in await pool.fetch(
            "SELECT * FROM customers WHERE customer_id = ANY($1) ORDER BY 1", DEMO_CUSTOMERS)],
        "sellers": [dict(r) for r in await pool.fetch(
            "SELECT * FROM sellers WHERE seller_id = ANY($1) ORDER BY 1", DEMO_SELLERS)],
        "tokens": [dict(r) for r in await pool.fetch(
            "SELECT * FROM api_tokens WHERE token_sha256 = ANY($1) ORDER BY 1", tokens)],
        "orders": [dict(r) for r in await pool.fetch(
            "SELECT * FROM orders WHERE customer_id = ANY($1) ORDER BY 1", DEMO_CUSTOMERS)],
        "sizes": {t: await pool.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("customers", "sellers", "api_tokens", "orders")},
    }


async def test_seeding_twice_changes_nothing(pool):
    first = await demo.seed(pool)
    before = await snapshot(pool)
    assert len(before["customers"]) == 2 and len(before["sellers"]) == 2
    assert len(before["tokens"]) == len(demo.DEMO_TOKENS) == 5
    assert len(before["orders"]) == 16

    second = await demo.seed(pool)
    assert second["inserted"] == {"customers": 0, "sellers": 0, "api_tokens": 0, "orders": 0}
    assert await snapshot(pool) == before
    assert second["orders"] == first["orders"] and second["tokens"] == first["tokens"]


async def test_seeding_again_keeps_what_a_demo_changed(pool):
    await demo.seed(pool)
    oid = demo.order_id("cust_bob", "paid")
    await pool.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = $1", oid)
    try:
        await demo.seed(pool)
        assert await pool.fetchval("SELECT status FROM orders WHERE order_id = $1", oid) == "cancelled"
    finally:
        await pool.execute("UPDATE orders SET status = 'paid' WHERE order_id = $1", oid)


async def test_seed_accepts_a_dsn(pool, database_url):
    result = await demo.seed(database_url)
    assert result["orders_by_customer"]["cust_alice"]["paid"] == "ord_alice_paid"


async def test_every_status_and_delivery_age_for_each_customer(pool):
    result = await demo.seed(pool)
    assert set(result["orders"]) == set(demo.SCENARIOS)
    rows = {r["order_id"]: r for r in await pool.fetch(
        "SELECT * FROM orders WHERE customer_id = ANY($1)", DEMO_CUSTOMERS)}
    for customer in DEMO_CUSTOMERS:
        mine = [r for r in rows.values() if r["customer_id"] == customer]
        assert {r["status"] for r in mine} == {"paid", "validated", "shipped", "delivered", "cancelled"}
        assert result["orders_by_customer"][customer] == {s: demo.order_id(customer, s) for s in demo.SCENARIOS}
        for r in mine:
            order = Order.model_validate(dict(r))  # what the API and the workflows read
            assert order.lines and order.items_cents > 0
            assert order.payment_intent == f"pi_{order.order_id}"
            assert all(line.sku and line.title for line in order.lines)
            assert (order.delivered_at is not None) == (order.status == "delivered")
            assert order.created_at <= (order.delivered_at or order.created_at)

    # Each delivered order sits in the window its scenario promises, judged at seeding time
    # (the "delivered yesterday" order was delivered one day before it).
    policy = Policy()
    alice = result["orders_by_customer"]["cust_alice"]
    seeded_at = rows[alice["delivered_yesterday"]]["delivered_at"] + timedelta(days=1)
    for customer in DEMO_CUSTOMERS:
        ids = result["orders_by_customer"][customer]
        at = {s: rows[ids[s]]["delivered_at"] for s in ids if s.startswith("delivered")}
        assert seeded_at <= policy.defect_window_end(at["delivered_yesterday"])
        d20, d60 = at["delivered_20d"], at["delivered_2mo"]
        assert policy.defect_window_end(d20) < seeded_at <= policy.withdrawal_window_end(d20)
        assert policy.withdrawal_window_end(d60) < seeded_at <= policy.warranty_end(d60)
        assert policy.warranty_end(at["delivered_3y"]) < seeded_at
        assert at["delivered_3y"] < seeded_at - timedelta(days=2 * 366)  # past the 24-month legal guarantee too


async def test_demo_tokens_resolve_by_their_hash_only(pool):
    result = await demo.seed(pool)
    assert result["tokens"]["demo-customer-alice"] == ("customer", "cust_alice")
    assert result["tokens"]["demo-seller-refurbco"] == ("seller", "seller_refurbco")
    assert result["tokens"]["demo-agent-care"][0] == "agent"
    for token, (role, subject) in result["tokens"].items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        assert demo.hash_token(token) == digest
        row = await pool.fetchrow("SELECT role, subject_id FROM api_tokens WHERE token_sha256 = $1", digest)
        assert (row["role"], row["subject_id"]) == (role, subject)
        assert await pool.fetchval("SELECT count(*) FROM api_tokens WHERE token_sha256 = $1", token) == 0
        actor = await actor_for_token(pool, token)
        assert (actor.role.value, actor.id) == (role, subject)
    sellers = {r["seller_id"]: r
               for r in await pool.fetch("SELECT * FROM sellers WHERE seller_id = ANY($1)", DEMO_SELLERS)}
    assert sellers["seller_refurbco"]["email"] and sellers["seller_refurbco"]["webhook_url"] is None
    customers = {r["customer_id"]: r["email"] for r in await pool.fetch("SELECT * FROM customers")}
    assert customers["cust_alice"] == "alice@example.com" and customers["cust_bob"] == "bob@example.com"


async def test_create_token_random_and_fixed(pool):
    async with pool.acquire() as conn:
        token = await demo.create_token(conn, "customer", "cust_alice")
        other = await demo.create_token(conn, "customer", "cust_alice")
        fixed = await demo.create_token(conn, "seller", "seller_phonefix", token="fixed-test-token-xyz")
    assert token != other and len(token) >= 24 and fixed == "fixed-test-token-xyz"
    assert (await actor_for_token(pool, token)).id == "cust_alice"
    assert (await actor_for_token(pool, fixed)).id == "seller_phonefix"


# ----------------------------------------------------------------------------- Temporal dev server
EXPECTED_ATTRIBUTES = {k.name: k.indexed_value_type.name for k in sa.ALL}


def test_server_binaries_are_installed():
    assert temporal_cli_path().is_file() and test_server_path().is_file()


async def test_dev_server_registers_search_attributes_and_keeps_them_across_restarts(tmp_path):
    started = time.monotonic()
    server = await start_test_dev_server(tmp_path / "temporal.log", db_file=tmp_path / "temporal.db")
    try:
        client = await Client.connect(server.address)
        assert await list_custom_search_attributes(client) == EXPECTED_ATTRIBUTES
    finally:
        server.stop()
    assert server.proc.returncode is not None and (tmp_path / "temporal.db").exists()

    # Restart on the same SQLite file with the same flags: starts, and the attributes are there.
    await server.restart()
    try:
        client = await Client.connect(server.address)
        assert await ensure_search_attributes(client) == []
        assert await list_custom_search_attributes(client) == EXPECTED_ATTRIBUTES
    finally:
        server.stop()
    assert time.monotonic() - started < 15


async def test_attributes_missing_from_an_existing_database_are_added(tmp_path):
    """The CLI ignores --search-attribute on an existing database (checked with CLI 1.9.1): a new
    attribute in the code reaches an old .data/temporal.db only through ensure_search_attributes."""
    db_file, log = tmp_path / "old.db", tmp_path / "old.log"

    # A database created by an older version of the project, without the custom attributes.
    async def start_bare(port: int):
        bare = [a for a in dev_server_command(db_file, port, None)
                if "=" not in a and a not in ("--search-attribute", "--dynamic-config-value")]
        with open(log, "ab") as out:
            proc = subprocess.Popen(bare, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc, port, await wait_until_ready(f"127.0.0.1:{port}", timeout=20, process=proc)
        except BaseException:
            stop_process(proc)
            raise

    proc, port, client = await retry_on_port_clash_async("bare Temporal dev server", start_bare,
                                                         log=lambda: log_tail(log))
    try:
        assert await list_custom_search_attributes(client) == {}
    finally:
        stop_process(proc)

    proc = start_dev_server(db_file, port, None, log)
    try:
        client = await wait_until_ready(f"127.0.0.1:{port}", timeout=20, process=proc)
        await ensure_search_attributes(client)
        assert await list_custom_search_attributes(client) == EXPECTED_ATTRIBUTES
    finally:
        stop_process(proc)


def test_dev_server_command_line(tmp_path):
    cmd = dev_server_command(tmp_path / "t.db", 7233, 8233)
    assert cmd[1:3] == ["server", "start-dev"]
    assert ["--ip", "127.0.0.1"] == cmd[3:5] and "--headless" not in cmd
    assert cmd[cmd.index("--ui-port") + 1] == "8233" and cmd[cmd.index("--db-filename") + 1].endswith("t.db")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--search-attribute"] == sa.cli_definitions()
    headless = dev_server_command(None, 7233, None)
    assert "--headless" in headless and "--db-filename" not in headless and "--ui-port" not in headless


@pytest.mark.parametrize("name", ["temporal", "temporal-test-server"])
def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path, name):
    import devstack.temporal_server as ts

    monkeypatch.setattr(ts, "BIN_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="pip package"):
        ts.temporal_cli_path() if name == "temporal" else ts.test_server_path()
