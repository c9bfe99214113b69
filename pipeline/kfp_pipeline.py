"""The KFP v2 pipeline: ``compute`` → ``save`` → ``compute_mae``, the seed's three Kale steps in code.

* ``compute`` loads a patient's data and trains the network (library: load_patient_dataset,
  train_model); outputs the trained Keras model and the test windows as artifacts;
* ``save`` exports the servable SavedModel (library: export_model) into its output artifact,
  laid out as TF Serving wants it: ``<artifact>/<patient>/1/saved_model.pb``;
* ``compute_mae`` loads that SavedModel through its serving signature, forecasts the test windows
  and logs ``mae`` (and rmse, Clarke A+B) as the pipeline's Metrics output.

Each component runs in the pipeline image (pipeline/Dockerfile: pinned TensorFlow, kfp and this
project installed), so nothing is pip-installed when a step starts (``install_kfp_package=False``).
The step logic lives in `pipeline.kfp_steps` (plain functions over the library, importable where
KFP runs a component, which exposes only part of ``kfp.dsl``); the components only move artifacts.

``make pipeline`` compiles this to pipeline/glucose_forecast_pipeline.yaml (committed; a test
fails when it is stale). The tests run it end to end with ``kfp.local``.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations at decoration time.
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from pipeline.config import Config, load_config
from pipeline.kfp_steps import PIPELINE_NAME, YAML_PATH


def pipeline_image(config: Config | None = None) -> str:
    """The image every pipeline step (and Katib trial) runs in: ``<registry>/pipeline:<tag>``."""
    from katib.render import pipeline_image as image

    return image(config or load_config())


# ---------------------------------------------------------------------------------------------
# KFP components (their source is shipped in the compiled YAML; they import the installed project)
# ---------------------------------------------------------------------------------------------

_IMAGE = pipeline_image()


@dsl.component(base_image=_IMAGE, install_kfp_package=False)
def compute(
    patient_id: str,
    data_file: str,
    learning_rate: float,
    dense1: int,
    dense2: int,
    epochs: int,
    seed: int,
    trained_model: Output[Model],
    test_data: Output[Dataset],
) -> dict:
    """Load the patient's data and train the network; output the model and the test windows."""
    import os

    import numpy as np

    from pipeline.config import Hyperparameters, load_config
    from pipeline.kfp_steps import KERAS_FILE, train_step

    config = load_config()
    hp = Hyperparameters(learning_rate=learning_rate, dense1=dense1, dense2=dense2, epochs=epochs, seed=seed)
    model, ds, info = train_step(patient_id, hp, config, data_file)
    os.makedirs(trained_model.path, exist_ok=True)
    model.save(os.path.join(trained_model.path, KERAS_FILE))
    trained_model.metadata.update({"patient": patient_id, **hp.as_dict(), **info})
    with open(test_data.path, "wb") as fh:
        np.savez(fh, X=ds.test.X, y=ds.test.y)
    test_data.metadata.update({"patient": patient_id, "windows": int(len(ds.test)), "fingerprint": ds.fingerprint})
    return {**info, "sizes": ds.sizes()}


@dsl.component(base_image=_IMAGE, install_kfp_package=False)
def save(
    patient_id: str,
    data_file: str,
    learning_rate: float,
    dense1: int,
    dense2: int,
    epochs: int,
    seed: int,
    training: dict,
    trained_model: Input[Model],
    saved_model: Output[Model],
) -> str:
    """Export the trained network as a servable SavedModel: <artifact>/<patient>/<version>/."""
    import os
    from pathlib import Path

    from pipeline.config import Hyperparameters, load_config
    from pipeline.kfp_steps import KERAS_FILE, load_dataset, save_step
    from pipeline.model import load_keras_model

    config = load_config()
    hp = Hyperparameters(learning_rate=learning_rate, dense1=dense1, dense2=dense2, epochs=epochs, seed=seed)
    model = load_keras_model(os.path.join(trained_model.path, KERAS_FILE))
    ds = load_dataset(patient_id, config, data_file)
    info = {k: v for k, v in training.items() if k != "sizes"}
    version_dir = save_step(model, ds, hp, info, config, Path(saved_model.path))
    rel = os.path.relpath(version_dir, saved_model.path)
    saved_model.metadata.update({"patient": patient_id, "version": int(version_dir.name), "saved_model": rel})
    return rel


@dsl.component(base_image=_IMAGE, install_kfp_package=False)
def compute_mae(
    saved_model: Input[Model],
    saved_model_dir: str,
    test_data: Input[Dataset],
    metrics: Output[Metrics],
) -> float:
    """MAE (mg/dL) of the exported SavedModel on the test windows; logged as the `mae` metric."""
    import os

    import numpy as np

    from pipeline.kfp_steps import mae_step

    with np.load(test_data.path) as data:
        X, y = data["X"], data["y"]
    result = mae_step(os.path.join(saved_model.path, saved_model_dir), X, y)
    metrics.log_metric("mae", result["mae"])
    metrics.log_metric("rmse", result["rmse"])
    metrics.log_metric("clarke_ab", result["clarke_ab"])
    print(f"mae={result['mae']:.6f}")
    return float(result["mae"])


def _defaults(config: Config) -> dict[str, Any]:
    m = config.model
    return {
        "patient_id": config.patient_ids[0],
        "data_file": "",
        "learning_rate": m.learning_rate,
        "dense1": m.dense1,
        "dense2": m.dense2,
        "epochs": m.epochs,
        "seed": m.seed,
    }


_D = _defaults(load_config())


@dsl.pipeline(
    name=PIPELINE_NAME,
    description=(
        "Per-patient 30-minute glucose forecasting: compute (load data, train) -> save (export the "
        "SavedModel) -> compute_mae (MAE on the test set)."
    ),
)
def glucose_forecast_pipeline(
    patient_id: str = _D["patient_id"],
    data_file: str = _D["data_file"],
    learning_rate: float = _D["learning_rate"],
    dense1: int = _D["dense1"],
    dense2: int = _D["dense2"],
    epochs: int = _D["epochs"],
    seed: int = _D["seed"],
) -> NamedTuple("Outputs", [("mae", float)]):  # noqa: UP014 - KFP reads this form
    hp = {"patient_id": patient_id, "data_file": data_file, "learning_rate": learning_rate,
          "dense1": dense1, "dense2": dense2, "epochs": epochs, "seed": seed}
    train = compute(**hp)
    train.set_display_name("compute")
    export = save(**hp, training=train.outputs["Output"], trained_model=train.outputs["trained_model"])
    export.set_display_name("save")
    score = compute_mae(saved_model=export.outputs["saved_model"], saved_model_dir=export.outputs["Output"],
                        test_data=train.outputs["test_data"])
    score.set_display_name("compute_mae")
    for task in (train, export, score):
        task.set_env_variable("TF_CPP_MIN_LOG_LEVEL", "2")
        task.set_cpu_request("1").set_memory_request("1Gi").set_memory_limit("3Gi")
    Outputs = NamedTuple("Outputs", [("mae", float)])  # noqa: UP014
    return Outputs(mae=score.outputs["Output"])


def compile_pipeline(path: Path | str = YAML_PATH) -> Path:
    """Compile the pipeline to YAML (what `make pipeline` commits)."""
    from kfp import compiler

    path = Path(path)
    compiler.Compiler().compile(glucose_forecast_pipeline, str(path))
    return path
