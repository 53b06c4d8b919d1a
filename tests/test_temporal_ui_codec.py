"""The Temporal UI of the dev server (started as `make run` starts it, --ui-codec-endpoint to the API's
/codec) in headless Chromium: a care agent signed in to the codec sees a case's input decoded; without the
session the UI gets 401 from the codec and shows ciphertext. Screenshots: docs/screenshots/ with
UPDATE_SCREENSHOTS=1 (the test's temporary directory otherwise, so a test run leaves the tree clean)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from codec import data_converter
from devstack import temporal_server as ts
from devstack.postgres import free_port
from starter.auth import create_token
from tests.helpers.browser import chromium
from tests.helpers.data import make_order, make_party
from tests.helpers.servers import api_stack, bound_socket, log_tail, retry_on_port_clash_async

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESCRIPTION = "The screen flickers since Tuesday; my neighbour Bérénice Quarantotto saw it too."


@pytest.fixture(scope="module")
async def ui_stack(pool, test_settings, tmp_path_factory):
    """Dev server with its UI pointed at the API's codec, the API (and a worker) on the same host."""
    api_sock = bound_socket()  # held from now on: the UI is told the codec's URL before the API serves
    api_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    log = tmp_path_factory.mktemp("temporal-ui") / "server.log"
    ui_port = free_port()

    async def start(port: int):
        proc = ts.start_dev_server(None, port, ui_port, log, ui_codec_endpoint=f"{api_url}/codec",
                                   start_new_session=True)
        try:
            await ts.wait_until_ready(f"127.0.0.1:{port}", timeout=30, process=proc)
        except BaseException:
            ts.stop_process(proc)
            raise
        return proc, port

    proc, port = await retry_on_port_clash_async("Temporal dev server with UI", start, log=lambda: log_tail(log))
    try:
        await ts.ensure_search_attributes(await Client.connect(f"127.0.0.1:{port}"))
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter())
        ui = f"http://127.0.0.1:{ui_port}"
        s = replace(test_settings, codec_cors_origins=ui)
        async with api_stack(client, s, "aftersales-ui-test", api_sock=api_sock) as (api, _, _):
            yield ui, api.url, port
    finally:
        ts.stop_process(proc)



async def open_defect_case(api: str, pool, party) -> str:
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    async with httpx.AsyncClient(base_url=api) as http:
        r = await http.post(f"/v1/orders/{order_id}/help-requests", json={
            "kind": "defect", "category": "screen", "description": DESCRIPTION},
            headers={"Authorization": f"Bearer {party['customer_token']}"})
    assert r.status_code == 201, r.text
    return r.json()["case_id"]


async def use_codec_with_credentials(page, codec_url: str) -> None:
    """What the README tells an agent to do once: the UI's Codec Server settings (in the browser),
    this endpoint, "Include cross-origin credentials" (the codec session cookie), Apply."""
    await page.click("[data-testid^=data-encoder-status]")
    await page.click("[data-testid=use-local-endpoint-input]")
    await page.fill("textarea", codec_url)
    await page.click("text=Include cross-origin credentials")
    await page.click("[data-testid=confirm-modal-button]:visible")


async def to_the_input_end(page) -> None:
    """The input box shows its first lines (CodeMirror renders those in view): to its end, where the
    description is, as a reader would (click into it, Ctrl+End)."""
    await page.locator(".cm-content >> visible=true").first.click()
    await page.keyboard.press("Control+End")


async def case_page(browser, ui: str, api: str, case_id: str, agent_token: str | None):
    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await context.new_page()
    if agent_token:  # the agent signs in to the codec server (its session page)
        await page.goto(f"{api}/codec/session")
        await page.fill("input[name=token]", agent_token)
        await page.click("button:has-text('Sign in')")
        await page.wait_for_selector("text=Signed in as care agent")
    await page.goto(f"{ui}/namespaces/default/workflows/{case_id}")
    await page.wait_for_selector("[data-testid^=data-encoder-status]")
    await use_codec_with_credentials(page, f"{api}/codec")
    await page.reload()
    await page.wait_for_selector("[data-testid^=data-encoder-status]")
    return context, page


