"""Run a Katib Experiment on this machine, the way Katib's controller would run it on a cluster.

It reads the very Experiment YAML that ``kubectl apply`` would take (see `katib.spec`) and
follows Katib's rules (pkg/controller.v1beta1/experiment/util/status_util.go):

* trials get parameters from seeded random search (``random_state``), in creation order, so a
  fixed random_state gives the same trials whatever the timing;
* at most ``parallelTrialCount`` trials run at once, as separate processes running the trial
  container's ``command`` (``python`` is this interpreter; the image is not needed here);
* a trial's metrics are parsed from its stdout with Katib's StdOut rule (``name=value``); the
  objective value is extracted with its metric strategy (``min`` for a minimised objective);
  a trial that exits non-zero is Failed, one that exits 0 without the objective metric is
  MetricsUnavailable (counted as failed, as Katib does);
* the experiment succeeds when the goal is reached (running trials are then killed, except those
  that have already reported the objective: they may exit on their own), fails when
  the failed count reaches ``maxFailedTrialCount``, and succeeds when ``maxTrialCount`` trials
  have completed.

It prints a live trial table and finally what Katib's UI shows: status and why, the best trial's
parameters and metrics, and the trial counts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from .spec import TRIAL_PARAMETER_RE, Experiment, ExperimentError, extract, parse_experiment, parse_metrics

GOAL_REACHED = ("ExperimentGoalReached", "Experiment has succeeded because Objective goal has reached")
MAX_TRIALS = ("ExperimentMaxTrialsReached", "Experiment has succeeded because max trial count has reached")
MAX_FAILED = ("ExperimentFailed", "Experiment has failed because max failed count has reached")
INTERRUPTED = ("ExperimentInterrupted", "Experiment was interrupted on this machine")
# A running trial whose log already holds the objective when the experiment completes has done its
# work; it gets this long to exit on its own (and counts as Succeeded) before it is killed.
REPORTED_GRACE_S = 20.0
FAILED_STATES = ("Failed", "MetricsUnavailable")
DONE_STATES = ("Succeeded", "Failed", "MetricsUnavailable", "Killed")


@dataclass
class Trial:
    name: str
    index: int
    assignments: dict[str, str]
    status: str = "Pending"
    metrics: dict[str, float | None] = field(default_factory=dict)
    objective: float | None = None
    exit_code: int | None = None
    started: float | None = None
    wall_time_s: float | None = None
    log: str | None = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("started")
        return d


@dataclass
class ExperimentResult:
    experiment: str
    status: str
    reason: str
    message: str
    objective: dict[str, Any]
    best_trial: dict[str, Any] | None
    trials: list[dict[str, Any]]
    counts: dict[str, int]
    wall_time_s: float
    random_state: int | None
    max_trial_count: int
    parallel_trial_count: int
    max_failed_trial_count: int | None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def typed_value(exp: Experiment, name: str, value: str) -> Any:
    """A trial assignment (always a string in Katib) as a Python number where the type says so."""
    ptype = exp.parameter(name).type
    if ptype == "int":
        return int(float(value))
    if ptype == "double":
        return float(value)
    if ptype == "discrete":
        number = float(value)
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return value


def load_experiment(source: dict[str, Any] | str | os.PathLike[str] | Experiment) -> Experiment:
    if isinstance(source, Experiment):
        return source
    if isinstance(source, dict):
        return parse_experiment(source)
    path = Path(source)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_experiment(doc)
    except ExperimentError as exc:
        raise ExperimentError(f"{path}: {exc}") from None


class _Table:
    """The live trial table (one row per trial start and end) plus a progress bar."""

    def __init__(self, exp: Experiment, out: IO[str] | None, progress: bool):
        self.exp, self.out = exp, out
        self.names = [p.name for p in exp.parameters]
        self.widths = [max(len(n), 10) for n in self.names]
        self.bar = None
        if progress and out is not None and sys.stderr.isatty():  # in a log file, the table rows suffice
            from tqdm import tqdm

            self.bar = tqdm(total=exp.max_trial_count, desc=exp.name, unit="trial", file=sys.stderr,
                            leave=False, dynamic_ncols=True)

    def write(self, line: str = "") -> None:
        if self.out is None:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def header(self) -> None:
        cols = ["trial".ljust(24), "status".ljust(18)]
        cols += [n.ljust(w) for n, w in zip(self.names, self.widths, strict=True)]
        cols += [m.rjust(9) for m in self.exp.objective.metrics] + ["time".rjust(7)]
        self.write("  ".join(cols))

    def row(self, t: Trial) -> None:
        # Katib kills the trials still running when the experiment completes: say so, it is not a failure.
        status = "Killed: exp. done" if t.status == "Killed" else t.status
        cols = [t.name[-24:].ljust(24), status.ljust(18)]
        cols += [t.assignments.get(n, "").ljust(w) for n, w in zip(self.names, self.widths, strict=True)]
        for m in self.exp.objective.metrics:
            v = t.metrics.get(m)
            cols.append(("-" if v is None else f"{v:.3f}").rjust(9))
        cols.append(("" if t.wall_time_s is None else f"{t.wall_time_s:.1f}s").rjust(7))
        self.write("  ".join(cols))

    def progress(self, done: int, best: float | None, running: int) -> None:
        if self.bar is None:
            return
        self.bar.n = done
        metric = self.exp.objective.metric
        self.bar.set_postfix_str(f"running {running}, best {metric} " + ("-" if best is None else f"{best:.3f}"))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _default_threads(parallel: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // max(1, parallel)))


def _command(exp: Experiment, trial: Trial, namespace: str) -> list[str]:
    values = {tp: trial.assignments[ref] for tp, ref in exp.trial.trial_parameters.items() if ref in trial.assignments}

    def sub(token: str) -> str:
        token = TRIAL_PARAMETER_RE.sub(lambda m: values[m.group(1)], token)
        return token.replace("${trialSpec.Name}", trial.name).replace("${trialSpec.Namespace}", namespace)

    argv = [sub(t) for t in exp.trial.command]
    if argv and argv[0] in ("python", "python3", "python3.11"):
        argv[0] = sys.executable  # the image's python is this environment's python here
    return argv


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _reported(trial: Trial, exp: Experiment) -> bool:
    """Whether the trial's log already holds the objective metric."""
    text = Path(trial.log).read_text(errors="replace") if trial.log else ""
    return exp.objective.metric in parse_metrics(text, exp.objective.metrics, exp.metric_filters)


