"""The Streamlit app driven with streamlit.testing (AppTest): every input kind against the real local
stack (model servers behind nginx) with forecasts equal to the SavedModel's own, every class of bad
file (nothing sent), and a server that is down, erroring or slow."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from webapp_helpers import APP, REPO, csv_bytes, csv_frame, ohio_xml

pytestmark = pytest.mark.slow


def new_app(monkeypatch, gateway: str, **env: str) -> AppTest:
    monkeypatch.setenv("GLUCOSE_GATEWAY_URL", gateway)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, name: str, data: bytes, patient: str | None = None) -> AppTest:
    if patient:
        at.selectbox(key="patient").set_value(patient)
    at.file_uploader(key="upload").set_value((name, data, "text/csv"))
    at.run()
    assert not at.exception, at.exception
    return at


def forecast(at: AppTest) -> AppTest:
    at.button(key="forecast").click().run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def plot_traces(at: AppTest) -> dict[str, np.ndarray]:
    """name → y values of every trace of the page's plotly chart (decoding plotly's typed arrays)."""
    charts = at.get("plotly_chart")
    assert len(charts) == 1, "expected one forecast plot"
    spec = json.loads(charts[0].proto.spec)

    def values(y):
        if isinstance(y, dict) and "bdata" in y:
            return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
        return np.asarray(y, dtype=float)

    return {t["name"]: values(t["y"]) for t in spec["data"]}, spec


def assert_forecasts_match_model(at: AppTest, patient: str, model_predict) -> np.ndarray:
    prepared = at.session_state["prepared"][1]
    result = at.session_state["result"]["forecasts"]
    expected = model_predict(patient, prepared.X)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-3)
    traces, _ = plot_traces(at)
    forecast_trace = next(v for k, v in traces.items() if k.startswith("forecast ("))
    factor = 1 / 18.0182 if prepared.glucose_unit == "mmol/L" else 1.0
    np.testing.assert_allclose(forecast_trace, expected * factor, rtol=1e-5, atol=1e-3)
    table = at.dataframe[0].value
    column = next(c for c in table.columns if c.startswith("forecast in 30 min"))
    np.testing.assert_allclose(table[column].to_numpy(float), expected * factor, atol=0.051)
    assert len(table) == prepared.n
    return expected


# ---------------------------------------------------------------------------------------------
# Patients and successful forecasts (real servers)


def test_patient_picker_lists_the_configured_patients_with_versions(monkeypatch, stack, config):
    at = new_app(monkeypatch, stack.gateway_url)
    picker = at.selectbox(key="patient")
    assert picker.options == [
        "hupa0002p · model v1 ready", "hupa0003p · model v1 ready",
        *[f"{p} · unavailable" for p in config.patient_ids[2:]],
    ]
    assert picker.value == "hupa0002p"  # the first patient whose model answers
    downloads = [b.proto.label for b in at.get("download_button")]
    assert downloads == ["Window CSV template", "Example window CSV", "Example time series"]
    assert "Model version 1 of hupa0002p will answer" in texts(at.success)
    picker.set_value("hupa0015p").run()
    assert "no model for patient hupa0015p" in texts(at.sidebar.warning)


def test_window_csv_forecast_equals_the_model(monkeypatch, stack, window_example, model_predict):
    at = forecast(upload(new_app(monkeypatch, stack.gateway_url), "windows-example.csv", window_example))
    assert "is valid (window CSV" in texts(at.success)
    expected = assert_forecasts_match_model(at, "hupa0002p", model_predict)
    traces, spec = plot_traces(at)
    assert "measured glucose" in traces  # the file has the glucose measured 30 min later
    # the 70-180 mg/dL target range is shaded
    band = [s for s in spec["layout"]["shapes"] if s.get("type") == "rect"]
    assert band and (band[0]["y0"], band[0]["y1"]) == (70.0, 180.0)
    lows = traces.get("forecast low", np.array([]))
    assert len(lows) == int((expected < 70).sum())
    labels = [m.label for m in at.metric]
    assert {"Model MAE", "Model RMSE", "Persistence MAE", "Persistence RMSE"} <= set(labels)
    prepared = at.session_state["prepared"][1]
    ok = np.isfinite(prepared.actual)
    mae = round(float(np.mean(np.abs(expected[ok] - prepared.actual[ok]))), 3)
    assert next(m.value for m in at.metric if m.label == "Model MAE") == f"{mae:.2f} mg/dL"
    results = [b for b in at.get("download_button") if b.proto.label == "Download the forecasts (CSV)"]
    assert len(results) == 1  # beside the template and example buttons, the results CSV


def test_forecasts_straight_from_a_model_server_without_gateway(monkeypatch, stack, window_example, model_predict):
    """GLUCOSE_MODEL_SERVER_URL: one replica called with TF Serving's own paths (make demo without
    nginx, or a kubectl port-forward to one patient's Service)."""
    monkeypatch.delenv("GLUCOSE_GATEWAY_URL", raising=False)
    monkeypatch.setenv("GLUCOSE_MODEL_SERVER_URL", stack.server_urls[0])
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="patient")
    assert picker.value == "hupa0002p" and picker.options[0] == "hupa0002p · model v1 ready"
    assert any("(a model server, no gateway)" in c.value for c in at.sidebar.caption)
    at = forecast(upload(at, "windows-example.csv", window_example))
    assert_forecasts_match_model(at, "hupa0002p", model_predict)


