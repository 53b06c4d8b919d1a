"""The pages over HTTP (no browser): sign-in and its cookie, CSRF, who may open which page, what the
pages say in French and English, photos. The browser stories are in test_pages_browser.py."""
from __future__ import annotations

import asyncio
import io
import re
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from PIL import Image

from starter.auth import create_token
from tests.helpers.data import make_order, make_party
from tests.helpers.servers import api_stack



def png(width: int = 1200, height: int = 900) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
async def stack(api_env, pool, test_settings, tmp_path_factory):
    async with api_stack(api_env.client, test_settings, "aftersales-pages-test",
                         attachments_dir=str(tmp_path_factory.mktemp("attachments"))) as (served, _, s):
        yield served


@pytest.fixture(scope="module")
async def agent_token(pool):
    async with pool.acquire() as conn:
        return await create_token(conn, "agent", "care_pages")


async def browser_like(stack, token: str | None = None) -> httpx.AsyncClient:
    """A client keeping cookies like a browser, signed in with `token` when given."""
    client = httpx.AsyncClient(base_url=stack.url, timeout=30)
    r = await client.get("/sign-in")
    assert r.status_code == 200
    client.csrf = r.cookies["csrf"]
    if token:
        r = await client.post("/sign-in", data={"token": token, "csrf": client.csrf})
        assert r.status_code == 303, r.text
        client.csrf = client.cookies["csrf"]
    return client


def text(r: httpx.Response) -> str:
    """The page's text without tags, spaces normalised (Babel separates amounts with no-break spaces)."""
    body = re.sub(r"<[^>]+>", " ", r.text).replace("\u00a0", " ").replace("\u202f", " ").replace("&#39;", "'")
    return re.sub(r"\s+", " ", body)


async def wait_stage(pool, case_id: str, stage: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while (current := await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id)) != stage:
        assert time.monotonic() < end, f"case {case_id} stayed in {current}, never reached {stage}"
        await asyncio.sleep(0.05)


async def open_withdrawal(client, pool, party, delivered_days_ago: float = 1) -> str:
    order_id = await make_order(pool, party, "delivered",
                                delivered_at=datetime.now(timezone.utc) - timedelta(days=delivered_days_ago))
    r = await client.post(f"/orders/{order_id}/help", data={"kind": "withdrawal", "csrf": client.csrf})
    assert r.status_code == 303, text(r)
    case_id = r.headers["location"].rsplit("/", 1)[-1]
    await wait_stage(pool, case_id, "awaiting_return_label")
    return case_id


# ----------------------------------------------------------------------------- sign-in and CSRF
async def test_sign_in_sets_an_httponly_lax_session_cookie_and_refuses_bad_tokens(stack, pool):
    party = await make_party(pool)
    client = await browser_like(stack)
    r = await client.post("/sign-in", data={"token": party["customer_token"]})  # no CSRF token
    assert r.status_code == 403 and "CSRF" in text(r) and "session" not in r.cookies
    r = await client.post("/sign-in", data={"token": "not-a-token", "csrf": client.csrf})
    assert r.status_code == 401 and "Jeton invalide" in text(r)
    r = await client.post("/sign-in", data={"token": party["customer_token"], "csrf": client.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/cases"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain http here
    assert party["customer_token"] in cookie
    assert (await client.get("/cases")).status_code == 200
    await client.aclose()


async def test_over_https_the_session_and_csrf_cookies_are_secure(pool, test_settings):
    from starter.api import create_app

    party = await make_party(pool)
    app = create_app(test_settings)
    app.state.pool = pool  # sign-in reads only the tokens (no lifespan under ASGITransport)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://pages.example") as client:
        r = await client.get("/sign-in")
        assert "Secure" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
        r = await client.post("/sign-in", data={"token": party["customer_token"], "csrf": r.cookies["csrf"]})
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("session="))
        assert r.status_code == 303 and "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_a_form_without_its_csrf_token_changes_nothing(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    order_id = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    for data in ({"kind": "withdrawal"}, {"kind": "withdrawal", "csrf": "forged-" + customer.csrf},
                 {"kind": "withdrawal", "csrf": "é" + customer.csrf[1:]}, {"kind": "withdrawal", "csrf": ""}):
        r = await customer.post(f"/orders/{order_id}/help", data=data)
        assert r.status_code == 403 and "CSRF" in text(r)
    assert await pool.fetchval("SELECT count(*) FROM cases WHERE order_id = $1", order_id) == 0
    await customer.aclose()


