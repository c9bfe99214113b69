"""Canonical series: raw readings and events → a regular grid with gaps kept, plus a report.

Conventions (documented in README):

* The grid is right-labelled: the row at time ``t`` holds what was known by ``t``. A glucose reading
  taken at 10:02 lands on 10:05; insulin and carbs taken in ``(t-5min, t]`` are summed into ``t``.
  So no row ever carries information from after its own timestamp.
* ``glucose`` is mg/dL (NaN = no reading), ``insulin`` is units delivered in the step (bolus +
  integrated basal), ``carbs`` grams in the step.
* ``observed`` is True where the glucose value is a real sensor reading. Points that were filled
  (short gaps, or a dataset's own interpolation from a coarser sensor cadence) are False: they may
  sit inside an input window, but never serve as a forecast time or a target, because a value
  interpolated between two readings already knows the later one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from pipeline.config import SeriesSpec
from pipeline.errors import ReaderError

log = logging.getLogger(__name__)

MMOL_TO_MGDL = 18.0182
PLAUSIBLE_MGDL = (20.0, 600.0)  # outside this no CGM reports a reading: a typo or a wrong unit
COLUMNS = ("glucose", "insulin", "carbs")


@dataclass
class Gap:
    start: str
    end: str
    minutes: int


@dataclass
class SeriesReport:
    """What a reader found, per patient: the facts a data scientist checks before trusting a model."""

    name: str
    source_format: str
    start: str = ""
    end: str = ""
    span_days: float = 0.0
    grid_rows: int = 0
    readings: int = 0
    coverage: float = 0.0  # fraction of grid rows with a glucose value
    observed_fraction: float = 0.0  # fraction of grid rows holding a real reading
    native_interval_minutes: int = 5
    n_gaps: int = 0
    longest_gap_minutes: int = 0
    gaps: list[Gap] = field(default_factory=list)  # the longest few
    filled_points: int = 0
    hidden_gap_points: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    n_meals: int = 0
    n_boluses: int = 0
    glucose_unit: str = "mg/dL"
    glucose_unit_detected: bool = False  # True when mmol/L was inferred from the values, not given
    insulin_recorded: bool = True
    carbs_recorded: bool = True
    warnings: list[str] = field(default_factory=list)  # quirks a user should check
    notes: list[str] = field(default_factory=list)  # facts about the source that need no action

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.name}: {self.start} → {self.end} ({self.span_days:.1f} d), coverage {self.coverage:.1%}, "
            f"{self.n_gaps} gap{'' if self.n_gaps == 1 else 's'} (longest {self.longest_gap_minutes} min), native glucose interval "
            f"{self.native_interval_minutes} min, {self.n_meals} meals, {self.n_boluses} boluses"
        )


@dataclass
class ReadResult:
    frame: pd.DataFrame  # DatetimeIndex on the grid; columns glucose, insulin, carbs, observed
    report: SeriesReport


def detect_glucose_unit(values: np.ndarray | pd.Series, unit: str | None, report: SeriesReport) -> str:
    """The glucose unit: ``unit`` if given, else inferred (values that all look like mmol/L), loudly."""
    v = pd.Series(np.asarray(values, dtype=float)).dropna()
    if unit is None:
        looks_mmol = len(v) > 0 and v.max() < 35 and v.median() < 25
        unit = "mmol/L" if looks_mmol else "mg/dL"
        report.glucose_unit_detected = looks_mmol
        if looks_mmol:
            report.warnings.append(
                f"glucose values (median {v.median():.1f}, max {v.max():.1f}) look like mmol/L; "
                f"converted to mg/dL (x{MMOL_TO_MGDL}). Pass glucose_unit='mg/dL' if that is wrong."
            )
    if unit not in ("mg/dL", "mmol/L"):
        raise ReaderError(f"{report.name}: glucose unit must be 'mg/dL' or 'mmol/L', got {unit!r}")
    report.glucose_unit = unit
    return unit


def convert_glucose_units(glucose: pd.Series, unit: str | None, report: SeriesReport) -> pd.Series:
    """Return mg/dL (``unit`` None means detect), rejecting implausible values with their row."""
    unit = detect_glucose_unit(glucose, unit, report)
    mgdl = glucose * MMOL_TO_MGDL if unit == "mmol/L" else glucose
    lo, hi = PLAUSIBLE_MGDL
    bad = np.flatnonzero(((mgdl < lo) | (mgdl > hi)).to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ReaderError(
            f"{report.name}: {row_label(i)}, column 'glucose': {glucose.iloc[i]:g} {unit} is not a plausible "
            f"glucose value (expected {lo:g}-{hi:g} mg/dL); {len(bad)} such value(s) in the file"
        )
    return mgdl


def row_label(i: int) -> str:
    """Spreadsheet-style row of the i-th data row (the header is row 1)."""
    return f"row {i + 2}"


def _collinear(g: np.ndarray) -> np.ndarray:
    """True where a point lies on the straight line through its two neighbours (ends: False)."""
    out = np.zeros(len(g), dtype=bool)
    if len(g) >= 3:
        second = np.abs(g[2:] - 2 * g[1:-1] + g[:-2])
        out[1:-1] = np.nan_to_num(second, nan=np.inf) < 1e-6
    return out


def detect_native_interval(glucose: np.ndarray, max_factor: int = 6) -> tuple[int, np.ndarray]:
    """Detect a coarser sensor cadence hidden by linear interpolation onto the grid.

    Real readings are where the line bends. If bends concentrate on one residue modulo k (e.g. every
    third 5-minute point of a 15-minute sensor), the native interval is k steps. Returns k and a
    boolean mask of the points that are real readings (phase determined per day, so a phase shift
    in the source is followed).
    """
    n = len(glucose)
    bends = ~_collinear(glucose) & ~np.isnan(glucose)
    bends[0] = bends[-1] = False
    idx = np.flatnonzero(bends)
    if len(idx) < 20:
        return 1, ~np.isnan(glucose)
    best_k, best_share = 1, 0.0
    for k in range(2, max_factor + 1):
        share = np.bincount(idx % k, minlength=k).max() / len(idx)
        if share > 0.85 and share > best_share:
            best_k, best_share = k, share
    if best_k == 1:
        return 1, ~np.isnan(glucose)
    observed = np.zeros(n, dtype=bool)
    day = 288
    for start in range(0, n, day):
        block = idx[(idx >= start) & (idx < start + day)]
        if len(block) == 0:
            phase = int(np.bincount(idx % best_k).argmax())
        else:
            phase = int(np.bincount(block % best_k, minlength=best_k).argmax())
        positions = np.arange(start, min(start + day, n))
        observed[positions] = positions % best_k == phase
    return best_k, observed & ~np.isnan(glucose)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True in a boolean array (stop exclusive)."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def mark_hidden_gaps(glucose: np.ndarray, spec: SeriesSpec) -> np.ndarray:
    """Mask of points inside straight glucose lines longer than ``hidden_gap_minutes``.

    A sensor gap that a dataset filled by interpolation shows as one straight line for hours; those
    points are not readings and must neither train nor score a model.
    """
    limit = spec.hidden_gap_minutes // spec.interval_minutes
    hidden = np.zeros(len(glucose), dtype=bool)
    for i, j in runs(_collinear(glucose)):
        if j - i + 1 > limit:  # collinear interior points i..j-1: the straight line spans j-i+1 steps
            hidden[i:j] = True
    return hidden


def _gaps(glucose: pd.Series, interval: int) -> list[Gap]:
    return [
        Gap(str(glucose.index[i]), str(glucose.index[j - 1]), (j - i) * interval)
        for i, j in runs(glucose.isna().to_numpy())
    ]


def to_grid(
    glucose: pd.Series,
    events: pd.DataFrame,
    spec: SeriesSpec,
    report: SeriesReport,
    *,
    on_grid: bool = False,
) -> ReadResult:
    """Build the canonical frame from glucose readings and insulin/carbs amounts.

    ``glucose``: values indexed by timestamp (any order, duplicates allowed, mg/dL already).
    ``events``: columns insulin, carbs indexed by timestamp (amounts, summed per step).
    ``on_grid``: the source already sits on the 5-minute grid (a dataset's preprocessed release);
    its interpolation is then detected and reported instead of trusted.
    """
    freq = f"{spec.interval_minutes}min"
    if glucose.dropna().empty:
        raise ReaderError(f"{report.name}: no glucose readings")
    order = glucose.index.to_numpy()
    report.out_of_order = int((np.diff(order.astype("datetime64[ns]").astype(np.int64)) < 0).sum())
    if report.out_of_order:
        report.warnings.append(f"{report.out_of_order} timestamps out of order; sorted")
    glucose = glucose.sort_index()
    report.readings = int(glucose.notna().sum())

    # Right-labelled bins: a reading at 10:02 becomes 10:05 (known by then).
    binned = glucose.index.ceil(freq)
    dup = pd.Index(binned[glucose.notna().to_numpy()]).duplicated().sum()
    report.duplicates = int(dup)
    if dup:
        report.warnings.append(f"{dup} readings share a {spec.interval_minutes}-minute step with another; averaged")
    g = glucose.groupby(binned).mean()
    start, end = g.index.min(), g.index.max()
    grid = pd.date_range(start, end, freq=freq, name="timestamp")
    frame = pd.DataFrame(index=grid)
    frame["glucose"] = g.reindex(grid)

    ev = events.sort_index()
    ev = ev[(ev.index > start - pd.Timedelta(freq)) & (ev.index <= end)]
    ev_binned = ev.groupby(ev.index.ceil(freq)).sum()
    for col in ("insulin", "carbs"):
        frame[col] = ev_binned[col].reindex(grid).fillna(0.0) if col in ev_binned else 0.0

    values = frame["glucose"].to_numpy(dtype=float)
    observed = ~np.isnan(values)
    if on_grid:
        k, real = detect_native_interval(values)
        report.native_interval_minutes = k * spec.interval_minutes
        hidden = mark_hidden_gaps(values, spec)
        report.hidden_gap_points = int(hidden.sum())
        if hidden.any():
            report.warnings.append(
                f"{hidden.sum()} points lie on straight glucose lines longer than {spec.hidden_gap_minutes} min "
                "(sensor gaps filled by the source); treated as gaps"
            )
        values = np.where(hidden, np.nan, values)
        observed = real & ~hidden
        if k > 1:
            report.notes.append(
                f"glucose readings are {k * spec.interval_minutes} min apart, the {spec.interval_minutes}-min "
                "steps between them interpolated (by the source, or here where they were blank); only real "
                "readings serve as forecast times and targets, since an interpolated value already knows "
                "the next reading"
            )
    else:
        diffs = np.diff(glucose.dropna().index.to_numpy()).astype("timedelta64[s]").astype(float) / 60
        if len(diffs):
            report.native_interval_minutes = int(round(float(np.median(diffs))))
    frame["glucose"] = values

    # Short gaps: linear fill up to max_fill_steps, marked unobserved.
    s = frame["glucose"]
    missing = s.isna()
    run_id = (missing != missing.shift()).cumsum()
    run_len = missing.groupby(run_id).transform("sum")
    fillable = missing & (run_len <= spec.max_fill_steps)
    filled = s.interpolate(method="linear", limit_area="inside")
    frame["glucose"] = s.where(~fillable, filled)
    report.filled_points = int((fillable & frame["glucose"].notna()).sum())
    frame["observed"] = observed & frame["glucose"].notna().to_numpy()

    gaps = _gaps(frame["glucose"], spec.interval_minutes)
    report.n_gaps = len(gaps)
    report.longest_gap_minutes = max((gp.minutes for gp in gaps), default=0)
    report.gaps = sorted(gaps, key=lambda gp: -gp.minutes)[:5]
    report.start, report.end = str(start), str(end)
    report.span_days = round((end - start) / pd.Timedelta("1D"), 2)
    report.grid_rows = len(frame)
    report.coverage = round(float(frame["glucose"].notna().mean()), 4)
    report.observed_fraction = round(float(frame["observed"].mean()), 4)
    report.insulin_recorded = bool(frame["insulin"].sum() > 0)
    report.carbs_recorded = bool(frame["carbs"].sum() > 0)
    if not report.insulin_recorded:
        report.warnings.append("no insulin recorded at all: read as 'not recorded', not 'none taken'")
    if not report.carbs_recorded:
        report.warnings.append("no carbohydrates recorded at all: read as 'not recorded', not 'none eaten'")
    for message in (*report.warnings, *report.notes):
        log.debug("%s: %s", report.name, message)
    return ReadResult(frame, report)
