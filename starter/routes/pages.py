"""Server-rendered pages for customers, sellers and care (Jinja2 templates in starter/templates/), on the
same service layer and action table as the JSON API, in French or English.

Sign-in takes the API's bearer tokens and keeps the token in an HttpOnly, SameSite=Lax cookie (Secure
over https). Every form carries a CSRF token, the double-submit kind: a random value in its own cookie
that the form must repeat; a POST without it is refused (403) before anything is done. The case page
polls a fragment (static/live.js, no build, no CDN) so a stage change shows without reloading.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import ValidationError

from domain.models import Actor, CaseKind, ClaimDecision, CancellationDecision, CareResolution, DefectCategory, Role
from starter import i18n
from starter.actions import ACTIONS, offered, perform
from starter.auth import actor_for_token
from starter.deps import SESSION_COOKIE, Cfg, Id, Pool, Svc, session_actor
from starter.schemas import HelpRequest, PayoutBody
from starter.service import PHOTO_STAGES, ServiceError, add_attachment
from starter.wallet import request_payout, wallet_view
from workflows.case.stages import STAGES

router = APIRouter(include_in_schema=False)  # pages are not part of the JSON API's schema

HERE = Path(__file__).resolve().parent.parent
STATIC = {"pages.css": "text/css", "live.js": "text/javascript"}
CSRF_COOKIE, CSRF_FIELD = "csrf", "csrf"
SESSION_HOURS = 12
HOME = {Role.customer: "/cases", Role.seller: "/inbox", Role.agent: "/queue"}
# Security headers of every page: nothing from elsewhere, no inline script, never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class Page:
    """One page request: who asks, in which language, with which CSRF token."""
    request: Request
    who: Actor | None
    locale: str
    csrf: str
    new_csrf: bool = False

    def t(self, key: str, **params) -> str:
        return i18n.translate(key, self.locale, **params)

    def t_or(self, key: str, fallback: str) -> str:
        """A label that may be newer than the catalog (a timeline event added later): its name meanwhile."""
        return self.t(key) if i18n.has(key, self.locale) else fallback

    def render(self, template: str, status: int = 200, **context) -> HTMLResponse:
        html = templates.get_template(template).render(
            p=self, who=self.who, t=self.t, t_or=self.t_or, csrf=self.csrf, locale=self.locale,
            money=lambda cents, currency="EUR": i18n.money(cents, currency, self.locale),
            when=lambda moment: i18n.when(moment, self.locale), day=lambda moment: i18n.day(moment, self.locale),
            said=lambda event: said(self, event),
            **context)
        return self.finish(HTMLResponse(html, status_code=status))

    def error(self, status: int, message: str) -> HTMLResponse:
        return self.render("error.html", status=status, status_code=status, message=message)

    def finish(self, response: Response) -> Response:
        response.headers.update(PAGE_HEADERS)
        if self.new_csrf:
            response.set_cookie(CSRF_COOKIE, self.csrf, httponly=True, samesite="strict", path="/",
                                secure=self.request.url.scheme == "https")
        return response

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    async def form(self) -> dict:
        """The posted form's fields, once its CSRF token matched the cookie's; 403 otherwise."""
        form = await self.request.form()
        sent, expected = form.get(CSRF_FIELD), self.request.cookies.get(CSRF_COOKIE)
        # Compared as bytes: compare_digest refuses non-ASCII text (a hostile token must be a 403, not a 500).
        if not (isinstance(sent, str) and expected and hmac.compare_digest(sent.encode(), expected.encode())):
            raise PageRefused(403, self.t("error.csrf"))
        return {k: v for k, v in form.items() if k != CSRF_FIELD}


class PageRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


PARTY_TABLES = {Role.customer: ("customers", "customer_id"), Role.seller: ("sellers", "seller_id")}


async def locale_of(pool, who: Actor | None, request: Request) -> str:
    """The customer's or seller's stored language; care (and a visitor) keep theirs in a cookie."""
    if who is not None and who.role in PARTY_TABLES:
        table, column = PARTY_TABLES[who.role]
        return i18n.locale_or_default(await pool.fetchval(f"SELECT locale FROM {table} WHERE {column} = $1", who.id))
    return i18n.locale_or_default(request.cookies.get("lang"))


async def _page(request: Request, who: Actor | None) -> Page:
    csrf = request.cookies.get(CSRF_COOKIE)
    page = Page(request, who, await locale_of(request.app.state.pool, who, request),
                csrf or secrets.token_urlsafe(24), new_csrf=not csrf)
    request.state.page = page  # refusals raised further down render as pages (see page_refused)
    return page


async def visitor_page(request: Request) -> Page:
    return await _page(request, await session_actor(request))


async def signed_in_page(request: Request) -> Page:
    who = await session_actor(request)
    if who is None:
        raise HTTPException(303, "sign in first", headers={"Location": "/sign-in"})
    return await _page(request, who)


Visitor = Annotated[Page, Depends(visitor_page)]
P = Annotated[Page, Depends(signed_in_page)]


async def page_refused(request: Request, e: Exception):
    """A refusal (ServiceError, HTTPException, PageRefused) met by a page: the message, on a page."""
    page: Page = request.state.page
    status = getattr(e, "status", None) or getattr(e, "status_code", 400)
    message = getattr(e, "message", None) or getattr(e, "detail", None) or str(e)
    return page.error(status, str(message))


# Timeline details people wrote (the rest is the workflow's own wording, shown by the event's label).
WRITTEN_BY_PEOPLE = {"care_decided": "reason", "deadline_extended": "reason", "seller_decided": "reason",
                     "offer_answered": "note", "stopped": "reason"}
ESCALATIONS = {rule.escalation: stage.value for stage, rule in STAGES.items() if rule.escalation}


def said(p: "Page", event: dict) -> str:
    """What a timeline line adds to its label: people's words, or a known escalation reason, translated."""
    detail = event["detail"]
    if event["event"] == "escalated" and detail.get("reason") in ESCALATIONS:
        return p.t(f"escalation.{ESCALATIONS[detail['reason']]}")
    field_name = WRITTEN_BY_PEOPLE.get(event["event"])
    return str(detail.get(field_name) or "") if field_name else ""


