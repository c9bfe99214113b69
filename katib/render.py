"""Render one Katib Experiment per patient from `katib/experiment.yaml.tmpl` and the project config.

Everything patient- or tuning-specific comes from ``glucose-forecast.toml`` (patient list,
[tuning], [search.<preset>], [images]); the template holds the fixed Katib structure. The result is
checked with `katib.spec.parse_experiment` before it is returned, so a rendered Experiment is
always one the local executor can run.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, validate_patient_id

from .spec import parse_experiment

TEMPLATE = Path(__file__).with_name("experiment.yaml.tmpl")
MARKER = re.compile(r"\{\{(\w+)\}\}")
NAME_PREFIX = "gf-tune-"


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def pipeline_image(config: Config) -> str:
    """The pipeline step image (also the Katib trial image): ``<registry>/pipeline:<tag>``."""
    return f"{config.images.registry}/pipeline:{config.images.tag}"


def experiment_name(patient_id: str) -> str:
    return f"{NAME_PREFIX}{patient_id}"


def _fill(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        return MARKER.sub(lambda m: values[m.group(1)], node)
    return node


def _number_string(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else repr(value)
    return str(value)


def katib_parameter(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A [search.<preset>] entry as a Katib ParameterSpec (feasible-space values are strings)."""
    kind = spec["type"]
    space: dict[str, Any] = {}
    if kind in ("double", "int"):
        space["min"] = _number_string(spec["min"])
        space["max"] = _number_string(spec["max"])
        if "step" in spec:
            space["step"] = _number_string(spec["step"])
        if spec.get("distribution"):
            space["distribution"] = spec["distribution"]
    else:
        space["list"] = [_number_string(v) if kind == "discrete" else str(v) for v in spec["values"]]
    return {"name": name, "parameterType": kind, "feasibleSpace": space}


def render_experiment(
    config: Config,
    patient_id: str,
    preset: str | None = None,
    *,
    max_trial_count: int | None = None,
    parallel_trial_count: int | None = None,
    max_failed_trial_count: int | None = None,
    goal: float | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Katib Experiment for one configured patient (a plain dict, ready for YAML or the API).

    ``preset`` picks the [search.<preset>] space (default: [tuning].preset); the keyword
    arguments override single [tuning] values (for example from the command line).
    """
    config.patient(validate_patient_id(patient_id))  # raises ConfigError for an unknown patient
    preset = preset or config.tuning.preset
    space = config.search_space(preset)
    tuning = config.tuning
    doc = _fill(
        copy.deepcopy(_template()),
        {
            "patient": patient_id,
            "name": experiment_name(patient_id),
            "image": pipeline_image(config),
            "preset": preset,
        },
    )
    if namespace:
        doc["metadata"]["namespace"] = namespace
    spec = doc["spec"]
    spec["objective"]["goal"] = float(tuning.goal if goal is None else goal)
    spec["algorithm"]["algorithmSettings"] = [{"name": "random_state", "value": str(tuning.random_state)}]
    spec["maxTrialCount"] = int(max_trial_count or tuning.max_trial_count)
    spec["parallelTrialCount"] = int(parallel_trial_count or tuning.parallel_trial_count)
    spec["maxFailedTrialCount"] = int(
        tuning.max_failed_trial_count if max_failed_trial_count is None else max_failed_trial_count
    )
    spec["parameters"] = [katib_parameter(name, space[name]) for name in space]
    parse_experiment(doc)  # what we write must be runnable
    return doc


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def render_all(config: Config, out_dir: Path | str | None = None, preset: str | None = None, **overrides: Any) -> list[Path]:
    """Write ``<out_dir>/<patient>.yaml`` for every configured patient (default out_dir: build/katib)."""
    out = Path(out_dir) if out_dir is not None else config.root / "build" / "katib"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pid in config.patient_ids:
        path = out / f"{pid}.yaml"
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(dump(render_experiment(config, pid, preset, **overrides)))
        tmp.replace(path)
        written.append(path)
    return written