def run_experiment(
    source: dict[str, Any] | str | os.PathLike[str] | Experiment,
    *,
    log_dir: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    out: IO[str] | None | str = "stdout",
    progress: bool = True,
    poll_interval: float = 0.1,
) -> ExperimentResult:
    """Run the Experiment's trials here; return Katib's view of the outcome.

    ``log_dir`` receives one ``<trial>.log`` (stdout and stderr) per trial; ``workdir`` is the
    trials' working directory; ``env`` is added to this process's environment for the trials.
    """
    if isinstance(out, str):  # "stdout": the stream current at call time (not at import)
        out = sys.stdout
    exp = load_experiment(source)
    logs = Path(log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(exp.random_state)
    namespace = exp.namespace or "local"
    base_env = {**os.environ, **exp.trial.env, **(env or {}), "PYTHONUNBUFFERED": "1"}
    threads = _default_threads(exp.parallel_trial_count)
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        base_env.setdefault(var, threads)
    cwd = Path(workdir) if workdir else Path.cwd()  # the container's workingDir is an image path

    table = _Table(exp, out, progress)
    trials: list[Trial] = []
    running: dict[str, tuple[subprocess.Popen, IO[bytes], Trial]] = {}
    best: Trial | None = None
    t0 = time.monotonic()
    status, (reason, message) = "Running", ("ExperimentRunning", "Experiment is running")
    obj = exp.objective

    table.write(
        f"Experiment {exp.name}: random search, random_state={exp.random_state}, "
        f"maxTrialCount={exp.max_trial_count}, parallelTrialCount={exp.parallel_trial_count}, "
        f"maxFailedTrialCount={exp.max_failed_trial_count}, objective {obj.type} {obj.metric}"
        + ("" if obj.goal is None else f" (goal {obj.goal:g})")
    )
    table.header()

    def finish(trial: Trial, proc: subprocess.Popen, fh: IO[bytes], killed: bool = False) -> None:
        nonlocal best
        fh.close()
        trial.exit_code = proc.returncode
        trial.wall_time_s = round(time.monotonic() - (trial.started or t0), 2)
        text = Path(trial.log).read_text(errors="replace") if trial.log else ""
        found = parse_metrics(text, obj.metrics, exp.metric_filters)
        trial.metrics = {m: extract(v, obj.strategies[m]) for m, v in found.items()}
        trial.objective = trial.metrics.get(obj.metric)
        if killed:
            trial.status, trial.message = "Killed", "stopped: the experiment had completed"
        elif proc.returncode != 0:
            trial.status = "Failed"
            tail = [line for line in text.strip().splitlines() if line.strip()][-1:]
            trial.message = f"exit code {proc.returncode}" + (f": {tail[0][:200]}" if tail else "")
        elif trial.objective is None:
            trial.status = "MetricsUnavailable"
            trial.message = f"objective metric {obj.metric!r} not found in the trial's stdout ({obj.metric}=<value>)"
        else:
            trial.status = "Succeeded"
        if trial.status in ("Succeeded", "Killed") and trial.objective is not None and (
            best is None or obj.better(trial.objective, best.objective)
        ):
            best = trial
        table.row(trial)

    def counts() -> dict[str, int]:
        """Katib's trial counts; ``failed`` includes MetricsUnavailable, as Katib counts it."""
        c = {"succeeded": 0, "failed": 0, "metrics_unavailable": 0, "killed": 0, "running": 0, "pending": 0}
        for t in trials:
            key = {"MetricsUnavailable": "metrics_unavailable"}.get(t.status, t.status.lower())
            c[key] += 1
        c["failed"] += c["metrics_unavailable"]
        return c

    try:
        while True:
            for name, (proc, fh, trial) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    finish(trial, proc, fh)
            c = counts()
            failed = c["failed"]
            completed = c["succeeded"] + failed + c["killed"]
            if best is not None and best.objective is not None and obj.reached(best.objective):
                status, (reason, message) = "Succeeded", GOAL_REACHED
            elif exp.max_failed_trial_count is not None and failed > 0 and failed >= exp.max_failed_trial_count:
                status, (reason, message) = "Failed", MAX_FAILED
            elif completed >= exp.max_trial_count:
                status, (reason, message) = "Succeeded", MAX_TRIALS
            if status != "Running":
                break
            while len(running) < exp.parallel_trial_count and len(trials) < exp.max_trial_count:
                index = len(trials) + 1
                trial = Trial(
                    name=f"{exp.name}-{index:03d}",
                    index=index,
                    assignments={p.name: p.sample(rng) for p in exp.parameters},
                )
                trials.append(trial)
                log = logs / f"{trial.name}.log"
                trial.log = str(log)
                fh = open(log, "wb")  # noqa: SIM115 - closed in finish()
                argv = _command(exp, trial, namespace)
                trial.started = time.monotonic()
                try:
                    proc = subprocess.Popen(argv, cwd=cwd, env=base_env, stdout=fh, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                except OSError as exc:
                    fh.write(f"cannot start {argv[0]}: {exc}\n".encode())
                    fh.close()
                    trial.status, trial.exit_code, trial.message = "Failed", 127, f"cannot start {argv[0]}: {exc}"
                    trial.wall_time_s = 0.0
                    table.row(trial)
                    continue
                trial.status = "Running"
                running[trial.name] = (proc, fh, trial)
                table.row(trial)
            table.progress(completed, None if best is None else best.objective, len(running))
            time.sleep(poll_interval)
    except KeyboardInterrupt:
        status, (reason, message) = "Failed", INTERRUPTED
        raise
    finally:
        interrupted = (reason, message) == INTERRUPTED
        grace_until = time.monotonic() + REPORTED_GRACE_S
        for _name, (proc, fh, trial) in list(running.items()):
            if not interrupted and _reported(trial, exp):  # its work is done: let it exit as it would
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, grace_until - time.monotonic()))
            done = proc.poll() is not None  # finished meanwhile: it counts as what it was
            if not done:
                _kill(proc)
            finish(trial, proc, fh, killed=not done)
        running.clear()
        table.close()

    wall = round(time.monotonic() - t0, 2)
    c = counts()
    best_dict = None
    if best is not None:
        best_dict = {
            "name": best.name,
            "parameters": {k: typed_value(exp, k, v) for k, v in best.assignments.items()},
            obj.metric: best.objective,
            "metrics": best.metrics,
        }
    result = ExperimentResult(
        experiment=exp.name,
        status=status,
        reason=reason,
        message=message,
        objective={"type": obj.type, "metric": obj.metric, "goal": obj.goal},
        best_trial=best_dict,
        trials=[t.as_dict() for t in trials],
        counts=c,
        wall_time_s=wall,
        random_state=exp.random_state,
        max_trial_count=exp.max_trial_count,
        parallel_trial_count=exp.parallel_trial_count,
        max_failed_trial_count=exp.max_failed_trial_count,
        labels=exp.labels,
        annotations=exp.annotations,
    )
    summary(result, out)
    return result


