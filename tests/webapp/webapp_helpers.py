"""Helpers of the web-app tests: CSV damage, an OhioT1DM XML writer, a real loopback HTTP server."""

from __future__ import annotations

import io
import json
import socket
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "data" / "examples"
APP = REPO / "webapp" / "app.py"


def csv_frame(data: bytes) -> pd.DataFrame:
    """A CSV as strings, to damage one cell at a time."""
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def ohio_xml(series: pd.DataFrame, patient_id: str = "559") -> bytes:
    """An OhioT1DM-format XML file holding a canonical series (glucose, a basal, boluses, meals)."""

    def ts(t: pd.Timestamp) -> str:
        return t.strftime("%d-%m-%Y %H:%M:%S")

    times = pd.to_datetime(series["timestamp"])
    glucose = "".join(
        f'<event ts="{ts(t)}" value="{int(round(float(g)))}"/>'
        for t, g in zip(times, series["glucose"], strict=True) if pd.notna(g)  # readings only
    )
    boluses = "".join(
        f'<event ts_begin="{ts(t)}" ts_end="{ts(t)}" type="normal" dose="{float(u):.1f}"/>'
        for t, u in zip(times, series["insulin"].astype(float), strict=True)
        if u > 0.5
    )
    meals = "".join(
        f'<event ts="{ts(t)}" type="Lunch" carbs="{int(float(c))}"/>'
        for t, c in zip(times, series["carbs"].astype(float), strict=True)
        if c > 0
    )
    basal = f'<event ts="{ts(times.iloc[0])}" value="0.8"/>'
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<patient id="{patient_id}" weight="99" insulin_type="Humalog">'
        f"<glucose_level>{glucose}</glucose_level><finger_stick/><basal>{basal}</basal><temp_basal/>"
        f"<bolus>{boluses}</bolus><meal>{meals}</meal></patient>\n"
    ).encode()


# ---------------------------------------------------------------------------------------------
# Real loopback servers that answer like a broken or slow TF Serving


@dataclass
class FakeBehaviour:
    mode: str = "error"  # error | slow | garbage | notfound
    delay: float = 0.0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    @property
    def predict_calls(self) -> int:
        return sum(1 for m, p in self.requests if m == "POST" and p.endswith(":predict"))


@dataclass
class LoopbackServer:
    url: str
    behaviour: FakeBehaviour


def make_handler(behaviour: FakeBehaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, code: int, body: object) -> None:
            raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def do_GET(self) -> None:  # noqa: N802
            behaviour.requests.append(("GET", self.path))
            if behaviour.mode == "notfound":
                self._send(404, {"error": "Servable not found for request"})
                return
            self._send(
                200,
                {"model_version_status": [{"version": "7", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]},
            )

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            behaviour.requests.append(("POST", self.path))
            if behaviour.mode == "slow":
                time.sleep(behaviour.delay)
                self._send(200, {"predictions": [100.0] * len(body.get("instances", []))})
            elif behaviour.mode == "garbage":
                self._send(200, b"<html>proxy says hi</html>")
            elif behaviour.mode == "notfound":
                self._send(404, {"error": "Servable not found for request"})
            else:
                self._send(500, {"error": "Internal: the model crashed while loading a kernel"})

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
