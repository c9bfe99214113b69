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
