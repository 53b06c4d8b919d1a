"""HTTP API of the after-sales cases: customers, sellers and care agents with bearer tokens;
the payment gateway with signed webhooks. Errors: 401 no/bad token, 403 not yours, 404 unknown,
409 wrong stage (with the stage), 422 invalid input (naming the field).

The app is assembled here (middleware, error mapping, routers); the routes live in starter/routes/,
one APIRouter per area, and what they depend on in starter/deps.py."""
import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from activities import db
from config import Settings, settings
from domain.policy import load_policy
from starter.codec_server import include_codec_server
from starter.erasure import include_erasure
from starter.routes import cases, health, pages, wallet, webhooks
from starter.service import CaseService, ServiceError

log = logging.getLogger("api")

# Every area of the API; the codec server's router (issue 16) joins this list.
ROUTERS = [health.router, cases.router, wallet.router, webhooks.router, pages.router]

JSON_BODY_LIMIT = 64 * 1024  # every JSON body of the API (webhooks included) is a few KiB
MULTIPART_FRAMING = 1024 * 1024  # room for the multipart boundaries and headers around one photo


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")


class BodySizeLimit:
    """Refuses a request body over its limit with 413: on the declared Content-Length before reading anything,
    and on the bytes actually received (a chunked body declares none). JSON bodies are small; a multipart
    upload may carry one photo of the policy's maximum size."""

    def __init__(self, app, *, json_limit: int, multipart_limit: int):
        self.app, self.json_limit, self.multipart_limit = app, json_limit, multipart_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.multipart_limit if multipart else self.json_limit
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(limit, scope, receive, send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # FastAPI lets an HTTPException met while reading the body through
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:  # raised where no exception handler was around (e.g. an endpoint's own read)
            if started:
                raise
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope, receive, send):
        await JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)(scope, receive, send)


async def invalid_input(_: Request, e: RequestValidationError):
    # FastAPI's own 422, ASCII-escaped: an echoed input holding an unpaired surrogate is not UTF-8 encodable.
    return Response(json.dumps({"detail": jsonable_encoder(e.errors())}, ensure_ascii=True, separators=(",", ":")),
                    status_code=422, media_type="application/json")


async def service_error(request: Request, e: ServiceError):
    if hasattr(request.state, "page"):  # met by a page: the same message, on a page
        return await pages.page_refused(request, e)
    return JSONResponse({"error": e.message, **e.extra}, status_code=e.status)


async def http_error(request: Request, e: StarletteHTTPException):
    if hasattr(request.state, "page"):
        return await pages.page_refused(request, e)
    return await http_exception_handler(request, e)


async def temporal_error(_: Request, e: RPCError):
    if e.status == RPCStatusCode.NOT_FOUND:
        return JSONResponse({"error": "case workflow not found"}, status_code=404)
    log.exception("Temporal unavailable")
    return JSONResponse({"error": "case engine unavailable, try again"}, status_code=503)


def create_app(s: Settings | None = None, temporal_client=None) -> FastAPI:
    s = s or settings()
    policy = load_policy()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from worker import connect

        app.state.pool = await db.get_pool()
        app.state.temporal = temporal_client or await connect(s)
        app.state.service = CaseService(app.state.pool, app.state.temporal, s.task_queue, policy)
        yield

    app = FastAPI(title="After-sales cases", version="0.1.0", lifespan=lifespan)
    app.state.settings = s
    app.add_middleware(BodySizeLimit, json_limit=JSON_BODY_LIMIT,
                       multipart_limit=policy.attachment_max_bytes + MULTIPART_FRAMING)
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(pages.PageRefused, pages.page_refused)
    app.add_exception_handler(RPCError, temporal_error)
    include_codec_server(app, s)
    include_erasure(app, s.attachments_dir)
    for router in ROUTERS:
        app.include_router(router)
    return app


app = create_app()
