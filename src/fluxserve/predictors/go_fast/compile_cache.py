"""go_fast's ``compile`` step: regional ``torch.compile`` of the transformer blocks, with its caches on disk.

Two caches make a restart cheap: inductor's own (``TORCHINDUCTOR_CACHE_DIR``, set to ``<cache dir>/inductor``
unless the operator set it) and a mega-cache file of the artifacts gathered during the warm-up, written after it
and loaded at the next setup. torch is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluxserve.predictors.go_fast.options import FastOptions

logger = logging.getLogger(__name__)

#: Statically shaped compiles need one graph per served shape (22 for schnell/dev, 17+ for Kontext).
_RECOMPILE_LIMIT = 64


def fallback_cache_dir() -> Path:
    """The cache directory of options built by hand without one (tests, benchmarks); the service's options name
    theirs (:meth:`~.options.FastOptions.from_settings`), and predictors never read the settings themselves."""
    return Path(tempfile.gettempdir()) / "fluxserve-compile-cache"


def compile_blocks(
    transformer: Any, family: str, wanted: Sequence[str], options: FastOptions
) -> tuple[str, Path, bool]:
    """Regional compile of the repeated blocks with the on-disk caches set up: (what it did, mega-cache file, hit)."""
    import torch
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    cache_dir = options.cache_dir or fallback_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Inductor re-reads this variable whenever it needs its cache directory. Importing diffusers already sets it
    # to torch's default (/tmp/torchinductor_<user>), so "unset" cannot be told from "set by torch": keep only
    # an operator's own value.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(torch_default()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    # flux-fast's flags (reference/flux-models.md §3.3); they only touch code inductor generates.
    inductor_config.conv_1x1_as_mm = True
    inductor_config.coordinate_descent_tuning = True
    inductor_config.coordinate_descent_check_all_directions = True
    inductor_config.epilogue_fusion = False
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _RECOMPILE_LIMIT)
    mega = megacache_path(cache_dir, family, wanted, options)
    hit = False
    if mega.is_file():
        try:
            hit = torch.compiler.load_cache_artifacts(mega.read_bytes()) is not None
        except Exception as exc:  # a stale or foreign file: compile from scratch
            logger.warning("Ignoring compile cache %s: %s", mega, exc)
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": options.compile_dynamic}
    if options.compile_mode:
        kwargs["mode"] = options.compile_mode
    transformer.compile_repeated_blocks(**kwargs)
    mode = options.compile_mode or "default"
    dynamic = {None: "auto", True: "dynamic", False: "static"}[options.compile_dynamic]
    return f"compiled blocks (mode {mode}, {dynamic} shapes)", mega, hit


def megacache_path(cache_dir: Path, family: str, wanted: Sequence[str], options: FastOptions) -> Path:
    """The mega-cache file for this model, torch build, GPU and compile setting (artifacts do not transfer)."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    key = "|".join(
        (
            family,
            torch.__version__,
            gpu,
            ",".join(sorted(wanted)),
            str(options.compile_mode),
            str(options.compile_dynamic),
        )
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{family}-{re.sub(r'[^A-Za-z0-9.]+', '_', gpu)}-{digest}.megacache"


def save_megacache(path: Path) -> bool:
    """Write the compile artifacts gathered so far to ``path`` (after the warm-up); whether anything was written."""
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(artifacts[0])
    tmp.replace(path)
    return True
