"""The real Katib trial (`python -m katib.trial`, TensorFlow) run by the local executor through `tune`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from katib.results import best_hyperparameters, load_best
from pipeline.export import read_metadata


@pytest.mark.slow
def test_tune_runs_real_trials_and_training_can_use_the_result(tiny_config, capsys):
    from pipeline.cli import main

    assert main(["tune", "--patient", "hupa0002p", "--no-progress", "--goal", "1"]) == 0
    out = capsys.readouterr().out
    assert "Experiment gf-tune-hupa0002p: Succeeded (ExperimentMaxTrialsReached)" in out
    assert "2 succeeded, 0 failed" in out
    assert (tiny_config.root / "build" / "katib" / "hupa0002p.yaml").is_file()  # the file that ran

    doc = load_best(tiny_config, "hupa0002p")
    assert doc is not None and doc["patient"] == "hupa0002p" and doc["preset"] == "default"
    assert len(doc["trials"]) == 2 and doc["wall_time_s"] > 0
    best = doc["best_trial"]
    assert set(best["parameters"]) == {"learning_rate", "dense1", "dense2", "epochs"}
    assert best["parameters"]["dense1"] in (8, 16) and best["parameters"]["epochs"] in (1, 2)
    assert best["mae"] == min(t["objective"] for t in doc["trials"])
    log = Path(doc["trials"][0]["log"]).read_text()
    for name in ("mae", "rmse", "test_mae", "test_rmse"):
        assert re.search(rf"^{name}=\d+\.\d{{6}}$", log, re.M), name

    # the objective is the library's validation MAE for those hyperparameters (test set unseen)
    hp = best_hyperparameters(tiny_config, "hupa0002p")
    assert hp.dense1 == best["parameters"]["dense1"] and hp.seed == tiny_config.model.seed
    from pipeline.metrics import evaluate_predictions
    from pipeline.model import predict
    from pipeline.training import run_patient

    lib = run_patient("hupa0002p", hp, tiny_config, export=False)
    val = evaluate_predictions(lib.dataset.validation.y, predict(lib.model, lib.dataset.validation.X))
    assert best["mae"] == pytest.approx(val["mae"], abs=0.002)
    assert best["mae"] == pytest.approx(lib.training["validation_mae"], abs=0.002)
    assert best["mae"] != lib.metrics["model"]["mae"]

    # `train` offers the tuned and the default hyperparameters and exports the lower validation MAE
    assert main(["train", "--patient", "hupa0002p"]) == 0
    out = capsys.readouterr().out
    meta = read_metadata(tiny_config.models_dir, "hupa0002p")
    sel = meta["training"]["selection"]
    assert set(sel) == {"chosen", "tuned_validation_mae", "default_validation_mae"}
    assert sel["chosen"] == min(("tuned", "default"), key=lambda n: sel[f"{n}_validation_mae"])
    assert sel["tuned_validation_mae"] == pytest.approx(best["mae"], abs=0.002)
    chosen_hp = hp if sel["chosen"] == "tuned" else tiny_config.model
    assert meta["hyperparameters"] == chosen_hp.as_dict()
    assert f"({sel['chosen']} hp: validation MAE" in out
    report = (tiny_config.root / "build" / "reports" / "hupa0002p" / "report.md").read_text()
    assert f"The {sel['chosen']} hyperparameters had the lower validation MAE" in report
    # unchanged inputs: the next run skips the patient
    assert main(["train", "--patient", "hupa0002p"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_trial_rejects_bad_input_with_a_clear_message():
    base = [sys.executable, "-m", "katib.trial", "--learning-rate", "0.001", "--dense1", "8", "--dense2", "8",
            "--epochs", "1"]
    proc = subprocess.run([*base, "--patient", "nobody"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown patient 'nobody'" in proc.stderr and "mae=" not in proc.stdout
    proc = subprocess.run([*base[:-2], "--epochs", "0", "--patient", "hupa0002p"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--epochs: must be a positive integer" in proc.stderr


def test_load_best_ignores_missing_or_incomplete_results(config, tmp_path, monkeypatch):
    import katib.results as results

    monkeypatch.setattr(results, "tuning_dir", lambda cfg: tmp_path)
    assert load_best(config, "hupa0002p") is None
    (tmp_path / "hupa0002p.json").write_text(json.dumps({"status": "Failed", "best_trial": None}))
    assert load_best(config, "hupa0002p") is None
    (tmp_path / "hupa0002p.json").write_text("{not json")
    assert load_best(config, "hupa0002p") is None
    (tmp_path / "hupa0002p.json").write_text(json.dumps({"best_trial": {"parameters": {"dense1": 8}}}))
    assert load_best(config, "hupa0002p") is None
