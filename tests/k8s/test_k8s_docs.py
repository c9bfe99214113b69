"""The deployment guide and the CLI agree with what the renderer produces."""

from __future__ import annotations

import re

import pytest
from k8s_helpers import REPO

DOC = REPO / "README.md"  # the "Deploy on minikube" section


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def test_every_overlay_the_guide_mentions_exists(doc):
    from k8s.render import overlay_names

    names = set(overlay_names())
    mentioned = set(re.findall(r"build/k8s/([a-z-]+)\.yaml", doc)) | set(re.findall(r"overlays/([a-z-]+)", doc))
    assert mentioned, "the guide applies no overlay"
    assert mentioned <= names, mentioned - names
    assert names <= set(re.findall(r"\| `([a-z-]+)` \|", doc)), "an overlay is missing from the guide's table"


def test_port_forward_uses_the_service_port(doc, config):
    """The seed forwarded to a port its Service did not have; ours must name the real one."""
    from k8s.render import serving_name

    forwards = re.findall(r"port-forward svc/(serving-[a-z0-9-]+) (\d+):(\d+)", doc)
    assert forwards
    for svc, _local, remote in forwards:
        assert int(remote) == config.ports.container
        assert svc in {serving_name(p) for p in config.patient_ids}
    webapp = re.findall(r"port-forward svc/webapp (\d+):(\d+)", doc)
    assert webapp and all(int(remote) == config.ports.webapp for _, remote in webapp)


def test_image_and_paths_in_the_guide_match_the_renderer(doc, config):
    from k8s.render import serving_image, webapp_image

    pid = config.patient_ids[0]
    assert serving_image(config, pid).rsplit(":", 1)[0] in doc
    assert webapp_image(config) in doc
    from katib.render import pipeline_image

    assert pipeline_image(config) in doc  # the image Katib trials and pipeline steps run
    assert f"/{pid}/v1/models/{pid}:predict" in doc


def test_upstream_installs_are_pinned(doc):
    refs = re.findall(r"\?ref=([^\"\s]+)", doc)
    assert refs and not [r for r in refs if r in ("master", "main", "latest")]
    assert "PIPELINE_VERSION=2.16.0" in doc and "KATIB_VERSION=v0.17.0" in doc


def test_cli_lists_and_explains_the_overlays(capsys):
    from pipeline.cli import main

    assert main(["k8s", "overlays"]) == 0
    out = capsys.readouterr().out
    for name in ("minikube", "gateway", "monitoring"):
        assert re.search(rf"^{name}\s+\S", out, re.M), out
    with pytest.raises(SystemExit) as exc:
        main(["k8s", "render", "--help"])
    assert exc.value.code == 0
    assert "kubectl apply" in capsys.readouterr().out
