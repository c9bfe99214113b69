"""Rendered Katib Experiments: one per patient, from the config, valid for Katib's schema and SDK."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import yaml

from katib.render import render_all, render_experiment
from katib.spec import ExperimentError, parse_experiment
from pipeline.config import load_config

# kubeflow-katib 0.14's FeasibleSpace predates `distribution` (added with Katib's KEP-2374); the
# OpenAPI schema of the Katib API (tests/fixtures/schemas) has it. Nothing else may be lost.
SDK_UNKNOWN_FIELDS = {"distribution"}


def _sdk_roundtrip(doc: dict) -> dict:
    from kubeflow.katib import ApiClient

    class _Response:
        data = json.dumps(doc)

    client = ApiClient()
    model = client.deserialize(_Response(), "V1beta1Experiment")
    assert type(model).__name__ == "V1beta1Experiment"
    return client.sanitize_for_serialization(model)


def _drop(node, keys):
    if isinstance(node, dict):
        return {k: _drop(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [_drop(v, keys) for v in node]
    return node


def test_render_all_one_valid_experiment_per_patient(config, tmp_path, experiment_validator):
    paths = render_all(config, tmp_path)
    assert sorted(p.stem for p in paths) == sorted(config.patient_ids)
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        errors = sorted(experiment_validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{path.name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)
        back = _sdk_roundtrip(doc)
        assert back == _drop(doc, SDK_UNKNOWN_FIELDS), f"{path.name}: the Katib SDK model lost fields"
        parse_experiment(doc)


def test_experiment_matches_config_and_seed_setup(config):
    doc = render_experiment(config, "hupa0003p")
    spec = doc["spec"]
    assert doc["apiVersion"] == "kubeflow.org/v1beta1" and doc["kind"] == "Experiment"
    assert doc["metadata"]["labels"]["glucose-forecast/patient"] == "hupa0003p"
    assert spec["algorithm"] == {
        "algorithmName": "random",
        "algorithmSettings": [{"name": "random_state", "value": str(config.tuning.random_state)}],
    }
    assert config.tuning.random_state == 12347  # the seed report's Katib setup
    assert spec["objective"]["type"] == "minimize" and spec["objective"]["objectiveMetricName"] == "mae"
    assert spec["objective"]["goal"] == config.tuning.goal == 25
    assert spec["maxTrialCount"] == config.tuning.max_trial_count == 10
    assert spec["parallelTrialCount"] == config.tuning.parallel_trial_count
    assert spec["maxFailedTrialCount"] == config.tuning.max_failed_trial_count
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert [p["name"] for p in spec["parameters"]] == ["learning_rate", "dense1", "dense2", "epochs"]
    tmpl = spec["trialTemplate"]
    job = tmpl["trialSpec"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == tmpl["primaryContainerName"]
    assert container["image"] == f"{config.images.registry}/pipeline:{config.images.tag}"
    command = container["command"]
    assert command[:3] == ["python", "-m", "katib.trial"] and "hupa0003p" in command
    used = set(re.findall(r"\$\{trialParameters\.(\w+)\}", " ".join(command)))
    assert used == {tp["name"] for tp in tmpl["trialParameters"]}
    assert {tp["reference"] for tp in tmpl["trialParameters"]} == {p["name"] for p in spec["parameters"]}


def test_trial_job_is_a_valid_kubernetes_job(config):
    import kubernetes_validate

    job = copy.deepcopy(render_experiment(config, "hupa0002p")["spec"]["trialTemplate"]["trialSpec"])
    job["metadata"] = {"name": "trial"}
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_presets_seed_is_tiny_default_is_wide(config):
    seed = parse_experiment(render_experiment(config, "hupa0002p", "seed"))
    values = sum(p.size() for p in seed.parameters)
    assert values == 9  # the seed's 9 values in all
    assert all(p.type == "discrete" for p in seed.parameters)
    wide = parse_experiment(render_experiment(config, "hupa0002p", "default"))
    assert wide.parameter("learning_rate").type == "double" and wide.parameter("learning_rate").distribution == "logUniform"
    assert math.isinf(wide.search_space_size())
    assert wide.parameter("dense1").size() * wide.parameter("dense2").size() * wide.parameter("epochs").size() > 1000
    with pytest.raises(Exception, match="nope"):
        render_experiment(config, "hupa0002p", "nope")


def test_renderer_follows_the_config_file(tmp_path):
    text = (load_config().path).read_text()
    text = text.replace("max_trial_count = 10", "max_trial_count = 7").replace("random_state = 12347", "random_state = 5")
    text = text.replace('file = "data/', f'file = "{load_config().root}/data/')
    (tmp_path / "glucose-forecast.toml").write_text(text)
    cfg = load_config(tmp_path / "glucose-forecast.toml")
    doc = render_experiment(cfg, "hupa0014p", max_trial_count=None, parallel_trial_count=4)
    assert doc["spec"]["maxTrialCount"] == 7
    assert doc["spec"]["parallelTrialCount"] == 4
    assert doc["spec"]["algorithm"]["algorithmSettings"][0]["value"] == "5"
    paths = render_all(cfg)
    assert paths[0].parent == tmp_path / "build" / "katib"


def test_unknown_patient_is_rejected(config):
    with pytest.raises(Exception, match="unknown patient"):
        render_experiment(config, "hupa9999p")


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda s: s["parameters"][0].update(parameterType="float"), r"spec\.parameters\[0\]\.parameterType",
         "unknown parameter type"),
        (lambda s: s["parameters"][1].update(feasibleSpace={}), r"spec\.parameters\[1\]\.feasibleSpace",
         "empty feasible space"),
        (lambda s: s["parameters"][3].update(parameterType="discrete", feasibleSpace={"list": []}),
         r"spec\.parameters\[3\]\.feasibleSpace\.list", "empty feasible space"),
        (lambda s: s["parameters"][2]["feasibleSpace"].update(min="200", max="100"),
         r"spec\.parameters\[2\]\.feasibleSpace\.min", "min 200 > max 100"),
        (lambda s: s["parameters"][0]["feasibleSpace"].update(distribution="gamma"),
         r"spec\.parameters\[0\]\.feasibleSpace\.distribution", "unknown distribution"),
        (lambda s: s["parameters"][1]["feasibleSpace"].update(step="0"),
         r"spec\.parameters\[1\]\.feasibleSpace\.step", "> 0"),
        (lambda s: s["parameters"][1]["feasibleSpace"].update(min="1.5"),
         r"spec\.parameters\[1\]\.feasibleSpace\.min", "integer"),
        (lambda s: s["objective"].update(type="smallest"), r"spec\.objective\.type", "minimize or maximize"),
        (lambda s: s["algorithm"].update(algorithmName="bayesianoptimization"), r"spec\.algorithm\.algorithmName",
         "random search only"),
        (lambda s: s.update(maxTrialCount=0), r"spec\.maxTrialCount", ">= 1"),
        (lambda s: s["metricsCollectorSpec"]["collector"].update(kind="File"),
         r"spec\.metricsCollectorSpec\.collector\.kind", "StdOut"),
        (lambda s: s["trialTemplate"]["trialParameters"][0].update(reference="lr"),
         r"spec\.trialTemplate\.trialParameters\[0\]\.reference", "not a search parameter"),
    ],
)
def test_bad_experiments_are_rejected_naming_the_field(config, edit, field, words):
    doc = copy.deepcopy(render_experiment(config, "hupa0002p"))
    edit(doc["spec"])
    with pytest.raises(ExperimentError, match=field) as info:
        parse_experiment(doc)
    assert words in str(info.value)


def test_schema_and_sdk_checks_can_fail(config, experiment_validator):
    """The checks above are not vacuous: a misspelt field and a wrong type are caught."""
    doc = copy.deepcopy(render_experiment(config, "hupa0002p"))
    doc["spec"]["parallelTrialCounts"] = 2
    doc["spec"]["parameters"][0]["feasibleSpace"]["min"] = 0.1  # Katib wants strings
    messages = [e.message for e in experiment_validator.iter_errors(doc)]
    assert any("parallelTrialCounts" in m for m in messages)
    assert any("is not of type 'string'" in m for m in messages)
    doc = copy.deepcopy(render_experiment(config, "hupa0002p"))
    doc["spec"]["objective"]["objectivMetricName"] = "mae"
    assert _sdk_roundtrip(doc) != _drop(doc, SDK_UNKNOWN_FIELDS)
