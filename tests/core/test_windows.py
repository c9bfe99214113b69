"""Windows and splits: shape, feature order, no gap crossing, no information from after t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.dataset import load_patient_dataset
from pipeline.errors import WindowError
from pipeline.readers import read_series
from pipeline.windows import make_windows, window_csv_columns, windows_from_csv_rows, windows_to_csv_rows


def _frame(glucose, observed=None):
    idx = pd.date_range("2024-01-01", periods=len(glucose), freq="5min", name="timestamp")
    f = pd.DataFrame({"glucose": glucose, "insulin": np.arange(len(glucose)) * 0.1, "carbs": 0.0}, index=idx)
    f["observed"] = ~np.isnan(f["glucose"]) if observed is None else observed
    return f


def test_window_shape_order_and_target(config):
    g = np.arange(100, 140, dtype=float)
    w = make_windows(_frame(g), config.series)
    assert w.X.shape == (40 - 14 - 6, 15, 3) and w.X.dtype == np.float32
    # First window ends at index 14; inputs are rows 0..14 in time order, target is row 20.
    assert list(w.X[0, :, 0]) == list(g[:15])
    assert w.X[0, -1, 1] == pytest.approx(1.4)  # insulin is the second feature
    assert w.y[0] == g[20]
    assert w.times[0] == _frame(g).index[14]


def test_windows_never_cross_gaps():
    from pipeline.config import SeriesSpec

    g = np.arange(60, dtype=float) + 100
    g[30] = np.nan
    w = make_windows(_frame(g), SeriesSpec())
    ends = [(t - _frame(g).index[0]) // pd.Timedelta("5min") for t in w.times]
    assert all(not (e - 14 <= 30 <= e) for e in ends)  # no window contains the gap
    assert all(e + 6 != 30 for e in ends)  # and no target is missing


def test_forecast_times_and_targets_are_real_readings(config):
    """HUPA glucose is interpolated from 15-min readings: windows end and are scored only on real ones."""
    r = read_series(config.patient("hupa0002p").file, "hupa", spec=config.series)
    w = make_windows(r.frame, config.series)
    observed = r.frame["observed"]
    assert observed.loc[w.times].all()
    assert observed.loc[w.times + pd.Timedelta("30min")].all()
    # An interpolated point between readings a < t < b equals (weighted) a and b: using it as a
    # forecast time would leak b. None of the windows ends on one.
    assert len(w) < observed.sum()


def test_chronological_splits_are_purged(config):
    ds = load_patient_dataset("hupa0003p", config)
    horizon = pd.Timedelta("30min")
    assert ds.train.times.max() + horizon < ds.validation.times.min()
    assert ds.validation.times.max() + horizon < ds.test.times.min()
    n = sum(ds.sizes().values())
    assert 0.25 < len(ds.test) / n < 0.36


def test_too_little_data_is_a_clear_error(config):
    with pytest.raises(WindowError, match="too little for one window"):
        make_windows(_frame(np.arange(10, dtype=float)), config.series)


def test_window_csv_round_trip(config):
    cols = window_csv_columns(config.series)
    assert cols[0] == "carbs_t-14" and cols[14] == "carbs_t0" and cols[15] == "insulin_t-14" and cols[-1] == "glucose_t0"
    X = np.random.default_rng(0).random((4, 15, 3)).astype(np.float32)
    df = windows_to_csv_rows(X, config.series)
    assert list(df.columns) == cols
    np.testing.assert_array_equal(windows_from_csv_rows(df, config.series), X)


def test_patient_with_too_little_data_is_a_clear_error(config, tmp_path):
    """A file that reads fine but is too short to train and evaluate a model: say so, name the patient."""
    import dataclasses

    from pipeline.dataset import load_patient_dataset

    short = tmp_path / "short.csv"
    lines = (config.patient("hupa0002p").file.read_text().splitlines())[:400]  # ~33 hours
    short.write_text("\n".join(lines) + "\n")
    patient = dataclasses.replace(config.patient("hupa0002p"), file=short)
    with pytest.raises(WindowError, match=r"hupa0002p: only \d+ (train|validation|test) windows"):
        load_patient_dataset(patient, config)


def test_separate_test_file_is_evaluated(config, tmp_path):
    """An OhioT1DM-style patient with a -testing.xml file: its leak-free windows are available."""
    import dataclasses
    import math

    from pipeline.dataset import load_test_file
    from tests.core.ohio_fixture import ohio_xml

    xml = tmp_path / "999-ws-testing.xml"
    xml.write_text(ohio_xml(80, glucose=lambda i: round(140 + 40 * math.sin(i / 6), 1)))
    patient = dataclasses.replace(config.patient("hupa0002p"), reader="ohio", test_file=xml)
    w = load_test_file(patient, config)
    assert len(w) == 80 - 14 - 6 and np.isfinite(w.y).all()
    assert load_test_file(config.patient("hupa0002p"), config) is None
