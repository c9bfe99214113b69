"""Forecast metrics: RMSE, MAE (mg/dL) and the Clarke error grid. One function scores everything."""

from __future__ import annotations

import numpy as np

ZONES = ("A", "B", "C", "D", "E")


def clarke_zones(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Clarke error grid zone (0=A .. 4=E) of each (reference, prediction) pair, mg/dL.

    Zone boundaries after Clarke et al., Diabetes Care 10(5), 1987.
    """
    r = np.asarray(reference, dtype=float)
    p = np.asarray(prediction, dtype=float)
    zone = np.full(r.shape, 1, dtype=int)  # B unless another zone applies
    a = ((r <= 70) & (p <= 70)) | (np.abs(p - r) <= 0.2 * r)
    e = ((r >= 180) & (p <= 70)) | ((r <= 70) & (p >= 180))
    c = ((r >= 70) & (r <= 290) & (p >= r + 110)) | ((r >= 130) & (r <= 180) & (p <= (7 / 5) * r - 182))
    d = ((r >= 240) & (p >= 70) & (p <= 180)) | ((r <= 175 / 3) & (p >= 70) & (p <= 180)) | (
        (r >= 175 / 3) & (r <= 70) & (p >= (6 / 5) * r)
    )
    zone[d] = 3
    zone[c] = 2
    zone[e] = 4
    zone[a] = 0
    return zone


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """RMSE, MAE, Clarke zone percentages and A+B%, over finite pairs."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    if len(t) == 0:
        return {"n": 0, "rmse": float("nan"), "mae": float("nan"), "clarke_ab": float("nan"), "clarke": {}}
    err = p - t
    zones = np.bincount(clarke_zones(t, p), minlength=5) / len(t) * 100
    return {
        "n": int(len(t)),
        "rmse": round(float(np.sqrt(np.mean(err**2))), 3),
        "mae": round(float(np.mean(np.abs(err))), 3),
        "clarke_ab": round(float(zones[0] + zones[1]), 2),
        "clarke": {z: round(float(v), 2) for z, v in zip(ZONES, zones, strict=True)},
    }
