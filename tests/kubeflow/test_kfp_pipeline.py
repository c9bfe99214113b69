"""The KFP v2 pipeline: committed YAML up to date, three steps in order, runs locally via kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.kfp_commands import Submission, plan_submission, run_arguments, submit
from pipeline.kfp_steps import YAML_PATH

PARAMS = ["patient_id", "data_file", "learning_rate", "dense1", "dense2", "epochs", "seed"]
TINY = {"learning_rate": 0.003, "dense1": 16, "dense2": 8, "epochs": 2, "seed": 1}


def test_committed_yaml_is_up_to_date(tmp_path):
    from pipeline.kfp_pipeline import compile_pipeline

    fresh = compile_pipeline(tmp_path / "fresh.yaml").read_text()
    assert YAML_PATH.read_text() == fresh, "pipeline/glucose_forecast_pipeline.yaml is stale: run `make pipeline`"


def test_yaml_has_three_steps_in_order_with_parameters(config):
    spec = yaml.safe_load(YAML_PATH.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"compute", "save", "compute-mae"}
    assert tasks["compute"].get("dependentTasks", []) == []
    assert tasks["save"]["dependentTasks"] == ["compute"]
    assert sorted(tasks["compute-mae"]["dependentTasks"]) == ["compute", "save"]
    # artifacts flow: compute -> save (model), save -> compute_mae (SavedModel), compute -> compute_mae (data)
    save_in = tasks["save"]["inputs"]["artifacts"]["trained_model"]["taskOutputArtifact"]
    assert save_in == {"outputArtifactKey": "trained_model", "producerTask": "compute"}
    mae_in = tasks["compute-mae"]["inputs"]["artifacts"]
    assert mae_in["saved_model"]["taskOutputArtifact"]["producerTask"] == "save"
    assert mae_in["test_data"]["taskOutputArtifact"]["producerTask"] == "compute"
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert list(inputs) == sorted(PARAMS) or set(inputs) == set(PARAMS)
    assert inputs["learning_rate"]["defaultValue"] == config.model.learning_rate
    assert inputs["dense1"]["defaultValue"] == config.model.dense1
    assert inputs["epochs"]["defaultValue"] == config.model.epochs
    assert inputs["patient_id"]["defaultValue"] == config.patient_ids[0]
    comp = spec["components"]["comp-compute-mae"]
    assert comp["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    image = f"{config.images.registry}/pipeline:{config.images.tag}"
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"] == image, name
        assert "pip install" not in " ".join(executor["container"]["command"]), f"{name} would pip-install at start"


@pytest.mark.slow
def test_pipeline_runs_locally_end_to_end(fast_config, tmp_path):
    """compute -> save -> compute_mae through kfp.local: a servable SavedModel and the library's MAE."""
    from kfp import local

    from pipeline.config import Hyperparameters
    from pipeline.kfp_pipeline import glucose_forecast_pipeline
    from pipeline.signature import INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE_NAME

    config = fast_config  # the steps read it through $GLUCOSE_FORECAST_CONFIG
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    run = glucose_forecast_pipeline(patient_id="hupa0003p", **TINY)
    mae = run.outputs["mae"]

    # the SavedModel artifact is a TF Serving model base path: <artifact>/<patient>/1/
    [run_dir] = [p for p in root.iterdir() if p.is_dir()]
    version = run_dir / "save" / "saved_model" / "hupa0003p" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    meta = json.loads((version / METADATA_FILE).read_text())
    assert meta["patient"] == "hupa0003p" and meta["hyperparameters"]["dense1"] == 16
    executor_output = json.loads((run_dir / "compute-mae" / "executor_output.json").read_text())
    [metrics] = executor_output["artifacts"]["metrics"]["artifacts"]
    assert metrics["metadata"]["mae"] == mae and metrics["metadata"]["rmse"] > mae

    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version))
    fn = loaded.signatures[SIGNATURE_NAME]
    spec = fn.structured_input_signature[1][INPUT_NAME]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, config.series.window, 3]
    out = fn(**{INPUT_NAME: tf.constant(np.full((2, config.series.window, 3), [150.0, 0.0, 0.0], np.float32))})
    assert out[OUTPUT_NAME].shape == (2,) and np.all(np.isfinite(out[OUTPUT_NAME].numpy()))

    # the metric equals what the library computes for the same data and hyperparameters
    from pipeline.training import run_patient

    lib = run_patient("hupa0003p", Hyperparameters(**TINY), config, export=False)
    assert mae == pytest.approx(lib.metrics["model"]["mae"], abs=0.002)


