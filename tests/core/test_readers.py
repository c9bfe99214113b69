"""Readers: real HUPA-UCM files, synthetic OhioT1DM XML, the canonical CSV, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ReaderError
from pipeline.readers import read_series
from tests.core.ohio_fixture import ohio_xml


def test_hupa_real_file_report(config):
    p = config.patient("hupa0004p")
    r = read_series(p.file, "hupa", spec=config.series)
    rep = r.report
    assert rep.native_interval_minutes == 15  # the dataset interpolated 15-min Libre readings
    assert any("interpolated" in n for n in rep.notes)
    assert 0.25 < rep.observed_fraction < 0.34
    assert rep.longest_gap_minutes >= 16 * 60  # the ~17 h straight line the dataset README describes
    assert rep.n_meals == 20 and rep.n_boluses == 45  # as listed in data/hupa-ucm/README.md
    assert list(r.frame.columns) == ["glucose", "insulin", "carbs", "observed"]
    assert r.frame.index.freq is not None or (np.diff(r.frame.index.asi8) == 300 * 10**9).all()


def test_hupa_unrecorded_insulin_is_reported(config):
    r = read_series(config.patient("hupa0015p").file, "hupa", spec=config.series)
    assert not r.report.insulin_recorded and not r.report.carbs_recorded
    assert any("not recorded" in w for w in r.report.warnings)


def test_ohio_hand_checked_example(config):
    r = read_series(ohio_xml().encode(), "ohio", spec=config.series)
    f = r.frame
    # Readings at 01:17, 01:22 ... land on the next grid point (known by then): 01:20, 01:25 ...
    assert f.index[0] == pd.Timestamp("2021-12-07 01:20:00")
    assert f.loc["2021-12-07 01:20:00", "glucose"] == 100
    # Basal 1.2 U/h = 0.1 U per 5 minutes.
    assert f.loc["2021-12-07 01:35:00", "insulin"] == pytest.approx(0.1)
    # The 3 U bolus at 01:40 was delivered in (01:40, 01:45] -> row 01:45 holds bolus + basal.
    assert f.loc["2021-12-07 01:45:00", "insulin"] == pytest.approx(3.1)
    # Temp basal 0 U/h from 02:00 to 02:30 overrides the basal: rows 02:05 .. 02:30 get nothing.
    assert f.loc["2021-12-07 02:05":"2021-12-07 02:30", "insulin"].sum() == pytest.approx(0.0)
    assert f.loc["2021-12-07 02:35:00", "insulin"] == pytest.approx(0.1)
    # Meal at 01:41 -> row 01:45.
    assert f.loc["2021-12-07 01:45:00", "carbs"] == 30
    assert f["carbs"].sum() == 30
    assert r.report.n_meals == 1 and r.report.n_boluses == 1
    assert r.report.native_interval_minutes == 5


def test_ohio_rate_changes_mid_step_extended_boluses_and_events_outside_the_readings(config):
    """Basal is integrated minute by minute: a rate change at 03:02 splits the (03:00, 03:05] step;
    a square-wave bolus is spread over its span; what was delivered or eaten before the first or
    after the last glucose reading (01:17 .. 06:12) belongs to no row and is not counted."""
    xml = ohio_xml().replace(
        '<event ts="07-12-2021 01:00:00" value="1.2"/>',
        '<event ts="07-12-2021 01:00:00" value="1.2"/><event ts="07-12-2021 03:02:00" value="2.4"/>',
    ).replace(
        "</bolus>",
        '<event ts_begin="07-12-2021 03:30:00" ts_end="07-12-2021 04:00:00" type="square" dose="1.2"/>'
        '<event ts_begin="06-12-2021 22:00:00" ts_end="06-12-2021 22:00:00" type="normal" dose="5"/>'
        '<event ts_begin="07-12-2021 08:00:00" ts_end="07-12-2021 08:00:00" type="normal" dose="4"/></bolus>',
    ).replace("</meal>", '<event ts="07-12-2021 09:00:00" type="Dinner" carbs="80"/></meal>')
    r = read_series(xml.encode(), "ohio", spec=config.series)
    f = r.frame["insulin"]
    assert f["2021-12-07 03:00:00"] == pytest.approx(0.1)
    assert f["2021-12-07 03:05:00"] == pytest.approx(2 * 1.2 / 60 + 3 * 2.4 / 60)  # 0.16 U
    assert f["2021-12-07 03:10:00"] == pytest.approx(0.2)
    # 1.2 U over 30 minutes: 0.2 U in each of the six steps 03:35 .. 04:00, on top of 0.2 U basal.
    assert f["2021-12-07 03:35":"2021-12-07 04:00"].to_numpy() == pytest.approx([0.4] * 6)
    assert f["2021-12-07 04:05:00"] == pytest.approx(0.2)
    # Nothing else: basal over the rows plus the 3 U and 1.2 U boluses (the 5 U and 4 U are outside).
    basal = sum(0.1 if t < pd.Timestamp("2021-12-07 03:05") else 0.2 for t in f.index)
    basal -= 6 * 0.1 + (0.2 - 0.16)  # the temp basal's six zero steps; the split step
    assert f.sum() == pytest.approx(basal + 3.0 + 1.2)
    assert r.report.n_boluses == 2 and r.report.n_meals == 1 and r.frame["carbs"].sum() == 30


def test_hupa_and_ohio_agree_on_the_hand_checked_example(config):
    """The same day written by hand in HUPA-UCM's format (units per 5-minute row) reads as the Ohio
    XML does: basal 0.1 U per step, none during the temp basal, the 3 U bolus and the meal at 01:45."""
    import math

    def glucose(i: int) -> float:
        return round(120 + 30 * math.sin(i / 4), 1)

    rows = ["time;glucose;calories;heart_rate;steps;basal_rate;bolus_volume_delivered;carb_input"]
    for i in range(60):
        t = pd.Timestamp("2021-12-07 01:20:00") + pd.Timedelta(minutes=5 * i)
        basal = 0.0 if pd.Timestamp("2021-12-07 02:05") <= t <= pd.Timestamp("2021-12-07 02:30") else 0.1
        bolus, carbs = (3.0, 30) if t == pd.Timestamp("2021-12-07 01:45") else (0.0, 0)
        rows.append(f"{t:%Y-%m-%dT%H:%M:%S};{glucose(i)};5.1;80;0;{basal};{bolus};{carbs}")
    hupa = read_series("\n".join(rows).encode(), "hupa", spec=config.series)
    ohio = read_series(ohio_xml(glucose=glucose).encode(), "ohio", spec=config.series)
    cols = ["glucose", "insulin", "carbs", "observed"]
    pd.testing.assert_frame_equal(hupa.frame[cols], ohio.frame[cols], check_freq=False)
    assert (hupa.report.n_meals, hupa.report.n_boluses) == (ohio.report.n_meals, ohio.report.n_boluses) == (1, 1)


def test_ohio_and_canonical_agree(config, tmp_path):
    import math

    xml = ohio_xml(glucose=lambda i: round(120 + 30 * math.sin(i / 4), 1))
    ohio = read_series(xml.encode(), "ohio", spec=config.series).frame
    csv = tmp_path / "same.csv"
    ohio.reset_index()[["timestamp", "glucose", "insulin", "carbs"]].to_csv(csv, index=False)
    canon = read_series(csv, spec=config.series).frame
    pd.testing.assert_frame_equal(ohio[["glucose", "insulin", "carbs"]], canon[["glucose", "insulin", "carbs"]],
                                  check_freq=False)


def test_mmol_detected_and_converted(config):
    text = "timestamp,glucose,insulin,carbs\n" + "\n".join(
        f"2024-01-01 00:{5 * i:02d}:00,{5.5 + 0.1 * i:.1f},0,0" for i in range(12)
    )
    r = read_series(text.encode(), spec=config.series)
    assert r.report.glucose_unit == "mmol/L"
    assert r.frame["glucose"].iloc[0] == pytest.approx(5.5 * 18.0182)
    assert any("mmol/L" in w for w in r.report.warnings)
    r2 = read_series(text.encode(), glucose_unit="mmol/L", spec=config.series)
    assert r2.report.warnings == [] or all("mmol" not in w for w in r2.report.warnings)


def test_duplicates_out_of_order_and_gaps(config):
    rows = [("2024-01-01 00:00:00", 100), ("2024-01-01 00:10:00", 110), ("2024-01-01 00:05:00", 105),
            ("2024-01-01 00:05:00", 107), ("2024-01-01 00:15:00", 115), ("2024-01-01 01:30:00", 120),
            ("2024-01-01 01:35:00", 121), ("2024-01-01 01:45:00", 125)]
    text = "timestamp,glucose,insulin,carbs\n" + "\n".join(f"{t},{g},0,0" for t, g in rows)
    r = read_series(text.encode(), spec=config.series)
    assert r.report.out_of_order == 1 and r.report.duplicates == 1
    f = r.frame
    assert f.loc["2024-01-01 00:05:00", "glucose"] == 106  # duplicates averaged
    assert np.isnan(f.loc["2024-01-01 00:30:00", "glucose"])  # a 70-minute gap stays a gap
    assert f.loc["2024-01-01 01:40:00", "glucose"] == pytest.approx(123)  # a 5-minute gap is filled ...
    assert not f.loc["2024-01-01 01:40:00", "observed"]  # ... but never used as a forecast time or target
    assert r.report.n_gaps == 1 and r.report.longest_gap_minutes == 70


BAD_FILES = {
    "empty": (b"", "empty"),
    "header only": (b"timestamp,glucose,insulin,carbs\n", "no data rows"),
    "missing column": (b"timestamp,glucose,insulin\n2024-01-01 00:00:00,100,0\n", "missing column(s) carbs"),
    "wrong separator": (b"time,glucose,calories,heart_rate,steps,basal_rate,bolus_volume_delivered,carb_input\n"
                        b"2018-06-13T22:45:00,86,1,1,1,0.1,0,0\n", "wrong separator"),
    "non-numeric glucose": (b"timestamp,glucose,insulin,carbs\n2024-01-01 00:00:00,100,0,0\n2024-01-01 00:05:00,high,0,0\n",
                            "row 3, column 'glucose': 'high' is not a number"),
    "bad timestamp": (b"timestamp,glucose,insulin,carbs\n2024-01-01 00:00:00,100,0,0\nyesterday,101,0,0\n",
                      "row 3, column 'timestamp': cannot parse timestamp 'yesterday'"),
    "negative insulin": (b"timestamp,glucose,insulin,carbs\n2024-01-01 00:00:00,100,-1,0\n", "row 2, column 'insulin'"),
    "unknown format": (b"a,b,c\n1,2,3\n", "unrecognised format"),
    "broken xml": (b"<patient><glucose_level><event ts='x'", "not well-formed XML"),
    "bad xml timestamp": (ohio_xml(3).replace("07-12-2021 01:40:00", "2021/12/07").encode(), "cannot parse ts_begin"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_input_is_rejected_with_a_clear_message(name, config):
    data, message = BAD_FILES[name]
    fmt = "hupa" if name == "wrong separator" else None
    with pytest.raises(ReaderError) as exc:
        read_series(data, fmt, name="upload.csv", spec=config.series)
    assert message in str(exc.value)


def test_implausible_glucose_names_the_row(config):
    text = b"timestamp,glucose,insulin,carbs\n2024-01-01 00:00:00,100,0,0\n2024-01-01 00:05:00,2500,0,0\n"
    with pytest.raises(ReaderError, match=r"row 3, column 'glucose': 2500 mg/dL is not a plausible"):
        read_series(text, spec=config.series)


def test_semicolon_csv_with_decimal_commas(config):
    text = "timestamp;glucose;insulin;carbs\n" + "\n".join(
        f"2024-01-01 00:{5 * i:02d}:00;{100 + i},5;0,1;0" for i in range(12)
    )
    r = read_series(text.encode(), spec=config.series)
    assert r.frame["glucose"].iloc[0] == pytest.approx(100.5)
    assert r.frame["insulin"].iloc[1] == pytest.approx(0.1)
    assert not r.report.glucose_unit_detected
