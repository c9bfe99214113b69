"""Bad input is refused with a message naming the problem, before any file is written."""

from __future__ import annotations

import dataclasses
import re

import pytest
from k8s_helpers import REPO

from pipeline.config import ConfigError, Images, Patient

BAD_IDS = ["HUPA0002P", "hupa_0002p", "../etc", "hupa/0002p", "hupa 0002p", "-hupa", "hupa-", "a" * 41, "hupa.02", ""]


def _config_text(patient_id: str) -> str:
    text = (REPO / "glucose-forecast.toml").read_text()
    return text.replace('id = "hupa0002p"', f'id = "{patient_id}"', 1)


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_cli_refuses_an_invalid_patient_id(bad_id, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    cfg = tmp_path / "glucose-forecast.toml"
    cfg.write_text(_config_text(bad_id))
    out = tmp_path / "out"
    monkeypatch.setenv("GLUCOSE_FORECAST_CONFIG", str(cfg))  # main() sets it; monkeypatch restores it
    code = main(["--config", str(cfg), "k8s", "render", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "patients[0].id" in err and repr(bad_id) in err
    assert "not a valid patient id" in err and "Kubernetes name and a URL path segment" in err
    assert not out.exists()


def _tampered(config, **changes):
    return dataclasses.replace(config, **changes)


def test_render_refuses_an_invalid_id_that_bypassed_the_loader(config, tmp_path):
    """A Config built in code (not from the file) is checked again before anything is written."""
    from k8s.render import render_overlays

    bad = Patient(id="Bad_Patient", file=REPO / "x.csv", reader="hupa")
    with pytest.raises(ConfigError, match=r"patients\[6\]\.id.*'Bad_Patient'.*not a valid patient id"):
        render_overlays(_tampered(config, patients=(*config.patients, bad)), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_render_refuses_a_duplicate_id(config, tmp_path):
    from k8s.render import render_overlays

    with pytest.raises(ConfigError, match="duplicate patient id 'hupa0002p'"):
        render_overlays(_tampered(config, patients=(*config.patients, config.patients[0])), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (Images(tag="latest"), r"\[images\]\.tag must pin a version"),
        (Images(tag="v1 beta"), r"\[images\]\.tag 'v1 beta' is not a valid image tag"),
        (Images(registry="Glucose Forecast"), r"\[images\]\.registry 'Glucose Forecast' is not a valid"),
    ],
)
def test_render_refuses_bad_image_settings(config, tmp_path, images, message):
    from k8s.render import render_overlays

    with pytest.raises(ConfigError, match=message):
        render_overlays(_tampered(config, images=images), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_unknown_overlay_is_named(config, tmp_path):
    from k8s.render import render_overlays

    with pytest.raises(ConfigError, match=re.escape("unknown overlay(s) prod; available: gateway, minikube")):
        render_overlays(config, tmp_path / "out", ["prod"])
    assert list(tmp_path.iterdir()) == []


def test_previous_output_survives_a_failed_render(config, tmp_path, monkeypatch):
    """If kustomize refuses an overlay half-way, the last good rendering in --out is left as it was."""
    import shutil

    import k8s.render as render

    out = tmp_path / "out"
    render.render_overlays(config, out, ["minikube"])
    before = (out / "minikube.yaml").read_text()

    broken = tmp_path / "tree"
    shutil.copytree(render.KUSTOMIZE_DIR, broken)
    kustomization = broken / "overlays" / "nodeport" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "  - missing-file.yaml\n")
    monkeypatch.setattr(render, "KUSTOMIZE_DIR", broken)
    with pytest.raises(render.RenderError, match="overlays/nodeport.*missing-file.yaml"):
        render.render_overlays(config, out, ["minikube", "nodeport"])
    assert (out / "minikube.yaml").read_text() == before
    assert not (out / "nodeport.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tree"]  # no scratch directory left behind
