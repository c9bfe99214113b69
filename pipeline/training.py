"""Train, evaluate beside the baselines, and export one patient: the library's main job.

The notebook, the KFP components, the Katib trial, the CLI and the benchmark all call these
functions; none re-implements them.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.baselines import baselines
from pipeline.config import Config, Hyperparameters, load_config
from pipeline.dataset import PatientDataset, load_patient_dataset, load_population
from pipeline.metrics import evaluate_predictions

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    patient_id: str
    hyperparameters: dict[str, Any]
    metrics: dict[str, dict]  # "model", "persistence", "linear", "ridge" → evaluate_predictions()
    sizes: dict[str, int]
    training: dict[str, Any]
    version_dir: Path | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def evaluate_baselines(ds: PatientDataset, config: Config) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Fit (on train only) and score every baseline on the test windows."""
    gi = config.series.features.index("glucose")
    metrics, preds = {}, {}
    for b in baselines(config.series.horizon):
        b.fit(ds.train)
        preds[b.name] = b.predict(ds.test.X, gi)
        metrics[b.name] = evaluate_predictions(ds.test.y, preds[b.name])
    return metrics, preds


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "keras", "numpy", "pandas", "scikit-learn", "glucose-forecast"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def build_metadata(ds: PatientDataset, hp: Hyperparameters, result: RunResult, config: Config) -> dict[str, Any]:
    s = config.series
    return {
        "hyperparameters": hp.as_dict(),
        "features": list(s.features),
        "window": s.window,
        "horizon": s.horizon,
        "interval_minutes": s.interval_minutes,
        "units": {"glucose": "mg/dL", "insulin": "U per step", "carbs": "g per step", "output": "mg/dL"},
        "signature": {"input": "window", "output": "glucose"},
        "data": {"file": str(config.patient(ds.patient_id).file.relative_to(config.root)) if config.patient(ds.patient_id).file.is_relative_to(config.root) else str(config.patient(ds.patient_id).file),
                 "fingerprint": ds.fingerprint, "report": ds.report.as_dict(), "splits": ds.sizes(),
                 "boundaries": ds.boundaries},
        "metrics": result.metrics,
        "training": result.training,
        "library_versions": library_versions(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def statistics_windows(ds: PatientDataset, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """The windows whose statistics the network's normalisation and output scale are built from."""
    if config.training.population_pretraining:
        pop_train, _ = load_population(config)
        return pop_train.X, pop_train.y
    return ds.train.X, ds.train.y


def new_model(ds: PatientDataset, hp: Hyperparameters, config: Config):
    """An untrained network with the same structure and statistics ``fit_patient`` uses
    (to rebuild a trained model from its weights, e.g. between pipeline steps)."""
    from pipeline.model import build_model

    return build_model(hp, *statistics_windows(ds, config), config.series, config.training)


_PRETRAINED: dict[tuple, list] = {}


def fit_patient(ds: PatientDataset, hp: Hyperparameters, config: Config, *, verbose: int = 0):
    """Train one patient's network as configured ([training]); return (keras model, training info).

    With population pretraining the network first learns from every configured patient's train
    split (validated on their validation splits), then is fine-tuned on the patient's own windows
    at a lower learning rate. The pretrained weights depend only on the population and the
    hyperparameters, so they are computed once per process and reused across patients.
    """
    import keras

    from pipeline.model import train_model

    keras.utils.set_random_seed(hp.seed)
    model = new_model(ds, hp, config)
    info: dict[str, Any] = {}
    lr = None
    if config.training.population_pretraining:
        pop_train, pop_val = load_population(config)
        # Everything the pretrained weights depend on: hyperparameters, design, window, population.
        key = (tuple(sorted(hp.as_dict().items())), repr(config.training), repr(config.series),
               len(pop_train), float(pop_train.y.sum()), float(pop_train.X.sum()))
        if key not in _PRETRAINED:
            pre = train_model(model, pop_train, pop_val, hp, config.training, verbose=verbose)
            _PRETRAINED[key] = [model.get_weights(), pre]
            log.info("pretrained on %d population windows: %d epochs (best %d) in %.1fs", len(pop_train),
                     pre["epochs_run"], pre["best_epoch"], pre["train_seconds"])
        weights, pre = _PRETRAINED[key]
        model.set_weights(weights)
        info.update(pretrain_windows=len(pop_train), pretrain_epochs=pre["epochs_run"],
                    pretrain_seconds=pre["train_seconds"])
        lr = hp.learning_rate * config.training.finetune_lr_factor
    info.update(train_model(model, ds.train, ds.validation, hp, config.training, learning_rate=lr, verbose=verbose))
    log.info("%s: fine-tuned %d epochs (best %d) in %.1fs", ds.patient_id, info["epochs_run"], info["best_epoch"],
             info["train_seconds"])
    return model, info


def run_patient(
    patient_id: str,
    hp: Hyperparameters | None = None,
    config: Config | None = None,
    *,
    models_dir: Path | None = None,
    export: bool = True,
    dataset: PatientDataset | None = None,
    verbose: int = 0,
) -> RunResult:
    """Load, train, evaluate beside the baselines and (optionally) export one patient's model."""
    from pipeline.export import export_model
    from pipeline.model import predict

    config = config or load_config()
    hp = hp or config.model
    ds = dataset or load_patient_dataset(patient_id, config)
    metrics, preds = evaluate_baselines(ds, config)
    model, info = fit_patient(ds, hp, config, verbose=verbose)
    preds["model"] = predict(model, ds.test.X)
    metrics = {"model": evaluate_predictions(ds.test.y, preds["model"]), **metrics}
    validation = evaluate_predictions(ds.validation.y, predict(model, ds.validation.X))  # Katib's objective
    info["validation_mae"], info["validation_rmse"] = validation["mae"], validation["rmse"]
    result = RunResult(patient_id, hp.as_dict(), metrics, ds.sizes(), info, predictions=preds)
    if export:
        target = Path(models_dir or config.models_dir)
        result.version_dir = export_model(
            model, target, patient_id, build_metadata(ds, hp, result, config),
            window=config.series.window, n_features=len(config.series.features),
        )
        log.info("%s: exported %s", patient_id, result.version_dir)
    result.model = model  # type: ignore[attr-defined]
    result.dataset = ds  # type: ignore[attr-defined]
    return result


def run_best(
    patient_id: str,
    candidates: dict[str, Hyperparameters],
    config: Config | None = None,
    *,
    dataset: PatientDataset | None = None,
) -> tuple[RunResult, dict[str, RunResult]]:
    """Train every candidate (nothing exported) and pick the lowest **validation** MAE, Katib's
    objective; the test split plays no part in the choice. Returns (chosen run, all runs by name).

    The local ``train`` offers the tuned hyperparameters and the defaults: with the seed's goal
    (MAE 25) an Experiment stops at its first trial, which need not beat the defaults.
    """
    config = config or load_config()
    ds = dataset or load_patient_dataset(patient_id, config)
    runs = {name: run_patient(patient_id, hp, config, export=False, dataset=ds) for name, hp in candidates.items()}
    name = min(runs, key=lambda n: runs[n].training["validation_mae"])
    chosen = runs[name]
    chosen.training["selection"] = {
        "chosen": name, **{f"{n}_validation_mae": r.training["validation_mae"] for n, r in runs.items()}}
    if len(runs) > 1:
        log.info("%s: %s hyperparameters chosen on validation MAE (%s)", patient_id, name,
                 ", ".join(f"{n} {r.training['validation_mae']:.3f}" for n, r in runs.items()))
    return chosen, runs
