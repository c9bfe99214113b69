"""Windows: 15 steps x [glucose, insulin, carbs] → glucose 6 steps after the last input.

A window ending at forecast time t is valid when all 15 inputs exist (no gap), the glucose at t is
a real reading (`observed`), and, for training and scoring, the target at t+horizon is a real
reading too. Nothing after t enters the inputs (see pipeline.series for the grid convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import SeriesSpec
from pipeline.errors import WindowError

# The seed's window CSV puts features in this order, each oldest → newest.
WINDOW_CSV_FEATURE_ORDER = ("carbs", "insulin", "glucose")


@dataclass
class Windows:
    X: np.ndarray  # float32 (n, window, n_features), raw units, feature order from the spec
    y: np.ndarray  # float32 (n,), glucose at t + horizon (NaN when unknown)
    times: pd.DatetimeIndex  # forecast time t of each window
    glucose_index: int = 0  # position of glucose on the feature axis

    def __len__(self) -> int:
        return len(self.y)

    @property
    def last_glucose(self) -> np.ndarray:
        return self.X[:, -1, self.glucose_index]

    def take(self, mask: np.ndarray) -> Windows:
        return Windows(self.X[mask], self.y[mask], self.times[mask], self.glucose_index)


def step_offsets(spec: SeriesSpec) -> list[int]:
    """Input offsets relative to the forecast time: -(window-1) .. 0."""
    return list(range(-(spec.window - 1), 1))


def make_windows(frame: pd.DataFrame, spec: SeriesSpec | None = None, *, require_target: bool = True) -> Windows:
    """All valid windows of a canonical frame, in time order."""
    spec = spec or SeriesSpec()
    feats = frame[list(spec.features)].to_numpy(dtype=np.float32)
    observed = frame["observed"].to_numpy(dtype=bool) if "observed" in frame else ~np.isnan(feats[:, 0])
    n, w, h = len(frame), spec.window, spec.horizon
    if n < w:
        raise WindowError(
            f"{n} time steps ({n * spec.interval_minutes} min) is too little for one window of {w} steps "
            f"({w * spec.interval_minutes} min)"
        )
    view = np.lib.stride_tricks.sliding_window_view(feats, (w, feats.shape[1]))[:, 0]  # (n-w+1, w, f)
    ends = np.arange(w - 1, n)
    complete = ~np.isnan(view).any(axis=(1, 2))
    ok = complete & observed[ends]
    target = np.full(len(ends), np.nan, dtype=np.float32)
    has_future = ends + h < n
    target[has_future] = feats[ends[has_future] + h, spec.features.index("glucose")]
    target_ok = np.zeros(len(ends), dtype=bool)
    target_ok[has_future] = observed[ends[has_future] + h]
    target = np.where(target_ok, target, np.nan).astype(np.float32)
    if require_target:
        ok &= target_ok
    X = np.ascontiguousarray(view[ok], dtype=np.float32)
    return Windows(X, target[ok], frame.index[ends[ok]], spec.features.index("glucose"))


def window_csv_columns(spec: SeriesSpec | None = None) -> list[str]:
    """Exact header of the seed's window CSV: carbs_t-14..carbs_t0, insulin_t-14..t0, glucose_t-14..t0."""
    spec = spec or SeriesSpec()
    return [f"{f}_t{o}" if o else f"{f}_t0" for f in WINDOW_CSV_FEATURE_ORDER for o in step_offsets(spec)]


def windows_from_csv_rows(df: pd.DataFrame, spec: SeriesSpec | None = None) -> np.ndarray:
    """Window-CSV rows (numeric, header from window_csv_columns) → X (n, window, features) float32."""
    spec = spec or SeriesSpec()
    cols = window_csv_columns(spec)
    blocks = {
        f: df[cols[i * spec.window : (i + 1) * spec.window]].to_numpy(dtype=np.float32)
        for i, f in enumerate(WINDOW_CSV_FEATURE_ORDER)
    }
    return np.stack([blocks[f] for f in spec.features], axis=-1)


def windows_to_csv_rows(X: np.ndarray, spec: SeriesSpec | None = None) -> pd.DataFrame:
    """Inverse of windows_from_csv_rows (for examples and templates)."""
    spec = spec or SeriesSpec()
    parts = [X[:, :, spec.features.index(f)] for f in WINDOW_CSV_FEATURE_ORDER]
    return pd.DataFrame(np.concatenate(parts, axis=1), columns=window_csv_columns(spec))