def validation_message(e: ValidationError) -> str:
    """The API's 422 in one line: each field with what is wrong with it."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())


def role_only(p: Page, *roles: Role) -> None:
    if p.who.role not in roles:
        raise PageRefused(403, p.t("error.not_for_role"))


# ---------------------------------------------------------------------------- sign-in, language, static
@router.get("/")
async def home(p: Visitor):
    return p.redirect(HOME[p.who.role] if p.who else "/sign-in")


@router.get("/sign-in")
async def sign_in_page(p: Visitor):
    return p.render("sign_in.html")


@router.post("/sign-in")
async def sign_in(p: Visitor):
    form = await p.form()
    token = str(form.get("token", "")).strip()
    who = await actor_for_token(p.request.app.state.pool, token) if token else None
    if who is None:
        return p.render("sign_in.html", status=401, error=p.t("signin.invalid"))
    secure = p.request.url.scheme == "https"
    p.csrf, p.new_csrf = secrets.token_urlsafe(24), True  # a fresh CSRF token for the new session
    response = p.redirect(HOME[who.role])
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, httponly=True, samesite="lax",
                        secure=secure, path="/")
    return response


@router.post("/sign-out")
async def sign_out(p: P):
    await p.form()
    response = p.redirect("/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/locale")
async def set_locale(p: Visitor, pool: Pool):
    form = await p.form()
    locale = i18n.locale_or_default(str(form.get("locale")))
    back = str(form.get("back") or "/")
    back = back if back.startswith("/") and not back.startswith("//") else "/"  # never off-site
    response = p.redirect(back)
    if p.who is not None and p.who.role in PARTY_TABLES:
        table, column = PARTY_TABLES[p.who.role]
        await pool.execute(f"UPDATE {table} SET locale = $1 WHERE {column} = $2", locale, p.who.id)
    else:
        response.set_cookie("lang", locale, max_age=365 * 86400, samesite="lax", path="/")
    return response


@router.get("/static/{name}")
async def static(name: str):
    if name not in STATIC:
        raise HTTPException(404, "no such file")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"})


# ---------------------------------------------------------------------------- customers
@router.get("/orders/{order_id}/help")
async def help_page(order_id: Id, p: P, svc: Svc):
    return await _help(p, svc, order_id)


async def _help(p: Page, svc, order_id: str, status: int = 200, error: str | None = None):
    options = await svc.help_options(p.who, order_id)
    return p.render("help.html", status=status, error=error, categories=[c.value for c in DefectCategory],
                    **options)


@router.post("/orders/{order_id}/help")
async def open_help(order_id: Id, p: P, svc: Svc):
    form = await p.form()
    try:
        body = HelpRequest.model_validate({k: v for k, v in form.items() if v != ""})
        case, _ = await svc.open_case(p.who, order_id, body.kind, category=body.category,
                                      description=body.description)
    except ValidationError as e:
        return await _help(p, svc, order_id, status=422, error=validation_message(e))
    except ServiceError as e:
        return await _help(p, svc, order_id, status=e.status, error=e.message)
    return p.redirect(f"/cases/{case['case_id']}")


@router.get("/cases")
async def cases_page(p: P, svc: Svc):
    return p.render("cases.html", cases=await svc.list_cases(p.who))


async def _case_context(p: Page, svc, case_id: str) -> dict:
    case = await svc.get_case(p.who, case_id)
    kind = CaseKind(case["kind"])
    decisions = ([d.value for d in CancellationDecision] if kind == CaseKind.cancellation
                 else [ClaimDecision.exchange.value, ClaimDecision.repair.value] if kind == CaseKind.warranty
                 else [d.value for d in ClaimDecision])
    deadline = case.get("deadline")
    reason = case.get("escalation_reason")
    # The stage table's escalation texts are known: translated; anything else (care's lead...) as written.
    escalation = (p.t(f"escalation.{ESCALATIONS[reason]}") if reason in ESCALATIONS else reason) or ""
    # Why it closed: the keyed reason in the reader's locale; cases closed before keys: as written.
    closed_why = (i18n.render_text(case["closed_reason_key"], case.get("closed_reason_params"), p.locale)
                  if case.get("closed_reason_key") else case.get("closed_reason") or "")
    return {"case": case, "escalation": escalation, "closed_why": closed_why, "actions": offered(p.who.role, case["stage"]),
            "decisions": decisions, "resolutions": [r.value for r in CareResolution],
            "photos_open": (p.who.role == Role.customer and kind == CaseKind.defect
                            and case["stage"] in PHOTO_STAGES),
            "overdue": bool(deadline and datetime.fromisoformat(deadline) < datetime.now(timezone.utc))}


@router.get("/cases/{case_id}")
async def case_page(case_id: Id, p: P, svc: Svc):
    return await _case(p, svc, case_id)


async def _case(p: Page, svc, case_id: str, status: int = 200, error: str | None = None):
    return p.render("case.html", status=status, error=error, **await _case_context(p, svc, case_id))


@router.get("/cases/{case_id}/live")
async def case_live(case_id: Id, p: P, svc: Svc):
    """The part of the case page that changes with the case (polled by static/live.js)."""
    return p.render("_live.html", **await _case_context(p, svc, case_id))


def _cents(text):
    """Euros as typed ("20,50", "20.5") in cents; anything else as it came, for the body's validation
    to name the field."""
    try:
        value = Decimal(text.strip().replace(",", "."))
    except (AttributeError, InvalidOperation):
        return text
    return int(value * 100) if value.is_finite() and abs(value) < 10**9 else text


def _action_fields(name: str, form: dict) -> dict:
    fields = {k: v for k, v in form.items() if v != ""}
    if name == "decision" and "partial_amount" in fields:  # the page asks for euros, the API cents
        fields["partial_amount_cents"] = _cents(fields.pop("partial_amount"))
    return fields


@router.post("/cases/{case_id}/do/{name}")
async def case_action(case_id: Id, name: str, p: P, svc: Svc):
    form = await p.form()
    if name not in ACTIONS:
        raise PageRefused(404, p.t("error.no_such_action"))
    try:
        body = ACTIONS[name].body.model_validate(_action_fields(name, form))
        await perform(svc, p.who, case_id, name, body)
    except ValidationError as e:
        return await _case(p, svc, case_id, status=422, error=validation_message(e))
    except (ServiceError, HTTPException) as e:
        status = getattr(e, "status", None) or e.status_code
        message = getattr(e, "message", None) or e.detail
        if status == 202:  # taken, still being applied: the page follows it live
            return p.redirect(f"/cases/{case_id}")
        return await _case(p, svc, case_id, status=status, error=message)
    return p.redirect(f"/cases/{case_id}")


@router.post("/cases/{case_id}/photos")
async def add_photo(case_id: Id, p: P, svc: Svc, s: Cfg):
    form = await p.form()
    upload = form.get("file")
    try:
        if upload is None or isinstance(upload, str):
            raise PageRefused(422, p.t("error.no_file"))
        content = await upload.read(svc.policy.attachment_max_bytes + 1)
        await add_attachment(svc, p.who, case_id, upload.filename, content, s.attachments_dir)
    except ServiceError as e:
        return await _case(p, svc, case_id, status=e.status, error=e.message)
    return p.redirect(f"/cases/{case_id}")


@router.get("/wallet")
async def wallet_page(p: P, svc: Svc):
    return await _wallet(p, svc)


async def _wallet(p: Page, svc, status: int = 200, error: str | None = None):
    role_only(p, Role.customer)
    return p.render("wallet.html", status=status, error=error, wallet=await wallet_view(svc.pool, p.who.id),
                    idempotency_key=secrets.token_urlsafe(12))


@router.post("/wallet/payouts")
async def wallet_payout(p: P, svc: Svc, s: Cfg):
    role_only(p, Role.customer)
    form = await p.form()
    fields = {k: v for k, v in form.items() if v != "" and k != "idempotency_key"}
    try:
        if "amount" in fields:
            fields["amount_cents"] = _cents(fields.pop("amount"))
        body = PayoutBody.model_validate(fields)
        # The form's own key: submitting it twice asks for one payout.
        await request_payout(svc.pool, svc.temporal, s.task_queue, svc.policy, p.who,
                             idempotency_key=str(form.get("idempotency_key") or "") or None, **body.model_dump())
    except ValidationError as e:
        return await _wallet(p, svc, status=422, error=validation_message(e))
    except ServiceError as e:
        return await _wallet(p, svc, status=e.status, error=e.message)
    return p.redirect("/wallet")


# ---------------------------------------------------------------------------- sellers and care
def _by_deadline(cases: list[dict]) -> list[dict]:
    """Open cases, the nearest deadline first (so the overdue ones lead), those without one last."""
    now = datetime.now(timezone.utc)
    rows = []
    for c in cases:
        if c["stage"] == "closed":
            continue
        deadline = datetime.fromisoformat(c["deadline"]) if c.get("deadline") else None
        rows.append({**c, "overdue": bool(deadline and deadline < now), "_at": deadline})
    return sorted(rows, key=lambda c: (c["_at"] is None, c["_at"] or now))


@router.get("/inbox")
async def inbox_page(p: P, svc: Svc):
    role_only(p, Role.seller)
    return p.render("inbox.html", cases=_by_deadline(await svc.list_open_cases(p.who.id)))


@router.get("/queue")
async def queue_page(p: P, svc: Svc):
    role_only(p, Role.agent)
    return p.render("queue.html", cases=_by_deadline(await svc.list_escalations()),
                    recent=await svc.list_cases(p.who, limit=20))
