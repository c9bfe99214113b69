"""``make images``: ``docker build`` of each patient's TensorFlow Serving image (and the web app's).

One parameterised Dockerfile (``serving/Dockerfile``) builds every patient: the build context is the
patient's latest exported version directory, the base image is ``[images].serving_base`` (pinned, never
``latest``), and the image name is the one the Kubernetes manifests deploy (``k8s.render.serving_image``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.config import Config, ConfigError

DOCKERFILE = Path(__file__).with_name("Dockerfile")


def check_serving_base(base: str) -> str:
    """The base image must carry an explicit version tag (or digest), never ``latest``."""
    name, _, tag = base.rpartition(":") if "@" not in base else (base, "", "digest")
    if not name or not tag or "/" in tag or tag == "latest":
        raise ConfigError(
            f"[images].serving_base {base!r} must be pinned to a version, e.g. tensorflow/serving:2.20.0 "
            "(the TensorFlow the models were trained with), never 'latest'"
        )
    return tag


def serving_image_name(config: Config, patient: str) -> str:
    from k8s.render import serving_image

    return serving_image(config, patient)


def build_commands(config: Config, models_dir: Path | None = None, patients: list[str] | None = None,
                   include_webapp: bool = True) -> tuple[list[list[str]], list[str]]:
    """The docker commands to run, and the problems (patients without an exported model)."""
    from pipeline.export import latest_version

    check_serving_base(config.images.serving_base)
    models_dir = Path(models_dir or config.models_dir)
    commands, problems = [], []
    for pid in patients or config.patient_ids:
        config.patient(pid)
        version = latest_version(models_dir, pid)
        if version is None:
            problems.append(f"{pid}: no exported model in {models_dir / pid} (run `make train`)")
            continue
        commands.append([
            "docker", "build", "--file", str(DOCKERFILE),
            "--build-arg", f"SERVING_BASE={config.images.serving_base}",
            "--build-arg", f"PATIENT={pid}",
            "--build-arg", f"VERSION={version}",
            "--tag", serving_image_name(config, pid),
            str(models_dir / pid / str(version)),
        ])
    webapp_dockerfile = config.root / "webapp" / "Dockerfile"
    if include_webapp and webapp_dockerfile.is_file():
        from k8s.render import webapp_image

        commands.append(["docker", "build", "--file", str(webapp_dockerfile), "--tag", webapp_image(config),
                         str(config.root)])
    pipeline_dockerfile = config.root / "pipeline" / "Dockerfile"
    if include_webapp and pipeline_dockerfile.is_file():  # the KFP step / Katib trial image
        from katib.render import pipeline_image

        commands.append(["docker", "build", "--file", str(pipeline_dockerfile), "--tag", pipeline_image(config),
                         str(config.root)])
    return commands, problems


def docker_problem() -> str | None:
    """Why docker cannot build here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if r.returncode != 0:
        detail = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine is reachable ({detail})"
    return None


def build_images(config: Config, *, models_dir: Path | None = None, patients: list[str] | None = None,
                 dry_run: bool = False, push: bool = False, include_webapp: bool = True) -> int:
    commands, problems = build_commands(config, models_dir, patients, include_webapp)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if push:
        commands += [["docker", "push", c[c.index("--tag") + 1]] for c in list(commands)]
    shown = "\n".join("  " + " ".join(c) for c in commands)
    if dry_run:
        print(shown)
        return 1 if problems else 0
    problem = docker_problem()
    if problem:
        print(f"error: cannot build images: {problem}. `make images` needs a Docker engine; "
              f"the commands it would run are:\n{shown}", file=sys.stderr)
        return 1
    for cmd in commands:
        print("+ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            print(f"error: `{' '.join(cmd[:3])} ...` failed with code {r.returncode}", file=sys.stderr)
            return r.returncode
    print(f"built {sum(1 for c in commands if c[1] == 'build')} image(s)")
    return 1 if problems else 0
