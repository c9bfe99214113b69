"""`tune --submit`: Experiments go to the Kubernetes API as rendered; waiting reads Katib's status.

No cluster runs here, so the CustomObjectsApi is a small in-memory stand-in with the same method
signatures and the same 404/409 ApiException behaviour.
"""

from __future__ import annotations

import copy

import pytest
from kubernetes.client.exceptions import ApiException

from katib.render import render_experiment
from katib.submit import apply_experiment, experiment_state, optimal_trial, wait_for_experiment


class FakeCustomObjects:
    def __init__(self, statuses=()):
        self.objects: dict[tuple, dict] = {}
        self.calls: list[tuple] = []
        self.statuses = list(statuses)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural, body["metadata"]["name"]))
        key = (namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = copy.deepcopy(body)
        return body

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete", name))
        self.objects.pop((namespace, name), None)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if (namespace, name) not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        obj = self.objects[(namespace, name)]
        if self.statuses:
            obj["status"] = self.statuses.pop(0)
        return obj


def _status(kind, reason, best=None):
    st = {"conditions": [{"type": "Created", "status": "True"}, {"type": kind, "status": "True", "reason": reason,
                                                                  "message": f"{kind} because {reason}"}],
          "trialsSucceeded": 3, "trialsFailed": 0, "trialsRunning": 0 if kind != "Running" else 2}
    if kind == "Running":
        st["conditions"][-1]["type"] = "Running"
    if best:
        st["currentOptimalTrial"] = {
            "bestTrialName": best,
            "parameterAssignments": [{"name": "dense1", "value": "64"}, {"name": "learning_rate", "value": "0.002"}],
            "observation": {"metrics": [{"name": "mae", "min": "12.5", "max": "14", "latest": "13"},
                                        {"name": "rmse", "min": "unavailable", "latest": "17.25"}]},
        }
    return st


def test_apply_creates_the_rendered_experiment_in_the_namespace(config):
    api = FakeCustomObjects()
    doc = render_experiment(config, "hupa0002p")
    apply_experiment(api, doc, "team-a")
    assert api.calls == [("create", "kubeflow.org", "v1beta1", "team-a", "experiments", "gf-tune-hupa0002p")]
    sent = api.objects[("team-a", "gf-tune-hupa0002p")]
    assert sent["metadata"]["namespace"] == "team-a" and sent["spec"] == doc["spec"]
    with pytest.raises(ApiException) as info:
        apply_experiment(api, doc, "team-a")
    assert info.value.status == 409
    apply_experiment(api, doc, "team-a", replace=True)
    assert [c[0] for c in api.calls[-3:]] == ["create", "delete", "create"]


def test_wait_reports_the_optimal_trial(config, capsys):
    api = FakeCustomObjects([_status("Running", "ExperimentRunning"),
                             _status("Succeeded", "ExperimentGoalReached", best="gf-tune-hupa0002p-abc")])
    apply_experiment(api, render_experiment(config, "hupa0002p"), "ns")
    obj = wait_for_experiment(api, "gf-tune-hupa0002p", "ns", poll=0, timeout=5)
    assert experiment_state(obj)[:2] == ("Succeeded", "ExperimentGoalReached")
    best = optimal_trial(obj)
    assert best == {"name": "gf-tune-hupa0002p-abc", "parameters": {"dense1": "64", "learning_rate": "0.002"},
                    "metrics": {"mae": 12.5, "rmse": 17.25}}
    assert "Running" in capsys.readouterr().out


def test_wait_times_out(config):
    api = FakeCustomObjects([_status("Running", "ExperimentRunning")] * 100)
    apply_experiment(api, render_experiment(config, "hupa0002p"), "ns")
    with pytest.raises(TimeoutError, match="still Running"):
        wait_for_experiment(api, "gf-tune-hupa0002p", "ns", poll=0.01, timeout=0.05, out=None)


def test_submit_without_credentials_fails_cleanly(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["tune", "--patient", "hupa0002p", "--submit"]) == 1
    assert "no Kubernetes credentials" in capsys.readouterr().err
