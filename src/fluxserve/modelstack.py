"""Whether this install can run the models a worker is asked to serve.

``pip install fluxserve`` is the API, store, CLI and client; the model stack (torch, diffusers, transformers …)
is the ``models`` extra. A process that runs a worker for local FLUX models without it would fail model by model
at load time; it says at start what to install instead. Forwarded models and the no-torch fixture models need
nothing more. Nothing here imports the model stack: it only looks for it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from fluxserve.catalog.registry import ModelSpec, PipelineFactory

#: What the ``models`` extra brings that predictors import.
MODEL_PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "peft")
INSTALL_HINT = "pip install 'fluxserve[models]' (in a checkout: ./scripts/install)"


def missing_packages(names: Iterable[str] = MODEL_PACKAGES) -> list[str]:
    """The packages of ``names`` that cannot be imported here (looked for, not imported)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def needs_model_stack(spec: ModelSpec) -> bool:
    """Whether running ``spec`` here loads a diffusers pipeline (a local FLUX model, not a forwarded one)."""
    return not spec.provider and isinstance(spec.predictor_factory, PipelineFactory)


def model_stack_problem(specs: Iterable[ModelSpec]) -> str | None:
    """Why a worker for ``specs`` cannot run here, or None when it can."""
    local = [spec.ref for spec in specs if needs_model_stack(spec) and not spec.refused]
    if not local:
        return None
    missing = missing_packages()
    if not missing:
        return None
    shown = ", ".join(local[:3]) + (f" and {len(local) - 3} more" if len(local) > 3 else "")
    return (
        f"This worker would run {shown} locally, which needs the model stack, but {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not installed. Install it with: {INSTALL_HINT}. "
        "An API replica needs none of it: run `fluxserve serve --no-worker` (FLUXSERVE_WORKER=false), "
        "or serve forwarded models only."
    )
