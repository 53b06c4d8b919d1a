"""Bearer tokens of customers, sellers and care agents, stored hashed in PostgreSQL."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import asyncpg

from domain.models import Actor, Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(conn, role: Role | str, subject_id: str, token: str | None = None,
                       expires_at: datetime | None = None) -> str:
    token = token or secrets.token_urlsafe(24)
    await conn.execute(
        """INSERT INTO api_tokens (token_sha256, role, subject_id, expires_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (token_sha256) DO NOTHING""",
        hash_token(token), Role(role).value, subject_id, expires_at)
    return token


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def _unauthorized(detail: str):
    from fastapi import HTTPException

    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _plausible(token: str | None) -> str:
    """The token, if it may be one (else 401 without a look-up: PostgreSQL refuses NUL)."""
    if not token:
        raise _unauthorized("missing bearer token")
    if len(token) > 500 or "\x00" in token:
        raise _unauthorized("invalid or expired token")
    return token


async def authenticate(pool: asyncpg.Pool, token: str | None) -> Actor:
    """The actor of a token; HTTP 401 when it is missing, bad or expired."""
    found = await actor_for_token(pool, _plausible(token))
    if found is None:
        raise _unauthorized("invalid or expired token")
    return found


# What makes a token valid, in one place for both look-ups below (token: $1, api_tokens as t).
_VALID_TOKEN = "t.token_sha256 = $1 AND (t.expires_at IS NULL OR t.expires_at > now())"


async def authenticate_on_case(pool: asyncpg.Pool, token: str | None,
                               case_id: str) -> tuple[Actor, asyncpg.Record | None]:
    """authenticate, and in the same statement the case an action names: a row with its customer_id,
    seller_id and stage, None when there is no such case (an action's first checks: one round trip
    instead of two)."""
    row = await pool.fetchrow(
        f"""SELECT t.role, t.subject_id, c.case_id IS NOT NULL AS case_found, c.customer_id, c.seller_id, c.stage
            FROM api_tokens t LEFT JOIN cases c ON c.case_id = $2 WHERE {_VALID_TOKEN}""",
        hash_token(_plausible(token)), case_id)
    if row is None:
        raise _unauthorized("invalid or expired token")
    return Actor(role=row["role"], id=row["subject_id"]), row if row["case_found"] else None


async def actor_for_token(pool: asyncpg.Pool, token: str) -> Actor | None:
    """The actor of a valid, unexpired token; None otherwise."""
    row = await pool.fetchrow(f"SELECT t.role, t.subject_id FROM api_tokens t WHERE {_VALID_TOKEN}", hash_token(token))
    return Actor(role=row["role"], id=row["subject_id"]) if row else None
