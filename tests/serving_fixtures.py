"""Fixtures of the serving and reliability tests (a pytest plugin, see tests/conftest.py): a copy of the tiny real SavedModels, a models.config, one shared stack
(two model-server replicas behind real nginx, subprocesses) and an in-process server for fast tests.

Contract target: by default the local server; set ``GF_SERVING_URL`` (base URL of any TF-Serving-compatible
server, e.g. a ``tensorflow/serving`` container), ``GF_SERVING_MODEL`` (model name) and
``GF_SERVING_MODEL_PATH`` (that model's SavedModel directory, to compare predictions with
``tf.saved_model.load``) to run the contract tests against another server.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.gateway import local_upstreams
from serving.launch import free_port, nginx_binary, start_gateway

CONTRACT_MODEL = "hupa0002p"
SWAP_MODEL = "hupa0004p"  # starts empty in the shared stack; the hot-swap test drops versions into it
POLL_SECONDS = 0.5

requires_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")


def copy_version(src: Path, dest_model_dir: Path, version: int) -> Path:
    """Place a version the way an exporter must: build under a hidden name, then rename atomically."""
    dest_model_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_model_dir / f".tmp-{version}-{time.monotonic_ns()}"
    shutil.copytree(src, tmp)
    final = dest_model_dir / str(version)
    os.rename(tmp, final)
    return final


@pytest.fixture(scope="session")
def serving_models(tiny_models_dir, tmp_path_factory) -> Path:
    """A private, mutable copy of the tiny models: hupa0002p/1, hupa0003p/1, and an empty hupa0004p."""
    root = tmp_path_factory.mktemp("serving") / "models"
    shutil.copytree(tiny_models_dir, root)
    (root / SWAP_MODEL).mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def models_config_file(serving_models) -> Path:
    """TF Serving models.config with container-style base paths (/models/<name>) and a version label."""
    path = serving_models.parent / "models.config"
    path.write_text(
        "# as in production: base paths are the container mount point\n"
        "model_config_list {\n"
        f'  config {{ name: "{CONTRACT_MODEL}" base_path: "/models/{CONTRACT_MODEL}" model_platform: "tensorflow"\n'
        '           version_labels { key: "stable" value: 1 } }\n'
        '  config { name: "hupa0003p" base_path: "/models/hupa0003p" model_platform: "tensorflow" }\n'
        f'  config {{ name: "{SWAP_MODEL}" base_path: "/models/{SWAP_MODEL}" model_platform: "tensorflow"\n'
        "           model_version_policy { latest { num_versions: 1 } } }\n"
        "}\n"
    )
    return path


@pytest.fixture(scope="session")
def stack(config, serving_models, models_config_file, tmp_path_factory):
    """Two replicas (configured by models.config, polling every 0.5 s) behind nginx, for the session."""
    from serving.launch import local_stack

    work = tmp_path_factory.mktemp("stack")
    with local_stack(serving_models, config, replicas=2, poll_seconds=POLL_SECONDS, model_config=models_config_file,
                     workdir=work, gateway_options={"rate": None}) as st:
        yield st


@dataclass
class Target:
    url: str
    model: str
    model_path: Path | None  # SavedModel directory of the served version, for the equality check
    label: str | None  # a configured version label, if any
    local: bool


@pytest.fixture(scope="session")
def target(request, serving_models) -> Target:
    url = os.environ.get("GF_SERVING_URL")
    if url:
        path = os.environ.get("GF_SERVING_MODEL_PATH")
        return Target(url.rstrip("/"), os.environ.get("GF_SERVING_MODEL", CONTRACT_MODEL),
                      Path(path) if path else None, os.environ.get("GF_SERVING_LABEL") or None, False)
    st = request.getfixturevalue("stack")
    return Target(st.server_urls[0], CONTRACT_MODEL, serving_models / CONTRACT_MODEL / "1", "stable", True)


class InProcessServer:
    """The ASGI app on uvicorn in a background thread of the test process (fast to start)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, loop="asyncio",
                                                    http="httptools", lifespan="on", log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def inproc(serving_models, tmp_path_factory):
    """An in-process server over a copy of the models, 64 KiB body limit, access log to a file."""
    from serving.app import AccessLog, ServingApp
    from serving.repository import ModelManager

    root = tmp_path_factory.mktemp("inproc")
    models = root / "models"
    shutil.copytree(serving_models / CONTRACT_MODEL, models / CONTRACT_MODEL)
    log_file = open(root / "access.log", "ab")  # noqa: SIM115
    app = ServingApp(ModelManager(models_dir=models, poll_seconds=0), max_body_bytes=64 * 1024,
                     access_log=AccessLog(log_file))
    with InProcessServer(app) as srv:
        srv.access_log_path = root / "access.log"
        yield srv
    log_file.close()


@pytest.fixture(scope="session")
def window_batch():
    """Realistic windows (glucose mg/dL, insulin U, carbs g), shape (n, 15, 3), deterministic."""
    import numpy as np

    def make(n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        g = 120 + 40 * np.sin(np.linspace(0, 3, 15))[None, :] + rng.normal(0, 15, (n, 15))
        ins = rng.choice([0.0, 0.0, 0.0, 0.5, 2.0], size=(n, 15))
        carbs = rng.choice([0.0] * 9 + [30.0], size=(n, 15))
        return np.stack([g, ins, carbs], axis=-1).round(1).astype("float32")

    return make


def window_body(n: int = 1, value: float = 120.0) -> bytes:
    return json.dumps({"instances": [[[value, 0.0, 0.0]] * 15] * n}).encode()


# ---------------------------------------------------------------------------------------- render


@pytest.fixture(scope="session")
def gw(stack):
    if stack.gateway_url is None:
        pytest.skip("nginx is not installed")
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as c:
        yield c


@pytest.fixture()
def extra_gateway(config, stack, tmp_path):
    """Start another nginx over the same replicas with different options."""
    started = []

    def start(upstreams=None, **opts):
        g = start_gateway(config, upstreams or local_upstreams(config, [s.port for s in stack.servers]), 0,
                          tmp_path / f"nginx{len(started)}", **opts)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()
