#!/usr/bin/env python3
"""Serving overhead: fluxserve vs Cog's own HTTP server, both serving the same no-op predictor.

One run starts every server itself (subprocesses on free loopback ports, temporary data dirs),
warms them up, then measures them interleaved round by round with the same load generator:

a. create-and-wait latency, sequential requests from one keep-alive client:
   fluxserve ``POST /v1/models/fluxserve-fixtures/noop/predictions`` with ``Prefer: wait``
   vs Cog ``POST /predictions`` (synchronous);
b. GET throughput under concurrent load (``wrk`` when on PATH, else a built-in asyncio
   raw-socket generator): fluxserve ``GET /v1/predictions/{id}`` (authenticated, an existing
   succeeded prediction) vs Cog ``GET /health-check``. fluxserve ``GET /health`` (no auth, no
   database) is measured too, as a reference for the bare framework cost.

The fluxserve side runs once per ``--sync-modes`` entry (``FLUXSERVE_SQLITE_SYNCHRONOUS``).

Cog runs without Docker from ``benchmarks/.cog-venv`` (created on first use with
``pip install cog==COG_VERSION``) as::

    cd benchmarks/cog_noop
    PATH=<venv>/bin:$PATH COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT=<port> \
        <venv>/bin/python -m cog.server.http --host 127.0.0.1

Cog >= 0.17 serves through coglet (a Rust HTTP server) that spawns its Python worker as
``python -c 'import coglet; ...'`` resolved on PATH, so the venv's ``bin`` must come first on
PATH. No cog.yaml is needed; without ``.cog/openapi_schema.json`` (written by ``cog build``)
coglet skips schema validation of inputs, which only makes the Cog side cheaper.

Run ``python benchmarks/serving_overhead.py --help``; ``--quick`` is a short smoke run.
Exit status: 0 ok, 1 some requests failed, 2 a server failed to start or the Cog venv could not
be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, str(BENCH_DIR))
from harness import SetupError, processes, report, stats  # noqa: E402
from harness.processes import HOST, ServerProcess  # noqa: E402

COG_VERSION = "0.23.1"
COG_APP_DIR = BENCH_DIR / "cog_noop"
DEFAULT_COG_VENV = BENCH_DIR / ".cog-venv"
FLUX_MODEL_PATH = "/v1/models/fluxserve-fixtures/noop/predictions"
PROMPT = "x"
CREATE_BODY = json.dumps({"input": {"prompt": PROMPT}}).encode()
START_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 30.0
MAX_BUSY_RETRIES = 1000


# --------------------------------------------------------------------------------------------
# Servers


def cog_ready(server: ServerProcess) -> bool:
    status, body = processes.http_get(server.port, "/health-check")
    state = json.loads(body).get("status") if status == 200 else None
    if state in ("SETUP_FAILED", "DEFUNCT"):
        raise SetupError(f"{server.label} setup failed: {body[:500]!r}")
    return state == "READY"


def fluxserve_server(sync_mode: str, workdir: Path) -> tuple[ServerProcess, str]:
    data_dir = workdir / f"fluxserve-{sync_mode.lower()}"
    data_dir.mkdir(parents=True)
    # Always the SQLite store in the temp data dir. The per-key rate limits are lifted: this measures the
    # serving path, and one key polling thousands of times a second would otherwise be answered 429.
    env = processes.fluxserve_env(
        {
            "FLUXSERVE_SQLITE_SYNCHRONOUS": sync_mode,
            "FLUXSERVE_DATABASE_URL": None,
            "FLUXSERVE_RATE_LIMIT_CREATE": "10000000/minute",
            "FLUXSERVE_RATE_LIMIT_OTHER": "100000000/minute",
        },
        fixtures=True,
    )
    key = processes.create_key(env, "--data-dir", str(data_dir))
    server = processes.fluxserve_server(
        f"fluxserve[{sync_mode}]",
        env,
        "--data-dir",
        str(data_dir),
        log_path=workdir / f"fluxserve-{sync_mode.lower()}.log",
        cwd=workdir,
    )
    return server, key


def cog_server(venv: Path, workdir: Path) -> ServerProcess:
    port = processes.free_port()
    env = {
        **os.environ,
        # coglet spawns its worker as `python -c ...` found on PATH: it must be the venv's python.
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "PORT": str(port),
    }
    env.pop("PYTHONPATH", None)
    return ServerProcess(
        label="Cog",
        cmd=[str(venv / "bin" / "python"), "-m", "cog.server.http", "--host", HOST],
        env=env,
        cwd=COG_APP_DIR,
        port=port,
        log_path=workdir / "cog.log",
        ready=cog_ready,
    )


def cog_versions(venv: Path) -> tuple[str, str] | None:
    """(cog, coglet) versions installed in ``venv``, or None."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('cog'), m.version('coglet'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    parts = out.stdout.split()
    return (parts[0], parts[1]) if out.returncode == 0 and len(parts) == 2 else None


