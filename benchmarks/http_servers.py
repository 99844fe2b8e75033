#!/usr/bin/env python3
"""Which HTTP server should run fluxserve's API: connection hygiene, throughput, and what fluxserve needs served.

Every server runs the same app, ``harness.asgi_entry:app`` (``create_app(Settings(), open_api_state)`` with the
fixture models and the in-process worker), from ``benchmarks/.servers-venv``, each with its own data dir and key, on
its own free loopback port. The shipped configuration is ``fluxserve serve`` itself (uvicorn with the guarded
HTTP/1.1 protocol of ``fluxserve.api.connections``); the others are started from their own command lines with the
same keep-alive and, where they have one, the same header and body deadlines (``--servers`` picks them):

* ``uvicorn``: uvicorn with its plain ``H11Protocol`` (``--http h11``), otherwise as ``fluxserve serve`` runs it;
* ``guarded``: ``fluxserve serve`` (what ships);
* ``hypercorn``: hypercorn with ``--keep-alive`` and ``--read-timeout`` (= the body idle timeout);
* ``granian``: granian (ASGI, HTTP/1) with ``--http1-header-read-timeout`` (= the header timeout);
* ``uvicorn-httptools``: uvicorn with its httptools protocol (uvicorn's default when httptools is installed), as
  ``uvicorn`` otherwise: what the h11-based guard costs against uvicorn's faster parser;
* not run by default: ``hypercorn-default`` (hypercorn without a read timeout, its default).

It measures:

a. hygiene: ``--hold`` connections per kind per server, all servers at once, watched for up to ``--cap`` seconds:
   idle keep-alive (one ``GET /health``, then nothing), silent (connect, send nothing), slow head (a request head
   with one more header line every second, never finished), stalled body (``Content-Length: 100``, 10 bytes sent);
   when the server closes each (median), and ``GET /health`` on fresh connections every 0.25 s meanwhile (p50,
   max, failures);
b. throughput: ``GET /health`` (no auth, no database) and ``GET /v1/predictions/{id}`` (Bearer key, a succeeded
   prediction) under concurrent keep-alive load (``wrk`` when on PATH, else serving_overhead.py's asyncio
   generator), ``--load-rounds`` rounds interleaved across servers, medians of requests/s, p50, p99, and the
   server's CPU per request;
c. what fluxserve needs: ``Prefer: wait`` create (201, succeeded), SSE (``text/event-stream`` ending with
   ``event: done``), multipart upload to ``POST /v1/files``; and, during (a), a ``Prefer: wait`` create that runs
   longer than the body idle timeout, an SSE stream of a prediction as long (events arrive as they happen?), and a
   multipart upload trickled over as long (a chunk a second).

``--quick`` is a smoke run with the deadlines shortened to 2 s (head) and 4 s (body). Exit status: 0 ok; 1 a
request under load failed, or the shipped configuration failed a check (c) or did not close a connection in (a);
2 a server did not start or the venv could not be set up. What other servers do in (a) and (c) is reported, not
judged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, str(BENCH_DIR))
import serving_overhead  # noqa: E402  (its load generators)
from harness import SetupError, cpu, processes, report, stats  # noqa: E402
from harness.processes import HOST, ServerProcess  # noqa: E402

REPO = BENCH_DIR.parent
DEFAULT_VENV = BENCH_DIR / ".servers-venv"
SERVER_PINS = ("hypercorn==0.18.0", "granian==2.8.7")
#: fluxserve's dependencies the API never imports (the predictors'): left out of the servers' venv.
PREDICTOR_ONLY = frozenset(
    {"torch", "diffusers", "transformers", "accelerate", "safetensors", "sentencepiece", "protobuf", "huggingface-hub"}
)
APP = "harness.asgi_entry:app"
NOOP_PATH = "/v1/models/fluxserve-fixtures/noop/predictions"
SLOW_PATH = "/v1/models/fluxserve-fixtures/slow-steps/predictions"
SHIPPED = "guarded"
DEFAULT_SERVERS = "uvicorn,guarded,hypercorn,granian,uvicorn-httptools"
REQUEST_TIMEOUT_S = 30.0
HEALTH_EVERY_S = 0.25
SLOW_HEAD_EVERY_S = 1.0
SSE_EVENT = re.compile(rb"^event: (\w+)\n", re.MULTILINE)


# --------------------------------------------------------------------------------------------
# The servers' venv


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def api_requirements() -> list[str]:
    """pyproject.toml's ``[project.dependencies]`` without the predictors' (torch and the rest)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [r for r in project["dependencies"] if _dist_name(r) not in PREDICTOR_ONLY]


def constraints() -> list[str]:
    """``name==version`` of every package this interpreter has (fluxserve's own venv): the servers' venv gets the
    same fastapi, starlette, uvicorn, h11, uvloop, ... (what it adds, hypercorn and granian, is pinned)."""
    pins = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name != "fluxserve":
            pins[name] = f"{name}=={dist.version}"
    return sorted(pins.values())


