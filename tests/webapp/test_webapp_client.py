"""The HTTP client against real loopback servers: down, slow, erroring, garbage; chunking; status."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.client import (
    ForecastClient,
    ServingError,
    chunk_size,
    gateway_url,
    public_path,
    request_timeout,
    service,
)
from webapp.patients import configured_patients, version_from_status

X = np.random.default_rng(0).uniform(50, 200, size=(7, 15, 3)).astype(np.float32)


def test_paths_come_from_the_routes():
    assert public_path("hupa0002p", ":predict") == "/hupa0002p/v1/models/hupa0002p:predict"
    assert public_path("hupa0002p", "") == "/hupa0002p/v1/models/hupa0002p"
    assert public_path("hupa0002p", ":predict", direct=True) == "/v1/models/hupa0002p:predict"


def test_service_is_the_gateway_unless_a_model_server_is_given(config, monkeypatch):
    monkeypatch.setenv("GLUCOSE_GATEWAY_URL", "http://192.168.49.2")
    monkeypatch.delenv("GLUCOSE_MODEL_SERVER_URL", raising=False)
    assert service(config) == ("http://192.168.49.2", False)
    monkeypatch.setenv("GLUCOSE_MODEL_SERVER_URL", "http://127.0.0.1:8501/")
    assert service(config) == ("http://127.0.0.1:8501", True)


def test_direct_client_gets_the_gateways_answers(stack):
    """The same forecasts and status from one replica (TF Serving's paths) as through nginx."""
    with ForecastClient(stack.gateway_url) as via, ForecastClient(stack.server_urls[0], direct=True) as direct:
        np.testing.assert_array_equal(direct.predict("hupa0002p", X), via.predict("hupa0002p", X))
        assert direct.status("hupa0002p").version == "1" and direct.status("hupa0002p").available


def test_configured_patients_and_gateway_default(config, monkeypatch):
    assert configured_patients(config) == config.patient_ids and len(configured_patients(config)) == 6
    monkeypatch.delenv("GLUCOSE_GATEWAY_URL", raising=False)
    assert gateway_url(config) == f"http://127.0.0.1:{config.ports.gateway}"
    monkeypatch.setenv("GLUCOSE_GATEWAY_URL", "http://192.168.49.2/")
    assert gateway_url(config) == "http://192.168.49.2"


def test_env_settings(monkeypatch):
    monkeypatch.setenv("GLUCOSE_WEBAPP_TIMEOUT", "2.5")
    monkeypatch.setenv("GLUCOSE_WEBAPP_CHUNK", "100")
    assert request_timeout() == 2.5 and chunk_size() == 100
    monkeypatch.setenv("GLUCOSE_WEBAPP_CHUNK", "lots")
    monkeypatch.setenv("GLUCOSE_WEBAPP_TIMEOUT", "-1")
    assert chunk_size() == 500 and request_timeout() == 15.0


def test_version_from_status():
    status = {"model_version_status": [
        {"version": "2", "state": "AVAILABLE"}, {"version": "3", "state": "LOADING"}, {"version": "1", "state": "AVAILABLE"}
    ]}
    assert version_from_status(status) == "2"
    assert version_from_status({"model_version_status": [{"version": "3", "state": "LOADING"}]}) is None
    assert version_from_status(["nope"]) is None


def test_server_down(down_url):
    with ForecastClient(down_url, timeout=2) as c:
        with pytest.raises(ServingError) as err:
            c.predict("hupa0002p", X)
        assert err.value.kind == "down" and "cannot be reached" in str(err.value) and down_url in str(err.value)
        status = c.status("hupa0002p")
    assert not status.available and "cannot be reached" in status.message and status.label.endswith("unavailable")


def test_server_error_message_is_passed_on(loopback):
    with ForecastClient(loopback.url, timeout=5) as c:
        status = c.status("hupa0002p")
        assert status.available and status.version == "7" and status.label == "hupa0002p · model v7 ready"
        with pytest.raises(ServingError) as err:
            c.predict("hupa0002p", X)
    assert err.value.kind == "error" and err.value.status == 500
    assert "HTTP 500" in str(err.value) and "the model crashed" in str(err.value)
    assert ("POST", "/hupa0002p/v1/models/hupa0002p:predict") in loopback.behaviour.requests


def test_not_found(loopback):
    loopback.behaviour.mode = "notfound"
    with ForecastClient(loopback.url, timeout=5) as c:
        assert not c.status("hupa0002p").available
        with pytest.raises(ServingError, match="no model for patient hupa0002p"):
            c.predict("hupa0002p", X)


def test_slow_server_times_out(loopback):
    loopback.behaviour.mode, loopback.behaviour.delay = "slow", 2.0
    with ForecastClient(loopback.url, timeout=0.5) as c, pytest.raises(ServingError) as err:
        c.predict("hupa0002p", X)
    assert err.value.kind == "slow" and "did not answer within 0.5 seconds" in str(err.value)


def test_garbage_answer(loopback):
    loopback.behaviour.mode = "garbage"
    with ForecastClient(loopback.url, timeout=5) as c, pytest.raises(ServingError) as err:
        c.predict("hupa0002p", X)
    assert err.value.kind == "bad_answer"


def test_chunks_one_request_each(loopback):
    loopback.behaviour.mode, loopback.behaviour.delay = "slow", 0.0
    seen: list[tuple[int, int]] = []
    with ForecastClient(loopback.url, timeout=5) as c:
        out = c.predict_chunks("hupa0002p", X, chunk=3, progress=lambda d, t: seen.append((d, t)))
    assert out.shape == (7,) and loopback.behaviour.predict_calls == 3
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]
