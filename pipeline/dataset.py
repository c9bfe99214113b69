"""A patient's data ready for modelling: canonical series → chronological train/validation/test windows.

Splits are by time on the grid: the last ``test_fraction`` of the span is the test set, the last
``validation_fraction`` of the rest is validation (the seed's 30% / 20%). A window belongs to the
split holding its forecast time; windows whose target falls in a later split are purged, so no
training target is ever a validation or test input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, Patient, SeriesSpec, SplitSpec, load_config
from pipeline.errors import WindowError
from pipeline.readers import read_series
from pipeline.series import SeriesReport
from pipeline.windows import Windows, make_windows

MIN_WINDOWS = {"train": 50, "validation": 10, "test": 10}


@dataclass
class PatientDataset:
    patient_id: str
    frame: pd.DataFrame
    report: SeriesReport
    train: Windows
    validation: Windows
    test: Windows
    fingerprint: str
    boundaries: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def fingerprint(path: Path) -> str:
    """sha256 of the data file (first 16 hex digits): ties a model to the exact data it saw."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def split_windows(
    windows: Windows, frame: pd.DataFrame, spec: SeriesSpec, split: SplitSpec
) -> tuple[Windows, Windows, Windows, dict[str, str]]:
    start, end = frame.index[0], frame.index[-1]
    span = end - start
    test_start = start + span * (1 - split.test_fraction)
    val_start = start + (test_start - start) * (1 - split.validation_fraction)
    horizon = pd.Timedelta(minutes=spec.horizon * spec.interval_minutes)
    t = windows.times
    train = (t < val_start) & (t + horizon < val_start)
    val = (t >= val_start) & (t < test_start) & (t + horizon < test_start)
    test = t >= test_start
    bounds = {"validation_start": str(val_start), "test_start": str(test_start)}
    return windows.take(np.asarray(train)), windows.take(np.asarray(val)), windows.take(np.asarray(test)), bounds


def build_dataset(patient_id: str, frame: pd.DataFrame, report: SeriesReport, config: Config, fp: str) -> PatientDataset:
    windows = make_windows(frame, config.series)
    train, val, test, bounds = split_windows(windows, frame, config.series, config.split)
    ds = PatientDataset(patient_id, frame, report, train, val, test, fp, bounds)
    for name, n in ds.sizes().items():
        if n < MIN_WINDOWS[name]:
            raise WindowError(
                f"{patient_id}: only {n} {name} windows (need {MIN_WINDOWS[name]}); the data covers "
                f"{report.span_days} days with {report.coverage:.0%} coverage, too little to train and evaluate"
            )
    return ds


def load_patient_dataset(patient: Patient | str, config: Config | None = None) -> PatientDataset:
    """Read a configured patient's file and build its chronological splits."""
    config = config or load_config()
    if isinstance(patient, str):
        patient = config.patient(patient)
    result = read_series(patient.file, patient.reader, carb_unit=patient.carb_unit, name=patient.id, spec=config.series)
    return build_dataset(patient.id, result.frame, result.report, config, fingerprint(patient.file))


def load_test_file(patient: Patient, config: Config) -> Windows | None:
    """All leak-free windows of a patient's separate test file (e.g. OhioT1DM -testing.xml), if any."""
    if patient.test_file is None:
        return None
    result = read_series(patient.test_file, patient.reader, carb_unit=patient.carb_unit, spec=config.series)
    return make_windows(result.frame, config.series)


def concat_windows(parts: list[Windows]) -> Windows:
    return Windows(
        np.concatenate([w.X for w in parts]),
        np.concatenate([w.y for w in parts]),
        pd.DatetimeIndex(np.concatenate([w.times.to_numpy() for w in parts])),
        parts[0].glucose_index,
    )


_POPULATION: dict[tuple, tuple[Windows, Windows]] = {}


def load_population(config: Config) -> tuple[Windows, Windows]:
    """Train and validation windows of every configured patient (their test splits stay unseen).

    Cached per process and per data version: a patient's model is pretrained on this, then
    fine-tuned on its own windows.
    """
    key = tuple((p.id, fingerprint(p.file)) for p in config.patients)
    if key not in _POPULATION:
        datasets = [load_patient_dataset(p, config) for p in config.patients]
        _POPULATION[key] = (concat_windows([d.train for d in datasets]), concat_windows([d.validation for d in datasets]))
    return _POPULATION[key]
