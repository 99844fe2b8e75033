#!/usr/bin/env python3
"""Queue throughput: no-op predictions per second through claim → run → finish, 1/2/4 worker processes.

Each measurement uses a fresh PostgreSQL database (``CREATE DATABASE`` through ``psql``, dropped at
the end) and real ``fluxserve worker`` subprocesses, so it measures the real worker loop: the claim
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`` with a new lease, the thread hop to the
predictor, the finish compare-and-set on the lease token, and the ``LISTEN/NOTIFY`` bridge.

One measurement:

1. create the database, migrate it and create an API key through :class:`fluxserve.store.store.Store`;
2. start K ``fluxserve worker --model fluxserve-fixtures/noop`` processes against the empty queue and
   wait until each has logged ``" serving "`` (start-up is not timed);
3. insert N ``starting`` predictions of ``fluxserve-fixtures/noop`` in one transaction, start the
   clock when it has committed, and wake the workers with
   ``SELECT pg_notify('fluxserve_work', 'bench|fluxserve-fixtures/noop')``;
4. poll the number of terminal rows every 50 ms until all N are terminal; stop the clock;
5. check that exactly N rows succeeded, none failed, each was claimed once; stop the workers
   (SIGTERM) and drop the database.

Workers, PostgreSQL and this script share the same machine (and its cores). The table also gives the
CPU time the worker processes and this run's PostgreSQL processes used during the timed interval, and
the "other load" (everything else that ran meanwhile), read from ``/proc`` (Linux), as a share of one
core. Medians are taken over the quiet runs (other load under ``--quiet-load``) when there are any.

Run ``python benchmarks/queue_throughput.py --help``; ``--quick`` is a short smoke run.
Exit status: 0 ok; 1 rows did not all succeed exactly once, or a run stalled or timed out;
2 set-up failed (database, workers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
from harness import SetupError, cpu, postgres, processes, report, stats  # noqa: E402

MODEL = "fluxserve-fixtures/noop"
WAKE_SQL = f"SELECT pg_notify('fluxserve_work', 'bench|{MODEL}')"
POLL_SECONDS = 0.05
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
STATEMENT_TIMEOUT_S = 30.0
#: Worker log lines that point at trouble (errors, lost leases, retries, a SIGKILL).
PROBLEM_NEEDLES = (" ERROR ", " WARNING ", "Traceback", "lease lost", "retrying", "[benchmark]")


class RunFailed(Exception):
    """A measurement did not finish correctly (stall, timeout, wrong row states)."""


# --------------------------------------------------------------------------------------------
# CPU accounting (harness.cpu; None without /proc)


@dataclass
class CpuSample:
    """CPU seconds used so far by the worker processes, this run's PostgreSQL processes (the
    backends of its database and the server's shared background processes), this script and the
    whole machine."""

    workers: dict[int, float] | None
    postgres: dict[int, float] | None
    own: float
    machine: float | None

    @classmethod
    def take(cls, worker_pids: Sequence[int], postgres_pids: Sequence[int]) -> CpuSample:
        return cls(
            cpu.cpu_by_pid(worker_pids),
            cpu.cpu_by_pid(postgres_pids),
            cpu.own_cpu_seconds(),
            cpu.machine_busy_seconds(),
        )


def other_cpu(before: CpuSample, after: CpuSample) -> float | None:
    """Busy CPU seconds of the machine not spent by the workers, this run's PostgreSQL or this script."""
    machine = cpu.minus(after.machine, before.machine)
    workers_ = cpu.cpu_used(before.workers, after.workers)
    postgres_ = cpu.cpu_used(before.postgres, after.postgres)
    if machine is None or workers_ is None or postgres_ is None:
        return None
    return max(0.0, machine - workers_ - postgres_ - (after.own - before.own))


# --------------------------------------------------------------------------------------------
# Worker processes


def worker_processes(args: argparse.Namespace, k: int, url: str, data_dir: Path) -> list[processes.LoggedProcess]:
    """``k`` ``fluxserve worker`` processes (not started yet) on ``url``, each marked by its ``" serving "`` line."""
    cmd = [*processes.FLUXSERVE, "worker", "--database-url", url, "--model", MODEL, "--data-dir", str(data_dir)]
    env = processes.fluxserve_env(
        {"FLUXSERVE_LOG_LEVEL": "info", "FLUXSERVE_WORKER_CONCURRENCY": str(args.worker_concurrency)},
        fixtures=True,
        clean=True,
    )
    return [processes.LoggedProcess(f"worker {i}", f"w{i}", cmd, env, data_dir, marker=" serving ") for i in range(k)]


