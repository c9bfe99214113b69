"""The alert rules: valid for promtool, and they fire on attacks and failures but not on normal traffic."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from k8s.render import ALERT_RULES

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")

NS = 'namespace="glucose-forecast"'


def _alert(name: str, labels: dict, summary: str, description: str) -> dict:
    return {"exp_labels": labels, "exp_annotations": {"summary": summary, "description": description}}


def _unit_tests() -> dict:
    surge_description = (
        "hupa0002p receives 15.0 requests/s, more than four times its rate over the previous hour. "
        "Check the ingress logs for the clients behind it."
    )
    return {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # TF Serving in the cluster: hupa0002p 1 req/s for 70 min, then a flood of 15 req/s.
                    {"series": ':tensorflow:serving:request_count{model_name="hupa0002p",status="OK"}',
                     "values": "0+60x70 4200+900x30"},
                    # hupa0003p: steady 1 req/s with 1% errors: normal, no alert.
                    {"series": ':tensorflow:serving:request_count{model_name="hupa0003p",status="OK"}',
                     "values": "0+59x100"},
                    {"series": ':tensorflow:serving:request_count{model_name="hupa0003p",status="INVALID_ARGUMENT"}',
                     "values": "0+1x100"},
                    # the local model server: hupa0004p, 2 req/s of which 0.5 req/s are errors.
                    {"series": 'gf_serving_requests_total{model="hupa0004p",api="predict",code="200"}',
                     "values": "0+120x100"},
                    {"series": 'gf_serving_errors_total{model="hupa0004p",api="predict",code="400"}',
                     "values": "0+30x100"},
                    # kube-state-metrics: hupa0014p loses its last replica at 10 min.
                    {"series": f'kube_deployment_status_replicas_available{{{NS},deployment="serving-hupa0014p"}}',
                     "values": "2x10 0x30"},
                    {"series": f'kube_deployment_status_replicas_available{{{NS},deployment="serving-hupa0015p"}}',
                     "values": "2x40"},
                    # ingress-nginx: steady 1 req/s to hupa0002p; from 60 min a client hits the rate limit.
                    {"series": f'nginx_ingress_controller_requests{{{NS},service="serving-hupa0002p",status="200"}}',
                     "values": "0+60x100"},
                    {"series": f'nginx_ingress_controller_requests{{{NS},service="serving-hupa0002p",status="429"}}',
                     "values": "0x60 0+120x40"},
                    # ingress-nginx: hupa0015p 0.5 req/s, then 10 req/s from 70 min.
                    {"series": f'nginx_ingress_controller_requests{{{NS},service="serving-hupa0015p",status="200"}}',
                     "values": "0+30x70 2100+600x30"},
                    # ingress-nginx: hupa0016p, 1 req/s of which half are 404 (someone probing paths).
                    {"series": f'nginx_ingress_controller_requests{{{NS},service="serving-hupa0016p",status="200"}}',
                     "values": "0+30x100"},
                    {"series": f'nginx_ingress_controller_requests{{{NS},service="serving-hupa0016p",status="404"}}',
                     "values": "0+30x100"},
                ],
                "alert_rule_test": [
                    {"eval_time": "60m", "alertname": "GlucoseForecastRequestSurge", "exp_alerts": []},
                    {"eval_time": "85m", "alertname": "GlucoseForecastRequestSurge", "exp_alerts": [
                        _alert("GlucoseForecastRequestSurge", {"severity": "warning", "model_name": "hupa0002p"},
                               "Request rate to model hupa0002p far above its recent baseline", surge_description)]},
                    {"eval_time": "30m", "alertname": "GlucoseForecastServingErrors", "exp_alerts": [
                        _alert("GlucoseForecastServingErrors", {"severity": "warning", "model_name": "hupa0004p"},
                               "More than 5% of the requests to model hupa0004p fail",
                               "25% of the requests to hupa0004p ended with an error status: malformed input being "
                               "sent on purpose or by a broken client, or a model that does not match its callers.")]},
                    {"eval_time": "12m", "alertname": "GlucoseForecastModelServerDown", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "GlucoseForecastModelServerDown", "exp_alerts": [
                        _alert("GlucoseForecastModelServerDown",
                               {"severity": "critical", "namespace": "glucose-forecast",
                                "deployment": "serving-hupa0014p"},
                               "No ready replica of serving-hupa0014p",
                               "The patient's forecasts are unavailable. `kubectl -n glucose-forecast describe "
                               "deployment serving-hupa0014p`; after a bad rollout, `kubectl rollout undo`.")]},
                    {"eval_time": "50m", "alertname": "GlucoseForecastRateLimited", "exp_alerts": []},
                    {"eval_time": "80m", "alertname": "GlucoseForecastRateLimited", "exp_alerts": [
                        _alert("GlucoseForecastRateLimited", {"severity": "warning", "service": "serving-hupa0002p"},
                               "Clients are being rate-limited on serving-hupa0002p",
                               "2.00 requests/s refused by the Ingress rate limits: one or more clients exceed "
                               "the per-IP limits. Legitimate use stays far below them.")]},
                    {"eval_time": "60m", "alertname": "GlucoseForecastIngressRequestSurge", "exp_alerts": []},
                    {"eval_time": "85m", "alertname": "GlucoseForecastIngressRequestSurge", "exp_alerts": [
                        _alert("GlucoseForecastIngressRequestSurge",
                               {"severity": "warning", "service": "serving-hupa0015p"},
                               "Traffic through the Ingress to serving-hupa0015p far above its recent baseline",
                               "10.0 requests/s to serving-hupa0015p, more than four times the previous hour's "
                               "rate (refused requests included).")]},
                    {"eval_time": "30m", "alertname": "GlucoseForecastIngressClientErrors", "exp_alerts": [
                        _alert("GlucoseForecastIngressClientErrors",
                               {"severity": "info", "service": "serving-hupa0016p"},
                               "Many rejected requests to serving-hupa0016p",
                               "50% of the requests to serving-hupa0016p were refused as client errors: someone "
                               "may be probing the API.")]},
                    {"eval_time": "30m", "alertname": "GlucoseForecastIngressServerErrors", "exp_alerts": []},
                ],
            }
        ],
    }


def test_rules_file_passes_promtool_check():
    proc = subprocess.run(["promtool", "check", "rules", str(ALERT_RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_alerts_fire_on_departures_from_the_baseline_only(tmp_path):
    tests = tmp_path / "alert-tests.yaml"
    tests.write_text(yaml.safe_dump(_unit_tests(), sort_keys=False, width=200))
    proc = subprocess.run(["promtool", "test", "rules", str(tests)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_exercised():
    names = {r["alert"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for t in _unit_tests()["tests"][0]["alert_rule_test"]}
    assert names == tested


def test_a_broken_rule_is_refused(tmp_path):
    """promtool is really checking: a rule with a PromQL syntax error fails."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(foo[5m]"}]}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
