#!/usr/bin/env python3
"""Load test: many concurrent clients create, poll, list and cancel predictions against one server.

Each of ``--clients`` clients (default 50) makes ``--requests`` requests (default 1,000) back to back
on its own keep-alive connection, all with one key, as a gateway would. Each request is one of:

* ``create``: ``POST /v1/models/{model}/predictions``. Most creates go to
  ``fluxserve-fixtures/writes-image`` (a 16×16 PNG written to blob storage, so outputs, output URLs
  and ``image_count`` are exercised); ``--flux-share`` of them (default 2%) to
  ``black-forest-labs/flux-schnell``, which ``--demo`` serves from the tiny random FLUX pipeline
  (512×512, one step: about 0.1 s of CPU each, against about 2 ms for the fixture);
* ``poll``: ``GET /v1/predictions/{id}`` of one of the client's own predictions, preferring one it has
  not yet seen finish;
* ``list``: ``GET /v1/predictions`` (the first page: the 100 newest, rendered in full);
* ``cancel``: ``POST /v1/predictions/{id}/cancel`` of one of its own predictions not seen finished.

Then it waits (``--drain-timeout``) until every prediction it created is terminal, and checks:

* no 5xx and no transport error on any request (load, drain or checks);
* no prediction lost: every id a create answered is found by ``GET /v1/predictions/{id}`` and by
  walking ``GET /v1/predictions`` to the end;
* every prediction terminal, and none changed status after a client saw it terminal (a cancel that
  answered ``canceled`` stays canceled).

``429`` is reported apart: ``--start`` runs the server with rate limits far above what this script
can send, so any 429 means the target's limits were in the way, not an error of the server.

It prints, per operation, the status codes and the latency percentiles, and the throughput of the
load phase. The load generator runs on the same machine as the server (and the database), so on a
small machine it takes a good share of the CPU; it prints the CPU time the generator, the server,
PostgreSQL and everything else on the machine used.

Targets: ``--start sqlite|postgres`` starts its own ``fluxserve serve --demo`` (with the fixture
models, a temporary data dir and, for PostgreSQL, a throwaway database made through ``psql`` on a
loopback server) and creates a key with ``fluxserve keys create``; or ``--base-url URL --token KEY``
drives a server already running.

Exit status: 0 every check passed; 1 a check failed; 2 set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
from harness import SetupError, cpu, postgres, processes, report, stats  # noqa: E402

FIXTURE_MODEL = "fluxserve-fixtures/writes-image"
FIXTURE_INPUT: dict[str, Any] = {"count": 1, "size": 16}
FLUX_MODEL = "black-forest-labs/flux-schnell"
FLUX_INPUT: dict[str, Any] = {
    "prompt": "a paper boat on calm water",
    "megapixels": "0.25",
    "aspect_ratio": "1:1",
    "num_inference_steps": 1,
    "output_format": "png",
}
OPERATIONS = ("create", "poll", "list", "cancel")
DEFAULT_MIX = "create=25,poll=55,list=10,cancel=10"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
REQUEST_TIMEOUT_S = 60.0
START_TIMEOUT_S = 90.0
CHECK_CONCURRENCY = 32
DRAIN_SAMPLE = 20
KEEPALIVE_S = 2.0
EXAMPLES_KEPT = 5


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class OpStats:
    """Status codes and latencies of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0

    def add(self, status: int, seconds: float) -> None:
        self.codes[status] += 1
        self.latencies.append(seconds)


@dataclass
class Run:
    """Everything the clients saw."""

    ops: dict[str, OpStats] = field(default_factory=lambda: {op: OpStats() for op in OPERATIONS})
    #: id → status the create answered with.
    created: dict[str, str] = field(default_factory=dict)
    #: id → the terminal status a client saw first (it must never change afterwards).
    seen_terminal: dict[str, str] = field(default_factory=dict)
    #: Requests outside the load phase (drain and checks) that answered 5xx or failed in transport.
    check_errors: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    first_created_at: str | None = None

    def example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(text)


# --------------------------------------------------------------------------------------------
# The clients


