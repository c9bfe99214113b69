"""Client mistakes never produce a 5xx: NaN/inf, oversized bodies, garbage, fuzzed bodies; plus the
metrics and the structured access log. Runs against the in-process server (64 KiB body limit)."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving_fixtures import CONTRACT_MODEL

URL = "/v1/models/" + CONTRACT_MODEL + ":predict"


@pytest.fixture(scope="module")
def client(inproc):
    with httpx.Client(base_url=inproc.url, timeout=30) as c:
        yield c


def post(client, body: bytes | str, path: str = URL) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def window(value: object = 100.0) -> list:
    return [[value, 0.0, 0.0] for _ in range(15)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_and_infinity_are_rejected(client, literal):
    body = '{"instances": [[[' + literal + ', 0, 0]' + ', [1, 0, 0]' * 14 + "]]}"
    r = post(client, body)
    assert r.status_code == 400, r.text
    assert "error" in r.json()


def test_values_beyond_float32_are_rejected_with_position(client):
    w = window()
    w[3][0] = 1e39  # finite as a double, infinite as float32
    r = post(client, json.dumps({"instances": [window(), w]}))
    assert r.status_code == 400
    assert "instances[1][3][0]" in r.json()["error"]


def test_error_names_the_offending_value(client):
    w = window()
    w[7][2] = "ten"
    r = post(client, json.dumps({"instances": [window(), w]}))
    assert r.status_code == 400
    err = r.json()["error"]
    assert "instances[1][7][2]" in err and "ten" in err
    w[7][2] = True
    r = post(client, json.dumps({"instances": [w]}))
    assert r.status_code == 400 and "boolean" in r.json()["error"]


def test_shape_error_says_what_was_expected(client):
    r = post(client, json.dumps({"instances": [window()[:14]]}))
    assert r.status_code == 400
    assert "[-1, 15, 3]" in r.json()["error"] and "[1, 14, 3]" in r.json()["error"]


def test_oversized_body_is_413_and_the_server_keeps_serving(client):
    big = json.dumps({"instances": [window()] * 400})  # ~100 KiB > 64 KiB limit
    r = post(client, big)
    assert r.status_code == 413
    assert "limit" in r.json()["error"]
    assert post(client, json.dumps({"instances": [window()]})).status_code == 200


def test_oversized_chunked_body_is_413(client):
    def chunks():
        for _ in range(100):
            yield b" " * 1024
    r = client.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_large_body_fast_path_agrees_with_general_path(client, window_batch):
    """Bodies over 32 KiB take the fast parser; pretty-printed JSON (general path) must agree."""
    X = window_batch(150, seed=9)
    compact = orjson.dumps({"instances": X.tolist()})
    spaced = json.dumps({"instances": X.tolist()}, indent=1).encode()
    assert 32 * 1024 < len(compact) < 64 * 1024
    a = post(client, compact)
    b = post(client, json.dumps({"signature_name": "serving_default", "instances": X[:10].tolist()}))
    assert a.status_code == 200 and b.status_code == 200
    assert np.allclose(a.json()["predictions"][:10], b.json()["predictions"], rtol=1e-5)
    if len(spaced) < 64 * 1024:
        assert post(client, spaced).json() == a.json()


def _big(triple: bytes, steps: int = 15, n: int = 260, close: bytes = b"]}") -> bytes:
    return b'{"instances": [' + b",".join([b"[" + b",".join([triple] * steps) + b"]"] * n) + close


@pytest.mark.parametrize("body", [
    # Look like the fast path's input but are invalid JSON or have invalid numbers: must be 400.
    _big(b"[+1.25,0,0]"),
    _big(b"[01.25,0,0]"),
    _big(b"[125.,0,0.0]"),
    _big(b"[1.25e,0,0]"),
    _big(b"[1.25,0,0]", close=b"]"),
    _big(b"[1.25,0,0.0]", close=b"]]}"),
    _big(b"[1.25,0,0.0]", steps=14),
    _big(b"[1.25,-,0.0]"),
    _big(b"[true,0,0.0]"),
    _big(b"[null,0,0.0]"),
    _big(b'["1.5",0,0.0]'),
    _big(b"[1.5,0,{}]"),
])
def test_fast_path_never_accepts_invalid_json(client, body):
    assert len(body) > 32 * 1024
    r = post(client, body)
    assert r.status_code == 400, r.text[:200]


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=6)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=40)
NEAR_VALID = st.fixed_dictionaries(
    {"instances": st.lists(st.lists(st.lists(st.one_of(st.floats(allow_nan=False), st.integers(-5, 500),
                                                       st.none(), st.text(max_size=2)),
                                             min_size=2, max_size=4), min_size=13, max_size=16),
                           min_size=0, max_size=3)},
    optional={"signature_name": st.one_of(st.just("serving_default"), st.text(max_size=5), st.integers())},
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "x"]), JSON_VALUES,
                    max_size=3).map(lambda v: json.dumps(v).encode()),
    NEAR_VALID.map(lambda v: json.dumps(v).encode()),
))
def test_fuzzed_bodies_never_get_5xx(client, body):
    r = post(client, body)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:300], body[:300])
    doc = r.json()
    if r.status_code == 200:
        preds = doc["predictions"]
        assert all(isinstance(p, float) and np.isfinite(p) for p in preds)
    else:
        assert isinstance(doc["error"], str) and doc["error"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(alphabet="/v1modelsupa0:2prdictverionlabsxyz%.", max_size=60),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_fuzzed_paths_never_get_5xx(client, inproc, path, method):
    r = client.request(method, f"{inproc.url}/v1/{path}", content=b"{}")
    assert r.status_code < 500, (method, path, r.status_code, r.text)


def test_many_requests_are_quick(client):
    body = json.dumps({"instances": [window()]})
    t0 = time.perf_counter()
    for _ in range(50):
        assert post(client, body).status_code == 200
    assert (time.perf_counter() - t0) / 50 < 0.1


def test_metrics_count_requests_latency_and_errors(client):
    post(client, json.dumps({"instances": [window()]}))
    post(client, "{")
    text = client.get("/monitoring/prometheus/metrics").text
    assert f'gf_serving_requests_total{{api="predict",code="200",model="{CONTRACT_MODEL}"}}' in text
    assert f'gf_serving_errors_total{{api="predict",code="400",model="{CONTRACT_MODEL}"}}' in text
    assert "gf_serving_request_latency_seconds_bucket" in text
    assert "gf_serving_batch_rows_bucket" in text
    assert f'gf_serving_model_version{{model="{CONTRACT_MODEL}"}} 1.0' in text


def test_unknown_model_names_do_not_explode_metric_labels(client):
    for i in range(5):
        post(client, json.dumps({"instances": [window()]}), f"/v1/models/random{i}:predict")
    text = client.get("/monitoring/prometheus/metrics").text
    assert 'model="random' not in text and 'model="_unknown"' in text


def test_access_log_is_structured(client, inproc):
    post(client, json.dumps({"instances": [window(), window()]}))
    time.sleep(0.8)  # flushed every 0.5 s
    lines = [json.loads(line) for line in inproc.access_log_path.read_text().splitlines()]
    rec = [r for r in lines if r["path"] == URL and r["status"] == 200][-1]
    assert rec["method"] == "POST" and rec["model"] == CONTRACT_MODEL and rec["instances"] == 2
    assert rec["version"] == 1 and rec["ms"] >= 0 and rec["bytes_in"] > 0 and rec["bytes_out"] > 0
