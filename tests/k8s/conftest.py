"""Fixtures of the Kubernetes tests: rendered overlays, a config with one more patient, an echo upstream."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from k8s_helpers import EXTRA_PATIENT, REPO, Echo, load_docs


@pytest.fixture(scope="session")
def rendered(tmp_path_factory, config) -> dict[str, Path]:
    """Every overlay rendered once for the project's own configuration."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (kustomize) not installed")
    from k8s.render import render_overlays

    return render_overlays(config, tmp_path_factory.mktemp("k8s") / "out")


@pytest.fixture(scope="session")
def rendered_docs(rendered) -> dict[str, list[dict[str, Any]]]:
    return {name: load_docs(path) for name, path in rendered.items()}


@pytest.fixture(scope="session")
def extra_config_path(tmp_path_factory) -> Path:
    """glucose-forecast.toml plus ONE [[patients]] entry: the only edit adding a patient takes."""
    path = tmp_path_factory.mktemp("cfg") / "glucose-forecast.toml"
    text = (REPO / "glucose-forecast.toml").read_text()
    text += (
        "\n[[patients]]\n"
        f'id = "{EXTRA_PATIENT}"\n'
        'file = "data/hupa-ucm/HUPA0002P.csv"\n'
        'reader = "hupa"\n'
        'carb_unit = "g"\n'
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def extra_config(extra_config_path):
    from pipeline.config import load_config

    return load_config(extra_config_path)


@pytest.fixture(scope="session")
def echo_upstream() -> Iterator[int]:
    """A local HTTP server standing in for the model servers; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
