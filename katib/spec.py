"""Read a Katib v1beta1 Experiment (the YAML a cluster would run) into checked Python objects.

Both the renderer (to check what it writes) and the local executor (to run it) go through
`parse_experiment`, so a hand-edited Experiment gets the same checks as a rendered one. Every
problem is reported with the path of the field that holds it, for example
``spec.parameters[1].feasibleSpace.min``.

The semantics follow Katib's own code: parameter types ``double``, ``int``, ``discrete`` and
``categorical``; feasible spaces with ``min``/``max``/``step`` or ``list``; distributions
``uniform``, ``logUniform``, ``normal``, ``logNormal`` (normal spans min..max as +-3 sigma, like
Katib's hyperopt service); objective ``minimize``/``maximize`` with metric strategies
``min``/``max``/``latest``; and the StdOut metrics collector with Katib's default filter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import InputError

PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
OBJECTIVE_TYPES = ("minimize", "maximize")
STRATEGIES = ("min", "max", "latest")
# Katib's StdOut/File collector default filter (pkg/metricscollector/v1beta1/common/const.go, as
# documented for v0.14 on): `name=value`, the value a decimal with optional sign and exponent.
# Keras's `mae: 1.2` does not match.
DEFAULT_METRICS_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
TRIAL_PARAMETER_RE = re.compile(r"\$\{trialParameters\.([^}]*)\}")


class ExperimentError(InputError):
    """The Experiment cannot be run; the message names the offending field."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    values: tuple[str, ...] = ()
    distribution: str = "uniform"

    def grid(self) -> np.ndarray | None:
        """The values min, min+step, ... <= max for stepped numeric spaces (None otherwise)."""
        if self.type not in ("double", "int") or self.step is None:
            return None
        n = int(math.floor((self.max - self.min) / self.step + 1e-9))
        return self.min + self.step * np.arange(n + 1)

    def size(self) -> float:
        """Number of distinct values (inf for a continuous double)."""
        if self.type in ("discrete", "categorical"):
            return len(set(self.values))
        grid = self.grid()
        if grid is not None:
            return len(grid)
        if self.type == "int":
            return int(self.max) - int(self.min) + 1
        return math.inf

    def sample(self, rng: np.random.RandomState) -> str:
        """One value, as the string Katib would put into ``${trialParameters.*}``."""
        if self.type in ("discrete", "categorical"):
            return self.values[int(rng.randint(len(self.values)))]
        lo, hi = float(self.min), float(self.max)
        grid = self.grid()
        if self.distribution == "uniform" and grid is not None:
            value = float(grid[int(rng.randint(len(grid)))])
        elif self.distribution == "uniform" and self.type == "int":
            value = float(rng.randint(int(lo), int(hi) + 1))
        else:
            if self.distribution == "uniform":
                value = rng.uniform(lo, hi)
            elif self.distribution == "logUniform":
                value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            elif self.distribution == "normal":
                value = rng.normal((lo + hi) / 2, (hi - lo) / 6)
            else:  # logNormal
                llo, lhi = math.log(lo), math.log(hi)
                value = math.exp(rng.normal((llo + lhi) / 2, (lhi - llo) / 6))
            if grid is not None:
                value = float(grid[int(np.argmin(np.abs(grid - value)))])
            value = min(max(value, lo), hi)
        if self.type == "int":
            return str(int(round(value)))
        return format(value, ".6g")


@dataclass(frozen=True)
class Objective:
    type: str
    metric: str
    goal: float | None
    additional_metrics: tuple[str, ...]
    strategies: dict[str, str]

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric, *self.additional_metrics)

    def better(self, a: float, b: float) -> bool:
        """Is objective value ``a`` strictly better than ``b``?"""
        return a < b if self.type == "minimize" else a > b

    def reached(self, value: float) -> bool:
        if self.goal is None:
            return False
        return value <= self.goal if self.type == "minimize" else value >= self.goal


@dataclass(frozen=True)
class TrialTemplate:
    container: str
    command: tuple[str, ...]
    env: dict[str, str]
    working_dir: str | None
    trial_parameters: dict[str, str]  # trial parameter name -> search parameter name


@dataclass(frozen=True)
class Experiment:
    name: str
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    parameters: tuple[Parameter, ...]
    objective: Objective
    algorithm: str
    random_state: int | None
    max_trial_count: int
    parallel_trial_count: int
    max_failed_trial_count: int | None
    collector: str
    metric_filters: tuple[str, ...]
    trial: TrialTemplate
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def parameter(self, name: str) -> Parameter:
        return next(p for p in self.parameters if p.name == name)

    def search_space_size(self) -> float:
        return math.prod(p.size() for p in self.parameters)


