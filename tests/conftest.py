"""Shared fixtures: the project config and tiny real SavedModels exported by the library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
TINY_PATIENTS = ("hupa0002p", "hupa0003p")


@pytest.fixture(scope="session")
def config():
    from pipeline.config import load_config

    return load_config(REPO / "glucose-forecast.toml")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory, config) -> Path:
    """models/<pid>/1/ for two real patients: tiny networks trained 2 epochs by the library."""
    from pipeline.config import Hyperparameters
    from pipeline.training import run_patient

    models = tmp_path_factory.mktemp("models")
    hp = Hyperparameters(learning_rate=0.003, dense1=16, dense2=8, epochs=2, seed=1)
    for pid in TINY_PATIENTS:
        run_patient(pid, hp, config, models_dir=models)
    return models


# Fixtures shared by the serving and reliability tests (servers, nginx gateway, tiny models).
pytest_plugins = ["tests.serving_fixtures"]