def summary(result: ExperimentResult, out: IO[str] | None | str = "stdout") -> None:
    """What Katib's UI shows for a finished Experiment."""
    if isinstance(out, str):
        out = sys.stdout
    if out is None:
        return
    c = result.counts
    obj = result.objective
    lines = [
        "",
        f"Experiment {result.experiment}: {result.status} ({result.reason}): {result.message}",
    ]
    if result.best_trial:
        b = result.best_trial
        params = "  ".join(f"{k}={v}" for k, v in b["parameters"].items())
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in b["metrics"].items() if v is not None)
        goal = "" if obj["goal"] is None else f", goal {obj['goal']:g}"
        lines.append(f"Best trial {b['name']} ({obj['type']} {obj['metric']}{goal}): {metrics}")
        lines.append(f"  parameters: {params}")
    else:
        lines.append("Best trial: none (no trial reported the objective metric)")
    lines.append(
        f"Trials: {c['succeeded']} succeeded, {c['failed']} failed ({c['metrics_unavailable']} without metrics),"
        f" {c['killed']} killed, {c['running']} running; {len(result.trials)} of max {result.max_trial_count};"
        f" wall time {result.wall_time_s:.1f} s"
    )
    print("\n".join(lines), file=out, flush=True)


def write_result(result: ExperimentResult, path: Path, **extra: Any) -> Path:
    """Write the result JSON atomically (the training step reads it, see katib.results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**result.as_dict(), **extra}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")
