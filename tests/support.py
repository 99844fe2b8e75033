"""Test support: a real ``fluxserve serve`` process on loopback, and PostgreSQL databases per run."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FLUXSERVE = [sys.executable, "-m", "fluxserve.cli"]
FIXTURE_MODELS = '["fluxserve.predictors.fixtures:ALL"]'
PG_ADMIN_URL = os.environ.get("FLUXSERVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``fluxserve ARGS`` and return the finished process (raises on a non-zero exit)."""
    return subprocess.run(
        [*FLUXSERVE, *args], capture_output=True, text=True, check=True, timeout=120, env=env or os.environ.copy()
    )


def create_key(data_dir: Path, env: dict[str, str], name: str = "test") -> str:
    """``fluxserve keys create``; the key is alone on the last line of stdout."""
    out = run_cli("keys", "create", "--name", name, "--data-dir", str(data_dir), env=env).stdout
    return out.strip().splitlines()[-1]


class _Process:
    """Stopping and reading the output of a fluxserve subprocess."""

    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: graceful; SIGKILL: crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> str:
        """What it printed."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@dataclass
class Server(_Process):
    """One ``fluxserve serve`` subprocess with its own data dir and database."""

    data_dir: Path
    database_url: str | None
    demo: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    key: str = ""
    log_path: Path | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment the server and the CLI run with."""
        env = os.environ.copy()
        env.update(
            FLUXSERVE_EXTRA_MODELS=FIXTURE_MODELS,
            FLUXSERVE_DATA_DIR=str(self.data_dir),
            FLUXSERVE_POLL_INTERVAL="0.5",
            FLUXSERVE_LOG_LEVEL="info",
            # Tests poll hard with one key; rate limits get their own test with low limits.
            FLUXSERVE_RATE_LIMIT_CREATE="100000/minute",
            FLUXSERVE_RATE_LIMIT_OTHER="1000000/minute",
            HF_HUB_OFFLINE="1",
            # Most tests start a server per test: load models at first use (the development mode) so that
            # each start does not build and load every tiny FLUX pipeline. tests/e2e/test_model_lifecycle.py
            # covers the default (preload everything before claiming).
            FLUXSERVE_PRELOAD="none",
        )
        if self.database_url:
            env["FLUXSERVE_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> Server:
        """Start the server and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [*FLUXSERVE, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.demo:
            args.append("--demo")
        self.log_path = self.data_dir / f"server-{self.port}-{int(time.time() * 1000)}.log"
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(args, env=self.env(), stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.logs()}")

    def client(self, key: str | None = None, prefix: str = "/v1") -> httpx.Client:
        """An httpx client on the API prefix, authenticated with ``key`` (default: the server's key)."""
        token = self.key if key is None else key
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.base}{prefix}", headers=headers, timeout=30)


def wait_for(client: httpx.Client, prediction_id: str, timeout: float = 60, until: Any = None) -> dict[str, Any]:
    """Poll ``GET /predictions/{id}`` until ``until(prediction)`` (default: a terminal status)."""
    done = until or (lambda p: p["status"] in ("succeeded", "failed", "canceled"))
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/predictions/{prediction_id}").json()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def postgres_available() -> bool:
    """Whether the test PostgreSQL server answers."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def create_pg_database() -> tuple[str, str]:
    """Create a fresh database on the test server; return (its URL, its name)."""
    name = f"fluxserve_test_{secrets.token_hex(4)}"
    _psql(f"CREATE DATABASE {name}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_pg_database(name: str) -> None:
    """Drop a database made by :func:`create_pg_database`."""
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _psql(sql: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        raise RuntimeError("psql is needed to create test databases")
    subprocess.run([psql, PG_ADMIN_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


@dataclass
class WorkerProcess(_Process):
    """One ``fluxserve worker`` subprocess."""

    data_dir: Path
    database_url: str
    models: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        """Start the worker and wait until it announces its models."""
        env = os.environ.copy()
        env.update(
            FLUXSERVE_EXTRA_MODELS=FIXTURE_MODELS,
            FLUXSERVE_POLL_INTERVAL="0.5",
            HF_HUB_OFFLINE="1",
            # Named models preload (the default); a worker of every model loads each at first use (see Server).
            **({} if self.models else {"FLUXSERVE_PRELOAD": "none"}),
        )
        env.update(self.extra_env)
        args = [*FLUXSERVE, "worker", "--demo", "--data-dir", str(self.data_dir), "--database-url", self.database_url]
        for model in self.models:
            args += ["--model", model]
        self.log_path = self.data_dir / f"worker-{secrets.token_hex(3)}.log"
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(args, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.logs()}")
            if " serving " in self.logs():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start in {timeout}s:\n{self.logs()}")


def restart_postgres() -> None:
    """Restart the local PostgreSQL cluster (drops every connection)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)
