"""Uploaded files' records (their bytes live in blob storage)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, or_, select

from fluxserve.store.base import StoreBase
from fluxserve.store.rows import FileRow
from fluxserve.store.tables import files


class FilesMixin(StoreBase):
    """Uploaded files: records, pages, expiry."""

    async def insert_file(self, row: FileRow) -> None:
        """Record an uploaded file."""
        values = {k: getattr(row, k) for k in FileRow.__dataclass_fields__}
        await self.db.write(lambda conn: conn.execute(files.insert(), values))

    async def get_file(self, file_id: str, key_id: str | None, *, now: datetime) -> FileRow | None:
        """The key's (with None: anyone's, for signed URLs) unexpired file ``file_id``, or None."""
        stmt = select(files).where(files.c.id == file_id, files.c.expires_at > now)
        if key_id is not None:
            stmt = stmt.where(files.c.key_id == key_id)

        def query(conn: Connection) -> FileRow | None:
            row = conn.execute(stmt).mappings().first()
            return FileRow(**row) if row else None

        return await self.db.read(query)

    async def list_files(
        self, key_id: str, *, now: datetime, limit: int, before: tuple[datetime, str] | None
    ) -> list[FileRow]:
        """The key's unexpired files, newest first (keyset pagination like predictions)."""
        stmt = select(files).where(files.c.key_id == key_id, files.c.expires_at > now)
        if before is not None:
            ts, fid = before
            stmt = stmt.where(or_(files.c.created_at < ts, and_(files.c.created_at == ts, files.c.id < fid)))
        stmt = stmt.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit)
        return await self.db.read(lambda conn: [FileRow(**r) for r in conn.execute(stmt).mappings().all()])

    async def delete_file(self, file_id: str, key_id: str) -> bool:
        """Delete the key's file record; False if there was none."""
        stmt = files.delete().where(files.c.id == file_id, files.c.key_id == key_id)
        return await self.db.write(lambda conn: bool(conn.execute(stmt).rowcount))

    async def expired_files(self, now: datetime, limit: int) -> list[FileRow]:
        """Uploaded files past their expiry."""
        stmt = select(files).where(files.c.expires_at <= now).order_by(files.c.expires_at).limit(limit)
        return await self.db.read(lambda conn: [FileRow(**r) for r in conn.execute(stmt).mappings().all()])

    async def forget_file(self, file_id: str) -> None:
        """Delete a file record (its blob is deleted by the caller)."""
        await self.db.write(lambda conn: conn.execute(files.delete().where(files.c.id == file_id)))
