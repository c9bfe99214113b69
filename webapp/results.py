"""What the patient sees after a forecast: the table, the plot, the accuracy, the CSV download."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pipeline.config import SeriesSpec
from pipeline.metrics import evaluate_predictions
from webapp.validation import MGDL_PER_MMOL, PreparedInput

TARGET_RANGE_MGDL = (70.0, 180.0)  # international consensus time-in-range target
LOW, IN_RANGE, HIGH = "Low (below 70 mg/dL)", "In range", "High (above 180 mg/dL)"
COLORS = {"forecast": "#1f6feb", "actual": "#444444", LOW: "#d1242f", HIGH: "#d97706", "band": "#2da44e"}
WEBGL_ABOVE = 3000  # points; beyond this the plot uses WebGL traces


def unit_factor(unit: str) -> float:
    """Multiply mg/dL by this to show values in ``unit``."""
    return 1.0 / MGDL_PER_MMOL if unit == "mmol/L" else 1.0


def table_decimals(unit: str) -> int:
    """Decimals of the glucose values in the results table (shown and downloaded)."""
    return 2 if unit == "mmol/L" else 1


def status_of(value_mgdl: np.ndarray) -> np.ndarray:
    low, high = TARGET_RANGE_MGDL
    return np.where(value_mgdl < low, LOW, np.where(value_mgdl > high, HIGH, IN_RANGE))


def results_frame(prep: PreparedInput, forecasts: np.ndarray, spec: SeriesSpec, unit: str = "mg/dL") -> pd.DataFrame:
    """One row per forecast, values in ``unit``; the same table is shown and downloaded."""
    f = unit_factor(unit)
    digits = table_decimals(unit)
    minutes = spec.horizon * spec.interval_minutes
    out = pd.DataFrame(index=pd.RangeIndex(prep.n, name="forecast"))
    if prep.rows is not None:
        out["file row"] = prep.rows
    if prep.times is not None:
        out["last reading at"] = prep.times
        out["forecast for"] = prep.times + pd.Timedelta(minutes=minutes)
    out[f"last glucose ({unit})"] = np.round(prep.last_glucose * f, digits)
    out[f"forecast in {minutes} min ({unit})"] = np.round(forecasts * f, digits)
    if prep.has_actuals:
        out[f"measured ({unit})"] = np.round(prep.actual * f, digits)
        out[f"error ({unit})"] = np.round((forecasts - prep.actual) * f, digits)
    out["forecast status"] = status_of(forecasts)
    return out


def accuracy(prep: PreparedInput, forecasts: np.ndarray, unit: str = "mg/dL") -> dict[str, float] | None:
    """MAE and RMSE of the model and of persistence (glucose stays where it is) where actuals exist.

    Scored by the project's own metrics (:func:`pipeline.metrics.evaluate_predictions`), in ``unit``.
    """
    if not np.isfinite(prep.actual).any():
        return None
    f = unit_factor(unit)
    model = evaluate_predictions(prep.actual, forecasts)
    persistence = evaluate_predictions(prep.actual, prep.last_glucose)
    return {
        "n": model["n"],
        "model_mae": model["mae"] * f,
        "model_rmse": model["rmse"] * f,
        "persistence_mae": persistence["mae"] * f,
        "persistence_rmse": persistence["rmse"] * f,
    }


def counts(forecasts: np.ndarray) -> dict[str, int]:
    status = status_of(forecasts)
    return {LOW: int((status == LOW).sum()), IN_RANGE: int((status == IN_RANGE).sum()), HIGH: int((status == HIGH).sum())}


def forecast_figure(prep: PreparedInput, forecasts: np.ndarray, spec: SeriesSpec, unit: str = "mg/dL") -> go.Figure:
    """Forecasts over time (or row), the measured glucose when known, the target range shaded."""
    f = unit_factor(unit)
    minutes = spec.horizon * spec.interval_minutes
    if prep.times is not None:
        x = prep.times + pd.Timedelta(minutes=minutes)
        x_title = "time the forecast is for"
    elif prep.rows is not None:
        x = pd.Index(prep.rows)
        x_title = "row of the file"
    else:
        x = pd.RangeIndex(prep.n)
        x_title = "forecast"
    scatter = go.Scattergl if prep.n > WEBGL_ABOVE else go.Scatter
    y = forecasts * f
    fig = go.Figure()
    low, high = (v * f for v in TARGET_RANGE_MGDL)
    fig.add_hrect(
        y0=low, y1=high, fillcolor=COLORS["band"], opacity=0.12, line_width=0, layer="below",
        annotation_text="target range", annotation_position="top left",
        annotation_font_color=COLORS["band"],
    )
    if prep.has_actuals:
        fig.add_trace(
            scatter(
                x=x, y=prep.actual * f, mode="lines", name="measured glucose",
                line={"color": COLORS["actual"], "width": 1.5, "dash": "dot"},
                hovertemplate=f"measured: %{{y:.1f}} {unit}<extra></extra>",
            )
        )
    fig.add_trace(
        scatter(
            x=x, y=y, mode="lines+markers" if prep.n <= 400 else "lines", name=f"forecast ({minutes} min ahead)",
            line={"color": COLORS["forecast"], "width": 2}, marker={"size": 5},
            hovertemplate=f"forecast: %{{y:.1f}} {unit}<extra></extra>",
        )
    )
    status = status_of(forecasts)
    for label in (LOW, HIGH):
        sel = status == label
        if sel.any():
            fig.add_trace(
                scatter(
                    x=np.asarray(x)[sel], y=y[sel], mode="markers", name=f"forecast {label.split(' (')[0].lower()}",
                    marker={"color": COLORS[label], "size": 9, "symbol": "circle", "line": {"width": 1, "color": "white"}},
                    hovertemplate=f"{label}: %{{y:.1f}} {unit}<extra></extra>",
                )
            )
    top = max(float(np.nanmax(y)), float(np.nanmax(prep.actual * f)) if prep.has_actuals else 0.0, high)
    bottom = min(0.0, float(np.nanmin(y)) * 1.1)  # a (wrong) negative forecast stays visible
    fig.update_layout(
        height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        yaxis={"title": f"glucose ({unit})", "range": [bottom, top * 1.1]},
        xaxis={"title": x_title}, template="plotly_white",
    )
    return fig


def results_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode()
