"""Tiny dev and Kontext pipelines and their predictors, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxserve.predictors.flux_dev import FluxDevPredictor
from fluxserve.predictors.flux_kontext import FluxKontextPredictor
from fluxserve.predictors.tiny import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "flux-dev", kind="dev")


@pytest.fixture(scope="session")
def tiny_kontext(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "flux-kontext-dev", kind="kontext")


@pytest.fixture(scope="session")
def dev(tiny_dev: Path) -> FluxDevPredictor:
    predictor = FluxDevPredictor(str(tiny_dev))
    predictor.setup()
    return predictor


@pytest.fixture(scope="session")
def kontext(tiny_kontext: Path) -> FluxKontextPredictor:
    predictor = FluxKontextPredictor(str(tiny_kontext))
    predictor.setup()
    return predictor
