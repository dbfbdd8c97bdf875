"""API keys: each key is an owner; only its sha256 is stored (a key is 256 random bits, so a fast hash is as safe
as a slow one and keeps every request cheap), and the key itself is shown once, when it is created."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa

from tunesmith.core.errors import TunesmithError
from tunesmith.jobs.db import new_id, now
from tunesmith.jobs.tables import keys

PREFIX = "ts-"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Any, name: str) -> str:
    """A new key named ``name``; the key is returned once and only its hash is kept."""
    if not name or len(name) > 200:
        raise TunesmithError("a key needs a name of 1 to 200 characters")
    key = PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as connection:
        if connection.execute(sa.select(keys.c.id).where(keys.c.name == name)).first():
            raise TunesmithError(f"a key named {name!r} exists already.\n  fix: pick another name, or revoke it first")
        connection.execute(keys.insert().values(id=new_id("key"), name=name, hash=digest(key), created_at=now()))
    return key


def owner_of(engine: Any, key: str) -> str | None:
    """The owner id of a valid (not revoked) key, else None."""
    query = sa.select(keys.c.id).where(keys.c.hash == digest(key), keys.c.revoked_at.is_(None))
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def list_keys(engine: Any) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(keys).order_by(keys.c.created_at)).mappings()]


def revoke_key(engine: Any, name: str) -> None:
    update = keys.update().where(keys.c.name == name, keys.c.revoked_at.is_(None)).values(revoked_at=now())
    with engine.begin() as connection:
        if connection.execute(update).rowcount != 1:
            raise TunesmithError(f"no active key is named {name!r}; `tunesmith keys list` shows them")