def test_submit_plan_uses_tuned_parameters_and_rejects_bad_input(config, tmp_path, monkeypatch):
    args, source = run_arguments(config, "hupa0002p", use_tuned=False)
    assert source.startswith("defaults") and list(args) == PARAMS
    assert args["dense1"] == config.model.dense1

    import katib.results as results

    tuned = {"status": "Succeeded", "best_trial": {"name": "t1", "mae": 12.0, "parameters":
             {"learning_rate": 0.002, "dense1": 48, "dense2": 24, "epochs": 20}}}
    monkeypatch.setattr(results, "tuning_dir", lambda cfg: tmp_path)
    (tmp_path / "hupa0002p.json").write_text(json.dumps(tuned))
    sub = plan_submission(config, "http://kfp.example:8080/", ["hupa0002p", "hupa0003p"])
    assert sub.host == "http://kfp.example:8080" and sub.package == YAML_PATH
    first, second = sub.runs
    assert first["arguments"]["dense1"] == 48 and first["source"].startswith("tuned")
    assert second["arguments"]["dense1"] == config.model.dense1
    assert sub.version_name.startswith("glucose-forecast-")

    from pipeline.errors import InputError

    with pytest.raises(InputError, match="endpoint URL"):
        plan_submission(config, "kfp.example:8080", ["hupa0002p"])
    with pytest.raises(InputError, match="make pipeline"):
        plan_submission(config, "http://x", ["hupa0002p"], package=tmp_path / "missing.yaml")
    with pytest.raises(Exception, match="unknown patient"):
        plan_submission(config, "http://x", ["nobody"])


class _RecordingClient:
    """Stands in for kfp.Client (no KFP API server here): records the calls `submit` makes."""

    def __init__(self):
        self.calls = []

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", name))
        return None

    def upload_pipeline(self, path, pipeline_name, description):
        self.calls.append(("upload_pipeline", Path(path).name, pipeline_name))
        return type("P", (), {"pipeline_id": "p1"})()

    def list_pipeline_versions(self, pipeline_id, page_size):
        return type("L", (), {"pipeline_versions": []})()

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        self.calls.append(("upload_pipeline_version", pipeline_version_name, pipeline_id))
        return type("V", (), {"pipeline_version_id": "v1"})()

    def create_experiment(self, name, **kw):
        self.calls.append(("create_experiment", name))
        return type("E", (), {"experiment_id": "e1"})()

    def run_pipeline(self, experiment_id, job_name, params, pipeline_id, version_id):
        self.calls.append(("run_pipeline", job_name, params["patient_id"], pipeline_id, version_id))
        return type("R", (), {"run_id": f"r-{params['patient_id']}"})()


def test_submit_uploads_then_runs_each_patient(config):
    sub = plan_submission(config, "http://kfp.example", ["hupa0002p", "hupa0004p"], use_tuned=False)
    client = _RecordingClient()
    assert submit(sub, client) == ["r-hupa0002p", "r-hupa0004p"]
    names = [c[0] for c in client.calls]
    assert names == ["get_pipeline_id", "upload_pipeline", "upload_pipeline_version", "create_experiment",
                     "run_pipeline", "run_pipeline"]
    assert client.calls[1][1] == YAML_PATH.name


def test_submit_cli_reports_an_unreachable_endpoint(capsys):
    from pipeline.cli import main

    assert main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--patient", "hupa0002p"]) == 1
    err = capsys.readouterr().err
    assert "cannot submit to http://127.0.0.1:9" in err
    assert isinstance(Submission, type)


def test_cli_compile_and_run_local_bad_patient(tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    assert out.read_text() == YAML_PATH.read_text()
    assert main(["pipeline", "run-local", "--patient", "nobody"]) == 2
    assert "unknown patient 'nobody'" in capsys.readouterr().err
    assert main(["pipeline"]) == 2  # no action: help
