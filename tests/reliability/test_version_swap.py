"""Reliability: a new model version dropped during a stream of requests loses none."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tests.serving_fixtures import POLL_SECONDS, SWAP_MODEL, copy_version


def _predict(url: str, model: str, body: bytes) -> tuple[int, list | None]:
    r = httpx.post(f"{url}/v1/models/{model}:predict", content=body, timeout=30)
    return r.status_code, (r.json().get("predictions") if r.status_code == 200 else None)


def test_new_version_during_a_stream_of_requests(stack, serving_models, window_batch):
    """Drop version 2 while requests stream through the gateway: none fails, and every replica answers
    with the new weights within the poll interval (plus the load time of a tiny model)."""
    X = window_batch(4, seed=21)
    body = json.dumps({"instances": X.tolist()}).encode()
    model_dir = serving_models / SWAP_MODEL
    for old in list(model_dir.iterdir()):
        shutil.rmtree(old)
    copy_version(serving_models / "hupa0002p" / "1", model_dir, 1)
    deadline = time.monotonic() + 60
    while any(_predict(u, SWAP_MODEL, body)[0] != 200 for u in stack.server_urls):
        assert time.monotonic() < deadline, "version 1 was never served"
        time.sleep(0.1)
    v1 = np.asarray(_predict(stack.server_urls[0], SWAP_MODEL, body)[1])
    v2_expected = np.asarray(_predict(stack.server_urls[0], "hupa0003p", body)[1])
    assert not np.allclose(v1, v2_expected)

    base = stack.gateway_url or stack.server_urls[0]
    path = f"/{SWAP_MODEL}/v1/models/{SWAP_MODEL}:predict" if stack.gateway_url else f"/v1/models/{SWAP_MODEL}:predict"
    stop = threading.Event()
    results: list[object] = []

    def stream():
        with httpx.Client(base_url=base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(path, content=body)
                    results.append(r.status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            pool.submit(stream)
        time.sleep(0.5)
        dropped = time.monotonic()
        copy_version(serving_models / "hupa0003p" / "1", model_dir, 2)
        switched = {}
        while len(switched) < len(stack.server_urls) and time.monotonic() - dropped < 60:
            for u in stack.server_urls:
                if u not in switched:
                    code, preds = _predict(u, SWAP_MODEL, body)
                    assert code == 200
                    if np.allclose(preds, v2_expected, rtol=1e-5):
                        switched[u] = time.monotonic() - dropped
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
    assert len(switched) == len(stack.server_urls), "a replica never served version 2"
    assert set(results) == {200}, {c: results.count(c) for c in set(results)}
    assert len(results) > 20
    # Within the poll interval, the 0.2 s settle check and the load time each replica reports for
    # version 2, with 2 s of slack for scheduling (three request streams share the two cores).
    for server in stack.servers:
        loaded = re.findall(rf"model {SWAP_MODEL} version 2: loaded from .* in ([0-9.]+)s", server.log_path.read_text())
        assert loaded, f"replica {server.url} did not log loading version 2"
        assert switched[server.url] < POLL_SECONDS + 0.2 + float(loaded[-1]) + 2.0, (server.url, switched, loaded)
    for u in stack.server_urls:
        st = httpx.get(f"{u}/v1/models/{SWAP_MODEL}").json()["model_version_status"]
        assert {s["version"]: s["state"] for s in st} == {"2": "AVAILABLE", "1": "END"}
