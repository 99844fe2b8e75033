"""Deployments: a named, owner-scoped configuration (model, version, hardware, instance bounds) that
predictions can be created through. The owner is the key's account (its name); each change is a release.

fluxserve's workers are scaled by the operator (KEDA on the queue, or by hand), so ``min_instances`` and
``max_instances`` are recorded and reported, not enforced here; ``hardware`` must be a kind the workers run on.
"""

from __future__ import annotations

import re
from typing import Any

from fluxserve.catalog.registry import ModelSpec
from fluxserve.errors import Conflict, InvalidField, InvalidRequest, NotFound, ServiceUnavailable
from fluxserve.refs import parse_model_ref
from fluxserve.schema import utcnow
from fluxserve.service.directory import hardware
from fluxserve.service.predictions import PredictionService
from fluxserve.store.rows import DeploymentRow, KeyRow

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_SKU = re.compile(r"^(cpu|gpu-[a-z0-9-]{1,60})$")
MAX_INSTANCES = 1000


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", invalid_fields=[InvalidField("invalid", field, message)])


class DeploymentService:
    """Create, read, update and delete the caller's deployments, and resolve one for a prediction."""

    def __init__(self, svc: PredictionService) -> None:
        self.svc = svc

    async def _check_hardware(self, sku: str) -> None:
        skus = [h["sku"] for h in await hardware(self.svc)]
        # With no live worker (scaled to zero) any well-formed sku is taken: the workers that come up decide.
        if (skus and sku not in skus) or (not skus and not _SKU.match(sku)):
            choices = ", ".join(skus) if skus else "cpu or gpu-<chip> (e.g. gpu-h100)"
            raise _invalid("hardware", f"{sku!r} is not hardware the workers run on; use one of: {choices}")

    def _model_version(self, model: str, version: str | None) -> tuple[ModelSpec, str]:
        parsed = parse_model_ref(model)
        spec = self.svc.registry.get(model) if parsed is not None and parsed.version is None else None
        if spec is None:
            known = ", ".join(s.ref for s in self.svc.registry)
            raise _invalid("model", f"{model!r} is not a model served here (owner/name of one of: {known})")
        if version is None:
            return spec, spec.version_id
        if version not in spec.version_ids:
            raise _invalid("version", f"{version!r} is not a version of {spec.ref} (current: {spec.version_id})")
        return spec, version

    @staticmethod
    def _check_instances(min_instances: int, max_instances: int) -> None:
        if not 0 <= min_instances <= MAX_INSTANCES:
            raise _invalid("min_instances", f"must be from 0 to {MAX_INSTANCES}")
        if not 1 <= max_instances <= MAX_INSTANCES or max_instances < min_instances:
            raise _invalid("max_instances", f"must be from max(1, min_instances) to {MAX_INSTANCES}")

    async def create(self, key: KeyRow, values: dict[str, Any]) -> DeploymentRow:
        """A new deployment owned by the key's account; 409 if the name is taken."""
        name = values["name"]
        if not _NAME.match(name):
            raise _invalid("name", "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit")
        spec, version = self._model_version(values["model"], values["version"])
        await self._check_hardware(values["hardware"])
        self._check_instances(values["min_instances"], values["max_instances"])
        now = utcnow()
        row = DeploymentRow(
            owner=key.name,
            name=name,
            model=spec.ref,
            version=version,
            hardware=values["hardware"],
            min_instances=values["min_instances"],
            max_instances=values["max_instances"],
            release_number=1,
            created_at=now,
            release_created_at=now,
            created_by=key.name,
        )
        if not await self.svc.store.create_deployment(row):
            raise Conflict(f"A deployment named {key.name}/{name} already exists.")
        return row

    async def get(self, key: KeyRow, owner: str, name: str) -> DeploymentRow:
        """The deployment, if the key's account owns it; else :class:`NotFound`."""
        row = await self.svc.store.get_deployment(owner, name) if owner == key.name else None
        if row is None:
            raise NotFound(f"Deployment {owner}/{name} not found.")
        return row

    async def list(self, key: KeyRow) -> list[DeploymentRow]:
        """The key's account's deployments."""
        return await self.svc.store.list_deployments(key.name)

    async def update(self, key: KeyRow, owner: str, name: str, changes: dict[str, Any]) -> DeploymentRow:
        """Apply ``changes`` (version, hardware, min/max_instances) as a new release."""
        current = await self.get(key, owner, name)
        if not changes:
            raise InvalidRequest(
                "Nothing to update: send version, hardware, min_instances or max_instances",
                invalid_fields=[InvalidField("required", "body", "at least one field")],
            )
        if "version" in changes:
            changes["version"] = self._model_version(current.model, changes["version"])[1]
        if "hardware" in changes:
            await self._check_hardware(changes["hardware"])
        self._check_instances(
            changes.get("min_instances", current.min_instances), changes.get("max_instances", current.max_instances)
        )
        updated = await self.svc.store.update_deployment(owner, name, changes)
        if updated is None:
            raise NotFound(f"Deployment {owner}/{name} not found.")
        return updated

    async def delete(self, key: KeyRow, owner: str, name: str) -> None:
        """Delete the deployment (its predictions stay)."""
        await self.get(key, owner, name)
        if not await self.svc.store.delete_deployment(owner, name):
            raise NotFound(f"Deployment {owner}/{name} not found.")

    async def target(self, key: KeyRow, owner: str, name: str) -> tuple[DeploymentRow, ModelSpec, str]:
        """What a prediction through the deployment runs: the deployment, its model and its version."""
        row = await self.get(key, owner, name)
        spec = self.svc.registry.get(row.model)
        if spec is None or row.version not in spec.version_ids:
            raise ServiceUnavailable(
                f"Deployment {owner}/{name} runs {row.model}:{row.version}, which this server no longer serves; "
                "update the deployment's version",
            )
        return row, spec, row.version
