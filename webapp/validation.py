"""Turn an uploaded file into forecast windows, or explain in plain words what is wrong with it.

Accepted files (detected from the content, not the name):

* **window CSV** (the seed's format): one row per forecast, the exact header of
  :func:`pipeline.windows.window_csv_columns` (15 carbs, 15 insulin, 15 glucose, oldest to newest),
  optionally ``timestamp`` (time of ``glucose_t0``) and ``glucose_t+<horizon>`` (the actual glucose
  30 minutes later, to score the forecasts). A file with no header but exactly those 45 numeric
  columns is read in the same order.
* **time-series CSV** with columns ``timestamp, glucose, insulin, carbs``; the app builds the windows.
* the dataset formats of the core readers: **HUPA-UCM CSV** and **OhioT1DM XML**.

Time series go through the core (:func:`pipeline.readers.read_series`, :func:`pipeline.windows.make_windows`);
the window CSV is checked here cell by cell (rows are numbered as in a spreadsheet: the header is
row 1) and converted with :func:`pipeline.windows.windows_from_csv_rows`. Every problem raises
:class:`UploadError` with a message for the patient; nothing is sent to a server before a file passes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.config import Config, Patient, SeriesSpec
from pipeline.errors import InputError, WindowError
from pipeline.series import MMOL_TO_MGDL, PLAUSIBLE_MGDL, SeriesReport, detect_glucose_unit

Progress = Callable[[float, str], None]

KIND_LABELS = {
    "window": "window CSV, one forecast per row",
    "timeseries": "time-series CSV",
    "hupa": "HUPA-UCM dataset CSV",
    "ohio": "OhioT1DM dataset XML",
}
GLUCOSE_UNITS = ("mg/dL", "mmol/L")
MGDL_PER_MMOL = MMOL_TO_MGDL
TIMESERIES_COLUMNS = ("timestamp", "glucose", "insulin", "carbs")
CHUNK_ROWS = 20_000  # window-CSV rows parsed at a time (progress bar steps)
MAX_ERRORS_LISTED = 5


class UploadError(InputError):
    """The uploaded file cannot be used; the message says why, naming the row and column."""


@dataclass
class PreparedInput:
    """A valid upload, ready to send: windows in the model's feature order, raw units (mg/dL)."""

    kind: str  # window | timeseries | hupa | ohio
    filename: str
    X: np.ndarray  # float32 (n, window, features), feature order of the config
    actual: np.ndarray  # float64 (n,) glucose at t + horizon in mg/dL; NaN when unknown
    last_glucose: np.ndarray  # float64 (n,) glucose at t (the persistence forecast)
    times: pd.DatetimeIndex | None  # time t of each window (None: the file has no times)
    rows: np.ndarray | None  # spreadsheet row of each window (window CSV), else None
    glucose_unit: str = "mg/dL"  # the unit the file was written in
    notes: list[str] = field(default_factory=list)  # information (e.g. "converted from mmol/L")
    warnings: list[str] = field(default_factory=list)  # things the patient should check

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def has_actuals(self) -> bool:
        return bool(np.isfinite(self.actual).any())


# ---------------------------------------------------------------------------------------------
# Column names and templates


