"""The logic of the pipeline's three steps, as plain functions over the library.

The KFP components (pipeline/kfp_pipeline.py) call these inside the pipeline image; they do not
import ``kfp`` (KFP's component runtime exposes only part of ``kfp.dsl``), and none of them
re-implements library code: data from `pipeline.dataset`, training from `pipeline.model`, export
from `pipeline.export`, scores from `pipeline.metrics`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.config import Config, Hyperparameters

PIPELINE_NAME = "glucose-forecast"
YAML_PATH = Path(__file__).with_name("glucose_forecast_pipeline.yaml")  # compiled, committed
KERAS_FILE = "model.keras"  # the trained model inside the `compute` step's Model artifact




def load_dataset(patient_id: str, config: Config, data_file: str = ""):
    """The patient's splits; ``data_file`` replaces the configured file (same reader and units)."""
    from pipeline.dataset import load_patient_dataset

    patient = config.patient(patient_id)
    if data_file:
        patient = dataclasses.replace(patient, file=Path(data_file))
    return load_patient_dataset(patient, config)


def train_step(patient_id: str, hp: Hyperparameters, config: Config, data_file: str = "") -> tuple[Any, Any, dict]:
    """compute: load the data and train; returns (keras model, dataset, training info)."""
    from pipeline.training import fit_patient

    ds = load_dataset(patient_id, config, data_file)
    model, info = fit_patient(ds, hp, config)
    return model, ds, info


def save_step(model, ds, hp: Hyperparameters, info: dict, config: Config, models_dir: Path) -> Path:
    """save: export the SavedModel (with its metadata and the baselines' scores) under models_dir."""
    from pipeline.export import export_model
    from pipeline.training import RunResult, build_metadata, evaluate_baselines

    baseline_metrics, _ = evaluate_baselines(ds, config)
    result = RunResult(ds.patient_id, hp.as_dict(), baseline_metrics, ds.sizes(), info)
    metadata = build_metadata(ds, hp, result, config)
    metadata["produced_by"] = "kfp pipeline glucose-forecast (save step)"
    return export_model(model, models_dir, ds.patient_id, metadata,
                        window=config.series.window, n_features=len(config.series.features))


def predict_saved_model(version_dir: Path, X) -> Any:
    """Forecasts of a SavedModel through its serving signature (what TF Serving would answer)."""
    import numpy as np
    import tensorflow as tf

    from pipeline.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures[SIGNATURE_NAME]
    out = fn(**{INPUT_NAME: tf.constant(np.asarray(X, dtype=np.float32))})[OUTPUT_NAME]
    return out.numpy().reshape(-1)


def mae_step(version_dir: Path, X, y) -> dict:
    """compute_mae: the SavedModel's metrics on the test windows (library: evaluate_predictions)."""
    from pipeline.metrics import evaluate_predictions

    return evaluate_predictions(y, predict_saved_model(version_dir, X))


def rebuild_model(weights: list, ds, hp: Hyperparameters, config: Config):
    """The trained network from its weights (how the notebook's Kale steps hand a model on).

    Kale marshals a Keras model with ``keras.models.load_model`` *before* the next step's imports
    run, when the project's custom layer is not registered yet; plain weight arrays travel safely.
    """
    from pipeline.training import new_model

    model = new_model(ds, hp, config)
    model.set_weights(weights)
    return model
