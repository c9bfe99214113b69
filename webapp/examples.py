"""Write the example uploads in data/examples/ from the shipped HUPA-UCM data.

    python -m webapp.examples [--patient hupa0002p] [--hours 8] [--out data/examples]

* ``timeseries-example.csv``: ``timestamp,glucose,insulin,carbs`` (the canonical series, a few
  hours around a logged meal, from the last 30% of the patient's data, which no model trained on);
* ``windows-example.csv``: the same hours as window CSV rows (``timestamp``, the 45 window
  columns, ``glucose_t+<horizon>`` = the glucose measured 30 minutes later, empty when unknown).

Both give the same forecasts for the same times; the web-app tests check it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config, load_config
from pipeline.readers import read_series
from pipeline.windows import make_windows, windows_to_csv_rows

TIMESERIES_NAME = "timeseries-example.csv"
WINDOWS_NAME = "windows-example.csv"


def example_series(config: Config, patient: str, hours: float) -> pd.DataFrame:
    """A gap-free stretch of ``hours`` around the first logged meal of the patient's test period,
    with glucose only at the real (15-minute) sensor readings."""
    p = config.patient(patient)
    frame = read_series(p.file, p.reader, carb_unit=p.carb_unit).frame
    start_test = int(len(frame) * (1 - config.split.test_fraction))
    steps = int(hours * 60 / config.series.interval_minutes)
    tail = frame.iloc[start_test:]
    meals = np.flatnonzero(tail["carbs"].to_numpy() > 0)
    for m in meals:
        lo = start_test + max(int(m) - steps // 3, 0)
        part = frame.iloc[lo : lo + steps]
        if len(part) == steps and part["glucose"].notna().all():
            break
    else:
        raise SystemExit(f"no gap-free {hours} h stretch around a meal in the test period of {patient}")
    out = pd.DataFrame(
        {
            "timestamp": part.index.strftime("%Y-%m-%d %H:%M"),
            # Real sensor readings only (HUPA-UCM interpolated its 15-minute readings to 5 minutes;
            # the interpolated points would let forecasts be scored against the future).
            "glucose": part["glucose"].where(part["observed"]).round(1).to_numpy(),
            "insulin": part["insulin"].round(4).to_numpy(),
            "carbs": part["carbs"].round(1).to_numpy(),
        }
    )
    return out


def example_windows(series: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The windows of an example series as window-CSV rows, with time and the later measured glucose."""
    frame = read_series(series.to_csv(index=False).encode(), "canonical").frame
    w = make_windows(frame, config.series, require_target=False)
    rows = windows_to_csv_rows(w.X, config.series).round(4)
    rows.insert(0, "timestamp", w.times.strftime("%Y-%m-%d %H:%M"))
    rows[f"glucose_t+{config.series.horizon}"] = np.round(w.y.astype(np.float64), 1)
    return rows


def write_examples(config: Config, out: Path, patient: str, hours: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    series = example_series(config, patient, hours)
    windows = example_windows(series, config)
    paths = [out / TIMESERIES_NAME, out / WINDOWS_NAME]
    series.to_csv(paths[0], index=False)
    windows.to_csv(paths[1], index=False)  # values rounded to 4 decimals above
    return paths


def main(argv: list[str] | None = None) -> int:
    config = load_config()
    parser = argparse.ArgumentParser(prog="python -m webapp.examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patient", default=config.patient_ids[0], help="patient whose data to cut (default: the first)")
    parser.add_argument("--hours", type=float, default=8.0, help="length of the example (default 8)")
    parser.add_argument("--out", type=Path, default=config.root / "data" / "examples", help="output directory")
    args = parser.parse_args(argv)
    for path in write_examples(config, args.out, args.patient, args.hours):
        print(f"wrote {path} ({sum(1 for _ in path.open()) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
