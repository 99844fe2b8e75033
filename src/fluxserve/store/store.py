"""The store: every query the service and the worker run, each one statement or one short transaction.

Queries are plain functions of a :class:`~sqlalchemy.Connection`; :class:`~fluxserve.store.db.Database`
decides how they run on each dialect. Hot statements are built once with bind parameters, so a
request pays neither statement construction nor cache-key generation. :class:`Store` is a thin facade
over one part per concern: keys, predictions (API side), the queue (worker side), the webhook outbox, files,
and the worker registry.
"""

from __future__ import annotations

from sqlalchemy import select

from fluxserve.store.base import TerminalHook
from fluxserve.store.db import Database
from fluxserve.store.deployments import DeploymentsMixin
from fluxserve.store.files import FilesMixin
from fluxserve.store.keys import KeysMixin
from fluxserve.store.outbox import OutboxMixin
from fluxserve.store.predictions import PredictionsMixin
from fluxserve.store.queue import QueueMixin
from fluxserve.store.workers import WorkerRegistry


class Store(KeysMixin, PredictionsMixin, QueueMixin, OutboxMixin, FilesMixin, DeploymentsMixin):
    """Async access to keys, predictions, the queue, webhooks, files, deployments and workers on SQLite or
    PostgreSQL (same SQL on both)."""

    def __init__(self, db: Database, *, on_terminal: TerminalHook | None = None) -> None:
        self.db = db
        #: Renders the terminal webhook of a prediction the store ends, written in the same transaction.
        self.on_terminal = on_terminal
        #: Worker records (liveness, model states, operator requests).
        self.workers = WorkerRegistry(db)

    @classmethod
    def connect(cls, url: str, *, sqlite_synchronous: str = "NORMAL", on_terminal: TerminalHook | None = None) -> Store:
        """A store on ``url`` (connections open lazily). ``on_terminal`` renders the terminal webhook of every
        prediction it ends (without it, none is queued: only for stores that end no prediction)."""
        return cls(Database(url, sqlite_synchronous=sqlite_synchronous), on_terminal=on_terminal)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    async def migrate(self) -> None:
        """Apply pending migrations."""
        await self.db.migrate()

    async def close(self) -> None:
        """Close every connection."""
        await self.db.close()

    async def ping(self) -> None:
        """Run a trivial query; raises if the database is unreachable."""
        await self.db.read(lambda conn: conn.execute(select(1)).scalar_one())