VERSIONS_CODE = """
import importlib.metadata as m, importlib.util as u, json, sys
import fluxserve, fluxserve.api.app, fluxserve.runtime, fluxserve.predictors.fixtures
names = ("fluxserve", "uvicorn", "h11", "httptools", "uvloop", "starlette", "fastapi", "hypercorn", "granian")
print(json.dumps({
    "python": sys.version.split()[0],
    "source": fluxserve.__file__,
    "torch_installed": u.find_spec("torch") is not None,
    "torch_imported": "torch" in sys.modules,
    **{n: m.version(n) for n in names},
}))
"""


def venv_versions(venv: Path) -> dict[str, Any] | None:
    """What the servers' venv holds (versions, where fluxserve comes from, torch), or None if it is not usable."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(python), "-c", VERSIONS_CODE], capture_output=True, text=True, timeout=120, env=env)
    if out.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def venv_fits(found: dict[str, Any] | None) -> bool:
    pins = dict(p.split("==") for p in SERVER_PINS)
    return (
        found is not None
        and Path(found["source"]).resolve().is_relative_to(REPO / "src")
        and all(found.get(name) == version for name, version in pins.items())
    )


def ensure_venv(venv: Path) -> dict[str, Any]:
    """Create ``venv`` (a plain venv, no system site packages) with fluxserve from this checkout (editable, without
    its predictor dependencies), the API's dependencies at this venv's versions, and the pinned servers."""
    found = venv_versions(venv)
    if venv_fits(found):
        assert found is not None
        return found
    print(f"Setting up {venv} (fluxserve editable without torch, {', '.join(SERVER_PINS)}) ...", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="constraints-") as pinned:
        pinned.write("\n".join(constraints()) + "\n")
        pinned.flush()
        steps = [
            [*pip, "--no-deps", "-e", str(REPO)],
            [*pip, "-c", pinned.name, *api_requirements(), *SERVER_PINS],
        ]
        for step in steps:
            # pip says fluxserve lacks torch and the rest: on purpose, so its output is shown only on failure.
            done = subprocess.run(step, timeout=900, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise SetupError(f"could not set up {venv}: {' '.join(step)} failed\n{done.stderr[-3000:]}")
    found = venv_versions(venv)
    if not venv_fits(found):
        raise SetupError(f"{venv} does not import fluxserve.api.app from {REPO / 'src'} with {SERVER_PINS}: {found}")
    assert found is not None
    return found


# --------------------------------------------------------------------------------------------
# Servers


@dataclass(frozen=True)
class Deadlines:
    header: float
    body_idle: float
    keep_alive: float


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    #: (venv python, port, deadlines) -> the command line
    command: Callable[[Path, int, Deadlines], list[str]]
    #: what it is told about slow and idle connections, for the report
    settings: Callable[[Deadlines], str]


def _max_connections() -> int:
    from fluxserve.config import Settings

    default = Settings.model_fields["max_connections"].default
    assert isinstance(default, int)
    return default


def _uvicorn(http: str) -> Callable[[Path, int, Deadlines], list[str]]:
    def command(python: Path, port: int, d: Deadlines) -> list[str]:
        # As `fluxserve serve` configures uvicorn (src/fluxserve/cli/main.py), with another protocol class.
        return [
            str(python), "-m", "uvicorn", APP, "--host", HOST, "--port", str(port), "--http", http,
            "--loop", "auto", "--timeout-keep-alive", str(int(d.keep_alive)),
            "--limit-concurrency", str(_max_connections()),
            "--no-access-log", "--no-server-header", "--no-proxy-headers",
        ]  # fmt: skip

    return command


def _guarded(python: Path, port: int, d: Deadlines) -> list[str]:
    return [str(python), "-m", "fluxserve.cli", "serve", "--host", HOST, "--port", str(port)]


def _hypercorn(read_timeout: bool) -> Callable[[Path, int, Deadlines], list[str]]:
    def command(python: Path, port: int, d: Deadlines) -> list[str]:
        cmd = [
            str(python), "-m", "hypercorn", APP, "--bind", f"{HOST}:{port}", "--worker-class", "uvloop",
            "--workers", "1", "--keep-alive", str(int(d.keep_alive)), "--backlog", "2048",
        ]  # fmt: skip
        return [*cmd, "--read-timeout", str(int(d.body_idle))] if read_timeout else cmd

    return command


def _granian(python: Path, port: int, d: Deadlines) -> list[str]:
    return [
        str(python), "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port), "--http", "1",
        "--no-ws", "--workers", "1", "--loop", "uvloop", "--log-level", "warning",
        "--http1-header-read-timeout", str(int(d.header * 1000)), APP,
    ]  # fmt: skip


VARIANTS = {
    v.key: v
    for v in (
        Variant(
            "uvicorn",
            "uvicorn h11",
            _uvicorn("h11"),
            lambda d: f"--http h11 --timeout-keep-alive {d.keep_alive:g} --limit-concurrency {_max_connections()}",
        ),
        Variant(
            "guarded",
            "uvicorn guarded (shipped)",
            _guarded,
            lambda d: f"fluxserve serve: head {d.header:g} s, body idle {d.body_idle:g} s, keep-alive {d.keep_alive:g}",
        ),
        Variant(
            "hypercorn",
            "hypercorn",
            _hypercorn(read_timeout=True),
            lambda d: f"--keep-alive {d.keep_alive:g} --read-timeout {d.body_idle:g}; h11_max_incomplete_size 16 KiB",
        ),
        Variant(
            "granian",
            "granian",
            _granian,
            lambda d: f"--http 1 --http1-header-read-timeout {d.header * 1000:g} (ms)",
        ),
        Variant(
            "hypercorn-default",
            "hypercorn, no read timeout",
            _hypercorn(read_timeout=False),
            lambda d: f"--keep-alive {d.keep_alive:g}, read_timeout None (its default)",
        ),
        Variant(
            "uvicorn-httptools",
            "uvicorn httptools",
            _uvicorn("httptools"),
            lambda d: f"--http httptools --timeout-keep-alive {d.keep_alive:g}",
        ),
    )
}


@dataclass
class Target:
    """One server under test and what was measured on it."""

    variant: Variant
    server: ServerProcess
    key: str = ""
    prediction_id: str = ""
    features: dict[str, Check] = field(default_factory=dict)
    hold: dict[str, list[Held]] = field(default_factory=dict)
    health_idle_ms: list[float] = field(default_factory=list)
    health_during_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    loads: dict[str, list[Load]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_target(variant: Variant, venv: Path, deadlines: Deadlines, workdir: Path) -> Target:
    data_dir = workdir / variant.key
    data_dir.mkdir(parents=True)
    env = processes.fluxserve_env(
        {
            "FLUXSERVE_DATA_DIR": str(data_dir),
            "FLUXSERVE_DEMO": "true",
            "FLUXSERVE_PRELOAD": "none",
            # The servers' venv has no torch: the in-process worker runs the fixture models it uses, no FLUX model.
            "FLUXSERVE_WORKER_MODELS": "fluxserve-fixtures/noop,fluxserve-fixtures/slow-steps",
            # Two prediction slots: the long Prefer: wait create and the long SSE stream run side by side.
            "FLUXSERVE_WORKER_CONCURRENCY": "2",
            "FLUXSERVE_HEADER_TIMEOUT_SECONDS": f"{deadlines.header:g}",
            "FLUXSERVE_BODY_IDLE_TIMEOUT_SECONDS": f"{deadlines.body_idle:g}",
            "FLUXSERVE_KEEP_ALIVE_SECONDS": f"{deadlines.keep_alive:g}",
            # One key polls thousands of times a second: the limits are lifted (this measures serving).
            "FLUXSERVE_RATE_LIMIT_CREATE": "10000000/minute",
            "FLUXSERVE_RATE_LIMIT_OTHER": "100000000/minute",
            "PYTHONPATH": str(BENCH_DIR),
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        fixtures=True,
        clean=True,
    )
    key = processes.create_key(env, "--data-dir", str(data_dir), "--name", "bench")
    port = processes.free_port()
    server = ServerProcess(
        label=variant.label,
        cmd=variant.command(venv / "bin" / "python", port, deadlines),
        env=env,
        port=port,
        log_path=workdir / f"{variant.key}.log",
        cwd=workdir,
    )
    return Target(variant=variant, server=server, key=key)


@contextlib.contextmanager
def running(targets: list[Target]) -> Iterator[None]:
    try:
        for t in targets:
            t.server.start()
        for t in targets:
            t.server.wait_ready()
            print(f"  {t.variant.label:<28} ready on {HOST}:{t.port}  ({t.variant.key})", flush=True)
        yield
    finally:
        for t in targets:
            t.server.stop()


# --------------------------------------------------------------------------------------------
# One HTTP exchange on raw asyncio streams (Connection: close, read to EOF)


@dataclass
class Reply:
    status: int  # 0: the connection closed (or failed) before a status line
    headers: dict[str, str]
    body: bytes
    seconds: float  # until the server closed the connection (or the timeout)
    events: list[tuple[float, str]] = field(default_factory=list)  # (seconds, name) of each SSE "event: <name>"
    error: str = ""

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def _dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            return bytes(out)
        size = int(raw[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return 0, {}, raw
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return 0, {}, raw
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    return status, headers, body


def request_head(method: str, path: str, port: int, headers: dict[str, str], length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(
    port: int, head: bytes, chunks: list[bytes] | None = None, every: float = 0.0, within: float = REQUEST_TIMEOUT_S
) -> Reply:
    """Send ``head``, then each of ``chunks`` ``every`` seconds apart (stopping if the server closes), and read the
    reply until the server closes the connection (``Connection: close``) or ``within`` seconds pass."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    raw = bytearray()
    events: list[tuple[float, str]] = []
    scanned = 0

    async def read_all(reader: asyncio.StreamReader) -> None:
        nonlocal scanned
        while data := await reader.read(65536):
            raw.extend(data)
            for match in SSE_EVENT.finditer(raw, scanned):
                events.append((loop.time() - t0, match.group(1).decode()))
                scanned = match.end()

    error = ""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), within)
    except (OSError, TimeoutError) as exc:
        return Reply(0, {}, b"", loop.time() - t0, error=f"connect: {exc!r}")
    reading = asyncio.create_task(read_all(reader))
    try:
        writer.write(head)
        for chunk in chunks or []:
            await asyncio.wait([reading], timeout=every)
            if reading.done():
                break
            writer.write(chunk)
            await writer.drain()
        await asyncio.wait_for(asyncio.shield(reading), max(0.0, within - (loop.time() - t0)))
    except TimeoutError:
        error = f"no end of reply in {within:g} s"
    except OSError as exc:
        error = repr(exc)
    finally:
        seconds = loop.time() - t0
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
        writer.close()
    if not error and reading.done() and not reading.cancelled() and reading.exception() is not None:
        error = repr(reading.exception())
    status, headers, body = _parse(bytes(raw))
    return Reply(status, headers, body, seconds, events, error)


