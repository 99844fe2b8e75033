"""API keys: created, looked up by token hash, listed; each key's webhook signing secret."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection, bindparam, func, select, update

from fluxserve.schema import utcnow
from fluxserve.store.base import StoreBase
from fluxserve.store.rows import KeyRow
from fluxserve.store.tables import api_keys

_KEY_BY_HASH = select(api_keys).where(api_keys.c.token_hash == bindparam("h"), api_keys.c.revoked_at.is_(None))


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token: what the database holds."""
    return hashlib.sha256(token.encode()).hexdigest()


class KeysMixin(StoreBase):
    """API keys and their webhook secrets."""

    async def create_key(self, name: str, *, admin: bool = False) -> tuple[KeyRow, str]:
        """Create a key (``admin``: it may also load and unload models); return its row and the token,
        which is shown once and never stored."""
        token = "fs_" + secrets.token_urlsafe(30)
        row = KeyRow(id=secrets.token_hex(8), name=name, token_hash=hash_token(token), created_at=utcnow(), admin=admin)
        values = {
            "id": row.id, "name": row.name, "token_hash": row.token_hash, "created_at": row.created_at, "admin": admin
        }  # fmt: skip
        await self.db.write(lambda conn: conn.execute(api_keys.insert(), values))
        return row, token

    async def key_by_id(self, key_id: str) -> KeyRow | None:
        """The live key ``key_id``, or None (revoked keys too)."""
        stmt = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))

        def query(conn: Connection) -> KeyRow | None:
            row = conn.execute(stmt).mappings().first()
            return KeyRow(**dict(row)) if row is not None else None

        return await self.db.read(query)

    async def key_by_token(self, token: str) -> KeyRow | None:
        """The live key whose token is ``token``, or None."""

        def query(conn: Connection) -> KeyRow | None:
            row = conn.execute(_KEY_BY_HASH, {"h": hash_token(token)}).mappings().first()
            return KeyRow(**row) if row else None

        return await self.db.read(query)

    async def list_keys(self) -> list[KeyRow]:
        """Every key, oldest first."""

        def query(conn: Connection) -> list[KeyRow]:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
            return [KeyRow(**r) for r in rows]

        return await self.db.read(query)

    async def revoke_keys(self, id_or_name: str) -> list[KeyRow]:
        """Revoke the live key with that id, or else every live key with that name; the keys revoked."""
        now = utcnow()
        live = api_keys.c.revoked_at.is_(None)

        def query(conn: Connection) -> list[KeyRow]:
            match = api_keys.c.id == id_or_name
            if conn.execute(select(api_keys.c.id).where(match, live)).first() is None:
                match = api_keys.c.name == id_or_name
            rows = conn.execute(update(api_keys).where(match, live).values(revoked_at=now).returning(api_keys))
            return [KeyRow(**r) for r in rows.mappings().all()]

        return await self.db.write(query)

    async def count_keys(self) -> int:
        """How many live keys exist."""
        stmt = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        return await self.db.read(lambda conn: int(conn.execute(stmt).scalar_one()))

    async def webhook_secret(self, key_id: str, candidate: str) -> str:
        """The key's webhook signing secret; ``candidate`` becomes it if the key has none yet."""

        def query(conn: Connection) -> str:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.webhook_secret.is_(None))
                .values(webhook_secret=candidate)
            )
            return str(conn.execute(select(api_keys.c.webhook_secret).where(api_keys.c.id == key_id)).scalar_one())

        return await self.db.write(query)