def ensure_cog_venv(venv: Path, version: str) -> tuple[str, str]:
    """Create ``venv`` with ``cog==version`` unless it already has it; (cog, coglet) versions."""
    found = cog_versions(venv)
    if found and found[0] == version:
        return found
    print(f"Setting up {venv} with cog=={version} ...", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run([*pip, f"cog=={version}"], timeout=900, check=False)
    found = cog_versions(venv)
    if result.returncode != 0 or not found or found[0] != version:
        raise SetupError(f"could not install cog=={version} into {venv}")
    return found


# --------------------------------------------------------------------------------------------
# Targets and measurements


@dataclass
class Target:
    """One server as the benchmark sees it."""

    label: str
    server: ServerProcess
    create_path: str
    create_headers: dict[str, str]
    create_status: int
    busy_status: int | None = None
    busy_retries: int = 0
    get_path: str = ""
    get_headers: dict[str, str] = field(default_factory=dict)
    conn: http.client.HTTPConnection | None = None
    latencies_ms: list[float] = field(default_factory=list)
    create_errors: int = 0
    load_rounds: list[LoadResult] = field(default_factory=list)
    phases_ms: dict[str, list[float]] = field(default_factory=dict)
    last_wall: tuple[float, float] = (0.0, 0.0)

    @property
    def port(self) -> int:
        return self.server.port

    def connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT_S)
        return self.conn

    def create(self) -> tuple[float, dict[str, Any] | None]:
        """One create-and-wait over the keep-alive connection: (ms, the prediction or None if it failed).

        A ``busy_status`` answer (Cog's 409 "At capacity": coglet frees its slot just after sending
        the previous response) is retried at once, up to ``MAX_BUSY_RETRIES`` times, and the time
        counts: it is what a client waits for its result.
        """
        conn = self.connection()
        wall0 = time.time()
        t0 = time.perf_counter()
        for _ in range(MAX_BUSY_RETRIES + 1):
            conn.request("POST", self.create_path, body=CREATE_BODY, headers=self.create_headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != self.busy_status:
                break
            self.busy_retries += 1
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        self.last_wall = (wall0, time.time())
        if resp.status != self.create_status:
            return elapsed_ms, None
        pred = json.loads(body)
        if pred.get("status") != "succeeded" or pred.get("output") != PROMPT:
            return elapsed_ms, None
        return elapsed_ms, pred


@dataclass
class LoadResult:
    """One load-generator run against one URL."""

    rps: float
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


def rotated(items: list[Target], shift: int) -> list[Target]:
    """``items`` rotated by ``shift``: each round starts with a different server."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def warm_up_creates(target: Target, count: int) -> dict[str, Any]:
    """``count`` create-and-waits, not recorded; the last prediction (fails loudly if any fails)."""
    pred: dict[str, Any] | None = None
    for _ in range(max(1, count)):
        _, pred = target.create()
        if pred is None:
            raise SetupError(f"{target.label}: warm-up create did not succeed\n{target.server.log_tail()}")
    assert pred is not None
    return pred


# fluxserve stamps created_at just before its INSERT, started_at just before the claiming UPDATE
# and completed_at just before the finishing UPDATE.
PHASES = (
    ("request->created_at", "HTTP, auth, dependencies, body"),
    ("created->started", "INSERT, wake the worker"),
    ("started->completed", "claim UPDATE, run the predictor"),
    ("completed->response", "finish UPDATE, re-read, render"),
)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def record_phases(target: Target, pred: dict[str, Any]) -> None:
    """Split a fluxserve create+wait by the prediction's own timestamps (same machine, same clock)."""
    stamps = [_timestamp(pred.get(k)) for k in ("created_at", "started_at", "completed_at")]
    if any(t is None for t in stamps):
        return  # Cog's sync response carries no timestamps
    points = [target.last_wall[0], *stamps, target.last_wall[1]]
    for (name, _), start, end in zip(PHASES, points, points[1:], strict=False):
        assert start is not None and end is not None
        target.phases_ms.setdefault(name, []).append((end - start) * 1000.0)


def measure_latency(targets: list[Target], total: int, rounds: int) -> None:
    """``total`` sequential create-and-waits per target, split into interleaved rounds."""
    per_round = [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]
    for r, count in enumerate(per_round):
        for target in rotated(targets, r):
            for _ in range(count):
                try:
                    ms, pred = target.create()
                except (OSError, http.client.HTTPException):
                    target.create_errors += 1
                    target.conn = None
                    continue
                if pred is None:
                    target.create_errors += 1
                else:
                    target.latencies_ms.append(ms)
                    record_phases(target, pred)
        done = sum(per_round[: r + 1])
        print(f"  latency round {r + 1}/{rounds}: {done}/{total} requests per server", flush=True)


# ---- load generators


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _WRK_UNITS[m.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Requests/s, counts and p50/p99 from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not rps or not total:
        raise ValueError(f"unexpected wrk output:\n{output}")
    dist = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        errors=errors,
        p50_ms=_wrk_ms(dist["50"]) if "50" in dist else None,
        p99_ms=_wrk_ms(dist["99"]) if "99" in dist else None,
    )


def run_wrk(
    wrk: str, port: int, path: str, headers: dict[str, str], args: argparse.Namespace, duration: int
) -> LoadResult:
    cmd = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://{HOST}:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


async def _python_load(port: int, path: str, headers: dict[str, str], connections: int, duration: float) -> LoadResult:
    """A closed-loop HTTP/1.1 keep-alive GET generator on raw asyncio streams."""
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (head + "\r\n").encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def one_connection() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(request)
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ", 2)[1])
                fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                await reader.readexactly(int(fields["content-length"]))
                latencies.append((time.perf_counter() - t0) * 1000.0)
                if status != 200:
                    errors += 1
                if fields.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
            except (OSError, ValueError, KeyError, IndexError, asyncio.IncompleteReadError):
                errors += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        rps=len(latencies) / elapsed,
        requests=len(latencies),
        errors=errors,
        p50_ms=stats.percentile(latencies, 50) if latencies else None,
        p99_ms=stats.percentile(latencies, 99) if latencies else None,
    )


