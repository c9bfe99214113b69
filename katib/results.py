"""Tuning results: ``build/tuning/<patient>.json``, written by the local executor, read by training.

Document (one per patient)::

    {"experiment", "status", "reason", "message", "patient", "preset",
     "best_trial": {"name", "parameters": {"learning_rate", "dense1", "dense2", "epochs"}, "mae",
                    "metrics": {"mae", "rmse"}} | null,
     "trials": [{"name", "status", "assignments", "metrics", "objective", "wall_time_s", ...}],
     "counts", "wall_time_s", "random_state", "max_trial_count", "parallel_trial_count", ...}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.config import PARAMETER_NAMES, Config, Hyperparameters, validate_patient_id

log = logging.getLogger(__name__)


def tuning_dir(config: Config) -> Path:
    return config.root / "build" / "tuning"


def result_path(config: Config, patient_id: str) -> Path:
    return tuning_dir(config) / f"{validate_patient_id(patient_id)}.json"


def load_result(config: Config, patient_id: str) -> dict[str, Any] | None:
    """The whole tuning document of a patient, or None when the patient was never tuned."""
    path = result_path(config, patient_id)
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable tuning result %s: %s", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


def load_best(config: Config, patient_id: str) -> dict[str, Any] | None:
    """The tuning document of a patient if it has a usable best trial, else None.

    ``doc["best_trial"]["parameters"]`` holds learning_rate, dense1, dense2 and epochs.
    """
    doc = load_result(config, patient_id)
    if not doc:
        return None
    best = doc.get("best_trial")
    if not isinstance(best, dict) or not isinstance(best.get("parameters"), dict):
        return None
    if set(PARAMETER_NAMES) - set(best["parameters"]):
        log.warning("tuning result for %s lacks parameters %s; ignoring it", patient_id,
                    sorted(set(PARAMETER_NAMES) - set(best["parameters"])))
        return None
    return doc


def best_hyperparameters(config: Config, patient_id: str) -> Hyperparameters | None:
    """The best trial's hyperparameters (seed from [model]), or None when not tuned."""
    doc = load_best(config, patient_id)
    if doc is None:
        return None
    p = doc["best_trial"]["parameters"]
    return Hyperparameters(
        learning_rate=float(p["learning_rate"]),
        dense1=int(p["dense1"]),
        dense2=int(p["dense2"]),
        epochs=int(p["epochs"]),
        seed=config.model.seed,
    )
