"""The Kale notebook: runs top to bottom on small data, compiles offline with Kale to the three steps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "glucose_forecasting.ipynb"
PIPELINE_NAME = "glucose-forecast-notebook"
EXPERIMENT_NAME = "glucose-forecast"
PARAMETERS = {"patient_id", "data_file", "learning_rate", "dense1", "dense2", "epochs", "seed"}


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _cell(nb, tag):
    [cell] = [c for c in nb.cells if tag in _tags(c)]
    return cell


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_kale_tags_and_metadata(notebook, config):
    code = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = [t for c in code for t in _tags(c)]
    for tag in ("imports", "functions", "pipeline-parameters", "step:compute", "step:save", "prev:compute",
                "step:compute_mae", "prev:save", "pipeline-metrics"):
        assert tagged.count(tag) == 1, tag
    steps = [t for t in tagged if t.startswith("step:")]
    assert steps == ["step:compute", "step:save", "step:compute_mae"]
    assert "prev:compute" in _tags(_cell(notebook, "step:save"))
    assert "prev:save" in _tags(_cell(notebook, "step:compute_mae"))
    assert _cell(notebook, "pipeline-metrics").source.strip() == "print(mae)"
    meta = notebook.metadata["kubeflow_notebook"]
    assert meta["pipeline_name"] == PIPELINE_NAME and meta["experiment_name"] == EXPERIMENT_NAME
    assert meta["base_image"] == f"{config.images.registry}/pipeline:{config.images.tag}"


def test_parameter_defaults_mirror_the_config(notebook, config):
    values: dict = {}
    exec(_cell(notebook, "pipeline-parameters").source, {}, values)  # noqa: S102 - our own notebook
    assert set(values) == PARAMETERS
    m = config.model
    assert (values["learning_rate"], values["dense1"], values["dense2"], values["epochs"], values["seed"]) == (
        m.learning_rate, m.dense1, m.dense2, m.epochs, m.seed), "notebook defaults drifted from [model]"
    assert values["patient_id"] in config.patient_ids and values["data_file"] == ""


def test_imports_cell_needs_nothing_outside_the_step_image(notebook):
    """Kale pip-installs what the imports/functions cells import; all of it must be in the image."""
    source = _cell(notebook, "imports").source + "\n" + _cell(notebook, "functions").source
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", source, re.M))
    assert imported <= {"matplotlib", "numpy", "IPython"}, imported


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(notebook, tmp_path, monkeypatch, fast_config):
    from nbclient import NotebookClient

    nb = nbformat.from_dict(json.loads(json.dumps(notebook)))  # a copy
    params = _cell(nb, "pipeline-parameters")
    small = {"patient_id": '"hupa0003p"', "epochs": "2", "dense1": "16", "dense2": "8", "learning_rate": "0.003"}
    for name, value in small.items():
        params.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", params.source, flags=re.M)
        assert n == 1, name
    monkeypatch.setenv("GF_MODELS_DIR", str(tmp_path / "models"))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = {t: c.outputs for c in nb.cells if c.cell_type == "code" for t in _tags(c)}
    text = lambda outs: "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")  # noqa: E731
    assert "windows:" in text(outputs["step:compute"])
    assert "exported" in text(outputs["step:save"])
    version = tmp_path / "models" / "hupa0003p" / "1"
    assert (version / "saved_model.pb").is_file()
    mae = float(text(outputs["pipeline-metrics"]).strip())
    assert 3 < mae < 60
    table = "".join(o["data"].get("text/markdown", "") for o in outputs["step:compute_mae"] if "data" in o)
    assert "| model |" in table and "| persistence |" in table and "| ridge |" in table
    assert f"{mae:.2f}" in table
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # the data plot and the forecast plot
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_kale_compiles_it_to_the_three_steps(notebook, tmp_path, config):
    nb_copy = tmp_path / NOTEBOOK.name
    nb_copy.write_text(NOTEBOOK.read_text())
    kale = Path(sys.executable).with_name("kale")
    proc = subprocess.run(
        [str(kale), "--nb", str(nb_copy), "--pipeline_name", PIPELINE_NAME, "--experiment_name", EXPERIMENT_NAME],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    dsl = tmp_path / ".kale" / f"{PIPELINE_NAME}.kale.py"
    compiled = tmp_path / ".kale" / f"{PIPELINE_NAME}.pipeline.yaml"
    assert dsl.is_file() and compiled.is_file()
    spec = next(yaml.safe_load_all(compiled.read_text()))
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"compute-step", "save-step", "compute-mae-step"}
    assert not tasks["compute-step"].get("dependentTasks")
    assert tasks["save-step"]["dependentTasks"] == ["compute-step"]
    assert tasks["compute-mae-step"]["dependentTasks"] == ["save-step"]
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == PARAMETERS
    for task in tasks.values():
        assert set(task["inputs"]["parameters"]) >= PARAMETERS
    # the metric: compute_mae logs `mae` through Kale's metrics artifact
    outputs = spec["components"]["comp-compute-mae-step"]["outputDefinitions"]["artifacts"]
    assert outputs["kale_metrics_artifact"]["artifactType"]["schemaTitle"] == "system.Metrics"

    # every step runs in the project's image, and what Kale pip-installs there is already installed
    image = f"{config.images.registry}/pipeline:{config.images.tag}"
    packages = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["image"] == image
        command = " ".join(executor["container"]["command"])
        install = re.search(r"pip install (.*?) &&", command).group(1)
        packages |= set(re.findall(r"'([^']+)'", install))
    assert "kubeflow-kale==2.3.0" in packages
    check = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", *sorted(packages)],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, f"Kale would need the network for {sorted(packages)}: {check.stderr}"