# ----------------------------------------------------------------------------- who sees which page
# Every page behind the sign-in and who may open it (the others get 403, a visitor is sent to sign in).
PAGE_ACCESS = {
    "/cases/{case_id}": {"customer_a": 200, "seller_a": 200, "agent": 200},
    "/cases/{case_id}/live": {"customer_a": 200, "seller_a": 200, "agent": 200},
    "/orders/{order_id}/help": {"customer_a": 200},
    "/wallet": {"customer_a": 200, "customer_b": 200},
    "/inbox": {"seller_a": 200, "seller_b": 200},
    "/queue": {"agent": 200},
    "/cases": {"customer_a": 200, "customer_b": 200, "seller_a": 200, "seller_b": 200, "agent": 200},
}
PUBLIC_PAGES = {"/", "/sign-in", "/static/{name}"}


def page_routes(method: str) -> set[str]:
    from starter.routes import pages

    return {r.path for r in pages.router.routes if method in r.methods}


def test_every_page_has_its_access_row():
    assert page_routes("GET") == set(PAGE_ACCESS) | PUBLIC_PAGES


async def test_every_form_is_refused_without_its_csrf_token(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    case_id = await open_withdrawal(customer, pool, party)
    before = await pool.fetchval("SELECT last_seq FROM cases WHERE case_id = $1", case_id)
    ids = {"case_id": case_id, "order_id": await pool.fetchval("SELECT order_id FROM cases WHERE case_id = $1", case_id),
           "name": "withdraw"}
    for route in sorted(page_routes("POST")):
        r = await customer.post(route.format(**ids), data={"kind": "withdrawal", "locale": "en", "note": "x"})
        assert r.status_code == 403 and "CSRF" in text(r), f"POST {route}: {r.status_code}"
    assert await pool.fetchval("SELECT last_seq FROM cases WHERE case_id = $1", case_id) == before
    assert await pool.fetchval("SELECT locale FROM customers WHERE customer_id = $1", party["customer_id"]) == "fr"
    assert (await customer.get("/cases")).status_code == 200  # still signed in: sign-out was refused too
    await customer.aclose()


async def test_pages_are_private_like_the_api(stack, pool, agent_token):
    a, b = await make_party(pool), await make_party(pool)
    clients = {name: await browser_like(stack, token) for name, token in {
        "customer_a": a["customer_token"], "customer_b": b["customer_token"], "seller_a": a["seller_token"],
        "seller_b": b["seller_token"], "agent": agent_token, "anonymous": None}.items()}
    case_id = await open_withdrawal(clients["customer_a"], pool, a)
    order_id = await pool.fetchval("SELECT order_id FROM cases WHERE case_id = $1", case_id)
    ids = {"case_id": case_id, "order_id": order_id}
    expected = {route.format(**ids): allowed for route, allowed in PAGE_ACCESS.items()}
    wrong = []
    for path, allowed in expected.items():
        for name, client in clients.items():
            r = await client.get(path)
            want = allowed.get(name, 303 if name == "anonymous" else 403)
            if r.status_code != want:
                wrong.append(f"{name} GET {path}: {r.status_code}, expected {want}")
            if want == 303 and r.headers.get("location") != "/sign-in":
                wrong.append(f"{name} GET {path}: not sent to /sign-in")
            if want == 403 and "text/html" not in r.headers["content-type"]:
                wrong.append(f"{name} GET {path}: the refusal is not a page")
    assert not wrong, "\n".join(wrong)
    r = await clients["customer_b"].get(f"/cases/{case_id}")
    assert "this case is not yours" in text(r) and case_id not in text(r).replace(f"/cases/{case_id}", "")
    # A seller's inbox lists only their own cases.
    assert case_id in (await clients["seller_a"].get("/inbox")).text
    assert case_id not in (await clients["seller_b"].get("/inbox")).text
    for client in clients.values():
        await client.aclose()


# ----------------------------------------------------------------------------- what the pages say
async def test_get_help_page_says_what_is_possible_until_when_and_why_not(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    delivered = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)  # a Monday, long past every short window
    old = await make_order(pool, party, "delivered", delivered_at=delivered, unit_price_cents=39390,
                           delivery_fee_cents=599)
    page = text(await customer.get(f"/orders/{old}/help"))
    assert "Total payé : 399,89 €" in page  # French amounts
    assert "Le délai de rétractation s'est terminé le 4 février 2026, 23:59" in page  # Europe/Paris, French format
    assert "Le délai de signalement d'un défaut s'est terminé le" in page
    assert "La commande est déjà expédiée" in page  # no cancellation of a delivered order
    # The warranty is open until 12 months after the delivery.
    assert re.search(r"Faire jouer la garantie", page) and "Possible jusqu'au 5 janvier 2027" in page

    fresh = await make_order(pool, party, "delivered", delivered_at=datetime.now(timezone.utc))
    page = text(await customer.get(f"/orders/{fresh}/help"))
    assert "Me rétracter et renvoyer le produit" in page and "Signaler un défaut" in page
    assert "La garantie commence après le délai de rétractation" in page

    await pool.execute("UPDATE customers SET locale = 'en' WHERE customer_id = $1", party["customer_id"])
    page = text(await customer.get(f"/orders/{old}/help"))
    assert "Total paid: €399.89" in page and "The withdrawal period ended on February 4, 2026, 11:59 PM" in page
    await customer.aclose()


async def test_language_switch_is_stored_with_the_customer(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    assert await pool.fetchval("SELECT locale FROM customers WHERE customer_id = $1", party["customer_id"]) == "fr"
    assert "Mes demandes" in (await customer.get("/cases")).text
    r = await customer.post("/locale", data={"locale": "en", "back": "/cases", "csrf": customer.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/cases"
    assert await pool.fetchval("SELECT locale FROM customers WHERE customer_id = $1", party["customer_id"]) == "en"
    assert "My requests" in (await customer.get("/cases")).text
    r = await customer.post("/locale", data={"locale": "fr", "back": "https://evil.example/", "csrf": customer.csrf})
    assert r.headers["location"] == "/"  # never sent off-site
    await customer.aclose()


async def test_a_refused_action_shows_the_apis_message_on_the_page(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    seller = await browser_like(stack, party["seller_token"])
    case_id = await open_withdrawal(customer, pool, party)
    # Not the stage for a receipt... the API says so with 409 and the stage; the page says the same.
    r = await seller.post(f"/cases/{case_id}/do/refund-activation", data={"csrf": seller.csrf})
    assert r.status_code == 409 and "not possible in stage awaiting_return_label" in text(r)
    # A bad field: the API's 422 names it, so does the page.
    r = await seller.post(f"/cases/{case_id}/do/return-label",
                          data={"csrf": seller.csrf, "carrier": "Colissimo", "tracking_number": "no spaces!",
                                "label_url": "https://labels.example/r.pdf"})
    assert r.status_code == 422 and "tracking_number" in text(r)
    # A customer may not issue the label: the API's 403 message.
    r = await customer.post(f"/cases/{case_id}/do/return-label",
                            data={"csrf": customer.csrf, "carrier": "Colissimo", "tracking_number": "RET12345",
                                  "label_url": "https://labels.example/r.pdf"})
    assert r.status_code == 403 and "only the seller issues return labels" in text(r)
    # Hostile input is a 422 naming the field, never a 500.
    r = await customer.post(f"/cases/{case_id}/do/withdraw", data={"csrf": customer.csrf, "note": "nul\x00byte"})
    assert r.status_code == 422 and "note" in text(r)
    for amount in ("nan", "inf", "1e999999", "douze"):
        r = await customer.post("/wallet/payouts", data={"csrf": customer.csrf, "amount": amount,
                                                         "account_holder": "Test Customer", "iban": "FR1420041010050500013M02606"})
        assert r.status_code == 422 and "amount_cents" in text(r), (amount, r.status_code)
    r = await seller.post(f"/cases/{case_id}/do/no-such-action", data={"csrf": seller.csrf})
    assert r.status_code == 404
    assert await pool.fetchval("SELECT stage FROM cases WHERE case_id = $1", case_id) == "awaiting_return_label"
    await customer.aclose()
    await seller.aclose()


async def test_wallet_page_shows_amounts_and_payouts_in_french(stack, pool):
    from activities.wallet import add_entry, ensure_wallet

    party = await make_party(pool)
    async with pool.acquire() as conn, conn.transaction():
        await ensure_wallet(conn, party["customer_id"])
        await add_entry(conn, customer_id=party["customer_id"], kind="credit", cents=39989, currency="EUR",
                        key=f"pages-{party['customer_id']}", reason="remboursement partiel")
    customer = await browser_like(stack, party["customer_token"])
    assert "Disponible 399,89 €" in text(await customer.get("/wallet"))
    form = await customer.get("/wallet")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form.text).group(1)
    data = {"csrf": customer.csrf, "idempotency_key": key, "amount": "100,50", "account_holder": "Test Customer",
            "iban": "FR1420041010050500013M02606"}
    assert (await customer.post("/wallet/payouts", data=data)).status_code == 303
    assert (await customer.post("/wallet/payouts", data=data)).status_code == 303  # the same form twice: one payout
    page = text(await customer.get("/wallet"))
    assert "Disponible 299,39 €" in page and "100,50 €" in page
    assert "2606" in page and "FR1420041010050500013M02606" not in page  # the IBAN masked, as in the API
    assert await pool.fetchval("SELECT count(*) FROM payouts WHERE customer_id = $1", party["customer_id"]) == 1
    await customer.aclose()


# ----------------------------------------------------------------------------- photos
async def test_photos_are_served_to_the_cases_parties_with_their_type_and_nosniff(stack, pool, agent_token):
    a, b = await make_party(pool), await make_party(pool)
    customer = await browser_like(stack, a["customer_token"])
    order_id = await make_order(pool, a, "delivered", delivered_at=datetime.now(timezone.utc))
    r = await customer.post(f"/orders/{order_id}/help", data={
        "kind": "defect", "category": "screen", "description": "The screen flickers and goes black.",
        "csrf": customer.csrf})
    case_id = r.headers["location"].rsplit("/", 1)[-1]
    await wait_stage(pool, case_id, "awaiting_photos")
    photo = png()
    r = await customer.post(f"/cases/{case_id}/photos", data={"csrf": customer.csrf},
                            files={"file": ("écran.png", photo, "application/octet-stream")})
    assert r.status_code == 303, text(r)
    await wait_stage(pool, case_id, "awaiting_seller_decision")
    attachment_id = await pool.fetchval("SELECT attachment_id FROM attachments WHERE case_id = $1", case_id)
    page = (await customer.get(f"/cases/{case_id}")).text
    assert f"/v1/attachments/{attachment_id}?thumbnail=true" in page

    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as api:
        for token in (a["customer_token"], a["seller_token"], agent_token):
            r = await api.get(f"/v1/attachments/{attachment_id}", headers=bearer(token))
            assert r.status_code == 200 and r.content == photo
            assert r.headers["content-type"] == "image/png"  # as stored (sniffed at upload), not as uploaded
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-disposition"].startswith("inline;") and "cran.png" in r.headers["content-disposition"]
        for token in (b["customer_token"], b["seller_token"]):
            assert (await api.get(f"/v1/attachments/{attachment_id}", headers=bearer(token))).status_code == 403
        assert (await api.get(f"/v1/attachments/{attachment_id}")).status_code == 401
        assert (await api.get("/v1/attachments/att_nope", headers=bearer(agent_token))).status_code == 404
        r = await api.get(f"/v1/attachments/{attachment_id}?thumbnail=true", headers=bearer(a["seller_token"]))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(r.content))
        assert thumb.format == "JPEG" and max(thumb.size) == 320 and len(r.content) < len(photo)
    # The page's session cookie opens the photo too (the <img> of the page), and only for its parties.
    assert (await customer.get(f"/v1/attachments/{attachment_id}?thumbnail=true")).status_code == 200
    other = await browser_like(stack, b["customer_token"])
    assert (await other.get(f"/v1/attachments/{attachment_id}")).status_code == 403
    await customer.aclose()
    await other.aclose()


async def test_inbox_lists_open_cases_by_deadline_overdue_first(stack, pool):
    party = await make_party(pool)
    customer = await browser_like(stack, party["customer_token"])
    seller = await browser_like(stack, party["seller_token"])
    later, overdue, sooner = [await open_withdrawal(customer, pool, party) for _ in range(3)]
    shipped = await make_order(pool, party, "shipped")
    r = await customer.post(f"/orders/{shipped}/help", data={"kind": "cancellation", "csrf": customer.csrf})
    closed = r.headers["location"].rsplit("/", 1)[-1]
    await wait_stage(pool, closed, "closed")
    # Why it closed, in the reader's language (a keyed reason: reason.order_already).
    page = (await customer.get(f"/cases/{closed}")).text
    assert '<p class="why" id="closed-why">La commande est déjà expédiée : elle ne peut plus être annulée.' in page
    await customer.post("/locale", data={"locale": "en", "back": "/cases", "csrf": customer.csrf})
    page = (await customer.get(f"/cases/{closed}")).text
    assert '<p class="why" id="closed-why">The order is already shipped: it can no longer be cancelled.' in page
    now = datetime.now(timezone.utc)
    # The cases wait for the label: nothing rewrites their read model meanwhile, so their deadlines can be set.
    for case_id, deadline in ((later, now + timedelta(days=2)), (overdue, now - timedelta(hours=1)),
                              (sooner, now + timedelta(days=1))):
        await pool.execute("UPDATE cases SET state = jsonb_set(state, '{deadline}', to_jsonb($2::text)) "
                           "WHERE case_id = $1", case_id, deadline.isoformat())
    page = (await seller.get("/inbox")).text
    assert re.findall(r'data-case="([^"]+)"', page) == [overdue, sooner, later]  # the closed case is not there
    overdue_row = re.search(rf'<tr class="([^"]*)" data-case="{overdue}"', page)
    assert overdue_row.group(1) == "overdue" and page.count('<tr class="overdue"') == 1
    await customer.aclose()
    await seller.aclose()
