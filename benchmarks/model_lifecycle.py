"""Model lifecycle timings: worker start to first served prediction, and swap-in under a memory budget.

1. **Start to first prediction.** Starts ``fluxserve serve --demo`` and, as soon as ``/health`` answers,
   creates a flux-schnell prediction and waits for it. Reported: seconds from process start to ``/health``,
   to the model ``ready`` on ``GET /v1/models/...`` and to the prediction's success, with ``FLUXSERVE_PRELOAD=all``
   (the default: load before claiming) and ``none`` (load at first use), interleaved run by run.
2. **Swap-in.** In one process, a worker's :class:`ModelManager` holds flux-schnell and flux-dev under a budget
   that fits one of them; acquiring them alternately makes every acquire a swap-in. Reported: the median
   swap-in (on a GPU: from pinned CPU RAM; on a CPU: a reload from disk, since there is nowhere to move to)
   next to the median acquire of a resident model, and each model's footprint.

On this CPU machine both use the tiny random pipelines of ``--demo`` (weights of about 1 MB): the numbers
show the fixed costs (torch import, pipeline construction, the worker's own overhead), not a real model's
load. On a GPU host pass ``--weights-schnell``/``--weights-dev`` (local diffusers directories) and
``--device cuda`` to measure the real thing.

    .venv/bin/python benchmarks/model_lifecycle.py [--runs 3] [--swaps 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
from harness import processes, report  # noqa: E402

SCHNELL = "black-forest-labs/flux-schnell"
DEV = "black-forest-labs/flux-dev"


def start_to_first_prediction(preload: str, root: Path, weights: Path) -> dict[str, float]:
    """Seconds from ``serve`` start to /health, to the model ready and to the first prediction's success."""
    data_dir = Path(tempfile.mkdtemp(dir=root))
    # The tiny pipeline is built once (outside the timing), as a real host has its weights on disk already.
    (data_dir / "demo-weights").mkdir()
    (data_dir / "demo-weights" / "flux-schnell").symlink_to(weights, target_is_directory=True)
    env = processes.fluxserve_env(
        {
            "FLUXSERVE_DATA_DIR": str(data_dir),
            "FLUXSERVE_PRELOAD": preload,
            "HF_HUB_OFFLINE": "1",
            "FLUXSERVE_MODELS_FILE": str(root / "schnell-only.toml"),
        }
    )
    key = processes.create_key(env)
    server = processes.fluxserve_server(f"serve (preload {preload})", env, "--demo", log_path=data_dir / "serve.log")
    server.start()
    began = server.started_at
    times: dict[str, float] = {}
    try:
        server.wait_ready(interval=0.02)
        times["health"] = time.perf_counter() - began
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
            created = client.post(
                f"/v1/models/{SCHNELL}/predictions",
                json={"input": {"prompt": "a lighthouse", "megapixels": "0.25", "num_inference_steps": 1}},
            ).json()
            while True:
                if "ready" not in times and client.get(f"/v1/models/{SCHNELL}").json()["state"] == "ready":
                    workers = client.get(f"/v1/models/{SCHNELL}").json()["workers"]
                    if workers and workers[0]["state"] == "ready":
                        times["ready"] = time.perf_counter() - began
                body = client.get(f"/v1/predictions/{created['id']}").json()
                if body["status"] in ("succeeded", "failed", "canceled"):
                    if body["status"] != "succeeded":
                        raise RuntimeError(f"prediction {body['status']}: {body['error']}")
                    times["first_prediction"] = time.perf_counter() - began
                    times.setdefault("ready", times["first_prediction"])
                    return times
                time.sleep(0.02)
    finally:
        server.stop(timeout=30)


