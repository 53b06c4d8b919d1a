"""The pages in a real browser (Debian's Chromium driven by Playwright), against the real stack: the
API with its worker on the time-skipping server, PostgreSQL, the gateway sandbox.

With SCREENSHOTS=<dir> (e.g. `SCREENSHOTS=docs/screenshots pytest tests/test_pages_browser.py`) each
page is also saved at 1280×800 in French and in English as <dir>/pages-<page>-<fr|en>.png.
"""
from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from activities.wallet import add_entry, ensure_wallet
from starter.auth import create_token
from tests.helpers.browser import chromium
from tests.helpers.cases import jump_to
from tests.helpers.data import make_order, make_party
from tests.helpers.servers import api_stack

SHOTS = os.environ.get("SCREENSHOTS")
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
async def stack(api_env, pool, test_settings, tmp_path_factory):
    async with api_stack(api_env.client, test_settings, "aftersales-browser-test", settle_after_seconds=0.3,
                         attachments_dir=str(tmp_path_factory.mktemp("attachments"))) as (served, _, s):
        yield served


@pytest.fixture(scope="module")
async def browser():
    async with chromium() as b:
        yield b


async def signed_in(browser, stack, token: str):
    """A browser context of its own (its own cookies) signed in through the sign-in page."""
    context = await browser.new_context(viewport=VIEWPORT, base_url=stack.url)
    page = await context.new_page()
    await page.goto("/sign-in")
    await page.fill("input[name=token]", token)
    async with page.expect_navigation():
        await page.click("form[action='/sign-in'] button[type=submit]")
    return context, page


