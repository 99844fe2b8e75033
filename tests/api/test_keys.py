"""Revoking keys: the admin API and ``fluxserve keys revoke``, effective within the key cache's lifetime."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator

import pytest

from fluxserve.api.auth import KEY_CACHE_SECONDS
from tests.inprocess import InProcess, create_key, open_inprocess
from tests.support import FLUXSERVE


@pytest.fixture(scope="module")
async def fs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    async with open_inprocess(tmp_path_factory.mktemp("keys"), with_worker=False) as instance:
        yield instance


async def test_an_admin_revokes_a_key_and_it_stops_working_within_seconds(fs: InProcess) -> None:
    victim, token = await create_key(fs.settings, "victim")
    _, admin_token = await create_key(fs.settings, "operator", admin=True)
    async with fs.client_with(token) as client, fs.client_with(admin_token) as admin:
        assert (await client.get("/v1/predictions")).status_code == 200
        assert (await client.post(f"/v1/admin/keys/{victim.id}/revoke")).status_code == 403
        revoked = await admin.post(f"/v1/admin/keys/{victim.id}/revoke")
        assert revoked.status_code == 200, revoked.text
        assert [k["name"] for k in revoked.json()["revoked"]] == ["victim"]
        assert (await admin.post(f"/v1/admin/keys/{victim.id}/revoke")).status_code == 404  # already revoked
        await asyncio.sleep(KEY_CACHE_SECONDS + 0.5)
        assert (await client.get("/v1/predictions")).status_code == 401
        assert (await admin.get("/v1/predictions")).status_code == 200


async def test_cli_revokes_by_name_and_lists_revoked_keys(fs: InProcess) -> None:
    await create_key(fs.settings, "temp")
    await create_key(fs.settings, "temp")
    env = {**os.environ, "FLUXSERVE_DATA_DIR": str(fs.settings.data_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FLUXSERVE, "keys", *args], capture_output=True, text=True, env=env, timeout=60)

    done = await asyncio.to_thread(cli, "revoke", "temp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Revoked key") == 2
    listed = json.loads((await asyncio.to_thread(cli, "list", "--json")).stdout)
    assert [k["revoked"] for k in listed if k["name"] == "temp"] == [True, True]
    missing = await asyncio.to_thread(cli, "revoke", "no-such-key")
    assert missing.returncode == 1 and "No live key" in missing.stderr
