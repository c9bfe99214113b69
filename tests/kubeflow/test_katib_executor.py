"""The local Katib executor runs the rendered Experiment YAML with Katib's rules.

The trial program is tests/kubeflow/fake_trial.py (no TensorFlow, deterministic mae from the
hyperparameters), so these tests exercise the executor itself quickly; test_katib_trial.py runs
the real trial.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from katib.executor import run_experiment, write_result
from katib.render import render_experiment
from katib.spec import DEFAULT_METRICS_FILTER, ExperimentError, Parameter, parse_experiment, parse_metrics


def _run(doc, tmp_path, name="run"):
    out = io.StringIO()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))  # the executor reads the YAML file, like kubectl would
    result = run_experiment(path, log_dir=tmp_path / name, out=out, progress=False, poll_interval=0.02)
    return result, out.getvalue()


def _intervals(result):
    spans = []
    for t in result.trials:
        text = Path(t["log"]).read_text()
        start = re.search(r"^start (\S+)$", text, re.M)
        end = re.search(r"^end (\S+)$", text, re.M)
        if start and end:
            spans.append((float(start.group(1)), float(end.group(1))))
    return spans


def _max_overlap(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def test_max_trial_count_and_parallelism(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--sleep", "0.6",
                          goal=None, maxTrialCount=5, parallelTrialCount=2)
    result, out = _run(doc, tmp_path)
    assert result.status == "Succeeded" and result.reason == "ExperimentMaxTrialsReached"
    assert len(result.trials) == 5 and result.counts["succeeded"] == 5
    assert _max_overlap(_intervals(result)) == 2  # two at a time, never three
    # the best trial is the minimum over trials of each trial's min-strategy mae
    maes = [t["objective"] for t in result.trials]
    assert result.best_trial["mae"] == min(maes)
    # trial parameters went through ${trialParameters.*} into the command: the fake trial's mae
    # is a function of them
    for t in result.trials:
        a = t["assignments"]
        import math

        expected = 15 + abs(math.log10(float(a["learning_rate"])) + 2.5) * 5 + abs(int(a["dense1"]) - 128) / 32 \
            + abs(int(a["dense2"]) - 64) / 32 + abs(int(a["epochs"]) - 40) / 10
        assert t["objective"] == pytest.approx(expected, abs=1e-5)
        # Katib's metric strategies: mae min over the reported values, rmse the latest
        assert t["metrics"]["rmse"] == pytest.approx(expected * 1.4, abs=1e-5)
    assert "Experiment gf-tune-hupa0002p: Succeeded (ExperimentMaxTrialsReached)" in out
    assert "Best trial gf-tune-hupa0002p-" in out and "5 succeeded, 0 failed" in out
    assert out.count("Running") >= 5  # the live table shows each trial starting


def test_parallel_one_runs_sequentially(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--sleep", "0.3",
                          goal=None, maxTrialCount=3, parallelTrialCount=1)
    result, _ = _run(doc, tmp_path)
    assert len(result.trials) == 3 and _max_overlap(_intervals(result)) == 1


def test_sampled_values_stay_in_the_feasible_space(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), goal=None, maxTrialCount=8, parallelTrialCount=4)
    result, _ = _run(doc, tmp_path)
    space = config.search_space("default")
    for t in result.trials:
        a = t["assignments"]
        lr = float(a["learning_rate"])
        assert space["learning_rate"]["min"] <= lr <= space["learning_rate"]["max"]
        for name in ("dense1", "dense2", "epochs"):
            s, v = space[name], int(a[name])
            assert s["min"] <= v <= s["max"] and (v - s["min"]) % s["step"] == 0
    seed = fake_experiment(render_experiment(config, "hupa0002p", "seed"), goal=None, maxTrialCount=6,
                           parallelTrialCount=3)
    result, _ = _run(seed, tmp_path, "seed")
    sspace = config.search_space("seed")
    for t in result.trials:
        for name, value in t["assignments"].items():
            assert float(value) in [float(v) for v in sspace[name]["values"]]


@pytest.mark.parametrize(
    "param, check",
    [
        (Parameter("opt", "categorical", values=("adam", "sgd", "rmsprop")), lambda v: v in ("adam", "sgd", "rmsprop")),
        (Parameter("d", "discrete", values=("16", "32")), lambda v: v in ("16", "32")),
        (Parameter("x", "double", 0.1, 0.9, distribution="normal"), lambda v: 0.1 <= float(v) <= 0.9),
        (Parameter("lr", "double", 1e-4, 1e-1, distribution="logNormal"), lambda v: 1e-4 <= float(v) <= 1e-1),
        (Parameter("lr", "double", 1e-4, 1e-1, distribution="logUniform"), lambda v: 1e-4 <= float(v) <= 1e-1),
        (Parameter("n", "int", 8, 64, step=8, distribution="normal"), lambda v: int(v) % 8 == 0 and 8 <= int(v) <= 64),
        (Parameter("n", "int", 1, 3), lambda v: v in ("1", "2", "3")),
        (Parameter("x", "double", 0.0, 1.0, step=0.25), lambda v: float(v) in (0.0, 0.25, 0.5, 0.75, 1.0)),
    ],
    ids=["categorical", "discrete", "normal", "logNormal", "logUniform", "int-step-normal", "int", "double-step"],
)
def test_every_parameter_type_and_distribution_samples_inside_its_space(param, check):
    """Katib's types and distributions (normal spans min..max as +-3 sigma, clipped): every sample
    is feasible, the same seed gives the same samples, and the space is actually explored."""
    import numpy as np

    rng = np.random.RandomState(12347)
    samples = [param.sample(rng) for _ in range(300)]
    assert all(check(v) for v in samples), [v for v in samples if not check(v)][:5]
    again = np.random.RandomState(12347)
    assert [param.sample(again) for _ in range(300)] == samples
    assert len(set(samples)) >= min(param.size(), 3)


def test_reproducible_for_a_fixed_random_state(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), goal=None, maxTrialCount=4, parallelTrialCount=2)
    first, _ = _run(doc, tmp_path, "a")
    second, _ = _run(doc, tmp_path, "b")
    pick = lambda r: [(t["assignments"], t["objective"]) for t in r.trials]  # noqa: E731
    assert pick(first) == pick(second)
    assert first.best_trial == second.best_trial
    doc["spec"]["algorithm"]["algorithmSettings"][0]["value"] = "1"
    other, _ = _run(doc, tmp_path, "c")
    assert [t["assignments"] for t in other.trials] != [t["assignments"] for t in first.trials]


def test_goal_reached_stops_early_and_kills_running_trials(config, tmp_path, fake_experiment):
    # every fake mae is >= 15; goal 40 is met by the first trial to finish
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--sleep", "0.5",
                          goal=40.0, maxTrialCount=10, parallelTrialCount=2)
    doc["spec"]["parameters"][1]["feasibleSpace"] = {"min": "16", "max": "256", "step": "16"}
    result, out = _run(doc, tmp_path)
    assert result.status == "Succeeded" and result.reason == "ExperimentGoalReached"
    assert len(result.trials) < 10
    assert result.best_trial["mae"] <= 40
    assert result.counts["succeeded"] >= 1
    assert result.counts["running"] == 0  # nothing left behind
    assert "Objective goal has reached" in out


def test_goal_reached_lets_a_trial_that_has_reported_finish(config, tmp_path, fake_experiment):
    """A trial still running when the goal is reached, but whose objective is already in its log,
    has done its work: it exits on its own and counts as Succeeded, not Killed."""
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--linger", "1.0",
                          goal=40.0, maxTrialCount=10, parallelTrialCount=2)
    result, out = _run(doc, tmp_path)
    assert result.status == "Succeeded" and result.reason == "ExperimentGoalReached"
    assert result.counts["succeeded"] == 2 and result.counts["killed"] == 0, result.counts
    assert "Killed" not in out


def test_unreachable_goal_runs_all_trials(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), goal=1.0, maxTrialCount=3, parallelTrialCount=3)
    result, _ = _run(doc, tmp_path)
    assert result.reason == "ExperimentMaxTrialsReached" and len(result.trials) == 3


def test_crashing_trials_fail_the_experiment_at_max_failed(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--mode", "crash",
                          goal=None, maxTrialCount=10, parallelTrialCount=1, maxFailedTrialCount=2)
    result, out = _run(doc, tmp_path)
    # Katib (experiment status_util.go): Failed once the failed count reaches maxFailedTrialCount
    assert result.status == "Failed" and result.reason == "ExperimentFailed"
    assert result.counts["failed"] == 2 and len(result.trials) == 2
    assert all(t["exit_code"] == 3 and "simulated crash" in t["message"] for t in result.trials)
    assert result.best_trial is None
    assert "max failed count has reached" in out and "Best trial: none" in out


def test_some_failures_below_the_limit_still_succeed(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--mode", "crash-above=128",
                          goal=None, maxTrialCount=6, parallelTrialCount=2, maxFailedTrialCount=6)
    result, _ = _run(doc, tmp_path)
    crashed = [t for t in result.trials if int(t["assignments"]["dense1"]) > 128]
    assert crashed, "the seeded sample should include large dense1 values"
    assert all(t["status"] == "Failed" for t in crashed)
    assert result.status == "Succeeded" and result.counts["failed"] == len(crashed)
    assert int(result.best_trial["parameters"]["dense1"]) <= 128


def test_keras_style_output_is_not_a_katib_metric(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), "--mode", "keras",
                          goal=None, maxTrialCount=3, parallelTrialCount=1, maxFailedTrialCount=1)
    result, _ = _run(doc, tmp_path)
    assert {t["status"] for t in result.trials} == {"MetricsUnavailable"}
    assert result.status == "Failed" and len(result.trials) == 1  # counted as failed, like Katib


def test_stdout_rule_matches_katib():
    lines = ["epoch 1: mae=20.5 rmse=30", "mae: 12.0", "val_mae=1.0", "mae = 18.25", "mae=1.5e-3", "loss=3",
             "mae=-2.5E+1", "mae=", "rmse=.5"]
    found = parse_metrics(lines, ("mae", "rmse"), (DEFAULT_METRICS_FILTER,))
    assert found == {"mae": [20.5, 18.25, 0.0015, -25.0], "rmse": [30.0, 0.5]}
    # Katib before v0.13 had no exponent: an Experiment may still set that filter explicitly
    old = parse_metrics(["mae=1.5e-3"], ("mae",), (r"([\w|-]+)\s*=\s*((-?\d+)(\.\d+)?)",))
    assert old == {"mae": [1.5]}


def test_result_json_and_bad_experiment_file(config, tmp_path, fake_experiment):
    doc = fake_experiment(render_experiment(config, "hupa0002p"), goal=None, maxTrialCount=2, parallelTrialCount=2)
    result, _ = _run(doc, tmp_path)
    path = write_result(result, tmp_path / "r.json", patient="hupa0002p", preset="default")
    saved = json.loads(path.read_text())
    assert saved["best_trial"]["parameters"].keys() == {"learning_rate", "dense1", "dense2", "epochs"}
    assert isinstance(saved["best_trial"]["parameters"]["dense1"], int)
    assert saved["status"] == "Succeeded" and saved["wall_time_s"] > 0 and len(saved["trials"]) == 2
    bad = tmp_path / "bad.yaml"
    doc["spec"]["parameters"][2]["parameterType"] = "integer"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ExperimentError, match=r"bad\.yaml: spec\.parameters\[2\]\.parameterType: unknown parameter type"):
        run_experiment(bad, log_dir=tmp_path / "x", out=None)


def test_cli_runs_an_experiment_file_and_rejects_a_bad_one(config, tmp_path, fake_experiment, capsys):
    from pipeline.cli import main

    doc = fake_experiment(render_experiment(config, "hupa0002p"), goal=None, maxTrialCount=2, parallelTrialCount=2)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(doc))
    assert main(["katib", "run", str(good), "--out", str(tmp_path / "good.json"), "--no-progress",
                 "--logs", str(tmp_path / "logs")]) == 0
    assert json.loads((tmp_path / "good.json").read_text())["reason"] == "ExperimentMaxTrialsReached"
    doc["spec"]["parameters"][0]["feasibleSpace"] = {"min": "0.1", "max": "0.01"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["katib", "run", str(bad), "--no-progress"]) == 2
    assert "spec.parameters[0].feasibleSpace.min: min 0.1 > max 0.01" in capsys.readouterr().err
    parse_experiment(yaml.safe_load(good.read_text()))
