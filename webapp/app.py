"""Streamlit page: pick your patient id, upload recent data, see the 30-minute glucose forecast.

Run with ``glucose-forecast webapp`` (or ``make webapp``), or ``streamlit run webapp/app.py``.
Settings: ``GLUCOSE_GATEWAY_URL`` (default the local gateway of glucose-forecast.toml), or
``GLUCOSE_MODEL_SERVER_URL`` (one model server, no gateway), ``GLUCOSE_WEBAPP_TIMEOUT`` (seconds per request), ``GLUCOSE_WEBAPP_CHUNK`` (forecasts per request).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run webapp/app.py` puts webapp/ on the path, not the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import streamlit as st

from pipeline.config import Config, ConfigError, load_config
from webapp import client as wclient
from webapp import results as wres
from webapp.patients import PatientStatus, configured_patients
from webapp.validation import (
    GLUCOSE_UNITS,
    PreparedInput,
    UploadError,
    plural,
    prepare_upload,
    window_template_csv,
)

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "examples"
STATUS_TTL = 20  # seconds a model status is trusted
DETECT = "Detect automatically"


def client(service: tuple[str, bool], timeout: float) -> wclient.ForecastClient:
    url, direct = service
    return wclient.ForecastClient(url, timeout=timeout, direct=direct)


@st.cache_data(ttl=STATUS_TTL, show_spinner=False)
def patient_statuses(service: tuple[str, bool], patients: tuple[str, ...], timeout: float) -> dict[str, PatientStatus]:
    """Ask the forecast service about every patient's model at once (cached briefly)."""
    with client(service, timeout) as c, ThreadPoolExecutor(max_workers=6) as pool:
        return dict(zip(patients, pool.map(c.status, patients), strict=True))


def sidebar(config: Config, service: tuple[str, bool]) -> tuple[str, PatientStatus, str | None]:
    patients = configured_patients(config)
    statuses = patient_statuses(service, tuple(patients), min(3.0, wclient.request_timeout()))
    with st.sidebar:
        st.header("Your settings")
        available = [p for p in patients if statuses[p].available]
        default = patients.index(available[0]) if available else 0
        patient = st.selectbox(
            "Patient id",
            patients,
            index=default,
            format_func=lambda p: statuses[p].label,
            help="Your personal model answers the forecasts. The list comes from the server configuration.",
            key="patient",
        )
        status = statuses[patient]
        if status.available:
            st.success(f"Model version {status.version} of {patient} will answer.", icon=":material/check_circle:")
        else:
            st.warning(status.message or f"The model of {patient} is not available right now.", icon=":material/warning:")
        if st.button("Check the service again", width="stretch", key="recheck"):
            patient_statuses.clear()
            st.rerun()
        unit = st.selectbox(
            "Glucose unit in my file",
            [DETECT, *GLUCOSE_UNITS],
            help="mmol/L values (such as 6.2) are recognised automatically and converted for the model.",
            key="glucose_unit",
        )
        st.divider()
        st.caption(f"Forecast service: `{service[0]}`" + (" (a model server, no gateway)" if service[1] else ""))
        st.caption(
            "Forecasts come from a research model trained on your past data. They are not medical "
            "advice: always check your meter before acting on them."
        )
    return patient, status, (None if unit == DETECT else unit)


def formats_help(config: Config) -> None:
    spec = config.series
    minutes = spec.window * spec.interval_minutes
    ahead = spec.horizon * spec.interval_minutes
    with st.expander("Which files can I upload?"):
        st.markdown(
            f"""
* **Your time series** (recommended): a CSV with the columns `timestamp, glucose, insulin, carbs`,
  one row per reading (every {spec.interval_minutes} minutes). The app makes one forecast for each
  time that has the previous {minutes} minutes of data. Glucose in mg/dL or mmol/L, insulin in units,
  carbohydrates in grams.
* **Window CSV** (one forecast per row): {spec.window} carbohydrate values, then {spec.window} insulin,
  then {spec.window} glucose, oldest to newest, with the header of the template below. Optional
  columns: `timestamp` (time of the newest reading) and `glucose_t+{spec.horizon}` (the glucose
  measured {ahead} minutes later, to see how good the forecasts are).
* **Dataset files**: HUPA-UCM CSV and OhioT1DM XML, as published.
"""
        )
        c1, c2, c3 = st.columns(3)
        c1.download_button(
            "Window CSV template", window_template_csv(spec), "window-template.csv", "text/csv",
            width="stretch",
        )
        for col, name, label in (
            (c2, "windows-example.csv", "Example window CSV"),
            (c3, "timeseries-example.csv", "Example time series"),
        ):
            path = EXAMPLES_DIR / name
            if path.is_file():
                col.download_button(label, path.read_bytes(), name, "text/csv", width="stretch")