async def shot(page, name: str) -> None:
    """The page as it is, in both languages (switched with the page's own buttons), back to French."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    for locale in ("fr", "en", "fr"):  # ending in French, where the test goes on
        if await page.get_attribute("html", "lang") != locale:
            async with page.expect_navigation():
                await page.click(f"form[action='/locale'] button[value={locale}]")
        await page.screenshot(path=str(Path(SHOTS, f"pages-{name}-{locale}.png")))


async def submit(page, form: str) -> None:
    async with page.expect_navigation():
        await page.click(f"{form} button[type=submit]")


async def db_wait(pool, query: str, *args, want, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while (value := await pool.fetchval(query, *args)) != want:
        assert time.monotonic() < end, f"{query} {args}: {value!r}, never {want!r}"
        await asyncio.sleep(0.05)


STAGE = "#stage"


async def test_withdrawal_label_receipt_live_stage_and_care_forced_refund(browser, stack, pool, api_env):
    party = await make_party(pool)
    async with pool.acquire() as conn:
        agent_token = await create_token(conn, "agent", "care_browser")
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc) - timedelta(days=1),
                                unit_price_cents=39290)
    if SHOTS:
        visitor = await browser.new_context(viewport=VIEWPORT, base_url=stack.url)
        page = await visitor.new_page()
        await page.goto("/sign-in")
        await shot(page, "sign-in")
        await visitor.close()

    # The customer opens a withdrawal from the order's "Get help" page.
    customer_ctx, customer = await signed_in(browser, stack, party["customer_token"])
    await customer.goto(f"/orders/{order_id}/help")
    await expect(customer.locator("#kind-cancellation .why")).to_contain_text("déjà expédiée")
    await expect(customer.locator("#kind-withdrawal .until")).to_contain_text("Possible jusqu'au")
    await shot(customer, "help")
    await submit(customer, "#kind-withdrawal form")
    case_id = customer.url.rsplit("/", 1)[-1]
    assert await pool.fetchval("SELECT kind FROM cases WHERE case_id = $1", case_id) == "withdrawal"
    await expect(customer.locator(STAGE)).to_have_attribute("data-stage", "awaiting_return_label", timeout=15000)
    await expect(customer.locator(".owner")).to_contain_text("vendeur")
    await customer.evaluate("window.notReloaded = true")  # gone if the page reloads

    # The seller finds it in the inbox and issues the label.
    seller_ctx, seller = await signed_in(browser, stack, party["seller_token"])
    assert seller.url.endswith("/inbox")
    row = seller.locator(f"tr[data-case='{case_id}']")
    await expect(row).to_contain_text("En attente de l'étiquette de retour")
    await shot(seller, "inbox")
    async with seller.expect_navigation():
        await row.locator("a").click()
    await seller.fill("form[data-action=return-label] input[name=tracking_number]", "RETBROWSER1")
    await seller.fill("form[data-action=return-label] input[name=label_url]", "https://labels.example/ret-1.pdf")
    await submit(seller, "form[data-action=return-label]")
    await expect(seller.locator(STAGE)).to_have_attribute("data-stage", "awaiting_shipment")

    # The customer's page follows without reloading: the new stage, the label link.
    await expect(customer.locator(STAGE)).to_have_attribute("data-stage", "awaiting_shipment", timeout=10000)
    await expect(customer.locator("#label")).to_have_attribute("href", "https://labels.example/ret-1.pdf")
    assert await customer.evaluate("window.notReloaded === true")

    # The seller confirms receipt; the customer sees it, still without reloading.
    await submit(seller, "form[data-action=receipt]")
    await expect(seller.locator(STAGE)).to_have_attribute("data-stage", "awaiting_refund_activation")
    await expect(customer.locator(STAGE)).to_have_attribute("data-stage", "awaiting_refund_activation", timeout=10000)
    await expect(customer.locator(STAGE)).to_have_text("En attente du déclenchement du remboursement")
    assert await customer.evaluate("window.notReloaded === true")
    await shot(seller, "case-seller")
    await customer.reload()
    await shot(customer, "case-customer")

    # The wallet page with a payout.
    async with pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, party["customer_id"])
        await add_entry(conn, customer_id=party["customer_id"], kind="credit", cents=4550, currency="EUR",
                        key=f"browser-{case_id}", reason="geste commercial")
    await customer.goto("/wallet")
    await expect(customer.locator("#available")).to_have_text("45,50\u00a0€")
    await customer.fill("input[name=amount]", "20")
    await customer.fill("input[name=account_holder]", "Test Customer")
    await customer.fill("input[name=iban]", "FR1420041010050500013M02606")
    await submit(customer, "form[action='/wallet/payouts']")
    await expect(customer.locator("#available")).to_have_text("25,50\u00a0€")
    await shot(customer, "wallet")

    # A second withdrawal whose seller never issues the label: escalated at its deadline, care refunds it.
    other_order = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc) - timedelta(days=1))
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as api:
        r = await api.post(f"/v1/orders/{other_order}/help-requests", json={"kind": "withdrawal"},
                           headers={"Authorization": f"Bearer {party['customer_token']}"})
    stuck = r.json()["case_id"]
    await db_wait(pool, "SELECT stage FROM cases WHERE case_id = $1", stuck, want="awaiting_return_label")
    deadline = datetime.fromisoformat((await pool.fetchval("SELECT state FROM cases WHERE case_id = $1", stuck))["deadline"])
    await jump_to(api_env, deadline + timedelta(minutes=1))
    await db_wait(pool, "SELECT (state->>'escalated')::boolean FROM cases WHERE case_id = $1", stuck, want=True)

    care_ctx, care = await signed_in(browser, stack, agent_token)
    assert care.url.endswith("/queue")
    await expect(care.locator(f"tr[data-case='{stuck}']")).to_contain_text("escaladée")
    await shot(care, "queue")
    async with care.expect_navigation():
        await care.locator(f"tr[data-case='{stuck}'] a").click()
    await care.select_option("form[data-action=care] select[name=resolution]", "force_refund")
    await care.fill("form[data-action=care] input[name=reason]", "Le vendeur ne répond pas.")
    await submit(care, "form[data-action=care]")
    await db_wait(pool, "SELECT outcome FROM cases WHERE case_id = $1", stuck, want="refunded")
    assert (await pool.fetchval("SELECT state FROM cases WHERE case_id = $1", stuck))["refunded_cents"] == 24900 + 599
    await expect(care.locator(STAGE)).to_have_attribute("data-stage", "closed", timeout=10000)
    await expect(care.locator("#outcome")).to_have_text("remboursée")
    await expect(care.locator(".timeline")).to_contain_text("Décision du service client — Le vendeur ne répond pas.")
    await shot(care, "case-care")
    for ctx in (customer_ctx, seller_ctx, care_ctx):
        await ctx.close()


async def test_another_customers_case_page_is_403_and_a_form_without_csrf_is_refused(browser, stack, pool):
    a, b = await make_party(pool), await make_party(pool)
    order_id = await make_order(pool, a, "delivered", delivered_at=datetime.now(timezone.utc))
    a_ctx, page_a = await signed_in(browser, stack, a["customer_token"])
    await page_a.goto(f"/orders/{order_id}/help")
    await submit(page_a, "#kind-withdrawal form")
    case_id = page_a.url.rsplit("/", 1)[-1]

    b_ctx, page_b = await signed_in(browser, stack, b["customer_token"])
    response = await page_b.goto(f"/cases/{case_id}")
    assert response.status == 403
    await expect(page_b.locator(".error")).to_contain_text("this case is not yours")
    await expect(page_b.locator("body")).not_to_contain_text("Historique")

    # The same form as the customer's, its CSRF token taken out: refused, nothing changes.
    await expect(page_a.locator(STAGE)).to_have_attribute("data-stage", "awaiting_return_label", timeout=15000)
    before = await pool.fetchval("SELECT last_seq FROM cases WHERE case_id = $1", case_id)
    await page_a.evaluate("document.querySelector('form[data-action=withdraw] input[name=csrf]').remove()")
    async with page_a.expect_response(lambda r: r.request.method == "POST") as posted:
        await page_a.click("form[data-action=withdraw] button[type=submit]")
    assert (await posted.value).status == 403
    await expect(page_a.locator(".error")).to_contain_text("CSRF")
    assert await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id) == "awaiting_return_label"
    assert await pool.fetchval("SELECT last_seq FROM cases WHERE case_id = $1", case_id) == before
    await a_ctx.close()
    await b_ctx.close()


async def test_defect_photos_show_as_thumbnails_to_the_seller(browser, stack, pool):
    import io

    from PIL import Image

    party = await make_party(pool)
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    customer_ctx, customer = await signed_in(browser, stack, party["customer_token"])
    await customer.goto(f"/orders/{order_id}/help")
    await customer.select_option("#kind-defect select[name=category]", "screen")
    await customer.fill("#kind-defect textarea[name=description]", "L'écran clignote puis devient noir.")
    await submit(customer, "#kind-defect form")
    await expect(customer.locator(STAGE)).to_have_attribute("data-stage", "awaiting_photos", timeout=15000)
    photo = io.BytesIO()
    Image.new("RGB", (1200, 900), (30, 90, 200)).save(photo, "PNG")
    await customer.set_input_files("form[data-action=photos] input[type=file]",
                                   {"name": "ecran.png", "mimeType": "image/png", "buffer": photo.getvalue()})
    await submit(customer, "form[data-action=photos]")
    await expect(customer.locator(STAGE)).to_have_attribute("data-stage", "awaiting_seller_decision", timeout=15000)

    seller_ctx, seller = await signed_in(browser, stack, party["seller_token"])
    case_id = customer.url.rsplit("/", 1)[-1]
    await seller.goto(f"/cases/{case_id}")
    await expect(seller.locator(".defect")).to_contain_text("Écran — L'écran clignote puis devient noir.")
    thumbnail = seller.locator(".photos img")
    await expect(thumbnail).to_have_count(1)
    # Loaded through the page's session cookie, under the page's Content-Security-Policy: the thumbnail itself.
    await seller.wait_for_function("document.querySelector('.photos img').naturalWidth === 320")
    assert await thumbnail.evaluate("img => img.naturalHeight") == 240
    await expect(seller.locator("form[data-action=decision] select[name=decision] option")).to_have_count(4)
    await shot(seller, "case-seller-defect")
    await customer_ctx.close()
    await seller_ctx.close()
