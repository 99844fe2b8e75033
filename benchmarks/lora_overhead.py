"""What a LoRA adds to one prediction: cold (download + load), warm (cached file, load) and hot (adapter resident).

Each round runs, side by side on one pipeline, the same text-to-image call four ways and times each part:

* ``base``: no LoRA (the adapters disabled, as a plain prediction on a LoRA model runs);
* ``cold``: an empty LoRA cache and no adapter: download through the guarded client, check, load, run;
* ``warm``: the file cached (the URL revalidated with its ETag, a 304) but the adapter unloaded: load, run;
* ``hot``: the adapter still loaded from the previous request: revalidate, activate, run.

The LoRA is served by a loopback HTTP server (ETag, 304 on a match), so "download" is the fetch path fluxserve
takes (:class:`fluxserve.lora.LoraCache`) without a network's latency. By default the pipeline is the tiny random
FLUX.1 [schnell] the tests use, and the LoRA one this script makes for it with peft (rank ``--rank`` on the
attention projections); on a GPU host pass real weights and a real LoRA file:

    .venv/bin/python benchmarks/lora_overhead.py                          # tiny pipeline, CPU, ~1 min
    .venv/bin/python benchmarks/lora_overhead.py --weights black-forest-labs/FLUX.1-schnell \\
        --lora my_flux_lora.safetensors --size 1024 --steps 4 --rounds 5

Medians over ``--rounds``; the overhead columns are each way's median minus the base median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from fluxserve.lora import LoraCache, LoraFile
from fluxserve.net.guard import NetPolicy, guarded_client
from fluxserve.predictors.lora import LoraAdapters

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
from harness import report  # noqa: E402

WAYS = ("base", "cold", "warm", "hot")


class _LoraHost(BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(body: bytes) -> Iterator[str]:
    """A loopback URL serving ``body``."""
    _LoraHost.body = body
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LoraHost)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/lora.safetensors"
    finally:
        httpd.shutdown()
        httpd.server_close()


def load_pipeline(weights: str, device: str) -> Any:
    import torch
    from diffusers import FluxPipeline

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    pipe = FluxPipeline.from_pretrained(weights, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_lora(pipe: Any, out: Path, rank: int) -> Path:
    """A random rank-``rank`` LoRA on the attention projections of ``pipe``'s transformer (a copy of it)."""
    import copy

    import torch
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = copy.deepcopy(pipe.transformer)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    torch.manual_seed(0)
    transformer.add_adapter(config)
    FluxPipeline.save_lora_weights(
        str(out),
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return out / "pytorch_lora_weights.safetensors"


def generate(pipe: Any, size: int, steps: int) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        pipe(
            "a red fox in the snow",
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(1),
            max_sequence_length=256,
            output_type="pil",
        )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def new_cache(directory: Path) -> LoraCache:
    policy = NetPolicy(allow_loopback=True)
    return LoraCache(
        directory,
        client_factory=lambda: guarded_client(policy, timeout=httpx.Timeout(60.0), follow_redirects=True),
    )


def one(
    way: str, pipe: Any, adapters: LoraAdapters, cache_dir: Path, url: str, size: int, steps: int
) -> dict[str, float]:
    """One prediction the ``way`` way; seconds of fetch, activate (load or re-enable) and run."""
    if way == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    if way in ("cold", "warm"):
        adapters.clear(pipe)
    start = time.perf_counter()
    lora: LoraFile | None = None
    if way != "base":
        lora = asyncio.run(new_cache(cache_dir).get(url))
    fetched = time.perf_counter()
    loras = [(lora, 1.0)] if lora is not None else []
    with adapters.activate(pipe, loras, lambda _line: None):
        activated = time.perf_counter()
        run = generate(pipe, size, steps)
    if lora is not None:
        lora.release()
    return {"fetch": fetched - start, "activate": activated - fetched, "run": run, "total": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a diffusers FLUX.1 checkout or repo id (default: the tiny pipeline)")
    parser.add_argument("--lora", type=Path, help="a LoRA .safetensors to serve (default: one made for the model)")
    parser.add_argument("--rank", type=int, default=16, help="rank of the made LoRA (default 16)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the four ways (default 7)")
    args = parser.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp_name:
        tmp = Path(tmp_name)
        weights = args.weights
        if weights is None:
            from fluxserve.predictors.tiny import build_tiny_pipeline

            weights = str(build_tiny_pipeline(tmp / "tiny-schnell", "schnell"))
        pipe = load_pipeline(weights, device)
        lora_path = args.lora or make_lora(pipe, tmp / "made-lora", args.rank)
        body = lora_path.read_bytes()
        adapters = LoraAdapters()
        times: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
        with serve(body) as url:
            one("hot", pipe, adapters, tmp / "cache", url, args.size, args.steps)  # warm-up, not counted
            for _ in range(args.rounds):
                for way in WAYS:
                    times[way].append(one(way, pipe, adapters, tmp / "cache", url, args.size, args.steps))

    print(
        f"device {device}, weights {args.weights or 'tiny random FLUX.1-schnell'}, LoRA {len(body) / 1e6:.2f} MB"
        f"{'' if args.lora else f' (rank {args.rank}, made here)'}, {args.size}² × {args.steps} steps, "
        f"medians of {args.rounds} rounds (ms)"
    )

    def med(way: str, part: str) -> float:
        return statistics.median(t[part] for t in times[way]) * 1000

    base = med("base", "total")
    rows = [
        [
            way,
            report.fmt(med(way, "fetch"), 1),
            report.fmt(med(way, "activate"), 1),
            report.fmt(med(way, "run"), 1),
            report.fmt(med(way, "total"), 1),
            report.fmt(med(way, "total") - base, 1),
            report.fmt(med(way, "total") / base, 3),
        ]
        for way in WAYS
    ]
    print(report.table(["way", "fetch", "load/activate", "run", "total", "overhead", "× base"], rows))


if __name__ == "__main__":
    main()