def save_logs(folder: Path, procs: list[processes.LoggedProcess]) -> None:
    for i, p in enumerate(procs):
        (folder / f"worker-{i}.log").write_text("\n".join(p.lines) + "\n")


# --------------------------------------------------------------------------------------------
# One measurement


@dataclass
class RunResult:
    workers: int
    predictions: int
    run: int
    seconds: float
    rate: float
    span_seconds: float
    succeeded: int
    failed: int
    other: int
    reclaimed: int
    per_worker: list[int]
    run_ms_p50: float
    run_ms_p99: float
    worker_cpu_s: float | None
    postgres_cpu_s: float | None
    own_cpu_s: float
    # Busy CPU time of the whole machine minus workers, PostgreSQL and this script: other load.
    other_cpu_s: float | None
    problems: list[str]
    # Machine busy, % of one core (idle workers included), in the last 0.5 s before the batch.
    load_before_pct: float | None


def build_rows(key_id: str, n: int) -> list[dict[str, Any]]:
    """N ``starting`` predictions like tests/store/test_store.py's ``_new``, 1 µs apart (claim order)."""
    from fluxserve.lifecycle import Status
    from fluxserve.schema import utcnow
    from fluxserve.service.predictions import new_prediction_id
    from fluxserve.store.rows import PredictionRow

    base = utcnow()
    return [
        PredictionRow(
            id=new_prediction_id(),
            key_id=key_id,
            model=MODEL,
            version="hidden",
            input={"prompt": "x"},
            status=Status.STARTING,
            created_at=base + timedelta(microseconds=i),
        ).to_values()
        for i in range(n)
    ]


async def wait_registered(store: Any, k: int, deadline: float) -> None:
    """Until every worker process has its row in the workers table (written before ' serving ')."""
    from sqlalchemy import func, select

    from fluxserve.store.tables import workers

    stmt = select(func.count()).select_from(workers)
    loop = asyncio.get_running_loop()
    while True:
        count = await store.db.read(lambda conn: int(conn.execute(stmt).scalar_one()))
        if count >= k:
            return
        if loop.time() > deadline:
            raise SetupError(f"only {count} of {k} workers registered")
        await asyncio.sleep(0.05)


async def diagnose(conn: Any) -> str:
    """Status counts and the stuck rows, for a stall or timeout report."""
    lines = []
    for rec in await conn.fetch("SELECT status, count(*) AS n FROM predictions GROUP BY status ORDER BY status"):
        lines.append(f"  status {rec['status']}: {rec['n']}")
    stuck = await conn.fetch(
        "SELECT id, status, worker_id, attempts, started_at, lease_expires_at FROM predictions"
        " WHERE status IN ('starting', 'processing') ORDER BY created_at LIMIT 10"
    )
    for rec in stuck:
        lines.append(
            f"  not terminal: {rec['id']} {rec['status']} worker={rec['worker_id']} attempts={rec['attempts']}"
            f" started={rec['started_at']} lease_expires={rec['lease_expires_at']}"
        )
    for rec in await conn.fetch("SELECT id, models, last_seen_at FROM workers ORDER BY id"):
        lines.append(f"  worker row: {rec['id']} models={rec['models']} last_seen={rec['last_seen_at']}")
    return "\n".join(lines)


