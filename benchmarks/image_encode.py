"""How long encoding one output image takes, per WebP ``method``, and what parallel encoding buys.

fluxserve encodes every output image before a prediction succeeds, so the encode time is part of
``predict_time``. This script measures, on this machine's CPU, for 1024² images at ``--quality`` (80, the
Replicate default):

* WebP ``method`` 0-6 (libwebp's effort; Pillow's default is 4): median encode time, size, and PSNR against the
  original (the quality the bytes carry), plus JPEG and PNG as they are saved by fluxserve;
* ``num_outputs`` = 4: sequential encoding vs the thread pool :func:`fluxserve.predictors.images.save_images` uses.

Images: a synthetic "photo-like" picture (smooth multi-scale structure, edges, some grain: what a real model
produces), a noise image (what the tiny random test pipelines produce; the worst case for an encoder), and any
files given with ``--image``. Nothing here imports torch.

    .venv/bin/python benchmarks/image_encode.py                 # ~30 s on 2 cores
    .venv/bin/python benchmarks/image_encode.py --image a.png --reps 5 --json out.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fluxserve.predictors.images import WEBP_METHOD, save_images

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
from harness import report, stats  # noqa: E402

SIZE = 1024


def photo_like(seed: int = 0, size: int = SIZE) -> Image.Image:
    """A deterministic picture with the statistics of a photo: smooth gradients at several scales, hard edges
    and fine grain. Not a photo, but it compresses like one far more than noise does."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size, 3), dtype=np.float64)
    for scale, weight in ((8, 0.45), (32, 0.25), (128, 0.15), (512, 0.1)):
        small = rng.random((scale, scale, 3))
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        acc += weight * np.asarray(layer, dtype=np.float64)
    image = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):  # objects with hard edges
        x0, y0 = (int(v) for v in rng.integers(0, size - 64, 2))
        x1, y1 = x0 + int(rng.integers(32, 300)), y0 + int(rng.integers(32, 300))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))  # lens softness
    grain = rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8))


def noise(seed: int = 0, size: int = SIZE) -> Image.Image:
    """Uniform RGB noise: what a random-weight pipeline's images look like to an encoder."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Median seconds of ``reps`` calls after one untimed call, and the last result."""
    result = fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """``image`` encoded in memory."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def measure_methods(name: str, image: Image.Image, quality: int, reps: int) -> list[dict[str, Any]]:
    """One row per WebP method, then JPEG and PNG as fluxserve saves them."""
    variants: list[tuple[str, str, dict[str, Any]]] = [
        (f"webp m{m}", "WEBP", {"quality": quality, "method": m}) for m in range(7)
    ]
    variants += [("jpg", "JPEG", {"quality": quality, "optimize": True}), ("png", "PNG", {})]
    rows = []
    for label, fmt, options in variants:
        seconds, data = timed(lambda fmt=fmt, options=options: encode(image, fmt, **options), reps)
        with Image.open(io.BytesIO(data)) as decoded:
            quality_db = stats.psnr_db(image.convert("RGB"), decoded.convert("RGB"))
        rows.append({"image": name, "codec": label, "ms": seconds * 1000, "kib": len(data) / 1024, "psnr": quality_db})
    return rows


def measure_parallel(image: Image.Image, quality: int, reps: int, n: int = 4) -> dict[str, float]:
    """``n`` images encoded one after another vs through ``save_images`` (a thread pool), in ms."""
    images = [image.rotate(90 * i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"out-{i}.webp" for i in range(n)]

        def sequential() -> None:
            for im, path in zip(images, paths, strict=True):
                im.save(path, format="WEBP", quality=quality, method=WEBP_METHOD)

        seq, _ = timed(sequential, reps)
        par, _ = timed(lambda: save_images(images, paths, "webp", quality), reps)
    return {"n": n, "sequential_ms": seq * 1000, "parallel_ms": par * 1000, "cores": os.cpu_count() or 1}


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, print the tables (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per cell (median reported)")
    parser.add_argument("--image", action="append", default=[], type=Path, help="also measure this file (resized)")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)

    images: list[tuple[str, Image.Image]] = [("photo-like", photo_like()), ("noise", noise())]
    for path in args.image:
        with Image.open(path) as im:
            images.append((path.name, im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)))

    rows: list[dict[str, Any]] = []
    for name, image in images:
        rows += measure_methods(name, image, args.quality, args.reps)
    parallel = measure_parallel(images[0][1], args.quality, args.reps)

    print(
        f"# {SIZE}x{SIZE} image encode at quality {args.quality}, {os.cpu_count()} CPU cores, Pillow "
        f"{Image.__version__}; fluxserve uses WebP method {WEBP_METHOD}"
    )
    cells = [[r["image"], r["codec"], f"{r['ms']:.1f}", f"{r['kib']:.1f}", f"{r['psnr']:.2f}"] for r in rows]
    header = ["image", "codec", "ms", "KiB", "PSNR dB"]
    print(report.table(header, cells, align="llrrr", widths=[12, 8, 7, 8, 8], sep=" ", rule=None))
    print(
        f"\n{parallel['n']} photo-like images, WebP m{WEBP_METHOD}: sequential {parallel['sequential_ms']:.1f} ms, "
        f"save_images (thread pool) {parallel['parallel_ms']:.1f} ms on {parallel['cores']} cores"
    )
    if args.json:
        report.write_json(args.json, {"quality": args.quality, "rows": rows, "parallel": parallel})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
