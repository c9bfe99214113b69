"""The REST contract of TensorFlow Serving, checked against a live server.

By default the local server (two replicas started by the ``stack`` fixture); point ``GF_SERVING_URL``
at a real ``tensorflow/serving`` container (with ``GF_SERVING_MODEL``, ``GF_SERVING_MODEL_PATH`` and
optionally ``GF_SERVING_LABEL``) to see the same results there. Example::

    docker run --rm -p 8501:8501 -v $PWD/models/hupa0002p:/models/hupa0002p -e MODEL_NAME=hupa0002p \
        tensorflow/serving:2.20.0
    GF_SERVING_URL=http://localhost:8501 GF_SERVING_MODEL=hupa0002p \
    GF_SERVING_MODEL_PATH=models/hupa0002p/1 .venv/bin/pytest tests/serving/test_serving_contract.py
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

SPEC = load_config().series
SHAPE = (SPEC.window, len(SPEC.features))


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def served_version(target, client) -> int:
    r = client.get(f"{target.url}/v1/models/{target.model}")
    assert r.status_code == 200, r.text
    available = [int(s["version"]) for s in r.json()["model_version_status"] if s["state"] == "AVAILABLE"]
    assert available, r.text
    return max(available)


@pytest.fixture(scope="module")
def reference(target):
    """The served SavedModel loaded with tf.saved_model.load: the ground truth for predictions."""
    if target.model_path is None:
        pytest.skip("GF_SERVING_MODEL_PATH not set: cannot compare with tf.saved_model.load")
    import tensorflow as tf

    fn = tf.saved_model.load(str(target.model_path)).signatures[SIGNATURE_NAME]
    return lambda X: fn(**{INPUT_NAME: tf.constant(X)})[OUTPUT_NAME].numpy()


def predict_url(target, suffix: str = "") -> str:
    return f"{target.url}/v1/models/{target.model}{suffix}:predict"


def post(client, url: str, body) -> httpx.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(url, content=data, headers={"content-type": "application/json"})


def assert_error(r: httpx.Response, status: int, *fragments: str) -> None:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    doc = r.json()
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    for f in fragments:
        assert f.lower() in doc["error"].lower(), doc["error"]


# ------------------------------------------------------------------------------------------ status
def test_status_lists_the_available_version(target, client, served_version):
    doc = client.get(f"{target.url}/v1/models/{target.model}").json()
    entry = next(s for s in doc["model_version_status"] if s["version"] == str(served_version))
    assert entry == {"version": str(served_version), "state": "AVAILABLE",
                     "status": {"error_code": "OK", "error_message": ""}}


def test_status_of_one_version(target, client, served_version):
    r = client.get(f"{target.url}/v1/models/{target.model}/versions/{served_version}")
    assert r.status_code == 200
    assert [s["version"] for s in r.json()["model_version_status"]] == [str(served_version)]


def test_status_errors(target, client):
    assert_error(client.get(f"{target.url}/v1/models/{target.model}/versions/987654"), 404)
    assert_error(client.get(f"{target.url}/v1/models/no-such-model"), 404)
    assert_error(client.get(f"{target.url}/v1/models/{target.model}/labels/no-such-label"), 400,
                 "version label")
    assert_error(client.get(f"{target.url}/v1/models/{target.model}/versions/x1"), 400)


def test_status_and_predict_by_label(target, client, served_version, window_batch):
    if not target.label:
        pytest.skip("no version label configured (GF_SERVING_LABEL)")
    r = client.get(f"{target.url}/v1/models/{target.model}/labels/{target.label}")
    assert r.status_code == 200, r.text
    assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"
    X = window_batch(2)
    by_label = post(client, predict_url(target, f"/labels/{target.label}"), {"instances": X.tolist()})
    latest = post(client, predict_url(target), {"instances": X.tolist()})
    assert by_label.status_code == 200, by_label.text
    assert np.allclose(by_label.json()["predictions"], latest.json()["predictions"], rtol=1e-5)


# ---------------------------------------------------------------------------------------- metadata
def test_metadata_describes_the_signature(target, client, served_version):
    for suffix in ("", f"/versions/{served_version}"):
        r = client.get(f"{target.url}/v1/models/{target.model}{suffix}/metadata")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_spec"]["name"] == target.model
        assert doc["model_spec"]["version"] == str(served_version)
        sig = doc["metadata"]["signature_def"]["signature_def"][SIGNATURE_NAME]
        assert sig["method_name"] == "tensorflow/serving/predict"
        inp = sig["inputs"][INPUT_NAME]
        assert inp["dtype"] == "DT_FLOAT"
        assert [int(d["size"]) for d in inp["tensor_shape"]["dim"]] == [-1, *SHAPE]
        out = sig["outputs"][OUTPUT_NAME]
        assert out["dtype"] == "DT_FLOAT"
        assert [int(d["size"]) for d in out["tensor_shape"]["dim"]] == [-1]
    assert_error(client.get(f"{target.url}/v1/models/no-such-model/metadata"), 404)
    assert_error(client.get(f"{target.url}/v1/models/{target.model}/versions/987654/metadata"), 404)


# ----------------------------------------------------------------------------------------- predict
def test_row_format_equals_saved_model(target, client, window_batch, reference):
    X = window_batch(64, seed=1)
    r = post(client, predict_url(target), {"instances": X.tolist()})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["predictions"], dtype=np.float32)
    assert got.shape == (64,)
    np.testing.assert_allclose(got, reference(X), rtol=1e-5, atol=1e-4)


def test_one_window(target, client, window_batch, reference):
    X = window_batch(1, seed=2)
    r = post(client, predict_url(target), {"instances": X.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], reference(X), rtol=1e-5, atol=1e-4)


def test_columnar_format(target, client, window_batch, reference):
    X = window_batch(5, seed=3)
    for body in ({"inputs": X.tolist()}, {"inputs": {INPUT_NAME: X.tolist()}}):
        r = post(client, predict_url(target), body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"outputs"}
        np.testing.assert_allclose(doc["outputs"], reference(X), rtol=1e-5, atol=1e-4)


def test_named_instances_and_signature_name(target, client, window_batch, reference):
    X = window_batch(3, seed=4)
    body = {"signature_name": SIGNATURE_NAME, "instances": [{INPUT_NAME: x} for x in X.tolist()]}
    r = post(client, predict_url(target), body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], reference(X), rtol=1e-5, atol=1e-4)


def test_predict_by_version(target, client, served_version, window_batch):
    X = window_batch(2, seed=5)
    a = post(client, predict_url(target, f"/versions/{served_version}"), {"instances": X.tolist()})
    b = post(client, predict_url(target), {"instances": X.tolist()})
    assert a.status_code == 200, a.text
    assert np.allclose(a.json()["predictions"], b.json()["predictions"], rtol=1e-5)


def test_large_request(target, client, window_batch, reference):
    X = window_batch(10_000, seed=6)
    r = post(client, predict_url(target), {"instances": X.tolist()})
    assert r.status_code == 200, r.text[:200]
    np.testing.assert_allclose(r.json()["predictions"], reference(X), rtol=1e-4, atol=1e-3)


def _window(n_steps: int = SHAPE[0], n_features: int = SHAPE[1]) -> list:
    return [[100.0] + [0.0] * (n_features - 1) for _ in range(n_steps)]


BAD_BODIES = {
    "malformed JSON": ('{"instances": [', 400),
    "not an object": ("[1, 2, 3]", 400),
    "neither key": ({"signature_name": SIGNATURE_NAME}, 400),
    "both keys": ({"instances": [_window()], "inputs": [_window()]}, 400),
    "too few steps": ({"instances": [_window(SHAPE[0] - 1)]}, 400),
    "too many features": ({"instances": [_window(n_features=SHAPE[1] + 1)]}, 400),
    "flat instance": ({"instances": [[1.0] * (SHAPE[0] * SHAPE[1])]}, 400),
    "ragged": ({"instances": [_window(), _window(SHAPE[0] - 2)]}, 400),
    "string value": ({"instances": [[["high", 0, 0]] * SHAPE[0]]}, 400),
    "null value": ({"instances": [[[None, 0, 0]] * SHAPE[0]]}, 400),
    "empty instances": ({"instances": []}, 400),
    "instances not a list": ({"instances": 5}, 400),
    "unknown signature": ({"signature_name": "nope", "instances": [_window()]}, 400),
    "signature name not a string": ({"signature_name": 100, "instances": [_window()]}, 400),
    "columnar wrong input name": ({"inputs": {"nope": [_window()]}}, 400),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_request_bodies_are_400(target, client, case):
    body, status = BAD_BODIES[case]
    assert_error(post(client, predict_url(target), body), status)


def test_unknown_model_or_version_is_404(target, client):
    body = {"instances": [_window()]}
    assert_error(post(client, f"{target.url}/v1/models/no-such-model:predict", body), 404)
    assert_error(post(client, predict_url(target, "/versions/987654"), body), 404)


def test_malformed_paths_are_400(target, client):
    assert_error(client.get(f"{target.url}/v1/models/{target.model}:predict"), 400)
    assert_error(post(client, f"{target.url}/v1/models/{target.model}", {"instances": [_window()]}), 400)
    assert_error(post(client, f"{target.url}/v1/models/{target.model}:explode", {}), 400)
    assert_error(client.get(f"{target.url}/v1/models"), 400)


def test_classify_on_a_predict_signature_is_400(target, client):
    assert_error(post(client, f"{target.url}/v1/models/{target.model}:classify",
                      {"examples": [{"x": 1.0}]}), 400)