async def measure(
    args: argparse.Namespace, k: int, run_index: int, workdir: Path, database: str, problems: list[str]
) -> RunResult:
    """Time one batch through ``k`` fresh worker processes on ``database``; ``problems`` gets the
    workers' suspicious log lines (even when the run fails)."""
    import asyncpg
    from sqlalchemy import text

    from fluxserve.schema import utcnow
    from fluxserve.store.store import Store
    from fluxserve.store.tables import predictions

    url = postgres.with_database(args.admin_url, database)
    data_dir = workdir / database
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.connect(url)
    procs: list[processes.LoggedProcess] = []
    poll: Any = None
    loop = asyncio.get_running_loop()
    try:
        await store.migrate()
        key, _token = await store.create_key("queue-throughput")
        rows = build_rows(key.id, args.predictions)

        procs = worker_processes(args, k, url, data_dir)
        for p in procs:
            await p.start()
        deadline = loop.time() + START_TIMEOUT_S
        for p in procs:
            await p.wait_marked(deadline)
        await wait_registered(store, k, deadline)
        # Each claim loop runs its first (empty) claim right after ' serving '; let those settle, and
        # wait (bounded) for other load on the shared machine to calm down.
        share = await cpu.wait_until_quiet(args.quiet_load / 100, args.quiet_wait, window=0.5)
        before_load = None if share is None else 100 * share

        poll = await asyncpg.connect(postgres.libpq_url(url), timeout=10, command_timeout=STATEMENT_TIMEOUT_S)
        count_stmt = await poll.prepare(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
            " count(*) FILTER (WHERE status IN ('succeeded', 'failed', 'canceled')) FROM predictions"
        )
        pids = [p.pid for p in procs]
        pg_pids_sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL"
        cpu0 = CpuSample.take(pids, [r["pid"] for r in await poll.fetch(pg_pids_sql)])

        await store.db.write(lambda conn: conn.execute(predictions.insert(), rows))
        t0 = time.perf_counter()
        t0_wall = utcnow()
        await store.db.write(lambda conn: conn.execute(text(WAKE_SQL)))

        n = args.predictions
        terminal = 0
        last_change = t0
        while True:
            succeeded, terminal_now = await count_stmt.fetchrow()
            now = time.perf_counter()
            if terminal_now >= n:
                break
            if terminal_now != terminal:
                terminal, last_change = terminal_now, now
            exited = [p for p in procs if p.returncode is not None]
            if exited:
                raise RunFailed(
                    f"{k} worker(s): {exited[0].label} exited with status {exited[0].returncode}"
                    f" mid-run ({terminal_now} of {n} terminal)\n" + exited[0].tail(30)
                )
            if now - last_change > args.stall_seconds:
                raise RunFailed(
                    f"{k} worker(s): no row finished for {args.stall_seconds:.0f} s"
                    f" ({terminal} of {n} terminal, {succeeded} succeeded)\n"
                    f"{await diagnose(poll)}\n" + "\n".join(p.tail(15) for p in procs)
                )
            if now - t0 > args.timeout:
                raise RunFailed(
                    f"{k} worker(s): timed out after {args.timeout:.0f} s ({terminal_now} of {n} terminal)\n"
                    f"{await diagnose(poll)}\n" + "\n".join(p.tail(15) for p in procs)
                )
            await asyncio.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - t0
        cpu1 = CpuSample.take(pids, [r["pid"] for r in await poll.fetch(pg_pids_sql)])

        counts = {
            r["status"]: r["n"] for r in await poll.fetch("SELECT status, count(*) AS n FROM predictions GROUP BY 1")
        }
        stats = await poll.fetchrow(
            "SELECT count(*) FILTER (WHERE attempts <> 1) AS reclaimed, max(completed_at) AS last,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p99"
            " FROM predictions"
        )
        shares = await poll.fetch(
            "SELECT worker_id, count(*) AS n FROM predictions WHERE status = 'succeeded' GROUP BY 1 ORDER BY 2 DESC"
        )
        succeeded = int(counts.get("succeeded", 0))
        failed = int(counts.get("failed", 0))
        return RunResult(
            workers=k,
            predictions=n,
            run=run_index,
            seconds=seconds,
            rate=n / seconds,
            span_seconds=(stats["last"] - t0_wall).total_seconds() if stats["last"] else float("nan"),
            succeeded=succeeded,
            failed=failed,
            other=sum(int(v) for v in counts.values()) - succeeded - failed,
            reclaimed=int(stats["reclaimed"]),
            per_worker=[int(r["n"]) for r in shares],
            run_ms_p50=float(stats["p50"] or 0) * 1000,
            run_ms_p99=float(stats["p99"] or 0) * 1000,
            worker_cpu_s=cpu.cpu_used(cpu0.workers, cpu1.workers),
            postgres_cpu_s=cpu.cpu_used(cpu0.postgres, cpu1.postgres),
            own_cpu_s=cpu1.own - cpu0.own,
            other_cpu_s=other_cpu(cpu0, cpu1),
            problems=[],
            load_before_pct=before_load,
        )
    finally:
        if poll is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(poll.close(), 5)
        stop_codes = await asyncio.gather(*(p.stop(STOP_TIMEOUT_S) for p in procs), return_exceptions=True)
        for p, code in zip(procs, stop_codes, strict=True):
            if code not in (0, None):
                p.lines.append(f"[benchmark] {p.label} exit status {code!r}")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.close(), 10)
        if args.keep_logs:
            save_logs(data_dir, procs)
        problems.extend(f"{p.tag}: {line}" for p in procs for line in p.matching(PROBLEM_NEEDLES))


