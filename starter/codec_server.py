"""The codec server of the Temporal UI and CLI, served by the API under /codec.

Temporal's remote codec protocol: `POST /codec/decode` and `POST /codec/encode` take and return
`{"payloads": [{"metadata": {name: base64}, "data": base64}, ...]}` (the proto JSON form), with the
namespace in `X-Namespace`. Only a care agent gets an answer: a bearer token (`Authorization`, e.g. the
CLI's `--codec-auth` or the UI's TEMPORAL_CODEC_PASS_ACCESS_TOKEN behind UI auth) or the session cookie
set by `POST /codec/session` (the dev UI has no auth of its own: see README "Personal data").
401 missing or bad token, 403 not an agent or another namespace, 422 not payloads of ours.

CORS: the UI calls this from the browser, so the UI's origins (CODEC_CORS_ORIGINS) may, with
credentials; CORS is applied to /codec only.
"""
from __future__ import annotations

import html
from functools import cached_property
from typing import Annotated

from fastapi import APIRouter, Cookie, FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from google.protobuf import json_format
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware

from codec import CodecError, EncryptionCodec, keyring
from config import Settings
from domain.models import Actor, Role
from starter.auth import authenticate, bearer_token
from starter.service import Invalid
from temporalio.api.common.v1 import Payload

router = APIRouter(prefix="/codec", tags=["codec server (Temporal UI and CLI)"])
COOKIE = "codec_session"
SESSION_HOURS = 8


class CodecPayload(BaseModel):
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)
    data: str = ""


class Payloads(BaseModel):
    payloads: list[CodecPayload] = Field(max_length=1000)


class CodecServer:
    """What the routes need, from the settings given to create_app (keys read on first use)."""

    def __init__(self, s: Settings):
        self.settings = s

    @cached_property
    def codec(self) -> EncryptionCodec:
        return EncryptionCodec(keyring(self.settings.codec_keys))


def include_codec_server(app: FastAPI, s: Settings) -> None:
    """The one call create_app makes: the routes, and CORS for the UI's origins on /codec only."""
    app.state.codec_server = CodecServer(s)
    app.include_router(router)
    origins = [o.strip() for o in s.codec_cors_origins.split(",") if o.strip()]
    app.add_middleware(CodecCors, origins=origins)


class CodecCors:
    """Starlette's CORSMiddleware, for the codec paths only (the /v1 API is not for browsers)."""

    def __init__(self, app, origins: list[str]):
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=origins, allow_methods=["POST"], allow_credentials=True,
                                   allow_headers=["Authorization", "Content-Type", "X-Namespace"], max_age=600)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            return await self.cors(scope, receive, send)
        return await self.app(scope, receive, send)


async def _agent(request: Request, authorization: str | None, session: str | None,
                 x_namespace: str | None) -> Actor:
    who = await authenticate(request.app.state.pool, bearer_token(authorization) or session)
    if who.role != Role.agent:
        raise HTTPException(403, "only care agents read personal data")
    namespace = request.app.state.codec_server.settings.temporal_namespace
    if x_namespace not in (None, "", namespace):
        raise HTTPException(403, f"this codec server holds the keys of namespace {namespace!r} only")
    return who


def _payloads(body: Payloads) -> list[Payload]:
    out = []
    for i, p in enumerate(body.payloads):
        try:
            out.append(json_format.ParseDict(p.model_dump(), Payload()))
        except json_format.ParseError as e:
            raise Invalid(f"payload {i} is not base64: {e}", field=f"payloads.{i}")
    return out


def _answer(payloads: list[Payload]) -> dict:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


Auth = Annotated[str | None, Header()]
Session = Annotated[str | None, Cookie(alias=COOKIE)]
Namespace = Annotated[str | None, Header(alias="X-Namespace", max_length=200)]


@router.post("/decode")
async def decode(body: Payloads, request: Request, authorization: Auth = None, session: Session = None,
                 x_namespace: Namespace = None):
    await _agent(request, authorization, session, x_namespace)
    codec = request.app.state.codec_server.codec
    try:
        return _answer([codec.decode_one(p) for p in _payloads(body)])
    except CodecError as e:
        raise Invalid(f"cannot decode: {e}", field="payloads")


@router.post("/encode")
async def encode(body: Payloads, request: Request, authorization: Auth = None, session: Session = None,
                 x_namespace: Namespace = None):
    await _agent(request, authorization, session, x_namespace)
    codec = request.app.state.codec_server.codec
    return _answer([codec.encode_one(p) for p in _payloads(body)])


# ----------------------------------------------------------------------------- session for the UI
PAGE = """<!doctype html><meta charset="utf-8"><title>Codec session</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Temporal UI: decode personal data</h1><p>{message}</p>
<form method="post" action="/codec/session"><label>Care agent token
<input type="password" name="token" autocomplete="off" required></label>
<input type="hidden" name="next" value="{next}"> <button>Sign in</button></form>
<form method="post" action="/codec/logout"><button>Sign out</button></form></body>"""


@router.get("/session", response_class=HTMLResponse)
async def session_page(next: str = ""):
    return PAGE.format(message="Sign in with your care agent token: the Temporal UI's codec requests then "
                       "carry this session (cookie, 8 hours).", next=html.escape(next, quote=True))


@router.post("/session")
async def open_session(request: Request, token: Annotated[str, Form(max_length=500)],
                       next: Annotated[str, Form(max_length=500)] = ""):
    """A session cookie for the Temporal UI's codec requests (same host as the UI: SameSite=Strict)."""
    who = await _agent(request, f"Bearer {token}", None, None)
    # Back to the UI only (an open redirect otherwise).
    origins = [o.strip() for o in request.app.state.codec_server.settings.codec_cors_origins.split(",")]
    target = next if any(next == o or next.startswith(o + "/") for o in origins if o) else None
    response = (RedirectResponse(target, status_code=303) if target else
                HTMLResponse(PAGE.format(message=f"Signed in as care agent {html.escape(who.id)}.", next="")))
    response.set_cookie(COOKIE, token, max_age=SESSION_HOURS * 3600, path="/codec", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout", response_class=HTMLResponse)
async def close_session():
    response = HTMLResponse(PAGE.format(message="Signed out.", next=""))
    response.delete_cookie(COOKIE, path="/codec")
    return response
