"""The console script: help that explains, clear errors, the data report."""

from __future__ import annotations

import json
import subprocess
import sys


def gf(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120, **kw)


def test_help_lists_every_part():
    out = gf("--help").stdout
    for command in ("data", "train", "evaluate", "bench", "demo"):
        assert command in out


def test_data_report_json():
    r = gf("data", "--patient", "hupa0016p", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)[0]
    assert rep["native_interval_minutes"] == 15 and rep["n_meals"] == 83 and rep["n_boluses"] == 91


def test_unknown_patient_and_bad_file_are_clear_errors(tmp_path):
    r = gf("data", "--patient", "nobody")
    assert r.returncode == 2 and "unknown patient 'nobody'" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,glucose,insulin,carbs\n2024-01-01 00:00:00,abc,0,0\n")
    r = gf("data", "--file", str(bad))
    assert r.returncode == 2 and "row 2, column 'glucose'" in r.stderr


def test_evaluate_scores_the_exported_model_beside_the_baselines(tiny_models_dir):
    import os

    r = gf("evaluate", "--patient", "hupa0002p", env={**os.environ, "GF_MODELS_DIR": str(tiny_models_dir)})
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("| model |", "| persistence |", "| linear |", "| ridge |"):
        assert name in r.stdout
    r = gf("evaluate", "--patient", "hupa0016p", env={**os.environ, "GF_MODELS_DIR": str(tiny_models_dir)})
    assert r.returncode == 2 and "no exported model" in r.stderr
    r = gf("evaluate", "--patient", "hupa0002p", "--version", "99",
           env={**os.environ, "GF_MODELS_DIR": str(tiny_models_dir)})
    assert r.returncode == 2 and "no version 99 under" in r.stderr and "exported: 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_evaluate_scores_a_separate_test_file_beside_the_baselines(tiny_models_dir, tmp_path):
    """A patient with `test_file` (as OhioT1DM's -testing.xml): the exported model and every baseline
    (fitted on the training split only) are scored on it too."""
    import os

    from tests.conftest import REPO

    text = (REPO / "glucose-forecast.toml").read_text()
    held_out = tmp_path / "HUPA0002P-later.csv"
    lines = (REPO / "data/hupa-ucm/HUPA0002P.csv").read_text().splitlines()
    held_out.write_text("\n".join([lines[0], *lines[-600:]]) + "\n")  # its last ~2 days, as a separate file
    cfg = tmp_path / "glucose-forecast.toml"
    cfg.write_text(text[: text.index("[[patients]]")] + f"""
[[patients]]
id = "hupa0002p"
file = "{REPO}/data/hupa-ucm/HUPA0002P.csv"
test_file = "{held_out}"
reader = "hupa"
carb_unit = "g"
""")
    r = gf("--config", str(cfg), "evaluate", "--patient", "hupa0002p",
           env={**os.environ, "GF_MODELS_DIR": str(tiny_models_dir)})
    assert r.returncode == 0, r.stderr[-2000:]
    section = r.stdout.split("separate test file HUPA0002P-later.csv:")[1]
    for name in ("| model |", "| persistence |", "| linear |", "| ridge |"):
        assert name in section
