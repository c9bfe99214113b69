"""The web-app image: Dockerfile linted by hadolint and checked line by line, requirements pinned to
what the tests run, and the exact files the image copies enough to run the app without TensorFlow."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from webapp_helpers import REPO

DOCKERFILE = REPO / "webapp" / "Dockerfile"
REQUIREMENTS = REPO / "webapp" / "requirements.txt"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""  # not even info-level findings


def test_dockerfile_contract():
    ins = instructions()
    get = lambda name: [a for i, a in ins if i == name]  # noqa: E731
    assert get("FROM") == ["python:3.11-slim"]
    assert get("EXPOSE") == ["8501"]
    user = get("USER")
    assert user and user[-1].split(":")[0] not in ("root", "0")
    health = get("HEALTHCHECK")
    assert len(health) == 1 and "/_stcore/health" in health[0] and "8501" in health[0]
    entry = json.loads(get("ENTRYPOINT")[-1])
    assert entry[:3] == ["streamlit", "run", "app.py"] and "--server.port=8501" in entry
    assert "--browser.gatherUsageStats=false" in entry
    assert any("STREAMLIT_BROWSER_GATHER_USAGE_STATS=false" in a for a in get("ENV"))
    assert get("WORKDIR")[-1] == "/app/webapp" and (REPO / "webapp" / "app.py").is_file()
    # every COPY source exists and is let through by webapp/Dockerfile.dockerignore
    ignore = (REPO / "webapp" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "*"  # everything else stays out of the context (.venv, models, data)
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for args in get("COPY"):
        src = args.split()[0]
        assert (REPO / src).exists(), src
        assert any(src.startswith(a) for a in allowed), f"{src} is excluded from the build context"


def test_requirements_pin_the_whole_closure_the_tests_use():
    """Every package the image installs is pinned (direct and transitive), to the installed version."""
    from webapp.lock import render

    assert REQUIREMENTS.read_text() == render(), "webapp/requirements.txt is stale: run python -m webapp.lock"
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned: {line}"
            pins[name.lower()] = version
    assert {"streamlit", "plotly", "requests", "numpy", "pandas", "protobuf", "pyarrow"} <= set(pins)
    assert not [n for n in pins if n.startswith(("tensorflow", "keras"))]  # no TensorFlow in the image
    for name, version in pins.items():
        assert metadata.version(name) == version, f"{name}: image pins {version}, tests run {metadata.version(name)}"


def test_the_files_the_image_copies_run_the_app_without_tensorflow(tmp_path, window_example):
    """Stage exactly what the Dockerfile copies and run the app from it in a fresh interpreter."""
    for args in [a for i, a in instructions() if i == "COPY" and "requirements" not in a]:
        src, dest = args.split()
        target = tmp_path / dest.removeprefix("/app/").rstrip("/")
        if (REPO / src).is_dir():
            shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / src, target)
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=60).run()
assert not at.exception, at.exception
at.file_uploader(key="upload").set_value(("w.csv", open({str(REPO / 'data/examples/windows-example.csv')!r}, "rb").read(), "text/csv"))
at.run()
assert not at.exception, at.exception
assert "is valid" in at.success[-1].value, [e.value for e in at.error]
import webapp, pipeline
assert webapp.__file__.startswith({str(tmp_path)!r}), webapp.__file__
assert pipeline.__file__.startswith({str(tmp_path)!r}), pipeline.__file__
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
print("ok")
"""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GF_", "GLUCOSE_"))
    } | {"PYTHONPATH": str(tmp_path), "GLUCOSE_FORECAST_CONFIG": str(tmp_path / "glucose-forecast.toml"),
         "GLUCOSE_GATEWAY_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path / "webapp", env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.parametrize("argv", [["webapp", "--help"]])
def test_cli_help(argv):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    assert "GLUCOSE_GATEWAY_URL" in result.stdout and "--port" in result.stdout
