"""What the routes depend on, in one place: the settings, the database pool, the case service and the
caller (a bearer token, or the pages' session cookie holding the same token)."""
from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Header, HTTPException, Path as PathParam, Request

from config import Settings
from domain.models import Actor, Role
from starter.auth import actor_for_token, authenticate, bearer_token
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


Cfg = Annotated[Settings, Depends(get_settings)]
Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Svc = Annotated[CaseService, Depends(get_service)]
Who = Annotated[Actor, Depends(get_actor)]
WhoOrSession = Annotated[Actor, Depends(get_actor_or_session)]

# Ids in paths: no control characters (PostgreSQL refuses NUL), so a hostile id is a 422, not a 500.
Id = Annotated[str, PathParam(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


def require(who: Actor, role: Role, what: str) -> None:
    if who.role != role:
        raise HTTPException(403, f"only the {role.value} {what}")