def test_timeseries_csv_forecast(monkeypatch, stack, series_example, model_predict):
    at = forecast(upload(new_app(monkeypatch, stack.gateway_url), "timeseries-example.csv", series_example))
    assert "is valid (time-series CSV)" in texts(at.success)
    assert_forecasts_match_model(at, "hupa0002p", model_predict)


def test_hupa_dataset_forecast_in_chunks(monkeypatch, stack, model_predict):
    data = (REPO / "data" / "hupa-ucm" / "HUPA0003P.csv").read_bytes()
    at = new_app(monkeypatch, stack.gateway_url, GLUCOSE_WEBAPP_CHUNK="400")
    at = forecast(upload(at, "HUPA0003P.csv", data, patient="hupa0003p"))
    assert "HUPA-UCM dataset CSV" in texts(at.success)
    assert at.session_state["prepared"][1].n > 800  # several requests of 400
    assert_forecasts_match_model(at, "hupa0003p", model_predict)


def test_ohio_xml_forecast(monkeypatch, stack, series_example, model_predict):
    xml = ohio_xml(pd.read_csv(io.BytesIO(series_example)))
    at = forecast(upload(new_app(monkeypatch, stack.gateway_url), "559-ws-training.xml", xml))
    assert "OhioT1DM dataset XML" in texts(at.success)
    assert_forecasts_match_model(at, "hupa0002p", model_predict)


def test_mmol_file_is_converted_and_shown_in_mmol(monkeypatch, stack, window_example, model_predict):
    frame = csv_frame(window_example)
    for c in [c for c in frame.columns if c.startswith("glucose")]:
        frame[c] = (pd.to_numeric(frame[c]) / 18.0182).round(2).astype(str).replace("nan", "")
    at = forecast(upload(new_app(monkeypatch, stack.gateway_url), "mmol.csv", csv_bytes(frame)))
    assert "look like mmol/L" in texts(at.info)
    assert_forecasts_match_model(at, "hupa0002p", model_predict)
    assert any(c.endswith("(mmol/L)") for c in at.dataframe[0].value.columns)


# ---------------------------------------------------------------------------------------------
# Bad files: a clear message, and nothing is sent


