"""What the API needs from the process it runs in: a narrow state, built by the runtime.

The API never sees the runtime (the worker, the reaper, the event bridge): importing it loads no worker,
no predictor implementation and no torch. ``fluxserve.runtime`` builds an :class:`ApiState` and hands
``create_app`` a way to open one for the app's lifespan.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from fluxserve.catalog.registry import Registry
from fluxserve.config import Settings
from fluxserve.metrics.prometheus import Metrics
from fluxserve.service.files import FileService
from fluxserve.service.predictions import PredictionService
from fluxserve.storage import BlobStore
from fluxserve.store.store import Store


@dataclass(frozen=True)
class LocalWorker:
    """The worker running inside this process, as readiness sees it."""

    id: str
    busy: int
    alive: bool
    #: {model: {"state": …, "error": …}} (see :mod:`fluxserve.modelstate`).
    model_states: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ApiState:
    """Everything a request handler may use."""

    settings: Settings
    service: PredictionService
    files: FileService
    registry: Registry
    store: Store
    blobs: BlobStore
    metrics: Metrics
    #: The in-process worker now (None: this process runs none).
    local_worker: Callable[[], LocalWorker | None]


#: Opens the state for the app's lifespan (and closes everything behind it at the end).
StateOpener = Callable[[Settings], AbstractAsyncContextManager[ApiState]]