def validated_upload(config: Config, patient: str, unit: str | None) -> PreparedInput | None:
    uploaded = st.file_uploader(
        "Upload your data (CSV or XML)",
        type=["csv", "txt", "xml"],
        help="Nothing is sent to the forecast service until the file has been checked.",
        key="upload",
    )
    if uploaded is None:
        st.info("Upload a file to begin. Not sure what to upload? Open “Which files can I upload?” above.", icon=":material/upload_file:")
        return None
    key = (uploaded.file_id, uploaded.name, unit, config.patient(patient).carb_unit)
    cached = st.session_state.get("prepared")
    if not cached or cached[0] != key:
        bar = st.progress(0.0, text="Checking your file…")
        try:
            prepared: PreparedInput | str = prepare_upload(
                uploaded.name,
                uploaded.getvalue(),
                config,
                patient=config.patient(patient),
                glucose_unit=unit,
                progress=lambda frac, text: bar.progress(min(max(frac, 0.0), 1.0), text=text),
            )
        except UploadError as exc:
            prepared = str(exc)
        bar.empty()
        st.session_state["prepared"] = cached = (key, prepared)
    prepared = cached[1]
    if isinstance(prepared, str):
        st.error(f"**This file cannot be used.** {prepared}", icon=":material/error:")
        st.caption("Fix the file and upload it again; nothing has been sent.")
        return None
    known = int(np.isfinite(prepared.actual).sum())
    with_actual = f", {known:,} with the glucose measured afterwards" if known else ""
    st.success(
        f"“{prepared.filename}” is valid ({prepared.kind_label}): {plural(prepared.n, 'forecast')} to make"
        f"{with_actual}.",
        icon=":material/task_alt:",
    )
    for note in prepared.notes:
        st.info(note, icon=":material/info:")
    for warning in prepared.warnings:
        st.warning(warning, icon=":material/warning:")
    return prepared


def run_forecast(config: Config, service: tuple[str, bool], patient: str, status: PatientStatus,
                 prepared: PreparedInput) -> None:
    key = (st.session_state["prepared"][0], patient, service)
    if st.button(f"Forecast for {patient}", type="primary", key="forecast"):
        bar = st.progress(0.0, text="Sending to the forecast service…")
        chunk = wclient.chunk_size()

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Forecasting… {done:,} of {total:,}")

        try:
            with client(service, wclient.request_timeout()) as c:
                forecasts = c.predict_chunks(patient, prepared.X, chunk, progress)
        except wclient.ServingError as exc:
            bar.empty()
            st.session_state.pop("result", None)
            st.error(f"**No forecast this time.** {exc}", icon=":material/cloud_off:")
            return
        bar.empty()
        st.session_state["result"] = {"key": key, "forecasts": forecasts, "version": status.version}
    result = st.session_state.get("result")
    if result and result["key"] == key:
        show_results(config, patient, result["version"], prepared, result["forecasts"])


