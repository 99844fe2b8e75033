"""Key administration over the API (admin keys; fluxserve extension). ``fluxserve keys revoke`` does the same."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from fluxserve.api.deps import CallDep
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.api.render import json_response
from fluxserve.errors import Forbidden, NotFound
from fluxserve.schema import Timestamp

router = APIRouter(tags=["admin"])


class RevokedKey(BaseModel):
    """A key that no longer authenticates."""

    id: str
    name: str
    revoked_at: Timestamp | None


class Revoked(BaseModel):
    """The keys a revoke request revoked."""

    revoked: list[RevokedKey]


@router.post(
    "/admin/keys/{key}/revoke",
    response_model=Revoked,
    responses=problem_responses({**AUTH_ERRORS, 403: "The key is not an admin key", 404: "No live key matches"}),
    summary="Revoke an API key (admin; fluxserve extension)",
)
async def revoke_key(key: str, c: CallDep) -> Response:
    """Revoke the live key with this id, or else every live key with this name. Every API replica refuses
    it within 5 seconds (the lifetime of their key caches); its predictions stay."""
    if not c.key.admin:
        raise Forbidden("Revoking keys needs an admin key (fluxserve keys create --admin).")
    rows = await c.svc.store.revoke_keys(key)
    if not rows:
        raise NotFound(f"No live key has the id or name {key!r}.")
    return json_response(Revoked(revoked=[RevokedKey(id=r.id, name=r.name, revoked_at=r.revoked_at) for r in rows]))
