"""Deployments: named, owner-scoped model configurations. Each update is a new release."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from fluxserve.schema import utcnow
from fluxserve.store.base import StoreBase
from fluxserve.store.rows import DeploymentRow
from fluxserve.store.tables import deployments

_D = deployments.c


def _q_get(conn: Connection, owner: str, name: str) -> DeploymentRow | None:
    row = conn.execute(select(deployments).where(_D.owner == owner, _D.name == name)).mappings().first()
    return DeploymentRow.from_mapping(row) if row is not None else None


class DeploymentsMixin(StoreBase):
    """Deployment records."""

    async def create_deployment(self, row: DeploymentRow) -> bool:
        """Insert ``row``; False if the owner already has a deployment of that name."""
        values = {f: getattr(row, f) for f in row.__dataclass_fields__}

        def query(conn: Connection) -> bool:
            if _q_get(conn, row.owner, row.name) is not None:
                return False
            conn.execute(deployments.insert().values(**values))
            return True

        try:
            return await self.db.write(query)
        except IntegrityError:  # created by a concurrent request between the check and the insert
            return False

    async def get_deployment(self, owner: str, name: str) -> DeploymentRow | None:
        """The deployment ``owner/name``, or None."""
        return await self.db.read(_q_get, owner, name)

    async def list_deployments(self, owner: str) -> list[DeploymentRow]:
        """The owner's deployments, by name."""
        stmt = select(deployments).where(_D.owner == owner).order_by(_D.name)
        return await self.db.read(lambda conn: [DeploymentRow.from_mapping(r) for r in conn.execute(stmt).mappings()])

    async def update_deployment(self, owner: str, name: str, changes: dict[str, Any]) -> DeploymentRow | None:
        """Apply ``changes`` as the next release (release number + 1); the updated row, or None if absent."""

        def query(conn: Connection) -> DeploymentRow | None:
            current = _q_get(conn, owner, name)
            if current is None:
                return None
            new = replace(current, **changes, release_number=current.release_number + 1, release_created_at=utcnow())
            values = {f: getattr(new, f) for f in new.__dataclass_fields__ if f not in ("owner", "name")}
            conn.execute(update(deployments).where(_D.owner == owner, _D.name == name).values(**values))
            return new

        return await self.db.write(query)

    async def delete_deployment(self, owner: str, name: str) -> bool:
        """Delete it; False if there was none."""
        stmt = delete(deployments).where(_D.owner == owner, _D.name == name)
        return bool(await self.db.write(lambda conn: conn.execute(stmt).rowcount))