def multipart(content: bytes, boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="bench.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )


# --------------------------------------------------------------------------------------------
# (c) What fluxserve needs served


@dataclass
class Check:
    ok: bool
    cell: str  # what the table shows
    detail: str = ""


async def check_prefer_wait(t: Target) -> Check:
    body = json.dumps({"input": {"prompt": "x"}}).encode()
    headers = {**t.auth, "Content-Type": "application/json", "Prefer": "wait"}
    reply = await exchange(t.port, request_head("POST", NOOP_PATH, t.port, headers, len(body)) + body)
    pred = reply.json()
    ok = reply.status == 201 and pred.get("status") == "succeeded" and pred.get("output") == "x"
    if ok:
        t.prediction_id = str(pred["id"])
    return Check(
        ok, f"{reply.status} {pred.get('status', '-')}", reply.error or reply.body[:200].decode(errors="replace")
    )


def _sse_ok(reply: Reply) -> tuple[bool, str]:
    names = re.findall(r"^event: (\w+)$", reply.body.decode("utf-8", "replace"), re.MULTILINE)
    kind = reply.headers.get("content-type", "")
    ok = reply.status == 200 and kind.startswith("text/event-stream") and names[-1:] == ["done"]
    return ok, f"{reply.status} {kind.split(';')[0] or '-'}, events {'/'.join(names) or '-'}"


async def check_sse(t: Target) -> Check:
    if not t.prediction_id:
        return Check(False, "no prediction")
    path = f"/v1/predictions/{t.prediction_id}/stream"
    reply = await exchange(t.port, request_head("GET", path, t.port, {"Accept": "text/event-stream"}))
    ok, detail = _sse_ok(reply)
    return Check(ok, "yes" if ok else "NO", detail + (f" {reply.error}" if reply.error else ""))


async def check_upload(t: Target) -> Check:
    boundary = uuid.uuid4().hex
    body = multipart(b"fluxserve http_servers benchmark\n" * 32, boundary)
    headers = {**t.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    reply = await exchange(t.port, request_head("POST", "/v1/files", t.port, headers, len(body)) + body)
    ok = reply.status == 201 and bool(reply.json().get("id"))
    return Check(ok, str(reply.status), reply.error or reply.body[:200].decode(errors="replace"))


async def check_long_wait(t: Target, seconds: int) -> Check:
    """A ``Prefer: wait=60`` create of a prediction that runs ``seconds`` (the client sends nothing meanwhile)."""
    body = json.dumps({"input": {"steps": seconds, "step_seconds": 1}}).encode()
    headers = {**t.auth, "Content-Type": "application/json", "Prefer": "wait=60"}
    reply = await exchange(t.port, request_head("POST", SLOW_PATH, t.port, headers, len(body)) + body, within=90)
    status = reply.json().get("status")
    ok = reply.status == 201 and status == "succeeded"
    cell = f"{reply.status} {status} {reply.seconds:.1f} s" if reply.status else f"closed {reply.seconds:.1f} s"
    return Check(ok, cell, reply.error)


async def check_long_sse(t: Target, seconds: int) -> Check:
    """SSE of a prediction that runs ``seconds``: events must arrive as they happen and end with ``done``."""
    body = json.dumps({"input": {"steps": seconds, "step_seconds": 1}}).encode()
    headers = {**t.auth, "Content-Type": "application/json"}
    created = await exchange(t.port, request_head("POST", SLOW_PATH, t.port, headers, len(body)) + body)
    pid = created.json().get("id")
    if created.status != 201 or not pid:
        return Check(False, f"create {created.status}", created.error)
    path = f"/v1/predictions/{pid}/stream"
    wall0 = time.time()
    reply = await exchange(t.port, request_head("GET", path, t.port, {"Accept": "text/event-stream"}), within=90)
    ok, detail = _sse_ok(reply)
    detail += f" {reply.error}" if reply.error else ""
    done = next((at for at, name in reply.events if name == "done"), None)
    if done is None:
        return Check(False, f"cut at {reply.seconds:.1f} s, {len(reply.events)} events", detail)
    # When did the events arrive, against the prediction's own timestamps (same machine, same clock)?
    pred = (await exchange(t.port, request_head("GET", f"/v1/predictions/{pid}", t.port, t.auth))).json()
    completed = _timestamp(pred.get("completed_at"))
    if completed is None:
        return Check(False, f"done, no completed_at ({pred.get('status')})", detail)
    while_running = sum(1 for at, _ in reply.events if wall0 + at < completed - 0.5)
    lag = wall0 + done - completed
    live = while_running >= 2 and lag < 1.0  # events came as they happened, and done right after the end
    return Check(ok and live, f"{len(reply.events)} events, {while_running} while running, done +{lag:.2f} s", detail)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def check_slow_upload(t: Target, seconds: int) -> Check:
    """A multipart upload sent in ``seconds`` + 1 pieces, one a second: slow but never idle for long."""
    boundary = uuid.uuid4().hex
    body = multipart(b"0123456789abcdef" * 64 * seconds, boundary)
    headers = {**t.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    step = -(-len(body) // (seconds + 1))
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    head = request_head("POST", "/v1/files", t.port, headers, len(body)) + pieces[0]
    reply = await exchange(t.port, head, pieces[1:], every=1.0, within=seconds + 30)
    ok = reply.status == 201 and bool(reply.json().get("id"))
    cell = f"{reply.status} in {reply.seconds:.1f} s" if reply.status else f"closed at {reply.seconds:.1f} s"
    return Check(ok, cell, reply.error)


async def quick_checks(targets: list[Target]) -> None:
    for t in targets:
        t.features["prefer_wait"] = await check_prefer_wait(t)
        t.features["sse"] = await check_sse(t)
        t.features["upload"] = await check_upload(t)


# --------------------------------------------------------------------------------------------
# (a) Hygiene: connections held open while /health is sampled


HOLD_KINDS = ("idle keep-alive", "silent", "slow head", "stalled body")


@dataclass
class Held:
    # Seconds from connect (idle keep-alive: from the end of its one response) until the server closed it; None:
    # still open at the cap.
    closed_after: float | None
    answer: str  # the status line the server sent first, if any


async def hold_one(t: Target, kind: str, cap: float) -> Held:
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, t.port), 10)
    except (OSError, TimeoutError) as exc:
        return Held(0.0, f"connect failed: {exc!r}")
    t0 = loop.time()
    got = bytearray()
    answered = asyncio.Event()

    async def until_closed() -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                got.extend(data)
                if b'"ok"}' in got:
                    answered.set()

    closing = asyncio.create_task(until_closed())
    skip = 0  # bytes of the idle connection's one response, not an answer to report
    try:
        if kind == "idle keep-alive":
            writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}:{t.port}\r\n\r\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 10)
            t0, skip = loop.time(), len(got)
        elif kind == "slow head":
            writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}:{t.port}\r\n".encode())
            line = 0
            while not closing.done() and loop.time() - t0 < cap:
                await asyncio.wait([closing], timeout=SLOW_HEAD_EVERY_S)
                if not closing.done():
                    line += 1
                    writer.write(f"X-Slow-{line}: {line}\r\n".encode())
        elif kind == "stalled body":
            head = request_head("POST", NOOP_PATH, t.port, {**t.auth, "Content-Type": "application/json"}, 100)
            writer.write(head.replace(b"Connection: close\r\n", b"") + b'{"input": ')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closing), max(0.0, cap - (loop.time() - t0)))
    except OSError:
        pass  # a write to a connection the server closed: it is closed
    finally:
        closed_after = loop.time() - t0 if closing.done() else None
        closing.cancel()
        with contextlib.suppress(BaseException):
            await closing
        writer.close()
    return Held(closed_after, bytes(got[skip:]).split(b"\r\n", 1)[0].decode("latin-1")[:40])