def plural(n: int, word: str) -> str:
    """``1 forecast``, ``1,250 forecasts``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def window_columns(spec: SeriesSpec) -> list[str]:
    """The exact required header of the window CSV (from the core)."""
    from pipeline.windows import window_csv_columns

    return list(window_csv_columns(spec))


def actual_column(spec: SeriesSpec) -> str:
    """Optional window-CSV column holding the glucose measured ``horizon`` steps after ``glucose_t0``."""
    return f"glucose_t+{spec.horizon}"


def window_template_csv(spec: SeriesSpec) -> bytes:
    """A template to fill in: the exact header (with the optional columns last) and no rows."""
    header = ["timestamp", *window_columns(spec), actual_column(spec)]
    return (",".join(header) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Format detection


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _sniff(text: str) -> tuple[str, str]:
    """(delimiter, decimal mark) of a CSV text: ``,``/``.`` or the European ``;``/``,``."""
    first = text.split("\n", 1)[0]
    if first.count(";") > first.count(",") and first.count(";") > 0:
        sample = text[:20_000]
        # "1,5;2,0" in the data rows: decimal commas.
        body = sample.split("\n", 1)[1] if "\n" in sample else ""
        return ";", ("," if "," in body else ".")
    if first.count("\t") > first.count(","):
        return "\t", "."
    return ",", "."


def _norm(name: str) -> str:
    return name.strip().strip('"').strip().lower()


def _is_number(value: str, decimal: str) -> bool:
    try:
        float(value.strip().replace(decimal, ".") if decimal != "." else value.strip())
    except ValueError:
        return False
    return True


def detect_format(filename: str, data: bytes, spec: SeriesSpec) -> str:
    """The kind of an upload (window | timeseries | hupa | ohio), or UploadError saying what was expected."""
    if not data.strip():
        raise UploadError(f"“{filename}” is empty.")
    head = data[:2048].lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if head.startswith(b"<"):
        return "ohio"
    text = _decode(data[:65536])
    delimiter, decimal = _sniff(text)
    first = next(csv.reader([text.split("\n", 1)[0].rstrip("\r")], delimiter=delimiter), [])
    names = {_norm(c) for c in first}
    required = window_columns(spec)
    if set(required) & names:
        return "window"
    if {"time", "glucose", "carb_input"} <= names or {"time", "glucose", "bolus_volume_delivered"} <= names:
        return "hupa"
    if "glucose" in names and ("timestamp" in names or "time" in names):
        return "timeseries"
    if first and all(_is_number(c, decimal) for c in first) and len(first) in (len(required), len(required) + 1):
        return "window"  # the seed's window CSV without a header
    expected = (
        f"either a window CSV whose header starts with {', '.join(required[:3])}, … "
        f"(download the template), or a time series with columns {', '.join(TIMESERIES_COLUMNS)}"
    )
    found = ", ".join(c.strip() for c in first[:8] if c.strip()) or "nothing"
    raise UploadError(
        f"The columns of “{filename}” were not recognised. Expected {expected}. "
        f"The first row holds: {found}{' …' if len(first) > 8 else ''}."
    )


# ---------------------------------------------------------------------------------------------
# Window CSV


def _mmol_note(detected: bool) -> str:
    if detected:
        return (
            "Your glucose values look like mmol/L, so they were converted to mg/dL for the model "
            "(× 18). If they are really mg/dL, choose “mg/dL” under “Glucose unit in my file”."
        )
    return "Glucose converted from mmol/L to mg/dL (× 18) for the model."


def _cell_text(value: object) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    return "the cell is empty" if not text else f"“{text[:30]}” is not a number"


def _first_bad(mask: pd.DataFrame) -> tuple[int, str] | None:
    """(position, column) of the first True cell in reading order (row by row, left to right)."""
    rows = np.flatnonzero(mask.to_numpy().any(axis=1))
    if rows.size == 0:
        return None
    r = int(rows[0])
    c = int(np.flatnonzero(mask.to_numpy()[r])[0])
    return r, str(mask.columns[c])


def _to_numbers(frame: pd.DataFrame, decimal: str) -> pd.DataFrame:
    """Numbers of a block of text cells; NaN where a cell is empty or not a number."""
    if decimal == ".":
        try:  # fast path: every cell is a number (NaN/inf spelled out are caught by the caller)
            return frame.astype("float64")
        except (ValueError, TypeError):
            pass

    def convert(col: pd.Series) -> pd.Series:
        s = col.astype(object).where(col.notna(), "").astype(str).str.strip()
        if decimal != ".":
            s = s.str.replace(decimal, ".", regex=False)
        return pd.to_numeric(s, errors="coerce").astype("float64")

    return frame.apply(convert)


def _read_window_csv(
    filename: str, data: bytes, config: Config, glucose_unit: str | None, progress: Progress | None
) -> PreparedInput:
    from pipeline.windows import windows_from_csv_rows

    spec = config.series
    required = window_columns(spec)
    target_col = actual_column(spec)
    text = _decode(data)
    delimiter, decimal = _sniff(text)
    first = next(csv.reader([text.split("\n", 1)[0].rstrip("\r")], delimiter=delimiter), [])
    notes: list[str] = []
    warnings: list[str] = []

    headerless = bool(first) and all(_is_number(c, decimal) for c in first)
    if headerless:
        names = list(required) if len(first) == len(required) else ["_index", *required]
        reader_kwargs: dict = {"header": None, "names": names}
        header_rows = 0
        notes.append(
            "The file has no header row, so its 45 columns were read in the seed's order: "
            "15 carbohydrate values, then 15 insulin, then 15 glucose, oldest to newest."
        )
    else:
        reader_kwargs = {"header": 0}
        header_rows = 1
        names = [_norm(c) for c in first]
        missing = [c for c in required if c not in names]
        if missing:
            listed = ", ".join(missing[:MAX_ERRORS_LISTED]) + (
                f" and {len(missing) - MAX_ERRORS_LISTED} more" if len(missing) > MAX_ERRORS_LISTED else ""
            )
            raise UploadError(
                f"“{filename}” is missing the column(s) {listed}. A window CSV needs all "
                f"{len(required)} columns {required[0]} … {required[-1]} (download the template to see them)."
            )
        dup = sorted({c for c in names if names.count(c) > 1 and c})
        if dup:
            raise UploadError(f"“{filename}” has the column(s) {', '.join(dup)} more than once.")
        known = {*required, "timestamp", target_col}
        extra = [c for c in names if c not in known and c and not c.startswith("unnamed")]
        if extra:
            warnings.append(f"Ignored column(s) not used for forecasting: {', '.join(extra[:8])}.")

    parts: list[pd.DataFrame] = []
    times: list[pd.Series] = []
    total = max(len(data), 1)
    reader = pd.read_csv(
        io.StringIO(text),
        sep=delimiter,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
        chunksize=CHUNK_ROWS,
        **reader_kwargs,
    )
    offset = 0  # data rows read so far
    try:
        for chunk in reader:
            chunk.columns = [_norm(str(c)) for c in chunk.columns]
            values = _to_numbers(chunk[required], decimal)
            bad = ~np.isfinite(values)
            hit = _first_bad(bad)
            if hit:
                r, col = hit
                raise UploadError(
                    f"Row {offset + r + 1 + header_rows}, column {col}: {_cell_text(chunk[col].iloc[r])}."
                )
            negative = values[[c for c in required if not c.startswith("glucose")]] < 0
            hit = _first_bad(negative)
            if hit:
                r, col = hit
                raise UploadError(
                    f"Row {offset + r + 1 + header_rows}, column {col}: {chunk[col].iloc[r].strip()} is negative; "
                    "insulin and carbohydrates cannot be negative."
                )
            if target_col in chunk.columns:
                actual = _to_numbers(chunk[[target_col]], decimal)
                bad = actual.isna() & chunk[[target_col]].apply(lambda s: s.str.strip() != "")
                hit = _first_bad(bad)
                if hit:
                    r, col = hit
                    raise UploadError(
                        f"Row {offset + r + 1 + header_rows}, column {col}: {_cell_text(chunk[col].iloc[r])} "
                        "(leave the cell empty when the later glucose is not known)."
                    )
                values[target_col] = actual[target_col]
            if "timestamp" in chunk.columns:
                stamps = pd.to_datetime(chunk["timestamp"].str.strip(), errors="coerce", format="mixed")
                bad_t = stamps.isna()
                if bad_t.any():
                    r = int(np.flatnonzero(bad_t.to_numpy())[0])
                    raise UploadError(
                        f"Row {offset + r + 1 + header_rows}, column timestamp: “{chunk['timestamp'].iloc[r]}” "
                        "is not a date and time (use e.g. 2024-05-01 13:45)."
                    )
                times.append(stamps)
            values.index = np.arange(offset, offset + len(chunk)) + 1 + header_rows
            parts.append(values)
            offset += len(chunk)
            if progress:
                # Characters read so far, approximately: rows read × mean row length.
                done = min(offset * (len(text) / max(text.count("\n"), 1)) / total, 1.0)
                progress(done, f"Checking rows… {offset:,} read")
    except pd.errors.ParserError as exc:
        raise UploadError(f"“{filename}” is not a well-formed CSV file: {exc}") from exc

    if offset == 0:
        raise UploadError(
            f"“{filename}” has a header but no data rows: each row below the header is one forecast "
            f"and needs {len(required)} values."
        )
    table = pd.concat(parts)
    gcols = [c for c in required if c.startswith("glucose")] + ([target_col] if target_col in table else [])
    glucose = table[gcols].to_numpy(dtype=np.float64)
    # The core decides the unit (the same rule as for time series).
    unit_report = SeriesReport(name=filename, source_format="window")
    unit = detect_glucose_unit(glucose[np.isfinite(glucose)], glucose_unit, unit_report)
    if unit == "mmol/L":
        table[gcols] = table[gcols] * MGDL_PER_MMOL
        notes.append(_mmol_note(glucose_unit is None))
    low, high = PLAUSIBLE_MGDL
    implausible = (table[gcols] < low) | (table[gcols] > high)
    hit = _first_bad(implausible)
    if hit:
        r, col = hit
        value = table[col].iloc[r] / (MGDL_PER_MMOL if unit == "mmol/L" else 1.0)
        raise UploadError(
            f"Row {int(table.index[r])}, column {col}: {value:g} {unit} is not a plausible glucose value "
            f"(expected {low:g}–{high:g} mg/dL, or {low / MGDL_PER_MMOL:.1f}–{high / MGDL_PER_MMOL:.1f} mmol/L). "
            "Check the value and that the columns are in order: carbohydrates, insulin, then glucose."
        )
    X = np.asarray(windows_from_csv_rows(table[required], spec), dtype=np.float32)
    actual = table[target_col].to_numpy(np.float64) if target_col in table else np.full(offset, np.nan)
    last = table[required[-1]].to_numpy(np.float64)  # glucose_t0, the newest reading
    stamp_index = pd.DatetimeIndex(pd.concat(times)) if times else None
    return PreparedInput(
        kind="window",
        filename=filename,
        X=X,
        actual=actual,
        last_glucose=last,
        times=stamp_index,
        rows=table.index.to_numpy(),
        glucose_unit=unit,
        notes=notes,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# Time series (canonical CSV, HUPA-UCM CSV, OhioT1DM XML): the core reads them


def _when(times: pd.DatetimeIndex) -> str:
    """`` (2018-06-22 11:15 to 12:00)``: first to last time, the date repeated only when it changes."""
    if not len(times):
        return ""
    first, last = times[0], times[-1]
    if len(times) == 1:
        return f" ({first:%Y-%m-%d %H:%M})"
    return f" ({first:%Y-%m-%d %H:%M} to {last:{'%H:%M' if last.date() == first.date() else '%Y-%m-%d %H:%M'}})"


def _read_series_file(
    kind: str,
    filename: str,
    data: bytes,
    config: Config,
    patient: Patient | None,
    glucose_unit: str | None,
    progress: Progress | None,
) -> PreparedInput:
    from pipeline.readers import read_series
    from pipeline.windows import make_windows

    spec = config.series
    fmt = {"timeseries": "canonical"}.get(kind, kind)
    # HUPA-UCM files log carbohydrates in the patient's own unit (grams or 10 g portions, from the
    # config); the canonical CSV and OhioT1DM are in grams.
    carb_unit = patient.carb_unit if (kind == "hupa" and patient is not None) else "g"
    if progress:
        progress(0.1, "Reading the time series…")
    try:
        result = read_series(
            io.BytesIO(data), fmt=fmt, glucose_unit=glucose_unit, carb_unit=carb_unit, name=filename
        )
    except InputError as exc:
        raise UploadError(str(exc)) from exc
    frame = result.frame
    report = result.report
    notes: list[str] = []
    warnings: list[str] = []
    if report.glucose_unit == "mmol/L":
        notes.append(_mmol_note(report.glucose_unit_detected))  # the same words as for window CSVs
    # The reader's notes are written for data scientists; a sensor that reads every 15 minutes is
    # normal, so the patient gets information in their words, not a warning.
    if report.native_interval_minutes > spec.interval_minutes:
        notes.append(
            f"Your glucose readings are {report.native_interval_minutes} minutes apart, so a forecast is "
            "made at each real reading (the steps between readings are only used as history)."
        )
    for message in report.warnings:
        if report.glucose_unit_detected and "mmol/L" in message:
            continue  # said once, in the words used for window CSVs
        warnings.append(message[:1].upper() + message[1:] + ("" if message.endswith(".") else "."))
    if progress:
        progress(0.6, "Building the forecast windows…")
    try:
        windows = make_windows(frame, spec, require_target=False)
    except WindowError:  # fewer grid steps than one window
        windows = None
    if windows is None or len(windows.X) == 0:
        # Counted as the patient sees the file: real readings and their span, not grid points.
        covered = (spec.window - 1) * spec.interval_minutes
        apart = (spec.max_fill_steps + 1) * spec.interval_minutes
        real = frame.index[frame["observed"].to_numpy()]
        raise UploadError(
            f"“{filename}” has {plural(len(real), 'glucose reading')}{_when(real)}, "
            f"but one forecast needs {spec.window * spec.interval_minutes} minutes of history ({spec.window} steps "
            f"of {spec.interval_minutes} minutes): glucose readings spanning at least {covered} minutes, no two "
            f"more than {apart} minutes apart."
        )
    if progress:
        progress(1.0, f"{len(windows.X):,} forecast windows ready")
    return PreparedInput(
        kind=kind,
        filename=filename,
        X=np.asarray(windows.X, dtype=np.float32),
        actual=np.asarray(windows.y, dtype=np.float64),
        last_glucose=np.asarray(windows.last_glucose, dtype=np.float64),
        times=pd.DatetimeIndex(windows.times),
        rows=None,
        glucose_unit=report.glucose_unit,
        notes=notes,
        warnings=warnings,
    )


def prepare_upload(
    filename: str,
    data: bytes,
    config: Config,
    *,
    patient: Patient | None = None,
    glucose_unit: str | None = None,
    progress: Progress | None = None,
) -> PreparedInput:
    """Validate an upload and build its windows; UploadError (naming row/column) when it is unusable.

    ``glucose_unit``: "mg/dL", "mmol/L" or None to detect. ``patient``: the selected patient (for
    the carbohydrate unit of HUPA-UCM files).
    """
    if glucose_unit is not None and glucose_unit not in GLUCOSE_UNITS:
        raise ValueError(f"glucose_unit must be one of {GLUCOSE_UNITS} or None")
    kind = detect_format(filename, data, config.series)
    if kind == "window":
        return _read_window_csv(filename, data, config, glucose_unit, progress)
    return _read_series_file(kind, filename, data, config, patient, glucose_unit, progress)
