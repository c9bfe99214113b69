"""Data readers: HUPA-UCM CSV, OhioT1DM XML and the project's canonical CSV → canonical series.

Each reader is a small class behind one interface (`Reader.read`); `read_series` picks one by name
or detects it from the content. Errors name the file, the row (1-based, header = row 1) and the
column, and nothing is returned on error.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from pipeline.config import SeriesSpec
from pipeline.errors import ReaderError
from pipeline.series import ReadResult, SeriesReport, convert_glucose_units, to_grid

Source = str | Path | bytes | IO[bytes] | IO[str]
BOLUS_MIN_UNITS = 0.5  # canonical CSV: more insulin than this in one 5-minute step is a bolus (6 U/h)


def _read_bytes(source: Source) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "<upload>"
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ReaderError(f"{path}: file not found")
        return path.read_bytes(), str(path)
    data = source.read()
    name = getattr(source, "name", "<upload>")
    return (data.encode() if isinstance(data, str) else data), str(name)


def sniff_separator(data: bytes) -> str:
    """',' unless the header line is ';'-separated (European spreadsheets, with decimal commas)."""
    header = data[:4096].decode("utf-8-sig", errors="replace").splitlines()[0] if data.strip() else ""
    return ";" if header.count(";") > header.count(",") else ","


def _csv(data: bytes, name: str, sep: str, required: list[str]) -> pd.DataFrame:
    if not data.strip():
        raise ReaderError(f"{name}: the file is empty")
    text = data.decode("utf-8-sig", errors="replace")
    header = text.splitlines()[0]
    columns = [c.strip() for c in header.split(sep)]
    other = ";" if sep == "," else ","
    if len(columns) == 1 and other in header:
        raise ReaderError(
            f"{name}: wrong separator: the header is '{other}'-separated, but this format is '{sep}'-separated"
        )
    missing = [c for c in required if c not in columns]
    if missing:  # before the body is parsed: a file of another kind gets this, not a parser error
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise ReaderError(f"{name}: missing column(s) {', '.join(missing)}; the header has: {shown[:300]}")
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            want, line, saw = found.groups()
            raise ReaderError(f"{name}: line {line} has {saw} '{sep}'-separated fields, the header has {want}") from None
        raise ReaderError(f"{name}: not a valid '{sep}'-separated CSV: {exc}") from None
    df.columns = [c.strip() for c in df.columns]
    if df.empty:
        raise ReaderError(f"{name}: the file has a header but no data rows")
    return df


def _numeric(df: pd.DataFrame, col: str, name: str, *, allow_empty: bool) -> pd.Series:
    raw = df[col].str.strip()
    values = pd.to_numeric(raw.where(raw != "", np.nan), errors="coerce")
    bad = values.isna() & (raw != "") & ~raw.str.lower().isin(["nan", "na"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReaderError(f"{name}: row {i + 2}, column '{col}': {raw.iloc[i]!r} is not a number")
    if not allow_empty and values.isna().any():
        i = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise ReaderError(f"{name}: row {i + 2}, column '{col}': value is missing")
    if (values < 0).any():
        i = int(np.flatnonzero((values < 0).to_numpy())[0])
        raise ReaderError(f"{name}: row {i + 2}, column '{col}': {values.iloc[i]} is negative")
    return values


def _timestamps(df: pd.DataFrame, col: str, name: str, fmt: str | None = None) -> pd.DatetimeIndex:
    raw = df[col].str.strip()
    ts = pd.to_datetime(raw, format=fmt, errors="coerce") if fmt else pd.to_datetime(raw, errors="coerce", format="ISO8601")
    if ts.isna().any():
        i = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise ReaderError(f"{name}: row {i + 2}, column '{col}': cannot parse timestamp {raw.iloc[i]!r}")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert(None)
    return pd.DatetimeIndex(ts)


class Reader(ABC):
    """One input format → canonical series."""

    name: str

    def __init__(self, spec: SeriesSpec | None = None) -> None:
        self.spec = spec or SeriesSpec()

    @abstractmethod
    def read(
        self, source: Source, *, glucose_unit: str | None = None, carb_scale: float = 1.0, name: str | None = None
    ) -> ReadResult: ...


class HupaReader(Reader):
    """HUPA-UCM preprocessed CSV: ';'-separated, one row per 5 minutes (see data/hupa-ucm/README.md)."""

    name = "hupa"
    columns = ["time", "glucose", "basal_rate", "bolus_volume_delivered", "carb_input"]

    def read(self, source, *, glucose_unit=None, carb_scale=1.0, name=None):
        data, fname = _read_bytes(source)
        fname = name or fname
        df = _csv(data, fname, ";", self.columns)
        ts = _timestamps(df, "time", fname)
        report = SeriesReport(name=Path(fname).stem, source_format=self.name)
        glucose = convert_glucose_units(
            pd.Series(_numeric(df, "glucose", fname, allow_empty=True).to_numpy(), index=ts), glucose_unit, report
        )
        basal = _numeric(df, "basal_rate", fname, allow_empty=True).fillna(0).to_numpy()
        bolus = _numeric(df, "bolus_volume_delivered", fname, allow_empty=True).fillna(0).to_numpy()
        carbs = _numeric(df, "carb_input", fname, allow_empty=True).fillna(0).to_numpy() * carb_scale
        report.n_boluses = int((bolus > 0).sum())
        report.n_meals = int((carbs > 0).sum())
        # basal_rate is published per 5-minute row (≈ U/h / 12): units delivered in the step.
        events = pd.DataFrame({"insulin": basal + bolus, "carbs": carbs}, index=ts)
        if (basal == 0).all() and (bolus > 0).any():
            report.warnings.append("no basal insulin recorded (zeros throughout); only boluses")
        return to_grid(glucose, events, self.spec, report, on_grid=True)


class CanonicalReader(Reader):
    """The project's own CSV: timestamp,glucose,insulin,carbs (comma-separated; see README)."""

    name = "canonical"
    columns = ["timestamp", "glucose", "insulin", "carbs"]

    def read(self, source, *, glucose_unit=None, carb_scale=1.0, name=None):
        data, fname = _read_bytes(source)
        fname = name or fname
        sep = sniff_separator(data)
        df = _csv(data, fname, sep, self.columns)
        if sep == ";":  # decimal commas go with ';'
            for col in ("glucose", "insulin", "carbs"):
                df[col] = df[col].str.replace(",", ".", regex=False)
        ts = _timestamps(df, "timestamp", fname)
        report = SeriesReport(name=Path(fname).stem, source_format=self.name)
        glucose = convert_glucose_units(
            pd.Series(_numeric(df, "glucose", fname, allow_empty=True).to_numpy(), index=ts), glucose_unit, report
        )
        insulin = _numeric(df, "insulin", fname, allow_empty=True).fillna(0).to_numpy()
        carbs = _numeric(df, "carbs", fname, allow_empty=True).fillna(0).to_numpy() * carb_scale
        # The canonical format carries total insulin per step: a step delivering more than a basal
        # rate would (BOLUS_MIN_UNITS) counts as a bolus.
        report.n_boluses = int((insulin > BOLUS_MIN_UNITS).sum())
        report.n_meals = int((carbs > 0).sum())
        events = pd.DataFrame({"insulin": insulin, "carbs": carbs}, index=ts)
        on_grid = _is_on_grid(ts, self.spec)
        return to_grid(glucose, events, self.spec, report, on_grid=on_grid)


