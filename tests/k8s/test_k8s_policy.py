"""The checks a reviewer runs on manifests, over the rendered YAML of every overlay."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.routes import routes

SNIPPET = re.compile(r"snippet", re.IGNORECASE)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_workloads(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d, d["spec"]


def test_every_overlay_rendered(rendered):
    assert {"minikube", "minikube-tls", "minikube-full", "gateway", "nodeport", "monitoring"} <= set(rendered)
    for path in rendered.values():
        assert path.name.endswith(".yaml") and path.stat().st_size > 0


def test_every_container_is_hardened(rendered_docs):
    problems = []
    for overlay, docs in rendered_docs.items():
        for workload, pod in _pod_workloads(docs):
            where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
            psc = pod.get("securityContext", {})
            if pod.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: service-account token mounted")
            if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                if pod.get(key):
                    problems.append(f"{where}: {key}")
            writable = {
                v["name"] for v in pod.get("volumes", []) if "emptyDir" in v
            }
            for c in pod.get("initContainers", []) + pod["containers"]:
                cw = f"{where} container {c['name']}"
                sc = c.get("securityContext", {})
                image = c["image"]
                if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                    problems.append(f"{cw}: image {image} not pinned by tag")
                if c.get("imagePullPolicy") != "IfNotPresent":
                    problems.append(f"{cw}: imagePullPolicy {c.get('imagePullPolicy')}")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if probe not in c:
                        problems.append(f"{cw}: no {probe}")
                res = c.get("resources", {})
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in res.get(kind, {}):
                            problems.append(f"{cw}: no {kind}.{r}")
                run_as = sc.get("runAsUser", psc.get("runAsUser"))
                if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True and isinstance(run_as, int) and run_as > 0):
                    problems.append(f"{cw}: not non-root with an explicit runAsUser")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{cw}: root filesystem writable")
                if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                    problems.append(f"{cw}: privilege escalation allowed")
                if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                    problems.append(f"{cw}: capabilities not all dropped")
                tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                if not tmp or tmp[0]["name"] not in writable:
                    problems.append(f"{cw}: no writable /tmp")
    assert not problems, "\n".join(problems)


def test_policy_check_is_not_a_no_op(rendered_docs):
    """The check above does flag a root container (guards against a test that cannot fail)."""
    import copy

    docs = copy.deepcopy(rendered_docs["minikube"])
    dep = _by_kind(docs, "Deployment")[0]
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "tensorflow/serving"
    with pytest.raises(AssertionError, match="not pinned by tag"):
        test_every_container_is_hardened({"broken": docs})


def test_namespace_enforces_restricted_pod_security(rendered_docs):
    for overlay in ("minikube", "gateway", "nodeport", "minikube-full"):
        ns = _by_kind(rendered_docs[overlay], "Namespace")
        assert len(ns) == 1
        assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for d in rendered_docs[overlay]:
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == ns[0]["metadata"]["name"], d["metadata"]["name"]


@pytest.mark.parametrize("overlay", ["minikube", "gateway", "nodeport", "minikube-full"])
def test_each_patient_has_its_serving_stack(rendered_docs, config, overlay):
    docs = rendered_docs[overlay]
    deployments = {d["metadata"]["name"]: d for d in _by_kind(docs, "Deployment")}
    services = {d["metadata"]["name"]: d for d in _by_kind(docs, "Service")}
    pdbs = {d["metadata"]["name"]: d for d in _by_kind(docs, "PodDisruptionBudget")}
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in _by_kind(docs, "HorizontalPodAutoscaler")}
    policies = _by_kind(docs, "NetworkPolicy")
    assert len([n for n in deployments if n.startswith("serving-")]) == len(config.patient_ids)
    for pid in config.patient_ids:
        name = f"serving-{pid}"
        dep = deployments[name]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert _selects(dep["spec"]["selector"]["matchLabels"], pod_labels)
        if name in hpas:
            assert "replicas" not in dep["spec"], "an autoscaled Deployment must not pin replicas"
        else:
            assert dep["spec"]["replicas"] == 2
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["image"] == f"{config.images.registry}/serving-{pid}:{config.images.tag}"
        assert c["ports"] == [{"name": "http", "containerPort": config.ports.container, "protocol": "TCP"}]
        metadata = next(r.upstream_path for r in routes(pid) if r.upstream_path.endswith("/metadata"))
        assert metadata == f"/v1/models/{pid}/metadata"
        for probe in ("readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {"path": metadata, "port": "http"}
        assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
        assert {"name": "MODEL_NAME", "value": pid} in c["env"]

        svc = services[name]
        assert svc["spec"]["type"] == ("NodePort" if overlay == "nodeport" else "ClusterIP")
        assert _selects(svc["spec"]["selector"], pod_labels)
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        # the selector picks this patient's pods only
        for other, odep in deployments.items():
            if other != name:
                assert not _selects(svc["spec"]["selector"], odep["spec"]["template"]["metadata"]["labels"])

        pdb = pdbs[name]
        assert pdb["spec"]["minAvailable"] == 1
        assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)

        guarding = [p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], pod_labels)]
        assert guarding, f"no NetworkPolicy selects {name}"


def test_model_servers_only_reachable_from_the_ingress_controller(rendered_docs):
    for overlay in ("minikube", "minikube-full", "minikube-tls"):
        (policy,) = [p for p in _by_kind(rendered_docs[overlay], "NetworkPolicy") if p["metadata"]["name"] == "model-server"]
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert "egress" not in spec, "model servers need no outgoing connections"
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
        (peer,) = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingress-nginx"}


def test_ingress_is_ingress_nginx_with_limits_and_no_snippets(rendered_docs, config):
    for overlay in ("minikube", "minikube-tls", "minikube-full"):
        (ing,) = _by_kind(rendered_docs[overlay], "Ingress")
        ann = ing["metadata"]["annotations"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert "kubernetes.io/ingress.class" not in ann
        assert ann["nginx.ingress.kubernetes.io/use-regex"] == "true"
        assert ann["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
        for key in ("limit-rps", "limit-connections", "proxy-body-size"):
            assert ann[f"nginx.ingress.kubernetes.io/{key}"], key
        assert int(ann["nginx.ingress.kubernetes.io/limit-rps"]) > 0
        assert not [k for k in ann if SNIPPET.search(k)], "snippet annotations are forbidden"
        services = {d["metadata"]["name"] for d in _by_kind(rendered_docs[overlay], "Service")}
        paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
        assert len(paths) == len(config.patient_ids)
        for p in paths:
            assert p["pathType"] == "ImplementationSpecific"
            assert p["path"].startswith("/"), "the API server requires absolute paths"
            assert p["backend"]["service"]["name"] in services
            assert p["backend"]["service"]["port"] == {"name": "http"}


def test_tls_overlay_uses_a_secret(rendered_docs):
    (ing,) = _by_kind(rendered_docs["minikube-tls"], "Ingress")
    (tls,) = ing["spec"]["tls"]
    assert tls["secretName"] == "glucose-forecast-tls"
    assert ing["spec"]["rules"][0]["host"] in tls["hosts"]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    (plain,) = _by_kind(rendered_docs["minikube"], "Ingress")
    assert "tls" not in plain["spec"]


def test_httproutes_target_the_gateway_and_existing_services(rendered_docs, config):
    docs = rendered_docs["gateway"]
    (gateway,) = _by_kind(docs, "Gateway")
    services = {d["metadata"]["name"]: d for d in _by_kind(docs, "Service")}
    httproutes = _by_kind(docs, "HTTPRoute")
    assert {r["metadata"]["name"] for r in httproutes} == {f"serving-{p}" for p in config.patient_ids}
    assert not _by_kind(docs, "Ingress")
    for route in httproutes:
        assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
        for rule in route["spec"]["rules"]:
            (backend,) = rule["backendRefs"]
            assert backend["port"] == services[backend["name"]]["spec"]["ports"][0]["port"]
            (match,) = rule["matches"]
            assert match["path"]["type"] == "Exact"
            (flt,) = rule["filters"]
            assert flt["urlRewrite"]["path"]["type"] == "ReplaceFullPath"


def test_hpa_overlay(rendered_docs, config):
    docs = rendered_docs["minikube-full"]
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    deployments = {d["metadata"]["name"] for d in _by_kind(docs, "Deployment")}
    assert len(hpas) == len(config.patient_ids)
    for h in hpas:
        assert h["spec"]["scaleTargetRef"]["name"] in deployments
        assert h["spec"]["minReplicas"] >= 2 and h["spec"]["maxReplicas"] > h["spec"]["minReplicas"]
    assert not _by_kind(rendered_docs["minikube"], "HorizontalPodAutoscaler")


def test_webapp_overlay_runs_the_app_against_the_ingress(rendered_docs, config):
    import tomllib

    docs = rendered_docs["minikube-full"]
    (dep,) = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "webapp"]
    (svc,) = [d for d in _by_kind(docs, "Service") if d["metadata"]["name"] == "webapp"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{config.images.registry}/webapp:{config.images.tag}"
    assert c["ports"][0]["containerPort"] == config.ports.webapp == svc["spec"]["ports"][0]["port"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["GLUCOSE_GATEWAY_URL"].startswith("http://ingress-nginx-controller.ingress-nginx.svc")
    # the configuration file, with the patient list, comes from a generated ConfigMap
    cm_name = next(v["configMap"]["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    (cm,) = [d for d in _by_kind(docs, "ConfigMap") if d["metadata"]["name"] == cm_name]
    mounted = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    (fname,) = cm["data"]
    assert env["GLUCOSE_FORECAST_CONFIG"] == f"{mounted}/{fname}"
    ids = [p["id"] for p in tomllib.loads(cm["data"][fname])["patients"]]
    assert ids == config.patient_ids
    assert not [d for d in rendered_docs["minikube"] if d["metadata"]["name"] == "webapp"]


def test_model_servers_export_prometheus_metrics(rendered_docs, config):
    from k8s.render import METRICS_PATH

    docs = rendered_docs["minikube"]
    configmaps = {d["metadata"]["name"]: d for d in _by_kind(docs, "ConfigMap")}
    for dep in _by_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]
        (c,) = pod["spec"]["containers"]
        flag = next(a for a in c["args"] if a.startswith("--monitoring_config_file="))
        path = flag.split("=", 1)[1]
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        text = configmaps[volume["configMap"]["name"]]["data"][path.rsplit("/", 1)[1]]
        assert "enable: true" in text and f'path: "{METRICS_PATH}"' in text
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/path"] == METRICS_PATH
        assert ann["prometheus.io/port"] == str(config.ports.container)


def test_gateway_and_nodeport_overlays_adjust_who_may_reach_the_model_servers(rendered_docs):
    def policy(overlay):
        (p,) = [d for d in _by_kind(rendered_docs[overlay], "NetworkPolicy") if d["metadata"]["name"] == "model-server"]
        return p["spec"]

    peers = policy("gateway")["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "glucose-forecast"}}} in peers
    assert not [p for p in peers if p.get("namespaceSelector", {}).get("matchLabels", {}).get(
        "kubernetes.io/metadata.name") == "ingress-nginx"]
    nodeport = policy("nodeport")["ingress"]
    assert nodeport[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert nodeport[1] == {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": "http"}]}
