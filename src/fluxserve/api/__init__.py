"""The HTTP API (FastAPI), mounted under both ``/v1`` and ``/replicate/v1``."""