async def test_the_ui_decodes_a_case_for_a_signed_in_agent_only(ui_stack, pool, tmp_path):
    ui, api, _ = ui_stack
    shots = SHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    party = await make_party(pool)
    async with pool.acquire() as conn:
        agent = await create_token(conn, "agent", "care_ui")
    case_id = await open_defect_case(api, pool, party)
    shots.mkdir(parents=True, exist_ok=True)
    async with chromium() as browser:
        context, page = await case_page(browser, ui, api, case_id, agent)
        await page.wait_for_selector(f"text={party['customer_id']}", timeout=20_000)
        # The input's end (the description comes last): scrolled into the input box.
        await to_the_input_end(page)
        await page.wait_for_selector("text=Quarantotto", timeout=10_000)
        text = await page.inner_text("body")
        assert DESCRIPTION in text and "could not connect" not in text
        assert "customer: mail.case_opened" in text  # an activity's summary, decoded too
        await page.screenshot(path=str(shots / "temporal-ui-decoded.png"), full_page=True)
        await context.close()

        context, page = await case_page(browser, ui, api, case_id, None)
        await page.locator("text=Codec Server could not connect >> visible=true").first.wait_for(timeout=20_000)
        await to_the_input_end(page)
        text = await page.inner_text("body")
        assert "Quarantotto" not in text and "mail.case_opened" not in text
        assert party["customer_id"] not in text.split("Input", 1)[1].split("Result")[0]
        await page.screenshot(path=str(shots / "temporal-ui-encrypted.png"), full_page=True)
        await context.close()


def temporal_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ts.temporal_cli_path()), *args], capture_output=True, text=True, timeout=60)


def case_input(show_json: str) -> tuple[str, str]:
    """(encoding, data) of the case input in `temporal workflow show --output json`."""
    started = json.loads(show_json)["events"][0]["workflowExecutionStartedEventAttributes"]
    [p] = started["input"]["payloads"]
    return base64.b64decode(p["metadata"]["encoding"]).decode(), base64.b64decode(p["data"]).decode(errors="replace")


async def test_the_cli_decodes_with_the_agents_token_only(ui_stack, pool):
    """The README's CLI examples: --codec-endpoint with --codec-auth "Bearer <agent token>"."""
    ui, api, port = ui_stack
    party = await make_party(pool)
    async with pool.acquire() as conn:
        agent = await create_token(conn, "agent", "care_cli")
    case_id = await open_defect_case(api, pool, party)
    show = ["workflow", "show", "--address", f"127.0.0.1:{port}", "--workflow-id", case_id, "--output", "json",
            "--codec-endpoint", f"{api}/codec"]
    decoded = await asyncio.to_thread(temporal_cli, *show, "--codec-auth", f"Bearer {agent}")
    assert decoded.returncode == 0, decoded.stderr
    encoding, data = case_input(decoded.stdout)
    assert encoding == "json/plain" and DESCRIPTION in json.loads(data)["description"]
    for auth in ([], ["--codec-auth", f"Bearer {party['customer_token']}"]):
        # The codec answers 401/403; the CLI retries it until its timeout, then gives up printing nothing.
        refused = await asyncio.to_thread(temporal_cli, *show, *auth, "--command-timeout", "3s")
        assert refused.returncode != 0 and "Quarantotto" not in refused.stdout + refused.stderr
    plain = await asyncio.to_thread(temporal_cli, *show[:-2])  # no codec at all: ciphertext
    assert plain.returncode == 0 and case_input(plain.stdout)[0] == "binary/encrypted"
    assert "Quarantotto" not in case_input(plain.stdout)[1]
