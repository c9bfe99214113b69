"""`glucose-forecast bench --quick`: a smoke run that checks the figures exist (not their values)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_writes_every_section(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "bench", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "## Accuracy" in r.stdout and "## Serving" in r.stdout
    doc = json.loads((out / "bench.json").read_text())
    row = doc["accuracy"][0]
    for forecaster in ("model", "persistence", "linear", "ridge"):
        assert set(row[forecaster]) == {"rmse", "mae", "clarke_ab"}
    assert row["n_test"] > 0
    timing = doc["timing"][0]
    assert timing["tuning_s"] > 0 and timing["training_s"] > 0
    serving = doc["serving"]
    for path in ("direct", "gateway"):
        for size in ("1", "1000"):
            assert serving[path][size]["rps"] > 0 and serving[path][size]["errors"] == 0
    assert serving["static_nginx"]["rps"] > 0
    # Two-second runs measure the speed targets but judge none of them.
    assert serving["targets"]["gateway_1_rps"]["measured"] > 0
    assert all(t["met"] is None for t in serving["targets"].values())
    assert "not judged (quick run)" in r.stdout
    assert (out / "bench.md").read_text().startswith("# glucose-forecast benchmark")
    # The run is isolated: the user's tuning results and models are untouched.
    assert (out / "work" / "build" / "tuning").is_dir()