async def swap_in(swaps: int, device: str | None, weights: dict[str, str] | None) -> dict[str, Any]:
    """Median swap-in and resident acquire of two models under a budget that fits one."""
    from fluxserve.catalog.registry import FLUX_DEV, FLUX_SCHNELL
    from fluxserve.config import Settings
    from fluxserve.worker.models import ModelManager

    demo = weights is None
    root = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=root, demo=demo, device=device, preload="none")
    if weights:
        settings = settings.model_copy(
            update={"flux_schnell_weights": weights["schnell"], "flux_dev_weights": weights["dev"]}
        )
    manager = ModelManager(settings, [FLUX_SCHNELL, FLUX_DEV])
    for spec in (FLUX_SCHNELL, FLUX_DEV):  # learn both footprints (and warm the imports)
        await manager.acquire(spec, lambda _line: None)
        manager.release(spec)
    sizes = {ref: slot.memory_bytes for ref, slot in manager.slots.items()}
    manager.budget_bytes = int(max(sizes.values()) * 1.5)  # fits one model, not two
    await manager.unload(FLUX_SCHNELL.ref)  # start as the budget would have it: only flux-dev resident
    swap_times, resident_times = [], []
    for i in range(swaps):
        spec = (FLUX_SCHNELL, FLUX_DEV)[i % 2]
        began = time.perf_counter()
        await manager.acquire(spec, lambda _line: None)
        swap_times.append(time.perf_counter() - began)
        manager.release(spec)
        began = time.perf_counter()
        await manager.acquire(spec, lambda _line: None)
        resident_times.append(time.perf_counter() - began)
        manager.release(spec)
    states = {ref: slot.state.value for ref, slot in manager.slots.items()}
    if list(states.values()).count("ready") != 1:
        raise RuntimeError(f"the budget should hold one model; states are {states}")
    return {"sizes": sizes, "swap": swap_times, "resident": resident_times, "states": states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="server starts per preload mode")
    parser.add_argument("--swaps", type=int, default=6, help="swap-ins measured")
    parser.add_argument("--device", default=None, help="torch device for the swap-in part (default: cuda if any)")
    parser.add_argument("--weights-schnell", help="local FLUX.1-schnell directory (default: tiny demo pipeline)")
    parser.add_argument("--weights-dev", help="local FLUX.1-dev directory (default: tiny demo pipeline)")
    args = parser.parse_args()

    from fluxserve.predictors.tiny import build_tiny_pipeline

    root = Path(tempfile.mkdtemp(prefix="fluxserve-lifecycle-"))
    weights = build_tiny_pipeline(root / "tiny-schnell", kind="schnell")
    (root / "schnell-only.toml").write_text(f'[models."{SCHNELL}"]\n')
    print(f"cores: {os.cpu_count()}; tiny demo pipelines on the CPU; {args.runs} starts per mode, interleaved")
    results: dict[str, list[dict[str, float]]] = {"all": [], "none": []}
    for _ in range(args.runs):
        for mode in ("all", "none"):
            results[mode].append(start_to_first_prediction(mode, root, weights))
    rows = []
    for mode, runs in results.items():
        med = [statistics.median(r[k] for r in runs) for k in ("health", "ready", "first_prediction")]
        rows.append([mode, *(f"{v:.2f}" for v in med)])
    header = ["FLUXSERVE_PRELOAD", "/health s", "model ready s", "first prediction s"]
    print()
    print(report.table(header, rows, widths=[18, 10, 14, 19], sep=" ", rule=None))
    print("(medians; 'model ready' is when GET /v1/models reports it ready, polled every 20 ms)")

    real = {"schnell": args.weights_schnell, "dev": args.weights_dev} if args.weights_schnell else None
    swap = asyncio.run(swap_in(args.swaps, args.device, real))
    sizes = ", ".join(f"{ref} {size / 1024**2:.2f} MiB" for ref, size in swap["sizes"].items())
    print(f"\nswap-in under a budget that fits one model ({sizes}):")
    swap_med, resident_med = statistics.median(swap["swap"]), statistics.median(swap["resident"])
    print(f"  swap-in median {swap_med * 1000:.1f} ms over {len(swap['swap'])} swaps "
          f"(min {min(swap['swap']) * 1000:.1f}, max {max(swap['swap']) * 1000:.1f})")  # fmt: skip
    print(f"  acquire of the resident model: median {resident_med * 1000:.3f} ms")
    print(f"  final states: {swap['states']}")


if __name__ == "__main__":
    main()