async def one_run(args: argparse.Namespace, k: int, run_index: int, workdir: Path) -> RunResult:
    database = f"fluxserve_bench_{os.getpid()}_{k}w_{run_index}"
    await asyncio.to_thread(postgres.create_database, args.admin_url, database)
    problems: list[str] = []
    try:
        result = await measure(args, k, run_index, workdir, database, problems)
        result.problems = problems
        return result
    except RunFailed as exc:
        raise RunFailed(f"{exc}\nworker log lines of note:\n" + ("\n".join(problems[:40]) or "(none)")) from None
    except SetupError:
        raise
    except Exception as exc:  # the benchmark's own database calls: e.g. PostgreSQL restarted under us
        raise RunFailed(
            f"{k} worker(s): {type(exc).__name__}: {exc} (was PostgreSQL restarted meanwhile?)\n"
            "worker log lines of note:\n" + ("\n".join(problems[:40]) or "(none)")
        ) from exc
    finally:
        # Retried a few times (the server may be restarting); a warning if it stays.
        await asyncio.to_thread(postgres.drop_database, args.admin_url, database)


# --------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 0) -> str:
    return report.fmt(value, digits, missing="n/a")


def pct(cpu_s: float | None, seconds: float) -> float | None:
    """CPU seconds over wall seconds, as % of one core."""
    return None if cpu_s is None else 100 * cpu_s / seconds


def per_prediction_ms(r: RunResult) -> float | None:
    """Worker plus PostgreSQL CPU time per prediction."""
    if r.worker_cpu_s is None or r.postgres_cpu_s is None:
        return None
    return 1000 * (r.worker_cpu_s + r.postgres_cpu_s) / r.predictions


