"""Metrics and baselines: known values, Clarke zones at hand-picked points."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.baselines import LinearExtrapolation, Persistence
from pipeline.metrics import clarke_zones, evaluate_predictions


@pytest.mark.parametrize(
    ("ref", "pred", "zone"),
    [(100, 110, "A"), (60, 65, "A"), (200, 260, "B"), (100, 230, "C"), (300, 150, "D"), (50, 100, "D"),
     (250, 60, "E"), (60, 200, "E")],
)
def test_clarke_zone_examples(ref, pred, zone):
    assert "ABCDE"[clarke_zones(np.array([ref]), np.array([pred]))[0]] == zone


def test_rmse_mae_and_nan_pairs_are_dropped():
    m = evaluate_predictions(np.array([100, 100, np.nan]), np.array([110, 90, 50]))
    assert m["n"] == 2 and m["rmse"] == pytest.approx(10) and m["mae"] == pytest.approx(10)
    assert m["clarke_ab"] == 100 and m["clarke"]["A"] == 100


def test_baselines_on_a_straight_line():
    X = np.zeros((1, 15, 3), dtype=np.float32)
    X[0, :, 0] = 100 + 2 * np.arange(15)  # +2 mg/dL per 5 minutes
    assert Persistence().predict(X)[0] == pytest.approx(128)
    assert LinearExtrapolation(horizon=6).predict(X)[0] == pytest.approx(140)
