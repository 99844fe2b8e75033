"""The hardware a worker reports (``GET /v1/hardware``)."""

from __future__ import annotations

import pytest

from fluxserve.worker.hardware import detect, sku_for


@pytest.mark.parametrize(
    ("name", "sku"),
    [
        ("NVIDIA H100 80GB HBM3", "gpu-h100"),
        ("NVIDIA H200", "gpu-h200"),
        ("NVIDIA A100-SXM4-80GB", "gpu-a100"),
        ("Tesla T4", "gpu-t4"),
        ("NVIDIA L40S", "gpu-l40s"),
        ("NVIDIA GeForce RTX 4090", "gpu-rtx-4090"),
        ("NVIDIA Some Future Chip", "gpu-some-future-chip"),
    ],
)
def test_sku_names_the_chip_family(name: str, sku: str) -> None:
    assert sku_for(name) == sku


def test_a_cpu_device_is_the_cpu() -> None:
    assert detect("cpu") == {"sku": "cpu", "name": "CPU"}