def _is_on_grid(ts: pd.DatetimeIndex, spec: SeriesSpec) -> bool:
    """Rows exactly every interval with no skips: a preprocessed export whose interpolation we check."""
    if len(ts) < 3:
        return False
    d = np.diff(ts.sort_values().asi8)
    return bool((d == spec.interval_minutes * 60 * 10**9).all())


class OhioReader(Reader):
    """OhioT1DM XML (<patient> with glucose_level, basal, temp_basal, bolus, meal event lists)."""

    name = "ohio"
    ts_format = "%d-%m-%Y %H:%M:%S"

    def _events(self, root: ET.Element, tag: str) -> list[ET.Element]:
        node = root.find(tag)
        return [] if node is None else node.findall("event")

    def _ts(self, ev: ET.Element, attr: str, fname: str, tag: str, i: int) -> datetime:
        raw = ev.get(attr)
        if raw is None:
            raise ReaderError(f"{fname}: <{tag}> event {i + 1}: attribute '{attr}' is missing")
        try:
            return datetime.strptime(raw.strip(), self.ts_format)
        except ValueError:
            raise ReaderError(
                f"{fname}: <{tag}> event {i + 1}: cannot parse {attr}={raw!r} (expected DD-MM-YYYY HH:MM:SS)"
            ) from None

    def _num(self, ev: ET.Element, attr: str, fname: str, tag: str, i: int, default: float | None = None) -> float:
        raw = ev.get(attr)
        if raw is None or raw.strip() == "":
            if default is not None:
                return default
            raise ReaderError(f"{fname}: <{tag}> event {i + 1}: attribute '{attr}' is missing")
        try:
            value = float(raw)
        except ValueError:
            raise ReaderError(f"{fname}: <{tag}> event {i + 1}: {attr}={raw!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise ReaderError(f"{fname}: <{tag}> event {i + 1}: {attr}={raw!r} must be a finite number >= 0")
        return value

    def read(self, source, *, glucose_unit=None, carb_scale=1.0, name=None):
        data, fname = _read_bytes(source)
        fname = name or fname
        if not data.strip():
            raise ReaderError(f"{fname}: the file is empty")
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise ReaderError(f"{fname}: not well-formed XML: {exc}") from exc
        if root.tag != "patient":
            raise ReaderError(f"{fname}: root element is <{root.tag}>, expected <patient>")
        report = SeriesReport(name=f"ohio-{root.get('id', Path(fname).stem)}", source_format=self.name)

        g_events = self._events(root, "glucose_level")
        if not g_events:
            raise ReaderError(f"{fname}: <glucose_level> has no events")
        g_ts = [self._ts(e, "ts", fname, "glucose_level", i) for i, e in enumerate(g_events)]
        g_val = [self._num(e, "value", fname, "glucose_level", i) for i, e in enumerate(g_events)]
        try:
            glucose = convert_glucose_units(pd.Series(g_val, index=pd.DatetimeIndex(g_ts)), glucose_unit, report)
        except ReaderError as exc:  # name the event, not a CSV row
            msg = str(exc)
            if ", row " in msg:
                row = int(msg.split(", row ")[1].split(",")[0]) - 1
                msg = f"{fname}: <glucose_level> event {row}: " + msg.split("column 'glucose': ")[1]
            raise ReaderError(msg) from None

        start = min(g_ts).replace(second=0)
        end = max(g_ts)
        minutes = pd.date_range(start - pd.Timedelta("5min"), end + pd.Timedelta("5min"), freq="1min")
        insulin_per_min = self._basal_per_minute(root, minutes, fname)
        carbs_events: list[tuple[datetime, float]] = []
        bolus_units = np.zeros(len(minutes))
        for i, e in enumerate(self._events(root, "bolus")):
            t0 = self._ts(e, "ts_begin", fname, "bolus", i)
            t1 = self._ts(e, "ts_end", fname, "bolus", i) if e.get("ts_end") else t0
            dose = self._num(e, "dose", fname, "bolus", i)
            if _spread(bolus_units, minutes, t0, t1, dose) and dose > 0:
                report.n_boluses += 1
        for i, e in enumerate(self._events(root, "meal")):
            carbs = self._num(e, "carbs", fname, "meal", i) * carb_scale
            t = self._ts(e, "ts", fname, "meal", i)
            if carbs > 0 and minutes[0] <= t <= minutes[-1]:  # outside the readings: no row holds it
                report.n_meals += 1
                carbs_events.append((t, carbs))
        per_min = pd.DataFrame({"insulin": insulin_per_min + bolus_units, "carbs": 0.0}, index=minutes)
        # A minute value covers [m, m+1): it is known by m+1, which is the label used for binning.
        per_min.index = per_min.index + pd.Timedelta("1min")
        meals = pd.DataFrame({"insulin": 0.0, "carbs": [c for _, c in carbs_events]},
                             index=pd.DatetimeIndex([t for t, _ in carbs_events]))
        events = pd.concat([per_min, meals]) if len(meals) else per_min
        return to_grid(glucose, events, self.spec, report)

    def _basal_per_minute(self, root: ET.Element, minutes: pd.DatetimeIndex, fname: str) -> np.ndarray:
        """Units per minute: the basal rate (U/h) as a step function, overridden by temp basals."""
        rate = np.zeros(len(minutes))
        basal = sorted(
            (self._ts(e, "ts", fname, "basal", i), self._num(e, "value", fname, "basal", i))
            for i, e in enumerate(self._events(root, "basal"))
        )
        mins = minutes.to_numpy()
        for (t, value), nxt in zip(basal, [*basal[1:], (None, None)], strict=True):
            lo = np.searchsorted(mins, np.datetime64(t))
            hi = len(mins) if nxt[0] is None else np.searchsorted(mins, np.datetime64(nxt[0]))
            rate[lo:hi] = value
        for i, e in enumerate(self._events(root, "temp_basal")):
            t0 = self._ts(e, "ts_begin", fname, "temp_basal", i)
            t1 = self._ts(e, "ts_end", fname, "temp_basal", i)
            if t1 < t0:
                raise ReaderError(f"{fname}: <temp_basal> event {i + 1}: ts_end is before ts_begin")
            value = self._num(e, "value", fname, "temp_basal", i)
            lo, hi = np.searchsorted(mins, np.datetime64(t0)), np.searchsorted(mins, np.datetime64(t1))
            rate[lo:hi] = value
        return rate / 60.0


def _spread(target: np.ndarray, minutes: pd.DatetimeIndex, t0: datetime, t1: datetime, amount: float) -> bool:
    """Add `amount` spread evenly over the minutes in [t0, t1) (all in t0's minute when t1 <= t0).

    Only the part inside `minutes` is added: what was delivered before the first or after the
    last glucose reading belongs to no row. Returns whether any of it was added.
    """
    one = pd.Timedelta("1min")
    lo = math.floor((pd.Timestamp(t0) - minutes[0]) / one)
    hi = max(math.ceil((pd.Timestamp(t1) - minutes[0]) / one), lo + 1)
    a, b = max(lo, 0), min(hi, len(target))
    if a >= b:
        return False
    target[a:b] += amount / (hi - lo)
    return True


READERS: dict[str, type[Reader]] = {r.name: r for r in (HupaReader, OhioReader, CanonicalReader)}


def detect_format(data: bytes, name: str = "") -> str:
    """Guess the format from the content (and file name)."""
    head = data[:2048].decode("utf-8-sig", errors="replace").lstrip()
    if head.startswith("<"):
        return "ohio"
    first = head.splitlines()[0] if head else ""
    if "carbs_t-14" in first or "glucose_t0" in first:
        raise ReaderError(
            f"{name or 'file'}: this is a window CSV (one forecast per row), which the web app reads; "
            "the library reads time series: a CSV with header 'timestamp,glucose,insulin,carbs'"
        )
    if "timestamp" in first and "glucose" in first:  # ',' or ';'-separated
        return "canonical"
    if first.startswith("time;") or ";glucose;" in first:
        return "hupa"
    raise ReaderError(
        f"{name or 'file'}: unrecognised format: expected a HUPA-UCM CSV (header 'time;glucose;...'), "
        "an OhioT1DM XML file, or a CSV with header 'timestamp,glucose,insulin,carbs'"
    )


def read_series(
    source: Source,
    fmt: str | None = None,
    *,
    glucose_unit: str | None = None,
    carb_unit: str = "g",
    name: str | None = None,
    spec: SeriesSpec | None = None,
) -> ReadResult:
    """Read any supported file into the canonical series (see pipeline.series for conventions)."""
    from pipeline.config import CARB_UNITS

    data, fname = _read_bytes(source)
    fname = name or fname
    if not data.strip():
        raise ReaderError(f"{fname}: the file is empty")
    fmt = fmt or detect_format(data, fname)
    if fmt not in READERS:
        raise ReaderError(f"{fname}: unknown format {fmt!r}; known: {', '.join(READERS)}")
    if carb_unit not in CARB_UNITS:
        raise ReaderError(f"{fname}: carb unit must be one of {', '.join(CARB_UNITS)}")
    return READERS[fmt](spec).read(data, glucose_unit=glucose_unit, carb_scale=CARB_UNITS[carb_unit], name=fname)
