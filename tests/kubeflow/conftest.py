"""Fixtures for the Kubeflow layer tests (notebook, Kale, KFP, Katib)."""

from __future__ import annotations

import copy
import json
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
