"""fluxserve subprocesses: their environment, a free loopback port, API keys, servers and workers.

:class:`ServerProcess` is a server (``fluxserve serve``, or any other HTTP server such as Cog's) started with
:mod:`subprocess`, its output in a log file, waited for until a readiness check passes. :class:`LoggedProcess`
is a process started with :mod:`asyncio` (``fluxserve worker``) whose output lines are kept in memory and watched
for a marker (``" serving "``). Both run in their own process group, so stopping one also stops its children,
and both stop with SIGTERM first and SIGKILL after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import SetupError

HOST = "127.0.0.1"
#: ``fluxserve`` as this interpreter runs it: ``[*FLUXSERVE, "serve", ...]``.
FLUXSERVE = [sys.executable, "-m", "fluxserve.cli"]
#: ``FLUXSERVE_EXTRA_MODELS`` that adds the fixture models (``fluxserve-fixtures/noop``, ``…/writes-image``, …).
FIXTURE_MODELS = '["fluxserve.predictors.fixtures:ALL"]'
START_TIMEOUT_S = 90.0


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` (the loopback interface) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0, host: str = HOST
) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body). Raises ``OSError`` or ``http.client.HTTPException``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def fluxserve_env(
    overrides: Mapping[str, str | None] | None = None, *, fixtures: bool = False, clean: bool = False
) -> dict[str, str]:
    """This process's environment for a fluxserve subprocess.

    ``clean`` leaves out every inherited ``FLUXSERVE_*`` variable; ``fixtures`` sets ``FLUXSERVE_EXTRA_MODELS`` to
    :data:`FIXTURE_MODELS`; then ``overrides`` is applied, where a ``None`` value removes the variable.
    """
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith("FLUXSERVE_"))}
    if fixtures:
        env["FLUXSERVE_EXTRA_MODELS"] = FIXTURE_MODELS
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def create_key(env: Mapping[str, str], *options: str, timeout: float = 120.0) -> str:
    """``fluxserve keys create [options]`` with ``env``; the new key (alone on the last stdout line).

    Raises :class:`SetupError` when the command fails.
    """
    try:
        done = subprocess.run(
            [*FLUXSERVE, "keys", "create", *options],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SetupError(f"fluxserve keys create did not finish in {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SetupError(f"fluxserve keys create failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    return lines[-1].strip()


def _signal_group(proc: subprocess.Popen[bytes] | asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``proc`` leads (started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def health_ready(server: ServerProcess) -> bool:
    """The readiness check of a fluxserve server: ``GET /health`` answers 200."""
    status, _ = http_get(server.port, "/health")
    return status == 200


@dataclass
class ServerProcess:
    """A server subprocess in its own process group; its stdout and stderr go to ``log_path`` (or nowhere).

    ``ready`` decides when it serves (default :func:`health_ready`); it may raise :class:`SetupError` to give up,
    and its ``OSError``/``HTTPException`` mean "not yet".
    """

    label: str
    cmd: list[str]
    env: dict[str, str]
    port: int
    log_path: Path | None = None
    cwd: Path | None = None
    ready: Callable[[ServerProcess], bool] = health_ready
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        """Start it (not waiting for it); ``started_at`` is the ``time.perf_counter()`` just before."""
        log = self.log_path.open("wb") if self.log_path is not None else None
        try:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log if log is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() also ends its children
            )
        finally:
            if log is not None:
                log.close()

    def wait_ready(self, timeout: float = START_TIMEOUT_S, interval: float = 0.1) -> None:
        """Poll ``ready`` every ``interval`` s; :class:`SetupError` if it exits or is not ready in ``timeout`` s."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"{self.label} exited with status {self.proc.returncode}\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.ready(self):
                    return
            time.sleep(interval)
        raise SetupError(f"{self.label} not ready after {timeout:.0f} s\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to its process group, SIGKILL after ``timeout`` s; its exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    @property
    def pid(self) -> int | None:
        """Its process id, once started."""
        return None if self.proc is None else self.proc.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def log_lines(self) -> list[str]:
        """What it wrote to stdout and stderr so far, line by line (empty without a log)."""
        if self.log_path is None:
            return []
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 30, prefix: str = "  | ") -> str:
        """The last ``lines`` lines of its output, each behind ``prefix``."""
        text = self.log_lines()
        if not text:
            return f"{prefix}(no output)"
        return "\n".join(f"{prefix}{line}" for line in text[-lines:])


def fluxserve_server(
    label: str, env: dict[str, str], *args: str, log_path: Path | None = None, cwd: Path | None = None
) -> ServerProcess:
    """A ``fluxserve serve --host 127.0.0.1 --port <free port> [args]`` server, not started yet."""
    port = free_port()
    cmd = [*FLUXSERVE, "serve", "--host", HOST, "--port", str(port), *args]
    return ServerProcess(label=label, cmd=cmd, env=env, port=port, log_path=log_path, cwd=cwd)


@dataclass
class LoggedProcess:
    """A subprocess run by asyncio (e.g. ``fluxserve worker``) whose stdout and stderr lines are kept in memory.

    A reader task collects the last ``keep_lines`` lines and sets ``marked`` when a line contains ``marker``.
    Create and use it inside a running event loop.
    """

    label: str
    tag: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    marker: str | None = None
    keep_lines: int = 2000
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    marked: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start it in its own process group and begin collecting its output."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() signals only this process
            limit=1 << 20,  # long log lines (tracebacks) must not break readline()
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if len(self.lines) > self.keep_lines:
                del self.lines[: len(self.lines) - self.keep_lines]
            if self.marker is not None and self.marker in line:
                self.marked.set()

    @property
    def returncode(self) -> int | None:
        """Its exit status, None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.returncode

    @property
    def pid(self) -> int:
        """Its process id (started)."""
        assert self.proc is not None
        return self.proc.pid

    async def wait_marked(self, deadline: float) -> None:
        """Until it has logged ``marker``; :class:`SetupError` if it exits first or ``deadline`` (loop time) passes."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        while not self.marked.is_set():
            if self.proc.returncode is not None:
                raise SetupError(f"{self.label} exited with status {self.proc.returncode}\n{self.tail()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SetupError(f"{self.label} did not log {self.marker!r} in time\n{self.tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.marked.wait(), min(0.1, remaining))

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM (a clean stop), then SIGKILL after ``grace`` s; its exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.lines.append(f"[benchmark] no exit {grace:.0f} s after SIGTERM; SIGKILL")
                _signal_group(self.proc, signal.SIGKILL)
                await asyncio.wait_for(self.proc.wait(), grace)
        if self.reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        """Its last ``n`` output lines, each behind ``  <tag> | ``."""
        return "\n".join(f"  {self.tag} | {line}" for line in self.lines[-n:]) or f"  {self.tag} | (no output)"

    def matching(self, needles: Sequence[str]) -> list[str]:
        """The kept output lines that contain any of ``needles``."""
        return [line for line in self.lines if any(n in line for n in needles)]