def show_results(config: Config, patient: str, version: str | None, prepared: PreparedInput, forecasts) -> None:
    spec = config.series
    unit = prepared.glucose_unit
    ahead = spec.horizon * spec.interval_minutes
    version_text = f" · model v{version}" if version else ""
    st.subheader(f"Your forecasts{version_text}")
    counts = wres.counts(forecasts)
    digits = 1 if unit == "mmol/L" else 0
    latest, last = float(forecasts[-1]) * wres.unit_factor(unit), float(prepared.last_glucose[-1]) * wres.unit_factor(unit)
    when = f" (for {prepared.times[-1] + pd.Timedelta(minutes=ahead):%Y-%m-%d %H:%M})" if prepared.times is not None else ""
    c = st.columns([1.4, 1, 1, 1, 1])
    c[0].metric(
        f"Latest forecast{when}", f"{latest:.{digits}f} {unit}",
        delta=f"{latest - last:+.{digits}f} from {last:.{digits}f} now", delta_color="off",
        help=f"The forecast made from the last {spec.window * spec.interval_minutes} minutes of your file.",
    )
    c[1].metric("Forecasts", f"{len(forecasts):,}")
    c[2].metric("In range", f"{counts[wres.IN_RANGE]:,}", help="Forecast between 70 and 180 mg/dL (3.9–10 mmol/L)")
    c[3].metric("Low forecasts", f"{counts[wres.LOW]:,}", help="Forecast below 70 mg/dL (3.9 mmol/L)")
    c[4].metric("High forecasts", f"{counts[wres.HIGH]:,}", help="Forecast above 180 mg/dL (10 mmol/L)")
    if counts[wres.LOW]:
        st.warning(
            f"{plural(counts[wres.LOW], 'forecast')} in this file {'predicts' if counts[wres.LOW] == 1 else 'predict'} "
            f"a **low** (below 70 mg/dL, 3.9 mmol/L) {ahead} minutes after {'its' if counts[wres.LOW] == 1 else 'their'} "
            "window; they are marked in red. Only the latest forecast looks ahead from the end of your file.",
            icon=":material/arrow_downward:",
        )
    st.plotly_chart(wres.forecast_figure(prepared, forecasts, spec, unit), width="stretch")
    acc = wres.accuracy(prepared, forecasts, unit)
    if acc:
        st.markdown(f"**How good were these forecasts?** Compared with the glucose measured {ahead} minutes later ({acc['n']:,} forecasts):")
        a = st.columns(4)
        a[0].metric("Model MAE", f"{acc['model_mae']:.2f} {unit}",
                    delta=f"{acc['model_mae'] - acc['persistence_mae']:+.2f} vs persistence", delta_color="inverse")
        a[1].metric("Model RMSE", f"{acc['model_rmse']:.2f} {unit}",
                    delta=f"{acc['model_rmse'] - acc['persistence_rmse']:+.2f} vs persistence", delta_color="inverse")
        a[2].metric("Persistence MAE", f"{acc['persistence_mae']:.2f} {unit}")
        a[3].metric("Persistence RMSE", f"{acc['persistence_rmse']:.2f} {unit}")
        st.caption(
            "MAE: mean absolute error; RMSE: root mean squared error (lower is better). Persistence is the "
            f"naive guess that glucose stays where it is for the next {ahead} minutes. If this file overlaps "
            "the data your model was trained on (the shipped dataset files do), these figures are optimistic: "
            "the model has seen those days."
        )
    table = wres.results_frame(prepared, forecasts, spec, unit)
    st.dataframe(
        table, width="stretch", hide_index=True, height=min(400, 38 + 35 * len(table)),
        column_config={
            **{c: st.column_config.DatetimeColumn(c, format="YYYY-MM-DD HH:mm")
               for c in ("last reading at", "forecast for") if c in table},
            # The same number of decimals on every row (the CSV keeps the rounded values).
            **{c: st.column_config.NumberColumn(c, format=f"%.{wres.table_decimals(unit)}f")
               for c in table.columns if c.endswith(f"({unit})")},
        },
    )
    st.download_button(
        "Download the forecasts (CSV)",
        wres.results_csv(table),
        file_name=f"forecasts-{patient}.csv",
        mime="text/csv",
        key="download",
    )


def main() -> None:
    # An emoji icon: a page_icon from the material set would be fetched from Google's font CDN.
    st.set_page_config(page_title="Glucose forecast", page_icon="📈", layout="wide")
    try:
        config = load_config()
    except ConfigError as exc:
        st.error(f"The app is misconfigured: {exc}")
        st.stop()
    service = wclient.service(config)
    patient, status, unit = sidebar(config, service)
    spec = config.series
    st.title("Your glucose in 30 minutes")
    st.markdown(
        f"Upload your recent glucose, insulin and carbohydrate data; your personal model forecasts your "
        f"glucose **{spec.horizon * spec.interval_minutes} minutes ahead** for every moment with "
        f"{spec.window * spec.interval_minutes} minutes of data before it."
    )
    formats_help(config)
    prepared = validated_upload(config, patient, unit)
    if prepared is not None:
        run_forecast(config, service, patient, status, prepared)


main()