def run_load(
    wrk: str | None, port: int, path: str, headers: dict[str, str], args: argparse.Namespace, duration: float
) -> LoadResult:
    if wrk:
        return run_wrk(wrk, port, path, headers, args, max(1, round(duration)))
    return asyncio.run(_python_load(port, path, headers, args.connections, duration))


# --------------------------------------------------------------------------------------------
# Report


def summarize(target: Target) -> dict[str, Any]:
    lat = sorted(target.latencies_ms)
    loads = target.load_rounds
    return {
        "label": target.label,
        "create_wait": {
            "n": len(lat),
            "errors": target.create_errors,
            "p50_ms": stats.percentile(lat, 50) if lat else None,
            "p95_ms": stats.percentile(lat, 95) if lat else None,
            "p99_ms": stats.percentile(lat, 99) if lat else None,
            "mean_ms": statistics.fmean(lat) if lat else None,
            "busy_retries": target.busy_retries,
            "phases_median_ms": {k: statistics.median(v) for k, v in target.phases_ms.items()},
        },
        "get": {
            "path": target.get_path,
            "rps": stats.median_or_none(r.rps for r in loads),
            "rps_rounds": [round(r.rps, 1) for r in loads],
            "p50_ms": stats.median_or_none(r.p50_ms for r in loads),
            "p99_ms": stats.median_or_none(r.p99_ms for r in loads),
            "requests": sum(r.requests for r in loads),
            "errors": sum(r.errors for r in loads),
        },
    }


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def print_table(flux: list[dict[str, Any]], cog: dict[str, Any], reference: LoadResult | None) -> None:
    rows: list[tuple[str, str, str, int]] = [
        ("create+wait p50 (ms)", "create_wait", "p50_ms", 2),
        ("create+wait p95 (ms)", "create_wait", "p95_ms", 2),
        ("create+wait p99 (ms)", "create_wait", "p99_ms", 2),
        ("create+wait mean (ms)", "create_wait", "mean_ms", 2),
        ("GET requests/s", "get", "rps", 0),
        ("GET p50 (ms)", "get", "p50_ms", 2),
        ("GET p99 (ms)", "get", "p99_ms", 2),
    ]
    header = ["metric", *(f["label"] for f in flux), "Cog", *(f"{f['label']}/Cog" for f in flux)]
    cells = []
    for name, group, key, digits in rows:
        values = [f[group][key] for f in flux]
        cells.append(
            [
                name,
                *(report.fmt(v, digits) for v in values),
                report.fmt(cog[group][key], digits),
                *(ratio(v, cog[group][key]) for v in values),
            ]
        )
    print(report.table(header, cells))
    print("(ratios are fluxserve/Cog: above 1 means fluxserve is slower for latency rows, faster for requests/s)")
    print(
        f"GET paths: fluxserve {flux[0]['get']['path']} (Bearer auth, SQLite read);"
        f" Cog {cog['get']['path']} (no auth, no storage)"
    )
    for s in [*flux, cog]:
        if s["create_wait"]["busy_retries"]:
            print(
                f"{s['label']} answered busy (409 'At capacity') {s['create_wait']['busy_retries']} times during"
                f" the {s['create_wait']['n']} measured creates; retried at once, included in the latency"
            )
    for s in flux:
        phases = s["create_wait"]["phases_median_ms"]
        if phases:
            parts = [f"{name} ({what}) {phases[name]:.2f}" for name, what in PHASES if name in phases]
            print(f"{s['label']} create+wait phases, median ms: " + " | ".join(parts))
    if reference is not None:
        print(
            f"reference: {flux[0]['label']} GET /health (no auth, no DB): {report.fmt(reference.rps, 0)} req/s,"
            f" p50 {report.fmt(reference.p50_ms)} ms, p99 {report.fmt(reference.p99_ms)} ms"
        )


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 50 requests, 3 s load, 1 load round")
    p.add_argument("-n", "--requests", type=int, default=1000, help="measured create+wait requests per server")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured create+wait requests per server first")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (requests are split among them)")
    p.add_argument("--duration", type=int, default=10, help="seconds of GET load per server per round")
    p.add_argument("--load-rounds", type=int, default=2, help="interleaved GET load rounds (median is reported)")
    p.add_argument("--connections", type=int, default=32, help="concurrent connections of the load generator")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument(
        "--loadgen", choices=["auto", "wrk", "python"], default="auto", help="auto: wrk if on PATH, else python"
    )
    p.add_argument(
        "--sync-modes",
        default="NORMAL,FULL",
        help="comma-separated FLUXSERVE_SQLITE_SYNCHRONOUS values, one fluxserve server each",
    )
    p.add_argument("--no-reference", action="store_true", help="skip the fluxserve GET /health reference run")
    p.add_argument("--cog-venv", type=Path, default=DEFAULT_COG_VENV, help="venv holding cog (created if missing)")
    p.add_argument("--cog-version", default=COG_VERSION, help="cog version to install into --cog-venv")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with server logs and data")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.rounds = 50, 10, 2
        args.duration, args.load_rounds = 3, 1
    args.sync_modes = [m.strip().upper() for m in args.sync_modes.split(",") if m.strip()]
    bad = [m for m in args.sync_modes if m not in ("OFF", "NORMAL", "FULL")]
    if bad or not args.sync_modes:
        p.error(f"--sync-modes takes OFF, NORMAL and/or FULL, got {args.sync_modes}")
    if args.requests < 1 or args.rounds < 1 or args.duration < 1 or args.load_rounds < 1 or args.connections < 1:
        p.error("counts and durations must be positive")
    args.rounds = min(args.rounds, args.requests)
    return args


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