class Client:
    """One simulated user: its own connection, its own predictions, its own random stream."""

    def __init__(
        self, index: int, http: httpx.AsyncClient, run: Run, args: argparse.Namespace, weights: list[float]
    ) -> None:
        self.index = index
        self.http = http
        self.run = run
        self.args = args
        self.weights = weights
        self.rng = random.Random(args.seed * 1_000_003 + index)
        self.mine: list[str] = []
        self.pending: list[str] = []  # mine, not yet seen terminal

    async def go(self) -> None:
        for _ in range(self.args.requests):
            op = self.rng.choices(OPERATIONS, self.weights)[0]
            if op != "create" and not self.mine:
                op = "create"  # nothing to poll, list or cancel yet
            await getattr(self, op)()
            if self.args.think_ms:
                await asyncio.sleep(self.rng.uniform(0, 2 * self.args.think_ms) / 1000)

    async def _request(self, op: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        op_stats = self.run.ops[op]
        start = time.perf_counter()
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            op_stats.transport_errors += 1
            self.run.example(f"{op} {method} {url}: {type(exc).__name__}: {exc}")
            return None
        op_stats.add(response.status_code, time.perf_counter() - start)
        if response.status_code >= 500 or (response.status_code >= 400 and response.status_code != 429):
            self.run.example(f"{op} {method} {url}: {response.status_code} {response.text[:300]}")
        return response

    def _saw(self, body: dict[str, Any]) -> None:
        pid, status = body["id"], body["status"]
        if status in TERMINAL:
            self.run.seen_terminal.setdefault(pid, status)
            with contextlib.suppress(ValueError):
                self.pending.remove(pid)

    def _pick(self) -> str:
        return self.rng.choice(self.pending or self.mine)

    async def create(self) -> None:
        flux = self.rng.random() < self.args.flux_share
        model, inputs = (FLUX_MODEL, FLUX_INPUT) if flux else (self.args.model, FIXTURE_INPUT)
        response = await self._request("create", "POST", f"/models/{model}/predictions", json={"input": inputs})
        if response is None or response.status_code != 201:
            return
        body = response.json()
        self.run.created[body["id"]] = body["status"]
        self.run.first_created_at = self.run.first_created_at or body["created_at"]
        self.mine.append(body["id"])
        self.pending.append(body["id"])
        self._saw(body)

    async def poll(self) -> None:
        response = await self._request("poll", "GET", f"/predictions/{self._pick()}")
        if response is not None and response.status_code == 200:
            self._saw(response.json())

    async def list(self) -> None:
        await self._request("list", "GET", "/predictions")

    async def cancel(self) -> None:
        response = await self._request("cancel", "POST", f"/predictions/{self._pick()}/cancel")
        if response is not None and response.status_code == 200:
            self._saw(response.json())


def parse_mix(text: str) -> list[float]:
    """``create=25,poll=55,…`` → weights in OPERATIONS order."""
    weights = dict.fromkeys(OPERATIONS, 0.0)
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise argparse.ArgumentTypeError(f"unknown operation {name!r} in --mix (known: {', '.join(OPERATIONS)})")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--mix: {part!r} is not NAME=NUMBER") from None
    if weights["create"] <= 0:
        raise argparse.ArgumentTypeError("--mix needs create > 0")
    return [weights[op] for op in OPERATIONS]


def _http(args: argparse.Namespace, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=args.api,
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=REQUEST_TIMEOUT_S,
        # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout: at httpx's default (also
        # 5 s) a request can go out on a connection the server is closing, and fail with a ReadError.
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_S
        ),
    )


async def warm_up(args: argparse.Namespace) -> None:
    """One prediction of each model, waited for, so loading the tiny pipeline is not in the timings."""
    async with _http(args, 2) as http:
        models = [(args.model, FIXTURE_INPUT)] + ([(FLUX_MODEL, FLUX_INPUT)] if args.flux_share > 0 else [])
        for model, inputs in models:
            response = await http.post(
                f"/models/{model}/predictions", json={"input": inputs}, headers={"Prefer": "wait=60"}
            )
            if response.status_code not in (201, 202):
                raise SetupError(f"warm-up create of {model} answered {response.status_code}: {response.text[:300]}")
            body = response.json()
            deadline = time.monotonic() + 120
            while body["status"] not in TERMINAL and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                body = (await http.get(f"/predictions/{body['id']}")).json()
            if body["status"] != "succeeded":
                raise SetupError(f"warm-up prediction of {model} ended {body['status']}: {body.get('error')}")


