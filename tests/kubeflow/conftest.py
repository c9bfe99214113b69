"""Fixtures for the Kubeflow layer tests (notebook, Kale, KFP, Katib)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load_config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMAS = REPO / "tests" / "fixtures" / "schemas"
FAKE_TRIAL = HERE / "fake_trial.py"


@pytest.fixture(scope="session")
def config():
    return load_config(REPO / "glucose-forecast.toml")


def fast_config_text(config, **replace: str) -> str:
    """The project config as text, data paths made absolute, without population pretraining
    (each test training then sees one patient's data only: the mechanics under test are the same)."""
    text = config.path.read_text().replace('file = "data/', f'file = "{config.root}/data/')
    text, n = re.subn(r"^population_pretraining = true", "population_pretraining = false", text, flags=re.M)
    assert n == 1, "[training].population_pretraining not found in the config"
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def fast_config(config, tmp_path, monkeypatch):
    """A copy of the config in tmp_path (see fast_config_text), active through $GLUCOSE_FORECAST_CONFIG
    for this process and every subprocess, kernel or pipeline step the test starts."""
    path = tmp_path / "glucose-forecast.toml"
    path.write_text(fast_config_text(config))
    monkeypatch.setenv("GLUCOSE_FORECAST_CONFIG", str(path))
    return load_config(path)


TINY_SEARCH = """
[search.default]
learning_rate = { type = "double", min = 0.002, max = 0.004 }
dense1 = { type = "discrete", values = [8, 16] }
dense2 = { type = "int", min = 4, max = 8, step = 4 }
epochs = { type = "int", min = 1, max = 2 }
"""


@pytest.fixture
def tiny_config(config, tmp_path, monkeypatch):
    """The project config with a tiny search space, 2 trials in parallel, output under tmp_path."""
    text = fast_config_text(config, **{"max_trial_count = 10": "max_trial_count = 2"})
    text = re.sub(r"\[search\.default\].*?(?=\n\[|\n# )", TINY_SEARCH.strip() + "\n", text, flags=re.S)
    path = tmp_path / "glucose-forecast.toml"
    path.write_text(text)
    monkeypatch.setenv("GLUCOSE_FORECAST_CONFIG", str(path))
    cfg = load_config(path)
    assert cfg.search_space("default")["epochs"]["max"] == 2
    return cfg


def _strict(node: Any) -> Any:
    """Katib's OpenAPI types list their fields but do not forbid others; forbid them (typos)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@pytest.fixture(scope="session")
def experiment_validator():
    """A jsonschema validator for v1beta1.Experiment from Katib's own OpenAPI document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    doc = _strict(json.loads((SCHEMAS / "katib-v1beta1-openapi.json").read_text()))
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:katib-openapi", resource)
    schema = {"$ref": "urn:katib-openapi#/components/schemas/v1beta1.Experiment"}
    return Draft202012Validator(schema, registry=registry)


def fake_experiment(doc: dict, *extra: str, **spec: Any) -> dict:
    """A rendered Experiment whose trial runs tests/kubeflow/fake_trial.py instead of katib.trial.

    Only the program changes (`python -m katib.trial` -> `python fake_trial.py`); the arguments
    with their ${trialParameters.*} placeholders stay as rendered. ``spec`` overrides spec fields.
    """
    doc = copy.deepcopy(doc)
    container = doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:3] == ["python", "-m", "katib.trial"], command
    container["command"] = ["python", str(FAKE_TRIAL), *command[3:], *extra]
    for key, value in spec.items():
        if key == "goal" and value is None:
            doc["spec"]["objective"].pop("goal", None)
        elif key == "goal":
            doc["spec"]["objective"]["goal"] = value
        elif value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


@pytest.fixture(name="fake_experiment")
def fake_experiment_fixture():
    return fake_experiment
