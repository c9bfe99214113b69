"""Web-app fixtures: example uploads, real loopback HTTP servers that misbehave, the real local stack.

The "misbehaving" servers are real HTTP servers on 127.0.0.1 (they answer a TF Serving status, then
an error, or too slowly, or garbage); the successful forecasts come from the real local model
server behind the real nginx gateway (``serving.launch.local_stack``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from webapp_helpers import EXAMPLES, FakeBehaviour, LoopbackServer, free_port, make_handler


@pytest.fixture(scope="session")
def window_example() -> bytes:
    return (EXAMPLES / "windows-example.csv").read_bytes()


@pytest.fixture(scope="session")
def series_example() -> bytes:
    return (EXAMPLES / "timeseries-example.csv").read_bytes()


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 answering TF Serving status, then errors on predict."""
    behaviour = FakeBehaviour()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(behaviour))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LoopbackServer(f"http://127.0.0.1:{server.server_address[1]}", behaviour)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def down_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


# ---------------------------------------------------------------------------------------------
# The real local stack: model server replicas behind nginx


@pytest.fixture(scope="session")
def stack(tiny_models_dir, config):
    from serving.launch import local_stack

    with local_stack(tiny_models_dir, config, gateway_port=0, replicas=2) as s:
        assert s.gateway_url, "nginx is required for the web-app tests (apt-get install nginx)"
        yield s


@pytest.fixture(scope="session")
def model_predict(tiny_models_dir):
    """The exported SavedModel of a patient, called directly with TensorFlow (the reference)."""
    cache: dict[str, object] = {}

    def predict(patient: str, X):
        import numpy as np
        import tensorflow as tf

        from pipeline.export import latest_version
        from pipeline.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

        if patient not in cache:
            version = latest_version(tiny_models_dir, patient)
            cache[patient] = tf.saved_model.load(str(tiny_models_dir / patient / str(version)))
        fn = cache[patient].signatures[SIGNATURE_NAME]
        out = fn(**{INPUT_NAME: tf.constant(np.asarray(X, dtype=np.float32))})
        return out[OUTPUT_NAME].numpy().astype(np.float64)

    return predict