async def load(args: argparse.Namespace, run: Run) -> float:
    """Run the clients; return the seconds the load phase took."""
    weights = parse_mix(args.mix)
    https = [_http(args, 1) for _ in range(args.clients)]
    clients = [Client(i, http, run, args, weights) for i, http in enumerate(https)]
    start = time.perf_counter()
    try:
        await asyncio.gather(*(client.go() for client in clients))
    finally:
        elapsed = time.perf_counter() - start
        for http in https:
            await http.aclose()
    return elapsed


# --------------------------------------------------------------------------------------------
# Drain and checks


async def _get_all(http: httpx.AsyncClient, ids: list[str], run: Run) -> dict[str, dict[str, Any] | int]:
    """GET each id (a few at a time): the body, or the status code when it was not 200."""
    found: dict[str, dict[str, Any] | int] = {}
    gate = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def one(pid: str) -> None:
        async with gate:
            try:
                response = await http.get(f"/predictions/{pid}")
            except httpx.HTTPError as exc:
                run.check_errors.append(f"GET {pid}: {type(exc).__name__}: {exc}")
                return
        if response.status_code >= 500:
            run.check_errors.append(f"GET {pid}: {response.status_code} {response.text[:200]}")
        found[pid] = response.json() if response.status_code == 200 else response.status_code

    await asyncio.gather(*(one(pid) for pid in ids))
    return found


async def drain(args: argparse.Namespace, run: Run) -> tuple[float, list[str]]:
    """Wait until every created prediction is terminal; return the seconds it took and those that are not.

    Polling thousands of ids in a loop would load the server as much as the clients did and slow the very
    worker it waits for. Workers claim oldest first, so it watches only the newest few still waiting and
    reads the rest once those have finished.
    """
    start = time.perf_counter()
    waiting = [pid for pid in run.created if pid not in run.seen_terminal]  # oldest first, as created
    async with _http(args, CHECK_CONCURRENCY) as http:
        while waiting and time.perf_counter() - start < args.drain_timeout:
            sample = waiting[-DRAIN_SAMPLE:]
            found = await _get_all(http, sample, run)
            if all(isinstance(body := found.get(pid), dict) and body["status"] in TERMINAL for pid in sample):
                found = await _get_all(http, waiting, run)
            # Only those still running are waited for: a missing one is reported as lost by verify().
            waiting = [
                pid
                for pid in waiting
                if pid not in found or (isinstance(body := found[pid], dict) and body["status"] not in TERMINAL)
            ]
            if waiting:
                await asyncio.sleep(1.0)
    return time.perf_counter() - start, waiting


async def list_all(http: httpx.AsyncClient, created_after: str | None, run: Run) -> dict[str, str]:
    """Walk ``GET /v1/predictions`` (from the run's first prediction on) to the end: id → status."""
    seen: dict[str, str] = {}
    params = {"created_after": created_after} if created_after else None
    url: str | None = "/predictions"
    while url:
        try:
            response = await http.get(url, params=params)
        except httpx.HTTPError as exc:
            run.check_errors.append(f"list {url}: {type(exc).__name__}: {exc}")
            break
        if response.status_code != 200:
            run.check_errors.append(f"list {url}: {response.status_code} {response.text[:200]}")
            break
        page = response.json()
        for item in page["results"]:
            seen[item["id"]] = item["status"]
        url, params = page["next"], None  # ``next`` is absolute and carries the filter
    return seen


@dataclass
class Verdict:
    """The checks at the end of a run."""

    lost_by_get: list[str]
    lost_by_list: list[str]
    not_terminal: list[str]
    changed_after_terminal: list[str]
    final: Counter[str]
    failed_errors: Counter[str]

    @property
    def ok_predictions(self) -> bool:
        lost = self.lost_by_get or self.lost_by_list
        return not (lost or self.not_terminal or self.changed_after_terminal)


