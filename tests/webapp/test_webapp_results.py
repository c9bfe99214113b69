"""Results: the table (and its CSV), accuracy beside persistence, the plot's range band and highlights."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from pipeline.metrics import evaluate_predictions
from webapp import results
from webapp.validation import prepare_upload


@pytest.fixture
def prepared(window_example, config):
    return prepare_upload("windows-example.csv", window_example, config)


def fake_forecasts(prepared) -> np.ndarray:
    """Deterministic numbers spanning low, in range and high (the module is pure arithmetic)."""
    return np.linspace(50.0, 250.0, prepared.n)


def test_table_and_csv(prepared, config):
    f = fake_forecasts(prepared)
    table = results.results_frame(prepared, f, config.series)
    assert list(table.columns) == [
        "file row", "last reading at", "forecast for", "last glucose (mg/dL)", "forecast in 30 min (mg/dL)",
        "measured (mg/dL)", "error (mg/dL)", "forecast status",
    ]
    assert (table["forecast for"] - table["last reading at"]).eq(pd.Timedelta(minutes=30)).all()
    assert table["forecast status"].iloc[0] == results.LOW and table["forecast status"].iloc[-1] == results.HIGH
    back = pd.read_csv(io.BytesIO(results.results_csv(table)))
    assert len(back) == prepared.n and back["file row"].iloc[0] == 2
    np.testing.assert_allclose(back["forecast in 30 min (mg/dL)"], np.round(f, 1))


def test_accuracy_agrees_with_the_project_metrics(prepared):
    f = fake_forecasts(prepared)
    acc = results.accuracy(prepared, f)
    model = evaluate_predictions(prepared.actual, f)
    persistence = evaluate_predictions(prepared.actual, prepared.last_glucose)
    assert acc["n"] == model["n"] == int(np.isfinite(prepared.actual).sum())
    assert acc["model_mae"] == pytest.approx(model["mae"], abs=1e-3)
    assert acc["model_rmse"] == pytest.approx(model["rmse"], abs=1e-3)
    assert acc["persistence_mae"] == pytest.approx(persistence["mae"], abs=1e-3)
    assert acc["persistence_rmse"] == pytest.approx(persistence["rmse"], abs=1e-3)


def test_mmol_display(prepared, config):
    f = fake_forecasts(prepared)
    table = results.results_frame(prepared, f, config.series, "mmol/L")
    np.testing.assert_allclose(table["forecast in 30 min (mmol/L)"], np.round(f / 18.0182, 2))
    assert results.accuracy(prepared, f, "mmol/L")["model_mae"] == pytest.approx(
        results.accuracy(prepared, f)["model_mae"] / 18.0182
    )


def test_figure(prepared, config):
    f = fake_forecasts(prepared)
    fig = results.forecast_figure(prepared, f, config.series)
    names = [t.name for t in fig.data]
    assert names == ["measured glucose", "forecast (30 min ahead)", "forecast low", "forecast high"]
    band = fig.layout.shapes[0]
    assert (band.y0, band.y1) == (70.0, 180.0)
    lows = next(t for t in fig.data if t.name == "forecast low")
    assert len(lows.y) == int((f < 70).sum())
    # no actuals → no measured line, no accuracy
    prepared.actual[:] = np.nan
    assert results.accuracy(prepared, f) is None
    assert "measured glucose" not in [t.name for t in results.forecast_figure(prepared, f, config.series).data]
