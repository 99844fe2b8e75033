"""API keys: ``Authorization: Bearer <key>`` or ``Token <key>``."""

from __future__ import annotations

import time

from fastapi import Request

from fluxserve.errors import Unauthenticated
from fluxserve.store.rows import KeyRow
from fluxserve.store.store import Store

# Keys are cached briefly so a hot GET path does not hit the database twice; a revoked key stops
# working within this many seconds.
KEY_CACHE_SECONDS = 5.0
_NO_KEY = "You did not pass a valid authentication token"


class KeyCache:
    """A tiny TTL cache in front of :meth:`Store.key_by_token`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[str, tuple[float, KeyRow | None]] = {}

    async def lookup(self, token: str) -> KeyRow | None:
        """The key for ``token`` or None."""
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._store.key_by_token(token)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[token] = (now + KEY_CACHE_SECONDS, key)
        return key


def bearer_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer …`` / ``Token …``, or None."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        return None
    return token.strip()


async def current_key(request: Request) -> KeyRow:
    """FastAPI dependency: the key behind the request, or 401 with Replicate's problem body."""
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated(_NO_KEY)
    cache: KeyCache = request.app.state.key_cache
    key = await cache.lookup(token)
    if key is None:
        raise Unauthenticated(_NO_KEY)
    return key
