"""pipeline/Dockerfile: the step image is linted, pinned to the tested versions, and self-sufficient."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "pipeline" / "Dockerfile"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    text = DOCKERFILE.read_text()
    return {_norm(n): v for n, v in re.findall(r"^\s+([A-Za-z0-9_.-]+)==([\w.]+)\s*\\?$", text, re.M)}


def test_hadolint_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pins_are_the_versions_the_tests_run_with():
    pins = _pins()
    assert len(pins) >= 10
    for name, version in pins.items():
        assert md.version(name) == version, f"{name}: image pins {version}, tests run {md.version(name)}"
    # what a step imports or Kale pip-installs at step start is in the image
    for needed in ("tensorflow-cpu", "keras", "kfp", "kubeflow-kale", "numpy", "matplotlib", "pandas",
                   "scikit-learn", "ipykernel", "nbconvert", "dill"):
        assert needed in pins, needed


def test_base_image_pinned_and_project_config_and_data_copied(config):
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert ":" in base and not base.endswith(":latest")
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    assert f"GLUCOSE_FORECAST_CONFIG={workdir}/glucose-forecast.toml" in text
    copied = re.findall(r"^COPY (.+) \S+$", text, re.M)
    sources = {s for line in copied for s in line.split()}
    assert {"glucose-forecast.toml", "pipeline/", "katib/", "data/"} <= sources
    for patient in config.patients:  # every configured data file is inside what is copied
        assert patient.file.resolve().is_relative_to(config.root / "data")
    ignore = (REPO / "pipeline" / "Dockerfile.dockerignore").read_text()
    for src in sources:
        assert f"!{src}" in ignore, f"{src} is copied but excluded from the build context"
    assert "pip install --no-deps ." in text
    # runs as Kale's steps do (uid 65534, gid 0) and can write where KFP's launcher puts artifacts
    assert re.search(r"^USER 65534:0$", text, re.M)
    for path in ("models", "/gcs", "/minio", "/s3"):
        assert re.search(rf"chmod 0775 [^\n]*{re.escape(path)}\b", text), path
