"""`make demo` end to end, as a user runs it: `glucose-forecast demo` on two shipped patients.

The first run starts from nothing (no tuning results, no models): it tunes with the local Katib
executor, trains and exports, serves two replicas behind real nginx, starts the Streamlit app,
and prints a curl that returns a forecast; Ctrl-C stops every process it started. The second run
finds everything up to date, and, with nginx switched off (``GF_NGINX=none``), serves without the
gateway: the app and the printed curl talk straight to one replica.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serving.launch import free_port

REPO = Path(__file__).resolve().parents[2]
PATIENTS = ("hupa0002p", "hupa0015p")

pytestmark = pytest.mark.slow


def demo_config(tmp_path: Path) -> Path:
    """The project's configuration with two of its patients (data files by absolute path)."""
    text = (REPO / "glucose-forecast.toml").read_text()
    settings = text[: text.index("[[patients]]")]
    patients = "".join(
        f'\n[[patients]]\nid = "{p}"\nfile = "{REPO}/data/hupa-ucm/{p.upper()}.csv"\nreader = "hupa"\ncarb_unit = "g"\n'
        for p in PATIENTS
    )
    path = tmp_path / "glucose-forecast.toml"
    path.write_text(settings + patients)
    return path


class Demo:
    """`glucose-forecast demo` in the background; its output read line by line."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "--config", str(config), "demo"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=config.parent,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        self.stop()
        raise AssertionError(f"the demo never printed {prefix!r}; its output:\n" + "\n".join(self.lines[-60:]))

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as a user presses it."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def saved_model_predict(models: Path, patient: str, instances: list) -> np.ndarray:
    import tensorflow as tf

    from pipeline.export import latest_version
    from pipeline.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

    model = tf.saved_model.load(str(models / patient / str(latest_version(models, patient))))
    out = model.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(np.asarray(instances, np.float32))})
    return out[OUTPUT_NAME].numpy().ravel()


def forecast_then_ctrl_c(demo: Demo, curl: str, models: Path, webapp_port: int) -> None:
    """The printed curl, run as pasted, returns the exported model's forecast; the web app is up;
    Ctrl-C ends the demo cleanly."""
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    predictions = np.asarray(json.loads(answer.stdout)["predictions"], dtype=float).ravel()
    body = json.loads(shlex.split(curl)[-1])
    np.testing.assert_allclose(predictions, saved_model_predict(models, PATIENTS[0], body["instances"]), rtol=1e-4)
    with urllib.request.urlopen(f"http://127.0.0.1:{webapp_port}/_stcore/health", timeout=10) as r:
        assert r.read() == b"ok"
    assert demo.interrupt() == 0, demo.output[-3000:]


def test_demo_tunes_trains_serves_and_stops_on_ctrl_c(tmp_path):
    config = demo_config(tmp_path)
    models = tmp_path / "models"
    gateway, webapp, *servers = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GF_", "GLUCOSE_"))}
    env.update(GF_GATEWAY_PORT=str(gateway), GF_SERVER_PORTS=f"{servers[0]},{servers[1]}",
               GF_WEBAPP_PORT=str(webapp), TF_CPP_MIN_LOG_LEVEL="2")

    # 1. From nothing: tune, train, export, serve behind nginx, web app, curl.
    demo = Demo(config, env)
    try:
        curl = demo.wait_for("curl ", timeout=900)
        assert "tuning 2 patient(s) with the local Katib executor" in demo.output
        for p in PATIENTS:
            assert (tmp_path / "build" / "tuning" / f"{p}.json").is_file()
            assert (models / p / "1" / "saved_model.pb").is_file()
            report = tmp_path / "build" / "reports" / p
            assert "![forecast vs actual](forecast.png)" in (report / "report.md").read_text()
            for png in ("forecast.png", "clarke.png"):
                assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            status = get_json(f"http://127.0.0.1:{gateway}/{p}/v1/models/{p}")
            assert status["model_version_status"][0]["state"] == "AVAILABLE"
        assert f"http://127.0.0.1:{gateway}/{PATIENTS[0]}/v1/models/{PATIENTS[0]}:predict" in curl
        forecast_then_ctrl_c(demo, curl, models, webapp)
    finally:
        demo.stop()
    assert "stopped the web app, the gateway and the model servers" in demo.output
    assert not any(listening(p) for p in (gateway, webapp, *servers)), "a process outlived Ctrl-C"

    # 2. Again, without nginx: nothing is retrained; the app and the curl use one replica directly.
    demo = Demo(config, {**env, "GF_NGINX": "none"})
    try:
        curl = demo.wait_for("curl ", timeout=300)
        assert "every patient has a current tuning result" in demo.output
        assert all(f"{p}: up to date (version 1" in demo.output for p in PATIENTS), demo.output
        assert "nginx is not installed" in demo.output and not listening(gateway)
        assert f"http://127.0.0.1:{servers[0]}/v1/models/{PATIENTS[0]}:predict" in curl
        forecast_then_ctrl_c(demo, curl, models, webapp)
    finally:
        demo.stop()
    assert not any(listening(p) for p in (webapp, *servers)), "a process outlived Ctrl-C"
    assert not (models / PATIENTS[0] / "2").exists()