def _bad_files(window_example: bytes, series_example: bytes) -> dict[str, tuple[bytes, str]]:
    w, s = csv_frame(window_example), csv_frame(series_example)
    non_numeric = w.copy()
    non_numeric.loc[2, "insulin_t-1"] = "1,5 U"
    empty = w.copy()
    empty.loc[0, "carbs_t0"] = ""
    implausible = w.copy()
    implausible.loc[7, "glucose_t-2"] = "2500"
    negative = s.copy()
    negative.loc[3, "carbs"] = "-30"
    return {
        "missing column": (csv_bytes(w.drop(columns=["glucose_t-4"])), "missing the column(s) glucose_t-4"),
        "non-numeric value": (csv_bytes(non_numeric), "Row 4, column insulin_t-1: “1,5 U” is not a number"),
        "empty cell": (csv_bytes(empty), "Row 2, column carbs_t0: the cell is empty"),
        "implausible glucose": (csv_bytes(implausible), "Row 9, column glucose_t-2: 2500 mg/dL is not a plausible"),
        "too few rows": (csv_bytes(s.head(9)), "3 glucose readings (2018-06-22 11:15 to 11:45), but one forecast needs 75 minutes of history"),
        "header only": (b",".join(w.columns.str.encode("utf-8")) + b"\n", "no data rows"),
        "negative carbs": (csv_bytes(negative), "row 5, column 'carbs': -30.0 is negative"),
        "unknown columns": (b"date,sugar\n2024-01-01,5\n", "were not recognised"),
        "empty file": (b"", "is empty"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing column", "non-numeric value", "empty cell", "implausible glucose", "too few rows",
     "header only", "negative carbs", "unknown columns", "empty file"],
)
def test_bad_file_is_explained_and_nothing_is_sent(monkeypatch, loopback, window_example, series_example, case):
    data, expected = _bad_files(window_example, series_example)[case]
    at = upload(new_app(monkeypatch, loopback.url), "mine.csv", data)
    assert expected in texts(at.error), texts(at.error)
    assert "This file cannot be used." in texts(at.error)
    assert not [b for b in at.button if b.key == "forecast"]  # no way to send it
    assert loopback.behaviour.predict_calls == 0


def test_model_statuses_are_cached_until_the_patient_asks_again(monkeypatch, loopback, config):
    """Every click reruns the page: the statuses come from a short cache, not from one request per
    patient each time; "Check the service again" asks the service anew."""

    def status_requests() -> int:
        return sum(1 for method, _ in loopback.behaviour.requests if method == "GET")

    at = new_app(monkeypatch, loopback.url)
    assert status_requests() == len(config.patient_ids)
    at.selectbox(key="glucose_unit").set_value("mmol/L").run()
    assert not at.exception, at.exception
    assert status_requests() == len(config.patient_ids)
    at.button(key="recheck").click().run()
    assert not at.exception, at.exception
    assert status_requests() == 2 * len(config.patient_ids)
    assert at.selectbox(key="patient").options[0] == f"{config.patient_ids[0]} · model v7 ready"


# ---------------------------------------------------------------------------------------------
# The server is down, answers an error, or is too slow


def test_server_down(monkeypatch, down_url, window_example):
    at = new_app(monkeypatch, down_url)
    assert "cannot be reached" in texts(at.sidebar.warning)
    at = forecast(upload(at, "windows-example.csv", window_example))
    assert "No forecast this time" in texts(at.error) and "cannot be reached" in texts(at.error)
    assert not at.get("plotly_chart")


def test_server_error(monkeypatch, loopback, window_example):
    at = forecast(upload(new_app(monkeypatch, loopback.url), "windows-example.csv", window_example))
    err = texts(at.error)
    assert "HTTP 500" in err and "the model crashed while loading a kernel" in err
    assert "Nothing is wrong with your file" in err
    assert loopback.behaviour.predict_calls == 1  # stops at the first failing chunk
    assert not at.get("plotly_chart")


def test_server_too_slow(monkeypatch, loopback, window_example):
    loopback.behaviour.mode, loopback.behaviour.delay = "slow", 3.0
    at = new_app(monkeypatch, loopback.url, GLUCOSE_WEBAPP_TIMEOUT="1")
    at = forecast(upload(at, "windows-example.csv", window_example))
    assert "did not answer within 1 seconds" in texts(at.error)
