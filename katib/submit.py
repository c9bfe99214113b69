"""Apply rendered Experiments to a Kubernetes cluster running Katib, and wait for their outcome.

Uses the Kubernetes Python client (``CustomObjectsApi``) with the usual credentials: the
current kubeconfig context, or the in-cluster service account inside a pod.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"


def custom_objects_api(context: str | None = None) -> Any:
    """A CustomObjectsApi from kubeconfig (or the in-cluster config)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)
    except Exception:  # noqa: BLE001 - no kubeconfig: try the pod's service account
        config.load_incluster_config()
    return client.CustomObjectsApi()


def apply_experiment(api: Any, doc: dict[str, Any], namespace: str, *, replace: bool = False) -> dict[str, Any]:
    """Create the Experiment; with ``replace``, delete an existing one of that name first."""
    from kubernetes.client.exceptions import ApiException

    name = doc["metadata"]["name"]
    body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    except ApiException as exc:
        if exc.status != 409 or not replace:
            raise
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    for _ in range(60):  # Katib removes the trials first; wait for the object to go
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        time.sleep(2)
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def experiment_state(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) of an Experiment object from its last true condition."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    for cond in reversed(conditions):
        if str(cond.get("status")) == "True":
            return cond.get("type", "Unknown"), cond.get("reason", ""), cond.get("message", "")
    return "Created", "", ""


def optimal_trial(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Katib's ``status.currentOptimalTrial`` as {name, parameters, metrics}."""
    cur = (obj.get("status") or {}).get("currentOptimalTrial") or {}
    if not cur.get("bestTrialName"):
        return None
    metrics = {}
    for m in (cur.get("observation") or {}).get("metrics") or []:
        value = m.get("min") if m.get("min") not in (None, "unavailable") else m.get("latest")
        try:
            metrics[m["name"]] = float(value)
        except (TypeError, ValueError):
            metrics[m["name"]] = value
    params = {a["name"]: a["value"] for a in cur.get("parameterAssignments") or []}
    return {"name": cur["bestTrialName"], "parameters": params, "metrics": metrics}


def wait_for_experiment(
    api: Any,
    name: str,
    namespace: str,
    *,
    timeout: float = 3600,
    poll: float = 10,
    out: IO[str] | None | str = "stdout",
) -> dict[str, Any]:
    """Poll until the Experiment is Succeeded or Failed; return the final object."""
    if isinstance(out, str):
        out = sys.stdout
    deadline = time.monotonic() + timeout
    last = None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status, reason, message = experiment_state(obj)
        st = obj.get("status") or {}
        line = (f"{name}: {status} {reason} - trials {st.get('trialsSucceeded', 0)} succeeded, "
                f"{st.get('trialsFailed', 0)} failed, {st.get('trialsRunning', 0)} running")
        if out is not None and line != last:
            print(line, file=out, flush=True)
            last = line
        if status in ("Succeeded", "Failed"):
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"Experiment {namespace}/{name} still {status} after {timeout:.0f} s")
        time.sleep(poll)
