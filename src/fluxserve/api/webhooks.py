"""``GET /webhooks/default/secret``: the key's Standard Webhooks signing secret."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from fluxserve.api.deps import CallDep
from fluxserve.api.problems import AUTH_ERRORS, problem_responses
from fluxserve.events.webhooks import new_secret

router = APIRouter(tags=["webhooks"])


class WebhookSecret(BaseModel):
    """The signing secret, ``whsec_<base64>``."""

    key: str


@router.get(
    "/webhooks/default/secret",
    response_model=WebhookSecret,
    responses=problem_responses(AUTH_ERRORS),
    summary="The webhook signing secret",
)
async def default_secret(c: CallDep) -> WebhookSecret:
    """Verify webhook requests with this secret (Standard Webhooks; ``replicate.webhooks.validate``)."""
    return WebhookSecret(key=await c.svc.webhook_secret(c.key, new_secret()))