def summarize(all_results: list[RunResult], quiet_pct: float) -> dict[str, Any]:
    """Medians over the quiet runs of one worker count (other load at most ``quiet_pct`` of a core), or
    over all of them when none was quiet; the per-worker split is the median run's. Other load only
    ever slows a run down, so the quiet runs are the better estimate of what the machine can do."""
    quiet = [r for r in all_results if r.other_cpu_s is not None and 100 * r.other_cpu_s / r.seconds <= quiet_pct]
    results = quiet or all_results
    by_rate = sorted(results, key=lambda r: r.rate)
    mid = by_rate[len(by_rate) // 2]
    all_rates = sorted(r.rate for r in all_results)

    return {
        "workers": mid.workers,
        "predictions": mid.predictions,
        "runs": len(all_results),
        "quiet_runs": len(quiet),
        "seconds": statistics.median(r.seconds for r in results),
        "rate": statistics.median(r.rate for r in results),
        "rate_min": all_rates[0],
        "rate_max": all_rates[-1],
        "span_seconds": statistics.median(r.span_seconds for r in results),
        "run_ms_p50": statistics.median(r.run_ms_p50 for r in results),
        "run_ms_p99": statistics.median(r.run_ms_p99 for r in results),
        "worker_cpu_pct": stats.median_or_none(pct(r.worker_cpu_s, r.seconds) for r in results),
        "postgres_cpu_pct": stats.median_or_none(pct(r.postgres_cpu_s, r.seconds) for r in results),
        "other_cpu_pct": stats.median_or_none(pct(r.other_cpu_s, r.seconds) for r in results),
        "cpu_ms_per_prediction": stats.median_or_none(per_prediction_ms(r) for r in results),
        "per_worker": mid.per_worker,
    }


def print_table(summaries: list[dict[str, Any]]) -> None:
    head = [
        "workers",
        "predictions",
        "runs (quiet)",
        "seconds",
        "predictions/s",
        "min-max/s",
        "vs 1",
        "run p50/p99 ms",
        "CPU ms/pred",
        "workers CPU",
        "PG CPU",
        "other load",
        "rows per worker",
    ]
    base = next((s["rate"] for s in summaries if s["workers"] == 1), None)
    rows: list[list[str]] = []
    for s in summaries:
        rows.append(
            [
                str(s["workers"]),
                str(s["predictions"]),
                f"{s['runs']} ({s['quiet_runs']})",
                fmt(s["seconds"], 2),
                fmt(s["rate"]),
                f"{fmt(s['rate_min'])}-{fmt(s['rate_max'])}",
                f"{s['rate'] / base:.2f}x" if base else "n/a",
                f"{fmt(s['run_ms_p50'], 2)}/{fmt(s['run_ms_p99'], 2)}",
                fmt(s["cpu_ms_per_prediction"], 2),
                f"{fmt(s['worker_cpu_pct'])}%",
                f"{fmt(s['postgres_cpu_pct'])}%",
                f"{fmt(s['other_cpu_pct'])}%",
                "/".join(str(n) for n in s["per_worker"]),
            ]
        )
    print(report.table(head, rows, align="r" * len(head), markdown=True))


def verify(results: list[RunResult]) -> list[str]:
    """Every run: exactly N succeeded, none failed or left over, each claimed exactly once."""
    bad = []
    for r in results:
        if r.succeeded != r.predictions or r.failed or r.other or r.reclaimed:
            bad.append(
                f"{r.workers} worker(s), run {r.run}: {r.succeeded} of {r.predictions} succeeded,"
                f" {r.failed} failed, {r.other} other, {r.reclaimed} claimed more than once"
            )
    return bad


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 200 predictions, 1 run per worker count")
    p.add_argument("-n", "--predictions", type=int, help="predictions per run (default 2000; --quick 200)")
    p.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    p.add_argument("--repeat", type=int, help="runs per worker count, interleaved (default 3; --quick 1)")
    p.add_argument("--worker-concurrency", type=int, default=1, help="FLUXSERVE_WORKER_CONCURRENCY of each worker")
    p.add_argument(
        "--admin-url", default=postgres.DEFAULT_ADMIN_URL, help="loopback PostgreSQL URL to create databases from"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take once the batch is in")
    p.add_argument("--stall-seconds", type=float, default=15.0, help="fail a run when no row finishes for this long")
    p.add_argument(
        "--quiet-load",
        type=float,
        default=25.0,
        help="before each batch, wait until the machine is busy under this %% of one core (idle workers included)",
    )
    p.add_argument("--quiet-wait", type=float, default=60.0, help="...but at most this many seconds (0: no wait)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the workers' logs")
    args = p.parse_args(argv)
    if args.predictions is None:
        args.predictions = 200 if args.quick else 2000
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers takes comma-separated integers, got {args.workers!r}")
    if not args.workers or min(args.workers) < 1 or args.predictions < 1 or args.repeat < 1:
        p.error("worker counts, --predictions and --repeat must be positive")
    if args.quiet_wait < 0 or args.quiet_load < 0:
        p.error("--quiet-wait and --quiet-load must not be negative")
    if args.worker_concurrency < 1 or args.timeout <= 0 or args.stall_seconds <= 0:
        p.error("--worker-concurrency, --timeout and --stall-seconds must be positive")
    return args


async def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    from importlib.metadata import version as dist_version

    postgres.check_loopback(args.admin_url)
    pg_version = await asyncio.to_thread(postgres.server_version, args.admin_url)
    cores = os.cpu_count()
    print(f"machine: {cores} CPU cores (os.cpu_count()), {platform.platform()}, Python {platform.python_version()}")
    print(f"PostgreSQL {pg_version} on loopback; fluxserve {dist_version('fluxserve')}, {args.source}")
    print(
        f"{args.predictions} no-op predictions per run; workers {args.workers} processes"
        f" (worker_concurrency {args.worker_concurrency}); {args.repeat} run(s) each, interleaved",
        flush=True,
    )

    results: list[RunResult] = []
    failures: list[str] = []
    for run_index in range(args.repeat):
        shift = run_index % len(args.workers)
        for k in args.workers[shift:] + args.workers[:shift]:
            try:
                r = await one_run(args, k, run_index, workdir)
            except RunFailed as exc:
                failures.append(str(exc))
                print(f"  run {run_index + 1}/{args.repeat} {k} worker(s): FAILED\n{exc}", file=sys.stderr, flush=True)
                continue
            results.append(r)
            print(
                f"  run {run_index + 1}/{args.repeat} {k} worker(s): {r.seconds:.2f} s, {r.rate:,.0f} predictions/s,"
                f" {r.succeeded} succeeded, {r.failed} failed, per worker {'/'.join(map(str, r.per_worker))}"
                + f", machine busy before {fmt(r.load_before_pct)}%, other load {fmt(pct(r.other_cpu_s, r.seconds))}%"
                + (f", {len(r.problems)} log line(s) of note" if r.problems else ""),
                flush=True,
            )

    summaries = [
        summarize([r for r in results if r.workers == k], args.quiet_load)
        for k in args.workers
        if any(r.workers == k for r in results)
    ]
    print()
    print(
        f"=== Queue throughput: no-op predictions through claim → run → finish, fluxserve worker processes"
        f" on PostgreSQL {pg_version} ==="
    )
    if summaries:
        print_table(summaries)
    else:
        print("(no run finished)")
    print(
        f"{cores} CPU cores (os.cpu_count()), shared by the worker processes, PostgreSQL and this script's"
        " 50 ms poll: adding workers past the core count adds contention, not CPU."
    )
    print(
        f"Medians over the quiet runs (other load at most {args.quiet_load:g}% of a core), over all runs when"
        " none was quiet; min-max/s spans all runs."
        " seconds: from the batch's insert commit until the poll saw every row terminal (50 ms poll)."
        " run ms: completed_at - started_at per prediction (from the claim statement's start to just"
        " before the finish write). CPU ms/pred: worker + PG CPU time per prediction. CPU columns: CPU"
        " time during the timed interval as % of one core; PG: the backends of the run's database and"
        " the server's background processes; other load: everything else that ran on the machine meanwhile"
        " (other users, other databases' backends): user + system time in /proc/stat less the rest."
    )
    noisy = [str(s["workers"]) for s in summaries if not s["quiet_runs"]]
    if noisy:
        print(
            f"WARNING: no quiet run with {', '.join(noisy)} worker(s): other processes kept the machine busy, so"
            " those figures understate what it can do alone (try --repeat 5 or a quieter moment)."
        )
    notes = sorted({line for r in results for line in r.problems})
    if notes:
        print(f"worker log lines of note ({len(notes)}):")
        for line in notes[:20]:
            print(f"  {line}")

    bad = verify(results)
    if args.json:
        report.write_json(
            args.json,
            {
                "cpu_count": cores,
                "platform": platform.platform(),
                "postgresql_version": pg_version,
                "fluxserve_version": dist_version("fluxserve"),
                "fluxserve_source": args.source,
                "settings": {k: getattr(args, k) for k in ("predictions", "workers", "repeat", "worker_concurrency")},
                "summaries": summaries,
                "runs": [asdict(r) for r in results],
                "failures": failures + bad,
            },
        )
        print(f"JSON written to {args.json}")
    if failures or bad:
        print("FAILED:\n  " + "\n  ".join(bad + [f.splitlines()[0] for f in failures]), file=sys.stderr)
        return 1
    print(f"verified: every run ended with exactly {args.predictions} succeeded rows, none failed, each claimed once")
    return 0


def source_info() -> str:
    """Which fluxserve code the workers run: its folder, the git commit, uncommitted changes under it."""
    import fluxserve

    src = Path(fluxserve.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        # --no-optional-locks: read-only, never refreshes the index.
        changed = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "."],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return f"source {src}"
    return f"source {src} (git {head}, {len(changed)} uncommitted change(s) under it)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.source = source_info()
    workdir = Path(tempfile.mkdtemp(prefix="fluxserve-queue-bench-"))
    try:
        return asyncio.run(benchmark(args, workdir))
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep_logs:
            print(f"worker logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