async def verify(args: argparse.Namespace, run: Run) -> Verdict:
    """GET every created id and walk the list: nothing lost, everything terminal, nothing changed."""
    ids = list(run.created)
    after = None
    if run.first_created_at:
        # ``created_after`` is exclusive: start just before the first prediction of this run.
        first = datetime.fromisoformat(run.first_created_at.replace("Z", "+00:00"))
        after = (first - timedelta(seconds=1)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    async with _http(args, CHECK_CONCURRENCY) as http:
        got = await _get_all(http, ids, run)
        listed = await list_all(http, after, run)
    final: Counter[str] = Counter()
    failed_errors: Counter[str] = Counter()
    not_terminal, changed = [], []
    for pid in ids:
        body = got.get(pid)
        if not isinstance(body, dict):
            continue
        final[body["status"]] += 1
        if body["status"] == "failed":
            failed_errors[(body.get("error") or "")[:120]] += 1
        if body["status"] not in TERMINAL:
            not_terminal.append(pid)
        seen = run.seen_terminal.get(pid)
        if seen is not None and seen != body["status"]:
            changed.append(f"{pid}: seen {seen}, now {body['status']}")
    return Verdict(
        lost_by_get=[pid for pid in ids if not isinstance(got.get(pid), dict)],
        lost_by_list=[pid for pid in ids if pid not in listed],
        not_terminal=not_terminal,
        changed_after_terminal=changed,
        final=final,
        failed_errors=failed_errors,
    )


# --------------------------------------------------------------------------------------------
# A server of our own (--start)


@dataclass
class OwnServer:
    """``fluxserve serve --demo`` on a free loopback port, with a temporary data dir (and database)."""

    backend: str
    admin_url: str
    extra_env: dict[str, str]
    keep: bool
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fluxserve-load-")))
    database: str | None = None
    server: processes.ServerProcess | None = None

    def env(self, database_url: str | None) -> dict[str, str]:
        return processes.fluxserve_env(
            {
                "FLUXSERVE_DATABASE_URL": database_url,
                "FLUXSERVE_DATA_DIR": str(self.data_dir),
                # Far above what 50 clients on one machine can send: the run measures the server, not the limiter.
                "FLUXSERVE_RATE_LIMIT_CREATE": "10000000/minute",
                "FLUXSERVE_RATE_LIMIT_OTHER": "100000000/minute",
                "FLUXSERVE_LOG_LEVEL": "warning",
                "HF_HUB_OFFLINE": "1",
                **self.extra_env,
            },
            fixtures=True,
        )

    def start(self) -> tuple[str, str]:
        """Start it; return (API base URL, a new key)."""
        database_url = None
        if self.backend == "postgres":
            self.database = f"fluxserve_load_{secrets.token_hex(4)}"
            database_url = postgres.create_database(self.admin_url, self.database)
        env = self.env(database_url)
        token = processes.create_key(env, "--name", "load")
        self.server = processes.fluxserve_server("the server", env, "--demo", log_path=self.data_dir / "server.log")
        self.server.start()
        self.server.wait_ready(START_TIMEOUT_S, interval=0.2)
        return f"{self.server.base_url}/v1", token

    def cpu_seconds(self) -> float | None:
        pid = self.server.pid if self.server else None
        return cpu.process_cpu_seconds(pid, children=True) if pid is not None else None

    def log_lines(self) -> list[str]:
        return self.server.log_lines() if self.server else []

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=30)
        if self.database is not None:
            postgres.drop_database(self.admin_url, self.database)
        if self.keep:
            print(f"server data dir kept: {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@contextlib.contextmanager
def target(args: argparse.Namespace) -> Iterator[OwnServer | None]:
    """Fill in ``args.api`` and ``args.token``: our own server (stopped afterwards) or the one given."""
    if not args.start:
        args.api = args.base_url.rstrip("/")
        if not args.api.endswith("/v1"):
            args.api += "/v1"
        yield None
        return
    extra = dict(item.split("=", 1) for item in args.server_env)
    server = OwnServer(args.start, args.admin_url, extra, args.keep)
    try:
        args.api, args.token = server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# Report


def print_report(
    args: argparse.Namespace,
    run: Run,
    seconds: float,
    drain_s: float,
    verdict: Verdict,
    cpu_s: dict[str, float | None],
) -> dict[str, Any]:
    """Print the tables; return the same figures as a dict (for --json)."""
    total_requests = sum(len(s.latencies) + s.transport_errors for s in run.ops.values())
    rows: dict[str, dict[str, Any]] = {}
    everything = OpStats()
    for op, op_stats in [*run.ops.items(), ("all", everything)]:
        if op != "all":
            everything.latencies += op_stats.latencies
            everything.codes.update(op_stats.codes)
            everything.transport_errors += op_stats.transport_errors
        lat = sorted(op_stats.latencies)
        codes = op_stats.codes
        rows[op] = {
            "requests": len(lat) + op_stats.transport_errors,
            "2xx": sum(n for c, n in codes.items() if 200 <= c < 300),
            "429": codes.get(429, 0),
            "other_4xx": sum(n for c, n in codes.items() if 400 <= c < 500 and c != 429),
            "5xx": sum(n for c, n in codes.items() if c >= 500),
            "transport_errors": op_stats.transport_errors,
            "p50_ms": stats.percentile(lat, 50) * 1000,
            "p95_ms": stats.percentile(lat, 95) * 1000,
            "p99_ms": stats.percentile(lat, 99) * 1000,
            "max_ms": (lat[-1] * 1000) if lat else float("nan"),
            "per_s": (len(lat) + op_stats.transport_errors) / seconds if seconds else float("nan"),
        }
    target_text = f"own server, {args.start}" if args.start else args.api
    print()
    print(
        f"fluxserve load: {args.clients} clients × {args.requests} requests = {total_requests} requests "
        f"against {target_text}; mix {args.mix}; flux share {args.flux_share:g}"
    )
    now = datetime.now(UTC)
    print(f"host {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, {now:%Y-%m-%d %H:%M}Z")
    print()
    header = [
        "operation",
        "requests",
        "req/s",
        "2xx",
        "429",
        "4xx",
        "5xx",
        "errors",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
    ]
    cells = [
        [
            op,
            str(r["requests"]),
            f"{r['per_s']:.0f}",
            *(str(r[k]) for k in ("2xx", "429", "other_4xx", "5xx", "transport_errors")),
            *(f"{r[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
        ]
        for op, r in rows.items()
    ]
    widths = [10, 9, 8, 8, 6, 6, 6, 7, 9, 9, 9, 9]
    print(report.table(header, cells, widths=widths, sep="", rule="full"))
    print()
    rate = total_requests / seconds
    print(f"load phase: {seconds:.1f} s, {rate:.0f} requests/s, {len(run.created)} predictions created")
    print(f"drain: {drain_s:.1f} s until every prediction was terminal")
    ran = verdict.final.get("succeeded", 0) + verdict.final.get("failed", 0)
    print(f"worker: {ran} predictions ran to the end in load + drain, {ran / (seconds + drain_s):.0f}/s")
    cpu_text = ", ".join(f"{k} {v:.1f} s" for k, v in cpu_s.items() if v is not None)
    if cpu_text:
        print(f"CPU during load + drain: {cpu_text} (of {os.cpu_count()} cores × {seconds + drain_s:.0f} s)")
    print(
        "final states: "
        + ", ".join(f"{status} {n}" for status, n in sorted(verdict.final.items()))
        + f"; lost (GET) {len(verdict.lost_by_get)}, lost (list) {len(verdict.lost_by_list)}, "
        f"not terminal {len(verdict.not_terminal)}, changed after terminal {len(verdict.changed_after_terminal)}"
    )
    for error, n in verdict.failed_errors.most_common(3):
        print(f"  failed ×{n}: {error}")
    for text in run.examples:
        print(f"  example: {text}")
    for text in run.check_errors[:EXAMPLES_KEPT]:
        print(f"  check error: {text}")
    for items, what in (
        (verdict.lost_by_get, "lost (GET)"),
        (verdict.lost_by_list, "lost (list)"),
        (verdict.not_terminal, "not terminal"),
        (verdict.changed_after_terminal, "changed"),
    ):
        for item in items[:EXAMPLES_KEPT]:
            print(f"  {what}: {item}")
    return {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "mix": args.mix,
        "flux_share": args.flux_share,
        "target": target_text,
        "cores": os.cpu_count(),
        "seconds": seconds,
        "drain_seconds": drain_s,
        "requests_per_second": total_requests / seconds,
        "operations": rows,
        "created": len(run.created),
        "final": dict(verdict.final),
        "lost_by_get": len(verdict.lost_by_get),
        "lost_by_list": len(verdict.lost_by_list),
        "not_terminal": len(verdict.not_terminal),
        "changed_after_terminal": len(verdict.changed_after_terminal),
        "check_errors": len(run.check_errors),
        "cpu_seconds": cpu_s,
    }


# --------------------------------------------------------------------------------------------


def _cpu_sample(server: OwnServer | None) -> dict[str, float | None]:
    return {
        "load generator": cpu.own_cpu_seconds(),
        "server": server.cpu_seconds() if server else None,
        "postgres": cpu.cpu_of_processes_named("postgres") if server and server.backend == "postgres" else None,
        "machine": cpu.machine_busy_seconds(),
    }


async def benchmark(args: argparse.Namespace, server: OwnServer | None) -> dict[str, Any]:
    """Warm up, load, drain, verify, report; the figures, with ``pass`` set."""
    await warm_up(args)
    if args.quiet_wait > 0:
        # A shared machine's other work is the main noise here: wait for it to be under a quarter of a core.
        share = await cpu.wait_until_quiet(0.25, args.quiet_wait, window=2.0)
        if share is not None:
            print(f"machine before the run: {share:.0%} of a core busy", flush=True)
    run = Run()
    cpu_before = _cpu_sample(server)
    print(f"load: {args.clients} clients × {args.requests} requests against {args.api} …", flush=True)
    seconds = await load(args, run)
    print(f"load phase done in {seconds:.1f} s; draining {len(run.created)} predictions …", flush=True)
    drain_s, _ = await drain(args, run)
    cpu_after = _cpu_sample(server)
    verdict = await verify(args, run)
    used = {name: cpu.minus(cpu_after[name], cpu_before[name]) for name in cpu_before}
    machine = used.pop("machine")
    known = [v for v in used.values() if v is not None]
    # Everything else that ran meanwhile (other work on a shared machine, the kernel's share of loopback traffic).
    used["other"] = None if machine is None else max(0.0, machine - sum(known))
    figures = print_report(args, run, seconds, drain_s, verdict, used)
    failures = sum(figures["operations"]["all"][k] for k in ("5xx", "transport_errors")) + len(run.check_errors)
    figures["pass"] = failures == 0 and verdict.ok_predictions and len(run.created) > 0
    return figures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--start", choices=["sqlite", "postgres"], help="start a server of our own on this backend")
    where.add_argument("--base-url", help="a running server, e.g. http://127.0.0.1:5000 (with --token)")
    parser.add_argument("--token", default=os.environ.get("FLUXSERVE_API_TOKEN"), help="API key for --base-url")
    parser.add_argument("-c", "--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("-n", "--requests", type=int, default=1000, help="requests per client (default 1000)")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"operation weights (default {DEFAULT_MIX})")
    parser.add_argument("--model", default=FIXTURE_MODEL, help=f"model of most creates (default {FIXTURE_MODEL})")
    parser.add_argument(
        "--flux-share", type=float, default=0.02, help=f"share of creates that go to {FLUX_MODEL} (default 0.02)"
    )
    parser.add_argument("--think-ms", type=float, default=0.0, help="mean pause between a client's requests")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for all to finish")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="wait up to this long for an idle machine first (default 120)"
    )
    parser.add_argument(
        "--admin-url", default=postgres.DEFAULT_ADMIN_URL, help="PostgreSQL for --start postgres (loopback)"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra env of the own server"
    )
    parser.add_argument("--keep", action="store_true", help="keep the own server's data dir (and its log)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.base_url and not args.token:
        parser.error("--base-url needs --token (or FLUXSERVE_API_TOKEN)")
    try:
        parse_mix(args.mix)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with target(args) as server:
            figures = asyncio.run(benchmark(args, server))
            if server is not None:
                # A 5xx leaves a traceback in the server's log (it logs at warning and above).
                errors = [line for line in server.log_lines() if " ERROR " in line or line.startswith("Traceback")]
                figures["server_log_errors"] = len(errors)
                print(f"server log: {len(errors)} error lines")
                for line in errors[:EXAMPLES_KEPT]:
                    print(f"  {line[:300]}")
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print("PASS (0 5xx, 0 lost, every prediction terminal)" if figures["pass"] else "FAIL")
    if args.json:
        report.write_json(args.json, figures)
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