@contextlib.contextmanager
def running(servers: list[ServerProcess]) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(START_TIMEOUT_S)
            print(f"  {server.label} ready on {HOST}:{server.port}", flush=True)
        yield
    finally:
        for server in servers:
            server.stop()


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    from importlib.metadata import version as dist_version

    cog_ver, coglet_ver = ensure_cog_venv(args.cog_venv.resolve(), args.cog_version)
    wrk = shutil.which("wrk") if args.loadgen in ("auto", "wrk") else None
    if args.loadgen == "wrk" and not wrk:
        raise SetupError("--loadgen wrk but wrk is not on PATH (apt-get install -y wrk)")
    loadgen = (
        f"{wrk_version(wrk)} -t{args.threads} -c{args.connections}"
        if wrk
        else f"python asyncio raw sockets, {args.connections} connections"
    )

    print(f"machine: {os.cpu_count()} CPUs (os.cpu_count()), {platform.platform()}, Python {platform.python_version()}")
    print(f"fluxserve {dist_version('fluxserve')}; cog {cog_ver} (coglet {coglet_ver}) from {args.cog_venv}")
    print(f"SQLite synchronous mode(s) for fluxserve: {', '.join(args.sync_modes)}")
    print(
        f"create+wait: {args.requests} sequential keep-alive requests per server after {args.warmup} warm-up,"
        f" {args.rounds} interleaved rounds"
    )
    print(f"GET load: {loadgen}, {args.duration} s per server per round, {args.load_rounds} interleaved round(s)")
    print("Starting servers ...", flush=True)

    flux: list[tuple[ServerProcess, str]] = [fluxserve_server(mode, workdir) for mode in args.sync_modes]
    cog = cog_server(args.cog_venv.resolve(), workdir)
    servers = [s for s, _ in flux] + [cog]
    targets: list[Target] = []
    reference: LoadResult | None = None
    with running(servers):
        for server, key in flux:
            auth = {"Authorization": f"Bearer {key}"}
            targets.append(
                Target(
                    label=server.label,
                    server=server,
                    create_path=FLUX_MODEL_PATH,
                    create_headers={**auth, "Content-Type": "application/json", "Prefer": "wait"},
                    create_status=201,
                    get_headers=auth,
                )
            )
        cog_target = Target(
            label="Cog",
            server=cog,
            create_path="/predictions",
            create_headers={"Content-Type": "application/json"},
            create_status=200,
            busy_status=409,
            get_path="/health-check",
        )
        targets.append(cog_target)

        print("Warming up ...", flush=True)
        for target in targets:
            pred = warm_up_creates(target, args.warmup)
            if target is not cog_target:
                target.get_path = f"/v1/predictions/{pred['id']}"
                status, body = processes.http_get(target.port, target.get_path, target.get_headers)
                if status != 200 or json.loads(body).get("status") != "succeeded":
                    raise SetupError(f"{target.label}: GET {target.get_path} -> {status} {body[:300]!r}")
            run_load(wrk, target.port, target.get_path, target.get_headers, args, duration=1)
            target.busy_retries = 0

        print("Measuring create+wait latency ...", flush=True)
        measure_latency(targets, args.requests, args.rounds)

        print("Measuring GET throughput ...", flush=True)
        for r in range(args.load_rounds):
            for target in rotated(targets, r):
                result = run_load(wrk, target.port, target.get_path, target.get_headers, args, args.duration)
                target.load_rounds.append(result)
                print(
                    f"  round {r + 1}/{args.load_rounds} {target.label:<18} GET {target.get_path}:"
                    f" {result.rps:,.0f} req/s, errors {result.errors}",
                    flush=True,
                )
        if not args.no_reference:
            reference = run_load(wrk, targets[0].port, "/health", {}, args, args.duration)
        for target in targets:
            if target.conn is not None:
                target.conn.close()

    summaries = [summarize(t) for t in targets]
    print()
    print(f"=== Serving overhead, no-op predictor, {os.cpu_count()} CPU cores, loopback ===")
    print_table(summaries[:-1], summaries[-1], reference)

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu_count": os.cpu_count(),
                    "platform": platform.platform(),
                    "fluxserve_version": dist_version("fluxserve"),
                    "cog_version": cog_ver,
                    "coglet_version": coglet_ver,
                    "load_generator": loadgen,
                    "sqlite_synchronous": args.sync_modes,
                    "settings": {
                        k: getattr(args, k)
                        for k in ("requests", "warmup", "rounds", "duration", "load_rounds", "connections", "threads")
                    },
                    "results": summaries,
                    "reference_fluxserve_health": None if reference is None else reference.__dict__,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"JSON written to {args.json}")

    failed = [
        f"{s['label']}: {s['create_wait']['errors']} create errors, {s['get']['errors']} GET errors"
        for s in summaries
        if s["create_wait"]["errors"] or s["get"]["errors"]
    ]
    if failed:
        print("FAILED requests:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fluxserve-bench-"))
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
