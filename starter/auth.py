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


async def authenticate(pool: asyncpg.Pool, token: str | None) -> Actor:
    """The actor of a token; HTTP 401 when it is missing, bad or expired."""
    from fastapi import HTTPException

    if not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    found = await actor_for_token(pool, token) if len(token) <= 500 and "\x00" not in token else None
    if found is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    return found


async def actor_for_token(pool: asyncpg.Pool, token: str) -> Actor | None:
    """The actor of a valid, unexpired token; None otherwise."""
    row = await pool.fetchrow(
        """SELECT role, subject_id FROM api_tokens
           WHERE token_sha256 = $1 AND (expires_at IS NULL OR expires_at > now())""",
        hash_token(token))
    return Actor(role=row["role"], id=row["subject_id"]) if row else None
