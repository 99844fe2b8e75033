"""Database access for both dialects, behind one async interface.

Every query is written once, as a plain function of a SQLAlchemy :class:`Connection`. How it runs
depends on the dialect:

* **PostgreSQL**: on the async engine (asyncpg), through ``AsyncConnection.run_sync``.
* **SQLite**: inline on the event-loop thread, on one long-lived pysqlite connection. Our SQLite
  statements are single-row reads and writes on an indexed table in WAL mode that take tens of
  microseconds; aiosqlite would instead hand every cursor call to a thread and back (37 handoffs per
  create-and-wait, measured), which cost more than the statements themselves. The price: a write
  lock held by another process (``fluxserve keys create``) blocks the loop for that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates this database.
_PG_MIGRATION_LOCK = 0x666C7578

P = ParamSpec("P")
T = TypeVar("T")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several replicas may start at once; only one migrates, the others wait and find it done.
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Database:
    """Runs connection functions in a transaction (``write``) or without one (``read``)."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        json_kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
        self._sync: Engine | None = None
        self._sync_conn: Connection | None = None
        self._async: AsyncEngine | None = None
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # One connection, used only from the event-loop thread and never across an await.
            self._sync = create_sync_engine(
                parsed.set(drivername="sqlite"),
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                **json_kwargs,
            )

            @event.listens_for(self._sync, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()
        else:
            if parsed.drivername in ("postgresql", "postgres"):
                parsed = parsed.set(drivername="postgresql+asyncpg")
            # Short timeouts: while the database is down, requests get a fast 503 instead of hanging.
            self._async = create_async_engine(
                parsed,
                pool_size=10,
                max_overflow=20,
                pool_pre_ping=True,
                pool_timeout=5,
                connect_args={"timeout": 5, "command_timeout": 30},
                **json_kwargs,
            )

    def _sqlite(self) -> Connection:
        # One Connection kept open: connecting per statement costs more than the statement.
        assert self._sync is not None
        if self._sync_conn is None or self._sync_conn.closed or self._sync_conn.invalidated:
            self._sync_conn = self._sync.connect()
        return self._sync_conn

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` and end its (read-only) transaction."""
        if self._sync is not None:
            conn = self._sqlite()
            try:
                return fn(conn, *args)
            finally:
                conn.rollback()
        assert self._async is not None
        async with self._async.connect() as aconn:
            return await aconn.run_sync(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in one transaction, committed when it returns."""
        if self._sync is not None:
            conn = self._sqlite()
            with conn.begin():
                return fn(conn, *args)
        assert self._async is not None
        async with self._async.begin() as aconn:
            return await aconn.run_sync(fn, *args)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; serialised by an advisory lock on PG)."""
        await self.write(_upgrade)

    async def close(self) -> None:
        """Close every connection."""
        if self._sync_conn is not None:
            self._sync_conn.close()
            self._sync_conn = None
        if self._sync is not None:
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()
