"""What hardware a worker runs on, as Replicate names it (``GET /v1/hardware``: ``sku`` and ``name``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

CPU = {"sku": "cpu", "name": "CPU"}
# Replicate's GPU skus name the chip family ("gpu-t4", "gpu-a100-large", "gpu-h100").
_FAMILY = re.compile(r"\b(B200|H200|H100|GH200|A100|A40|A10G?|L40S|L40|L4|T4|V100|RTX ?\d{4})\b", re.IGNORECASE)


def sku_for(gpu_name: str) -> str:
    """``gpu-h100`` for "NVIDIA H100 80GB HBM3"; ``gpu-<slug>`` of the whole name for chips not listed."""
    match = _FAMILY.search(gpu_name)
    family = match.group(1) if match else re.sub(r"^nvidia\s+", "", gpu_name, flags=re.IGNORECASE)
    return "gpu-" + re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-")


def _driver_gpu_names() -> list[str]:
    """GPU models as the NVIDIA driver lists them (no torch, no CUDA context needed)."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def detect(device: str | None) -> dict[str, str]:
    """The worker's hardware: its CUDA device if it uses one, else the CPU. torch is never imported here
    (a forwarding-only worker stays light): before its predictors import it, the driver's list says."""
    if device is not None and not device.startswith("cuda"):
        return dict(CPU)
    torch = sys.modules.get("torch")
    if torch is None:
        names = _driver_gpu_names()
        index = int(device.split(":", 1)[1]) if device and ":" in device and device.split(":", 1)[1].isdigit() else 0
        if index < len(names):
            return {"sku": sku_for(names[index]), "name": names[index]}
        return dict(CPU)
    try:
        if not torch.cuda.is_available():
            return dict(CPU)
        index = torch.device(device).index or 0 if device else 0
        name = str(torch.cuda.get_device_name(index))
    except Exception:  # a broken driver must not stop the heartbeat
        return dict(CPU)
    return {"sku": sku_for(name), "name": name}
