"""A small synchronous client for Replicate-format APIs (fluxserve, Replicate, CometAPI), used by the CLI."""

from fluxserve.client.client import DEFAULT_BASE_URL, Client, ClientError, StreamUnavailable, api_base
from fluxserve.client.sse import ServerSentEvent, iter_events

__all__ = [
    "DEFAULT_BASE_URL",
    "Client",
    "ClientError",
    "ServerSentEvent",
    "StreamUnavailable",
    "api_base",
    "iter_events",
]
