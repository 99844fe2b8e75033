"""fluxserve's ASGI app as an import string, ``harness.asgi_entry:app``, for any ASGI server.

``app`` is built as ``fluxserve serve`` builds it: ``create_app(Settings(), open_api_state)``, so the lifespan opens
the store and, unless ``FLUXSERVE_WORKER=false``, runs the in-process worker. Everything comes from the
``FLUXSERVE_*`` environment (data dir, ``FLUXSERVE_EXTRA_MODELS``, ``FLUXSERVE_PRELOAD``, ...), read once at import.
The server process must have ``benchmarks/`` on ``sys.path`` (``PYTHONPATH``) to import it. Unlike the rest of the
harness, this module imports fluxserve, at import time; it loads no torch (see ``tests/api/test_layering.py``).
"""

from __future__ import annotations

from fluxserve.api.app import create_app
from fluxserve.config import Settings
from fluxserve.runtime import open_api_state

settings = Settings()
app = create_app(settings, open_api_state)
