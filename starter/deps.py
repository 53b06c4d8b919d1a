"""What the routes depend on, in one place: the settings, the database pool, the case service and the
caller (a bearer token, or the pages' session cookie holding the same token)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, HTTPException, Path as PathParam, Request

from config import Settings
from domain.models import Actor, Role
from starter.auth import actor_for_token, authenticate, authenticate_on_case, bearer_token
from starter.service import CaseService


# The dependencies are `async def` though they do not wait: FastAPI runs a plain `def` dependency in its
# thread pool, a thread hop per request and dependency for reading an attribute.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def get_service(request: Request) -> CaseService:
    return request.app.state.service


async def get_actor(request: Request, authorization: Annotated[str | None, Header()] = None) -> Actor:
    return await authenticate(request.app.state.pool, bearer_token(authorization))


SESSION_COOKIE = "session"  # the pages' sign-in: the same bearer token, in an HttpOnly cookie


async def session_actor(request: Request) -> Actor | None:
    token = request.cookies.get(SESSION_COOKIE)
    return await actor_for_token(request.app.state.pool, token) if token else None


async def get_actor_or_session(request: Request, authorization: Annotated[str | None, Header()] = None) -> Actor:
    """A bearer token, or else the pages' session cookie (for what a page embeds: photos)."""
    if authorization is None and (found := await session_actor(request)) is not None:
        return found
    return await get_actor(request, authorization)


@dataclass(frozen=True)
class CaseCaller:
    """The caller of an action and the case it names, read together: `case` holds customer_id, seller_id
    and stage, None when there is no such case."""
    actor: Actor
    case: asyncpg.Record | None


async def get_case_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> CaseCaller:
    case_id = request.path_params.get("case_id", "")
    if not _ID_RE.fullmatch(case_id) or len(case_id) > ID_MAX_LENGTH:
        # The route's Id answers 422 after this; the token is still checked first, as for any route.
        return CaseCaller(await get_actor(request, authorization), None)
    actor, case = await authenticate_on_case(request.app.state.pool, bearer_token(authorization), case_id)
    return CaseCaller(actor, case)


Cfg = Annotated[Settings, Depends(get_settings)]
Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Svc = Annotated[CaseService, Depends(get_service)]
Who = Annotated[Actor, Depends(get_actor)]
WhoOrSession = Annotated[Actor, Depends(get_actor_or_session)]
WhoOnCase = Annotated[CaseCaller, Depends(get_case_caller)]

# Ids in paths: no control characters (PostgreSQL refuses NUL), so a hostile id is a 422, not a 500.
ID_PATTERN, ID_MAX_LENGTH = r"^[^\x00-\x1f\x7f]+$", 200
_ID_RE = re.compile(ID_PATTERN)
Id = Annotated[str, PathParam(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]


def require(who: Actor, role: Role, what: str) -> None:
    if who.role != role:
        raise HTTPException(403, f"only the {role.value} {what}")
