"""Where a loaded pipeline's weights live: measuring them, and moving them between the GPU and CPU RAM.

The worker's residency policy (``fluxserve.worker.models``) asks predictors for their footprint and, on a
GPU, to step aside to CPU RAM when another model needs the memory. Weights moved to the CPU are pinned
(page-locked), so the copy back runs at full PCIe speed instead of through a pageable bounce buffer.
torch is imported by the callers' pipelines already; nothing here imports it at module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


def modules_of(pipes: Iterable[Any]) -> Iterator[Any]:
    """Every distinct ``torch.nn.Module`` component of ``pipes`` (shared modules once)."""
    import torch

    seen: set[int] = set()
    for pipe in pipes:
        if pipe is None:
            continue
        for component in getattr(pipe, "components", {}).values():
            if isinstance(component, torch.nn.Module) and id(component) not in seen:
                seen.add(id(component))
                yield component


def footprint_bytes(pipes: Iterable[Any]) -> int:
    """Bytes of the parameters and buffers of every module of ``pipes`` (shared ones counted once)."""
    total = 0
    seen: set[int] = set()
    for module in modules_of(pipes):
        for tensor in (*module.parameters(), *module.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def to_pinned_cpu(pipes: Iterable[Any]) -> None:
    """Move every module of ``pipes`` to CPU RAM, pinned for a fast copy back."""
    import torch

    for module in modules_of(pipes):
        module.to("cpu")
        if torch.cuda.is_available():
            for tensor in (*module.parameters(), *module.buffers()):
                tensor.data = tensor.data.pin_memory()


def to_device(pipes: Iterable[Any], device: str) -> None:
    """Move every module of ``pipes`` to ``device`` (from pinned memory the copies run asynchronously)."""
    import torch

    for module in modules_of(pipes):
        module.to(device, non_blocking=True)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
