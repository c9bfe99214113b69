"""Upload validation: every accepted kind, and every class of bad file with a message naming row/column."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from webapp_helpers import REPO, csv_bytes, csv_frame, ohio_xml

from pipeline.windows import window_csv_columns
from webapp.validation import UploadError, prepare_upload, window_template_csv


def prep(data: bytes, config, name: str = "upload.csv", **kw):
    return prepare_upload(name, data, config, **kw)


# ---------------------------------------------------------------------------------------------
# Accepted kinds


def test_window_csv_example(window_example, config):
    p = prep(window_example, config, "windows-example.csv")
    frame = csv_frame(window_example)
    assert p.kind == "window" and p.n == len(frame)
    assert p.X.shape == (len(frame), config.series.window, len(config.series.features))
    # Feature order: the window CSV is carbs, insulin, glucose; X follows the config (glucose first).
    g, i, c = (config.series.features.index(f) for f in ("glucose", "insulin", "carbs"))
    row = frame.iloc[3]
    np.testing.assert_allclose(p.X[3, :, g], row[[f"glucose_t{o}" if o else "glucose_t0" for o in range(-14, 1)]].astype(float), rtol=1e-6)
    np.testing.assert_allclose(p.X[3, :, i], row[[f"insulin_t{o}" if o else "insulin_t0" for o in range(-14, 1)]].astype(float), rtol=1e-6)
    np.testing.assert_allclose(p.X[3, :, c], row[[f"carbs_t{o}" if o else "carbs_t0" for o in range(-14, 1)]].astype(float), rtol=1e-6)
    assert p.rows[0] == 2  # spreadsheet numbering: the header is row 1
    assert p.has_actuals and np.isnan(p.actual[-1])  # the last rows have no later reading
    np.testing.assert_allclose(p.last_glucose, frame["glucose_t0"].astype(float))
    assert p.times is not None and p.glucose_unit == "mg/dL" and not p.notes


def test_template_header_is_exact(config):
    header = window_template_csv(config.series).decode().strip().split(",")
    assert header == ["timestamp", *window_csv_columns(config.series), f"glucose_t+{config.series.horizon}"]
    assert header[1:4] == ["carbs_t-14", "carbs_t-13", "carbs_t-12"] and header[-2] == "glucose_t0"


def test_minimal_window_csv_without_optional_columns(window_example, config):
    frame = csv_frame(window_example)[window_csv_columns(config.series)].head(3)
    p = prep(csv_bytes(frame), config)
    assert p.n == 3 and not p.has_actuals and p.times is None


def test_seed_csv_without_header(window_example, config):
    frame = csv_frame(window_example)[window_csv_columns(config.series)].head(4)
    data = frame.to_csv(index=False, header=False).encode()
    p = prep(data, config)
    np.testing.assert_array_equal(p.X, prep(csv_bytes(frame), config).X)
    assert "no header" in p.notes[0]


def test_semicolon_and_decimal_comma(window_example, config):
    frame = csv_frame(window_example).head(5)
    data = frame.to_csv(index=False, sep=";").replace(".", ",").encode()
    # timestamps have no dots; every number now uses a decimal comma
    p = prep(data, config)
    np.testing.assert_allclose(p.X, prep(csv_bytes(frame), config).X)


def test_timeseries_example_matches_window_example(series_example, window_example, config):
    ts = prep(series_example, config, "timeseries-example.csv")
    win = prep(window_example, config)
    assert ts.kind == "timeseries"
    # The example window CSV holds exactly the windows the app builds from the example series.
    assert ts.n == win.n
    np.testing.assert_allclose(ts.X, win.X, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ts.times, win.times)
    np.testing.assert_allclose(ts.actual, win.actual, rtol=1e-4)


def test_hupa_dataset_file(config):
    path = REPO / "data" / "hupa-ucm" / "HUPA0003P.csv"
    p = prep(path.read_bytes(), config, path.name, patient=config.patient("hupa0003p"))
    assert p.kind == "hupa" and p.n > 500
    # hupa0003p logs carbohydrate portions of 10 g: the app scales them like training did.
    carbs = p.X[:, :, config.series.features.index("carbs")]
    raw = pd.read_csv(path, sep=";")["carb_input"]
    assert carbs.max() == pytest.approx(raw.max() * 10)
    # a 15-minute sensor is information in the patient's words, not a problem with the file
    assert any("readings are 15 minutes apart" in n for n in p.notes)
    assert not any("interpolated" in w or "15 min" in w for w in p.warnings)


def test_ohio_xml(series_example, config):
    series = pd.read_csv(io.BytesIO(series_example))
    p = prep(ohio_xml(series), config, "559-ws-testing.xml")
    assert p.kind == "ohio" and p.n > 10
    by_time = series.set_index(pd.to_datetime(series["timestamp"]))["glucose"].round()
    np.testing.assert_allclose(p.last_glucose, by_time.loc[p.times].to_numpy())


def test_mmol_window_csv_detected_and_converted(window_example, config):
    frame = csv_frame(window_example)
    gcols = [c for c in frame.columns if c.startswith("glucose")]
    mmol = frame.copy()
    for c in gcols:
        mmol[c] = (pd.to_numeric(mmol[c]) / 18.0182).round(2).astype(str).replace("nan", "")
    p = prep(csv_bytes(mmol), config)
    ref = prep(window_example, config)
    assert p.glucose_unit == "mmol/L" and "mmol/L" in p.notes[0]
    gi = config.series.features.index("glucose")
    np.testing.assert_allclose(p.X[:, :, gi], ref.X[:, :, gi], atol=0.2)
    np.testing.assert_allclose(p.actual, ref.actual, atol=0.2)


def test_mmol_timeseries_detected(series_example, config):
    frame = csv_frame(series_example)
    frame["glucose"] = (pd.to_numeric(frame["glucose"]) / 18.0182).round(2).astype(str)
    p = prep(csv_bytes(frame), config, "mine.csv")
    assert p.glucose_unit == "mmol/L" and any("mmol/L" in n for n in p.notes)
    assert 60 < np.nanmedian(p.last_glucose) < 300


def test_declared_unit_overrides_detection(window_example, config):
    frame = csv_frame(window_example)
    p = prep(csv_bytes(frame), config, glucose_unit="mg/dL")
    assert p.glucose_unit == "mg/dL" and not p.notes


# ---------------------------------------------------------------------------------------------
# Bad files: one message, naming the place


def damaged(window_example: bytes, row: int, column: str, value: str) -> bytes:
    frame = csv_frame(window_example)
    frame.loc[row, column] = value
    return csv_bytes(frame)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("insulin_t-3", "abc", "Row 6, column insulin_t-3: “abc” is not a number"),
        ("glucose_t0", "", "Row 6, column glucose_t0: the cell is empty"),
        ("carbs_t-14", "-20", "Row 6, column carbs_t-14: -20 is negative"),
        ("glucose_t-7", "1450", "Row 6, column glucose_t-7: 1450 mg/dL is not a plausible glucose value"),
        ("glucose_t+6", "n/a", "Row 6, column glucose_t+6: “n/a” is not a number"),
        ("timestamp", "yesterday", "Row 6, column timestamp: “yesterday” is not a date"),
    ],
)
def test_bad_cell_is_named(window_example, config, column, value, expected):
    with pytest.raises(UploadError) as err:
        prep(damaged(window_example, 4, column, value), config)
    assert expected in str(err.value)


def test_missing_column(window_example, config):
    frame = csv_frame(window_example).drop(columns=["insulin_t-2", "glucose_t-5"])
    with pytest.raises(UploadError, match=r"missing the column\(s\) insulin_t-2, glucose_t-5"):
        prep(csv_bytes(frame), config)


def test_header_only_has_no_rows(config):
    with pytest.raises(UploadError, match="no data rows"):
        prep(window_template_csv(config.series), config)


def test_timeseries_too_short_for_one_window(series_example, config):
    # The example's sensor reads every 15 minutes: 11 rows hold 4 real readings (11:15 to 12:00).
    frame = csv_frame(series_example).head(11)
    with pytest.raises(UploadError) as err:
        prep(csv_bytes(frame), config, "short.csv")
    assert str(err.value) == (
        "“short.csv” has 4 glucose readings (2018-06-22 11:15 to 12:00), but one forecast needs 75 minutes of "
        "history (15 steps of 5 minutes): glucose readings spanning at least 70 minutes, no two more than "
        "20 minutes apart."
    )


def test_timeseries_bad_value_names_row_and_column(series_example, config):
    frame = csv_frame(series_example)
    frame.loc[9, "insulin"] = "two"
    with pytest.raises(UploadError, match=r"row 11, column 'insulin': 'two' is not a number"):
        prep(csv_bytes(frame), config, "mine.csv")


def test_timeseries_implausible_glucose(series_example, config):
    frame = csv_frame(series_example)
    frame.loc[20, "glucose"] = "950"
    with pytest.raises(UploadError, match=r"row 22, column 'glucose': 950 mg/dL is not a plausible glucose value"):
        prep(csv_bytes(frame), config, "mine.csv")


def test_timeseries_missing_column(series_example, config):
    frame = csv_frame(series_example).drop(columns=["carbs"])
    with pytest.raises(UploadError, match="missing column"):
        prep(csv_bytes(frame), config, "mine.csv")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"name,age\nbob,3\n", "were not recognised"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "were not recognised"),
    ],
)
def test_unrecognised_files(config, data, expected):
    with pytest.raises(UploadError, match=expected):
        prep(data, config, "thing.csv")


def test_broken_xml(config):
    with pytest.raises(UploadError, match="not well-formed XML"):
        prep(b"<patient><glucose_level><event ts=", config, "bad.xml")


def test_large_window_csv_is_read_in_chunks_with_progress(window_example, config, monkeypatch):
    import webapp.validation

    monkeypatch.setattr(webapp.validation, "CHUNK_ROWS", 5_000)
    frame = csv_frame(window_example)
    big = pd.concat([frame] * (49_000 // len(frame) + 1), ignore_index=True)  # ~49k rows, 10 chunks
    steps: list[float] = []
    p = prep(csv_bytes(big), config, progress=lambda f, _t: steps.append(f))
    assert p.n == len(big)
    assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == pytest.approx(1.0, abs=0.05)
    # An error deep in a later chunk still names the right spreadsheet row.
    big.loc[45_000, "glucose_t-1"] = "x"
    with pytest.raises(UploadError, match="Row 45002, column glucose_t-1"):
        prep(csv_bytes(big), config)
