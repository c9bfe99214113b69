"""Adding a patient is one edit of glucose-forecast.toml; every artefact follows it.

The extra patient (k8s_helpers.EXTRA_PATIENT) is appended as one [[patients]] entry to a copy of
the project's configuration; nothing else changes. The rendered manifests, the Ingress paths, the
HTTPRoutes, the nginx gateway config, the Katib Experiment and the web app's patient list must
all include it, and the project's own configuration must not.
"""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest
from k8s_helpers import EXTRA_PATIENT, SCHEMAS, load_docs
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from pipeline.config import ConfigError
from pipeline.routes import path_regex, routes


@pytest.fixture(scope="module")
def extra_rendered(extra_config, tmp_path_factory):
    from k8s.render import render_overlays

    overlays = ["minikube", "minikube-full", "gateway", "nodeport"]
    out = render_overlays(extra_config, tmp_path_factory.mktemp("k8s-extra") / "out", overlays)
    return {name: load_docs(path) for name, path in out.items()}


def _names(docs, kind):
    return {d["metadata"]["name"] for d in docs if d["kind"] == kind}


def test_the_edit_is_one_patients_entry(extra_config, config):
    assert extra_config.patient_ids == [*config.patient_ids, EXTRA_PATIENT]
    assert EXTRA_PATIENT not in config.patient_ids
    for field in ("series", "split", "model", "tuning", "ports", "images", "search"):
        assert getattr(extra_config, field) == getattr(config, field), field


def test_manifests_include_the_new_patient(extra_rendered, rendered_docs, config):
    name = f"serving-{EXTRA_PATIENT}"
    for overlay in ("minikube", "minikube-full", "gateway", "nodeport"):
        docs = extra_rendered[overlay]
        for kind in ("Deployment", "Service", "PodDisruptionBudget"):
            assert name in _names(docs, kind), (overlay, kind)
            # and exactly that: the other patients' objects are unchanged in number
            assert _names(docs, kind) - _names(rendered_docs[overlay], kind) == {name}, (overlay, kind)
    assert name in _names(extra_rendered["minikube-full"], "HorizontalPodAutoscaler")
    (dep,) = [d for d in extra_rendered["minikube"] if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"].endswith(f"/serving-{EXTRA_PATIENT}:{config.images.tag}")
    assert c["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{EXTRA_PATIENT}/metadata"


def test_ingress_and_httproute_route_the_new_patient(extra_rendered):
    from k8s.render import ingress_path

    (ingress,) = [d for d in extra_rendered["minikube"] if d["kind"] == "Ingress"]
    paths = {p["path"]: p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths[ingress_path(EXTRA_PATIENT)] == f"serving-{EXTRA_PATIENT}"
    (route,) = [d for d in extra_rendered["gateway"] if d["kind"] == "HTTPRoute"
                and d["metadata"]["name"] == f"serving-{EXTRA_PATIENT}"]
    exact = {rule["matches"][0]["path"]["value"] for rule in route["spec"]["rules"]}
    assert exact == {r.public_path for r in routes(EXTRA_PATIENT)}


def test_nginx_gateway_config_includes_the_new_patient(extra_config, config):
    from serving.gateway import local_upstreams, render_gateway

    text = render_gateway(extra_config, local_upstreams(extra_config, [8601, 8602]), 8080)
    assert f'location ~ "{path_regex(EXTRA_PATIENT)}"' in text
    assert path_regex(EXTRA_PATIENT) not in render_gateway(config, local_upstreams(config, [8601]), 8080)


def test_katib_experiment_for_the_new_patient(extra_config, config):
    from katib.render import render_experiment

    experiment = render_experiment(extra_config, EXTRA_PATIENT)
    assert EXTRA_PATIENT in experiment["metadata"]["name"]
    api = json.loads((SCHEMAS / "katib-v1beta1-openapi.json").read_text())
    registry = Registry().with_resource("urn:katib", Resource.from_contents(api, default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:katib#/components/schemas/v1beta1.Experiment"}, registry=registry
    )
    assert not [e.message for e in validator.iter_errors(experiment)]
    with pytest.raises(ConfigError):
        render_experiment(config, EXTRA_PATIENT)


def test_webapp_patient_list_includes_the_new_patient(extra_config, extra_rendered):
    from webapp.patients import configured_patients

    assert EXTRA_PATIENT in configured_patients(extra_config)
    # the in-cluster web app reads its patient list from the generated ConfigMap
    (cm,) = [d for d in extra_rendered["minikube-full"] if d["kind"] == "ConfigMap"
             and d["metadata"]["name"].startswith("glucose-forecast-config")]
    ((fname, text),) = cm["data"].items()
    assert fname == "glucose-forecast.toml"
    assert EXTRA_PATIENT in [p["id"] for p in tomllib.loads(text)["patients"]]