async def sample_health(t: Target, until: float, into: list[float]) -> int:
    """``GET /health`` on a fresh connection every ``HEALTH_EVERY_S`` until loop time ``until``; failures."""
    loop = asyncio.get_running_loop()
    failures = 0
    while loop.time() < until:
        reply = await exchange(t.port, request_head("GET", "/health", t.port, {}), within=10)
        if reply.status == 200:
            into.append(reply.seconds * 1000)
        else:
            failures += 1
        await asyncio.sleep(HEALTH_EVERY_S)
    return failures


async def hygiene(targets: list[Target], args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    for t in targets:  # /health on an idle server, for comparison
        await sample_health(t, loop.time() + 2.0, t.health_idle_ms)
    long_s = int(args.long)
    print(
        f"  holding {args.hold} connections per kind per server for up to {args.cap:g} s; long checks take"
        f" {long_s} s ...",
        flush=True,
    )
    start = loop.time()

    async def per_target(t: Target) -> None:
        holds = []
        for kind in HOLD_KINDS:  # opened kind by kind, a batch per server, so no backlog overflows
            holds.append(asyncio.gather(*(hold_one(t, kind, args.cap) for _ in range(args.hold))))
            await asyncio.sleep(0.2)
        longs = asyncio.gather(check_long_wait(t, long_s), check_long_sse(t, long_s), check_slow_upload(t, long_s))
        sampled = asyncio.ensure_future(sample_health(t, start + args.cap + 1.0, t.health_during_ms))
        held = await asyncio.gather(*holds)
        t.hold = dict(zip(HOLD_KINDS, held, strict=True))
        t.features["long_wait"], t.features["long_sse"], t.features["slow_upload"] = await longs
        t.health_failures = await sampled

    await asyncio.gather(*(per_target(t) for t in targets))
    print(f"  hygiene phase took {loop.time() - start:.0f} s", flush=True)


# --------------------------------------------------------------------------------------------
# (b) Throughput


@dataclass
class Load:
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    server_cpu_s: float | None
    other_cpu_s: float | None  # what the rest of the machine used meanwhile (not server, generator, this script)
    wall_s: float

    @property
    def other_share(self) -> float | None:
        """The machine's other work during the run, in cores (1.0: one core busy)."""
        return None if self.other_cpu_s is None or not self.wall_s else self.other_cpu_s / self.wall_s


def measure_load(t: Target, path: str, args: argparse.Namespace, duration: float) -> Load:
    headers = {} if path == "/health" else t.auth
    pids = cpu.process_group(t.server.pid or 0)
    before, busy0 = cpu.cpu_by_pid(pids), cpu.machine_busy_seconds()
    own0, kids0, wall0 = cpu.own_cpu_seconds(), cpu.children_cpu_seconds(), time.perf_counter()
    result = serving_overhead.run_load(args.wrk, t.port, path, headers, args, duration)
    wall = time.perf_counter() - wall0
    after = cpu.cpu_by_pid(cpu.process_group(t.server.pid or 0))
    server_cpu = cpu.cpu_used(before, after)
    generator = cpu.children_cpu_seconds() - kids0 + cpu.own_cpu_seconds() - own0
    busy = cpu.minus(cpu.machine_busy_seconds(), busy0)
    other = None if busy is None or server_cpu is None else max(0.0, busy - server_cpu - generator)
    return Load(result.rps, result.p50_ms, result.p99_ms, result.requests, result.errors, server_cpu, other, wall)


LOAD_PATHS = ("/health", "/v1/predictions/{id}")


def throughput(targets: list[Target], args: argparse.Namespace) -> None:
    for t in targets:  # warm-up, not recorded
        for name in LOAD_PATHS:
            measure_load(t, name.replace("{id}", t.prediction_id), args, 1)
    for r in range(args.load_rounds):
        if args.quiet_wait > 0:
            share = asyncio.run(cpu.wait_until_quiet(args.quiet_load, args.quiet_wait, 1.0))
            if share is not None and share > args.quiet_load:
                print(f"  machine still busy ({share:.0%} of a core) after {args.quiet_wait:g} s; measuring anyway")
        shift = r % len(targets)
        for t in targets[shift:] + targets[:shift]:
            for name in LOAD_PATHS if r % 2 == 0 else LOAD_PATHS[::-1]:
                load = measure_load(t, name.replace("{id}", t.prediction_id), args, args.duration)
                t.loads.setdefault(name, []).append(load)
                print(
                    f"  round {r + 1}/{args.load_rounds} {t.variant.label:<28} GET {name:<22}"
                    f" {load.rps:>9,.0f} req/s  p99 {report.fmt(load.p99_ms)} ms  errors {load.errors}"
                    f"  other load {report.fmt(load.other_share, '.0%')}",
                    flush=True,
                )


# --------------------------------------------------------------------------------------------
# Report


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def hold_cell(held: list[Held], cap: float) -> str:
    if not held:
        return "-"
    closed = sorted(h.closed_after for h in held if h.closed_after is not None)
    answers = sorted({h.answer.split(" ", 2)[1] for h in held if h.answer.startswith("HTTP/")})
    suffix = f" ({'/'.join(answers)})" if answers else ""
    if not closed:
        return f"open >{cap:g} s"
    median = statistics.median(closed)
    cell = f"{median:.1f} s{suffix}"
    if len(closed) < len(held):
        cell += f", {len(held) - len(closed)}/{len(held)} open"
    return cell


def summarize(t: Target, cap: float) -> dict[str, Any]:
    loads: dict[str, Any] = {}
    for name, rounds in t.loads.items():
        per_request = [
            ld.server_cpu_s / ld.requests * 1e6 for ld in rounds if ld.server_cpu_s is not None and ld.requests
        ]
        loads[name] = {
            "rps": stats.median_or_none(ld.rps for ld in rounds),
            "rps_rounds": [round(ld.rps, 1) for ld in rounds],
            "p50_ms": stats.median_or_none(ld.p50_ms for ld in rounds),
            "p99_ms": stats.median_or_none(ld.p99_ms for ld in rounds),
            "server_cpu_us_per_request": stats.median_or_none(per_request),
            "other_load": stats.median_or_none(ld.other_share for ld in rounds),
            "other_load_rounds": [None if ld.other_share is None else round(ld.other_share, 2) for ld in rounds],
            "requests": sum(ld.requests for ld in rounds),
            "errors": sum(ld.errors for ld in rounds),
        }
    during = sorted(t.health_during_ms)
    return {
        "key": t.variant.key,
        "label": t.variant.label,
        "command": t.server.cmd,
        "hold": {
            kind: {
                "cell": hold_cell(held, cap),
                "closed_after_s": [None if h.closed_after is None else round(h.closed_after, 2) for h in held],
                "answers": sorted({h.answer for h in held if h.answer}),
            }
            for kind, held in t.hold.items()
        },
        "health_idle_p50_ms": stats.median_or_none(t.health_idle_ms),
        "health_during": {
            "n": len(during),
            "p50_ms": stats.percentile(during, 50) if during else None,
            "max_ms": during[-1] if during else None,
            "failures": t.health_failures,
        },
        "features": {k: {"ok": c.ok, "cell": c.cell, "detail": c.detail} for k, c in t.features.items()},
        "load": loads,
    }


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_report(summaries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    md = args.markdown
    shipped = next((s for s in summaries if s["key"] == SHIPPED), None)
    print(
        f"\n(a) hygiene: when the server closed held connections (median of {args.hold} each, from connect;"
        " idle keep-alive: from its one response)"
    )
    rows = []
    for s in summaries:
        h, d = s["hold"], s["health_during"]
        rows.append(
            [
                s["label"],
                *(h[k]["cell"] if k in h else "-" for k in HOLD_KINDS),
                report.fmt(s["health_idle_p50_ms"]),
                f"{report.fmt(d['p50_ms'])} / {report.fmt(d['max_ms'])}",
                f"{d['failures']}/{d['n'] + d['failures']}",
            ]
        )
    header = ["server", *HOLD_KINDS, "/health idle p50 ms", "/health held p50/max ms", "/health failed"]
    print(report.table(header, rows, markdown=md))

    rounds = f"{args.load_rounds} interleaved rounds of {args.duration:g} s"
    print(f"\n(b) throughput: medians of {rounds}, {args.loadgen_desc}; other load in % of one core")
    rows = []
    for s in summaries:
        row = [s["label"]]
        for name in LOAD_PATHS:
            ld = s["load"].get(name, {})
            base = (shipped or {}).get("load", {}).get(name, {})
            row += [
                report.fmt(ld.get("rps"), 0),
                _ratio(ld.get("rps"), base.get("rps")),
                f"{report.fmt(ld.get('p50_ms'))} / {report.fmt(ld.get('p99_ms'))}",
                report.fmt(ld.get("server_cpu_us_per_request"), 0),
            ]
        row.append(str(sum(ld.get("errors", 0) for ld in s["load"].values())))
        others = [ld["other_load"] for ld in s["load"].values() if ld.get("other_load") is not None]
        row.append(report.fmt(max(others) if others else None, ".0%"))
        rows.append(row)
    header = ["server"]
    for name in ("/health", "GET prediction"):
        header += [f"{name} req/s", "vs shipped", "p50 / p99 ms", "CPU µs/req"]
    header += ["errors", "other load"]
    print(report.table(header, rows, markdown=md))

    print(f"\n(c) what fluxserve needs (long = {int(args.long)} s, longer than the body idle timeout)")
    names = {
        "prefer_wait": "Prefer: wait",
        "sse": "SSE",
        "upload": "upload",
        "long_wait": "long Prefer: wait",
        "long_sse": "long SSE",
        "slow_upload": "slow upload",
    }
    rows = [[s["label"], *(s["features"].get(k, {}).get("cell", "-") for k in names)] for s in summaries]
    print(report.table(["server", *names.values()], rows, markdown=md))
    for s in summaries:
        for k, f in s["features"].items():
            if not f["ok"]:
                print(f"  {s['label']}: {names[k]} failed: {f['cell']} | {f['detail'][:300]}")
    print("\nsettings:")
    for s in summaries:
        print(f"  {s['label']}: {VARIANTS[s['key']].settings(args.deadlines)}")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s head / 4 s body deadlines, short load")
    p.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--duration", type=float, default=4, help="seconds of load per server per path per round")
    p.add_argument("--load-rounds", type=int, default=3, help="interleaved load rounds (medians are reported)")
    p.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections of the load")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto", help="auto: wrk if on PATH")
    p.add_argument("--header-timeout", type=float, help="request head deadline, s (default: fluxserve's, 10)")
    p.add_argument("--body-idle-timeout", type=float, help="body idle deadline, s (default: fluxserve's, 30)")
    p.add_argument("--keep-alive", type=float, help="keep-alive idle timeout, s (default: fluxserve's, 5)")
    p.add_argument("--hold", type=int, default=50, help="connections held per kind per server in (a)")
    p.add_argument("--cap", type=float, help="seconds a held connection is watched (default: body idle + 15)")
    p.add_argument(
        "--quiet-load",
        type=float,
        default=0.5,
        help="before each load round, wait for the machine's other work to be below this many cores ...",
    )
    p.add_argument("--quiet-wait", type=float, default=10, help="... for at most this many seconds (0: do not wait)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the servers' venv (created if missing)")
    p.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the server logs and data")
    args = p.parse_args(argv)
    from fluxserve.config import Settings

    fields = Settings.model_fields
    quick = {"header_timeout": 2.0, "body_idle_timeout": 4.0, "keep_alive": 2.0}
    for name, setting in (
        ("header_timeout", "header_timeout_seconds"),
        ("body_idle_timeout", "body_idle_timeout_seconds"),
        ("keep_alive", "keep_alive_seconds"),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick[name] if args.quick else float(fields[setting].default))
    if args.quick:
        args.duration, args.load_rounds, args.hold = 2, 1, 10
    args.deadlines = Deadlines(args.header_timeout, args.body_idle_timeout, args.keep_alive)
    args.long = int(args.body_idle_timeout) + (3 if args.quick else 5)
    if args.cap is None:
        args.cap = args.body_idle_timeout + (6 if args.quick else 15)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in VARIANTS]
    if unknown or not args.servers:
        p.error(f"--servers takes {', '.join(VARIANTS)}; got {unknown or 'none'}")
    if args.duration <= 0 or args.load_rounds < 1 or args.connections < 1 or args.hold < 1:
        p.error("counts and durations must be positive")
    return args


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    found = ensure_venv(args.venv.resolve())
    args.wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and not args.wrk:
        raise SetupError("--loadgen wrk but wrk is not on PATH (apt-get install -y wrk)")
    args.loadgen_desc = (
        f"{serving_overhead.wrk_version(args.wrk)} -t{args.threads} -c{args.connections}"
        if args.wrk
        else f"python asyncio raw sockets, {args.connections} connections"
    )
    d = args.deadlines
    print(f"machine: {os.cpu_count()} CPUs (os.cpu_count()), {platform.platform()}")
    print(
        "servers' venv {venv}: Python {python}, fluxserve {fluxserve} from {source}, uvicorn {uvicorn} (h11 {h11},"
        " httptools {httptools}, uvloop {uvloop}), starlette {starlette}, fastapi {fastapi}, hypercorn {hypercorn},"
        " granian {granian}; torch installed: {torch_installed}".format(venv=args.venv, **found)
    )
    print(f"deadlines: head {d.header:g} s, body idle {d.body_idle:g} s, keep-alive {d.keep_alive:g} s")
    print(f"load: {args.loadgen_desc}, {args.duration:g} s per server per path, {args.load_rounds} round(s)")
    print("Starting servers ...", flush=True)
    targets = [make_target(VARIANTS[key], args.venv.resolve(), d, workdir) for key in args.servers]
    with running(targets):
        print("(c) Prefer: wait, SSE, upload ...", flush=True)
        asyncio.run(quick_checks(targets))
        if not all(t.prediction_id for t in targets):
            bad = [t for t in targets if not t.prediction_id]
            raise SetupError(
                "no prediction to GET on " + ", ".join(t.variant.label for t in bad) + "\n" + bad[0].server.log_tail()
            )
        print("(a) hygiene ...", flush=True)
        asyncio.run(hygiene(targets, args))
        print("(b) throughput ...", flush=True)
        throughput(targets, args)
    summaries = [summarize(t, args.cap) for t in targets]
    print(f"\n=== HTTP servers for fluxserve's API, {os.cpu_count()} CPU cores, loopback ===")
    print_report(summaries, args)
    if args.json:
        report.write_json(
            args.json,
            {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "venv": found,
                "load_generator": args.loadgen_desc,
                "deadlines": d.__dict__,
                "settings": {k: getattr(args, k) for k in ("duration", "load_rounds", "connections", "hold", "cap")},
                "results": summaries,
            },
        )
        print(f"JSON written to {args.json}")

    problems = [
        f"{s['label']}: {sum(ld['errors'] for ld in s['load'].values())} errors under load"
        for s in summaries
        if any(ld["errors"] for ld in s["load"].values())
    ]
    for s in summaries:
        if s["key"] != SHIPPED:
            continue
        problems += [f"{s['label']}: {k} failed" for k, f in s["features"].items() if not f["ok"]]
        problems += [f"{s['label']}: {k} not closed" for k, h in s["hold"].items() if None in h["closed_after_s"]]
        if s["health_during"]["failures"]:
            problems.append(f"{s['label']}: /health failed while connections were held")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fluxserve-http-servers-"))
    try:
        return benchmark(args, workdir)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_logs:
            print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