def _get(doc: Any, key: str, where: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if not isinstance(doc, dict):
        raise ExperimentError(f"{where}: must be a mapping, got {type(doc).__name__}")
    if key not in doc or doc[key] is None:
        if required:
            raise ExperimentError(f"{where}.{key}: required")
        return None
    value = doc[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ExperimentError(f"{where}.{key}: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ExperimentError(f"{where}.{key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "float": "a number", "dict": "a mapping", "list": "a list"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _number(value: Any, where: str, integer: bool = False) -> float:
    """Katib keeps feasible-space bounds as strings ("0.001"); accept numbers too."""
    if isinstance(value, bool):
        raise ExperimentError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExperimentError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ExperimentError(f"{where}: must be finite, got {value!r}")
    if integer and number != int(number):
        raise ExperimentError(f"{where}: an int parameter needs an integer, got {value!r}")
    return number


def _parameter(doc: Any, where: str) -> Parameter:
    name = _get(doc, "name", where, str)
    ptype = _get(doc, "parameterType", where, str)
    if ptype not in PARAMETER_TYPES:
        raise ExperimentError(
            f"{where}.parameterType: unknown parameter type {ptype!r} for {name!r}; "
            f"Katib knows {', '.join(PARAMETER_TYPES)}"
        )
    space = _get(doc, "feasibleSpace", where, dict, required=False) or {}
    fwhere = f"{where}.feasibleSpace"
    if ptype in ("discrete", "categorical"):
        values = space.get("list")
        if values is None or (isinstance(values, list) and not values):
            raise ExperimentError(f"{fwhere}.list: empty feasible space: {ptype} parameter {name!r} needs values")
        if not isinstance(values, list):
            raise ExperimentError(f"{fwhere}.list: expected a list, got {values!r}")
        for i, v in enumerate(values):
            if isinstance(v, (dict, list)) or v is None:
                raise ExperimentError(f"{fwhere}.list[{i}]: expected a scalar, got {v!r}")
            if ptype == "discrete":
                _number(v, f"{fwhere}.list[{i}]")
        strings = tuple(str(v) for v in values)
        if len(set(strings)) != len(strings):
            raise ExperimentError(f"{fwhere}.list: duplicate values in {list(strings)}")
        extra = sorted(set(space) - {"list"})
        if extra:
            raise ExperimentError(f"{fwhere}: {', '.join(extra)} not allowed for a {ptype} parameter (only list)")
        return Parameter(name=name, type=ptype, values=strings)

    if "min" not in space and "max" not in space:
        raise ExperimentError(f"{fwhere}: empty feasible space: {ptype} parameter {name!r} needs min and max")
    for bound in ("min", "max"):
        if bound not in space:
            raise ExperimentError(f"{fwhere}.{bound}: required for {ptype} parameter {name!r}")
    integer = ptype == "int"
    lo = _number(space["min"], f"{fwhere}.min", integer)
    hi = _number(space["max"], f"{fwhere}.max", integer)
    if lo > hi:
        raise ExperimentError(f"{fwhere}.min: min {space['min']} > max {space['max']} for parameter {name!r}")
    step = None
    if space.get("step") not in (None, ""):
        step = _number(space["step"], f"{fwhere}.step", integer)
        if step <= 0:
            raise ExperimentError(f"{fwhere}.step: must be > 0, got {space['step']}")
    distribution = space.get("distribution") or "uniform"
    if distribution not in DISTRIBUTIONS:
        raise ExperimentError(
            f"{fwhere}.distribution: unknown distribution {distribution!r}; use {', '.join(DISTRIBUTIONS)}"
        )
    if distribution in ("logUniform", "logNormal") and lo <= 0:
        raise ExperimentError(f"{fwhere}.min: a {distribution} distribution needs min > 0, got {space['min']}")
    if space.get("list"):
        raise ExperimentError(f"{fwhere}.list: not allowed for a {ptype} parameter (use min/max)")
    return Parameter(name=name, type=ptype, min=lo, max=hi, step=step, distribution=distribution)


def _objective(spec: dict, parameters: tuple[Parameter, ...]) -> Objective:
    where = "spec.objective"
    doc = _get(spec, "objective", "spec", dict)
    otype = _get(doc, "type", where, str)
    if otype not in OBJECTIVE_TYPES:
        raise ExperimentError(f"{where}.type: must be minimize or maximize, got {otype!r}")
    metric = _get(doc, "objectiveMetricName", where, str)
    goal = _get(doc, "goal", where, (int, float), required=False)
    additional = tuple(_get(doc, "additionalMetricNames", where, list, required=False) or ())
    if metric in additional:
        raise ExperimentError(f"{where}.additionalMetricNames: must not repeat the objective metric {metric!r}")
    # Katib's defaulter: the objective metric follows the objective type, others take "latest".
    strategies = {m: "latest" for m in additional}
    strategies[metric] = "min" if otype == "minimize" else "max"
    for i, s in enumerate(_get(doc, "metricStrategies", where, list, required=False) or ()):
        swhere = f"{where}.metricStrategies[{i}]"
        sname = _get(s, "name", swhere, str)
        value = _get(s, "value", swhere, str)
        if value not in STRATEGIES:
            raise ExperimentError(f"{swhere}.value: must be min, max or latest, got {value!r}")
        if sname not in strategies:
            raise ExperimentError(f"{swhere}.name: {sname!r} is neither the objective nor an additional metric")
        strategies[sname] = value
    return Objective(otype, metric, None if goal is None else float(goal), additional, strategies)


def _trial_template(spec: dict, parameters: tuple[Parameter, ...]) -> TrialTemplate:
    where = "spec.trialTemplate"
    doc = _get(spec, "trialTemplate", "spec", dict)
    names = {p.name for p in parameters}
    trial_parameters: dict[str, str] = {}
    for i, tp in enumerate(_get(doc, "trialParameters", where, list)):
        twhere = f"{where}.trialParameters[{i}]"
        tname = _get(tp, "name", twhere, str)
        ref = _get(tp, "reference", twhere, str)
        if ref not in names and not ref.startswith("${trialSpec."):
            raise ExperimentError(f"{twhere}.reference: {ref!r} is not a search parameter ({', '.join(sorted(names))})")
        trial_parameters[tname] = ref
    unused = names - set(trial_parameters.values())
    if unused:
        raise ExperimentError(f"{where}.trialParameters: search parameter(s) {sorted(unused)} are never passed to the trial")
    job = _get(doc, "trialSpec", where, dict)
    jwhere = f"{where}.trialSpec"
    if job.get("apiVersion") != "batch/v1" or job.get("kind") != "Job":
        raise ExperimentError(
            f"{jwhere}: the local executor runs batch/v1 Job trials, got {job.get('apiVersion')}/{job.get('kind')}"
        )
    pod = _get(_get(_get(job, "spec", jwhere, dict), "template", f"{jwhere}.spec", dict), "spec",
               f"{jwhere}.spec.template", dict)
    cwhere = f"{jwhere}.spec.template.spec.containers"
    containers = _get(pod, "containers", f"{jwhere}.spec.template.spec", list)
    primary = _get(doc, "primaryContainerName", where, str, required=False)
    if primary is None and len(containers) == 1:
        primary = containers[0].get("name")
    index = next((i for i, c in enumerate(containers) if isinstance(c, dict) and c.get("name") == primary), None)
    if index is None:
        raise ExperimentError(f"{where}.primaryContainerName: no container named {primary!r} in {cwhere}")
    container = containers[index]
    cwhere = f"{cwhere}[{index}]"
    command = _get(container, "command", cwhere, list)
    args = _get(container, "args", cwhere, list, required=False) or []
    argv = [str(a) for a in [*command, *args]]
    if not argv:
        raise ExperimentError(f"{cwhere}.command: empty; the StdOut collector needs an explicit command")
    for token in argv:
        for ref in TRIAL_PARAMETER_RE.findall(token):
            if ref not in trial_parameters:
                raise ExperimentError(f"{cwhere}.command: ${{trialParameters.{ref}}} is not declared in {where}.trialParameters")
    env = {}
    for i, e in enumerate(_get(container, "env", cwhere, list, required=False) or []):
        ename = _get(e, "name", f"{cwhere}.env[{i}]", str)
        if "value" in e:
            env[ename] = str(e["value"])
    return TrialTemplate(
        container=primary,
        command=tuple(argv),
        env=env,
        working_dir=container.get("workingDir"),
        trial_parameters=trial_parameters,
    )


def _positive_int(spec: dict, key: str, default: int | None, minimum: int) -> int | None:
    value = _get(spec, key, "spec", int, required=False)
    if value is None:
        return default
    if value < minimum:
        raise ExperimentError(f"spec.{key}: must be >= {minimum}, got {value}")
    return value


def parse_experiment(doc: Any) -> Experiment:
    """Check a Katib Experiment document and return it as an `Experiment`.

    Raises `ExperimentError` naming the field for anything Katib would reject or the local
    executor cannot run faithfully.
    """
    if not isinstance(doc, dict):
        raise ExperimentError(f"Experiment: expected a mapping, got {type(doc).__name__}")
    if doc.get("apiVersion") != "kubeflow.org/v1beta1":
        raise ExperimentError(f"apiVersion: expected kubeflow.org/v1beta1, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != "Experiment":
        raise ExperimentError(f"kind: expected Experiment, got {doc.get('kind')!r}")
    meta = _get(doc, "metadata", "", dict)
    name = _get(meta, "name", "metadata", str)
    spec = _get(doc, "spec", "", dict)

    raw_params = _get(spec, "parameters", "spec", list)
    if not raw_params:
        raise ExperimentError("spec.parameters: empty; at least one parameter is needed")
    parameters = tuple(_parameter(p, f"spec.parameters[{i}]") for i, p in enumerate(raw_params))
    seen: set[str] = set()
    for i, p in enumerate(parameters):
        if p.name in seen:
            raise ExperimentError(f"spec.parameters[{i}].name: duplicate parameter {p.name!r}")
        seen.add(p.name)

    objective = _objective(spec, parameters)

    algo = _get(spec, "algorithm", "spec", dict)
    algorithm = _get(algo, "algorithmName", "spec.algorithm", str)
    if algorithm != "random":
        raise ExperimentError(
            f"spec.algorithm.algorithmName: {algorithm!r}: the local executor implements Katib's random search "
            "only; submit the Experiment to a cluster for other algorithms"
        )
    random_state = None
    for i, s in enumerate(_get(algo, "algorithmSettings", "spec.algorithm", list, required=False) or []):
        swhere = f"spec.algorithm.algorithmSettings[{i}]"
        sname = _get(s, "name", swhere, str)
        if sname != "random_state":
            raise ExperimentError(f"{swhere}.name: unknown setting {sname!r} for random search (random_state)")
        try:
            random_state = int(str(s.get("value")))
        except ValueError:
            raise ExperimentError(f"{swhere}.value: random_state must be an integer, got {s.get('value')!r}") from None

    collector_doc = (spec.get("metricsCollectorSpec") or {})
    collector = ((collector_doc.get("collector") or {}).get("kind")) or "StdOut"
    if collector != "StdOut":
        raise ExperimentError(
            f"spec.metricsCollectorSpec.collector.kind: {collector!r}: the local executor reads trial stdout (StdOut)"
        )
    filters = tuple(((collector_doc.get("source") or {}).get("filter") or {}).get("metricsFormat") or ())
    for i, f in enumerate(filters):
        try:
            re.compile(f)
        except re.error as exc:
            raise ExperimentError(f"spec.metricsCollectorSpec.source.filter.metricsFormat[{i}]: bad regex: {exc}") from None

    return Experiment(
        name=name,
        namespace=meta.get("namespace"),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        parameters=parameters,
        objective=objective,
        algorithm=algorithm,
        random_state=random_state,
        max_trial_count=_positive_int(spec, "maxTrialCount", None, 1) or _required_max(),
        parallel_trial_count=_positive_int(spec, "parallelTrialCount", 3, 1),
        max_failed_trial_count=_positive_int(spec, "maxFailedTrialCount", None, 0),
        collector=collector,
        metric_filters=filters or (DEFAULT_METRICS_FILTER,),
        trial=_trial_template(spec, parameters),
        raw=doc,
    )


def _required_max() -> int:
    raise ExperimentError("spec.maxTrialCount: required by the local executor (it would otherwise never stop)")


def parse_metrics(lines: list[str] | str, metrics: tuple[str, ...], filters: tuple[str, ...]) -> dict[str, list[float]]:
    """Katib's StdOut rule: every ``name=value`` match on a line naming a wanted metric, in order."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    regexes = [re.compile(f) for f in filters]
    found: dict[str, list[float]] = {m: [] for m in metrics}
    for line in lines:
        if not any(m in line for m in metrics):
            continue
        for rx in regexes:
            for match in rx.finditer(line):
                if len(match.groups()) < 2:
                    continue
                name, value = match.group(1).strip(), match.group(2).strip()
                if name in found:
                    try:
                        found[name].append(float(value))
                    except ValueError:
                        continue
    return found


def extract(values: list[float], strategy: str) -> float | None:
    if not values:
        return None
    if strategy == "min":
        return min(values)
    if strategy == "max":
        return max(values)
    return values[-1]
