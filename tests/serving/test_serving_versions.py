"""Versions: the latest is served, new ones load without dropping requests, old ones unload, a half-written
or broken directory is never served; version policies and labels; models.config reload."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from serving.repository import AVAILABLE, END, ModelManager
from serving.rest import ServingError
from serving.runtime import load_servable
from tests.serving.conftest import POLL_SECONDS, SWAP_MODEL, copy_version


@pytest.fixture()
def repo(tmp_path, serving_models):
    """A models dir with model 'm' holding version 1 (= hupa0002p/1); sources for more versions."""
    root = tmp_path / "models"
    copy_version(serving_models / "hupa0002p" / "1", root / "m", 1)
    return root, serving_models / "hupa0002p" / "1", serving_models / "hupa0003p" / "1"


def counting_loader():
    calls: list[tuple[str, int]] = []

    def load(name, version, path):
        calls.append((name, version))
        return load_servable(name, version, path)

    return load, calls


def test_latest_is_served_and_the_old_version_unloaded(repo):
    root, _, other = repo
    mgr = ModelManager(models_dir=root, poll_seconds=0, settle_seconds=0.05)
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    copy_version(other, root / "m", 2)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2
    status = {s["version"]: s["state"] for s in mgr.status("m")}
    assert status == {"2": AVAILABLE, "1": END}
    with pytest.raises(ServingError) as info:
        mgr.resolve("m", 1)
    assert info.value.status == 404
    assert [s.version for s in mgr.loaded()] == [2]


def test_half_written_and_broken_versions_are_never_served(repo):
    root, src, _ = repo
    load, calls = counting_loader()
    mgr = ModelManager(models_dir=root, poll_seconds=0, settle_seconds=0.05, loader=load)
    mgr.poll_once()
    # 2: saved_model.pb written, variables still being copied (no index yet)
    half = root / "m" / "2"
    (half / "variables").mkdir(parents=True)
    shutil.copy(src / "saved_model.pb", half / "saved_model.pb")
    shutil.copy(src / "variables" / "variables.data-00000-of-00001", half / "variables" / "variables.data-00000-of-00001")
    # a hidden temporary directory, as exporters write before renaming
    shutil.copytree(src, root / "m" / ".tmp-export-3")
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    assert ("m", 2) not in calls
    # 4: complete on disk but corrupt: the load fails, the error is reported, version 1 keeps serving
    broken = root / "m" / "4"
    shutil.copytree(src, broken)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    mgr.poll_once()
    assert mgr.resolve("m").version == 1
    st = mgr.status("m", 4)[0]
    assert st["state"] == END and st["status"]["error_code"] != "OK" and "4" in st["status"]["error_message"]
    n = len(calls)
    mgr.poll_once()
    assert len(calls) == n, "an unchanged broken version must not be reloaded on every poll"
    # once the half-written one is complete it loads (4 is still broken: 2 is the newest good one...)
    shutil.rmtree(broken)
    shutil.copy(src / "variables" / "variables.index", half / "variables" / "variables.index")
    time.sleep(0.1)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2


def test_specific_policy_labels_and_config_reload(repo, tmp_path):
    root, _, other = repo
    copy_version(other, root / "m", 2)
    conf = tmp_path / "models.config"
    conf.write_text('model_config_list { config { name: "m" base_path: "%s" '
                    'model_version_policy { specific { versions: 1 versions: 2 } } '
                    'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }'
                    % (root / "m"))
    mgr = ModelManager(model_config=conf, poll_seconds=0, settle_seconds=0.05)
    mgr.poll_once()
    assert mgr.resolve("m").version == 2  # no version asked: the highest served
    assert mgr.resolve("m", label="stable").version == 1
    assert mgr.resolve("m", label="canary").version == 2
    with pytest.raises(ServingError) as info:
        mgr.resolve("m", label="beta")
    assert info.value.status == 400
    # reload: the config now serves only version 1 and adds a model
    copy_version(other, tmp_path / "n", 7)
    conf.write_text('model_config_list {{ config {{ name: "m" base_path: "{}" '
                    'model_version_policy {{ specific {{ versions: 1 }} }} }} '
                    'config {{ name: "n" base_path: "{}" }} }}'.format(root / "m", tmp_path / "n"))
    time.sleep(0.01)
    mgr.poll_once()
    assert mgr.resolve("m").version == 1 and mgr.resolve("n").version == 7
    # a broken config is logged and ignored: the models keep serving
    conf.write_text("model_config_list { config { name: ")
    mgr.poll_once()
    assert mgr.resolve("n").version == 7


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
    # within the poll interval plus a tiny model's load time (generous: the machine is shared)
    assert max(switched.values()) < POLL_SECONDS + 15, switched
    for u in stack.server_urls:
        st = httpx.get(f"{u}/v1/models/{SWAP_MODEL}").json()["model_version_status"]
        assert {s["version"]: s["state"] for s in st} == {"2": "AVAILABLE", "1": "END"}
