"""Model behaviour: real (small) training, SavedModel export and reload, atomic versions, metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import Hyperparameters
from pipeline.export import latest_version, read_metadata, versions
from pipeline.signature import INPUT_NAME, METADATA_FILE, OUTPUT_NAME, SIGNATURE_NAME
from pipeline.training import run_patient

HP = Hyperparameters(learning_rate=0.003, dense1=16, dense2=8, epochs=3, seed=7)


@pytest.fixture(scope="module")
def run(config, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    return run_patient("hupa0003p", HP, config, models_dir=models), models


def test_saved_model_reproduces_test_predictions(run):
    import tensorflow as tf

    result, _ = run
    fn = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME]
    spec = fn.structured_input_signature[1][INPUT_NAME]
    assert spec.shape.as_list() == [None, 15, 3] and spec.dtype == tf.float32
    served = fn(**{INPUT_NAME: tf.constant(result.dataset.test.X)})[OUTPUT_NAME].numpy()
    np.testing.assert_allclose(served, result.predictions["model"], rtol=1e-5, atol=1e-3)


def test_model_takes_raw_units_and_predicts_plausible_glucose(run):
    result, _ = run
    pred = result.predictions["model"]
    assert np.isfinite(pred).all()
    assert 30 < np.median(pred) < 300  # normalisation lives inside the model: raw mg/dL in, mg/dL out


def test_metadata_beside_the_model(run, config):
    result, models = run
    meta = json.loads((result.version_dir / METADATA_FILE).read_text())
    assert meta["features"] == list(config.series.features)
    assert meta["window"] == 15 and meta["horizon"] == 6
    assert meta["hyperparameters"]["dense1"] == 16
    assert set(meta["metrics"]) == {"model", "persistence", "linear", "ridge"}
    assert len(meta["data"]["fingerprint"]) == 16
    assert "tensorflow-cpu" in meta["library_versions"]
    assert read_metadata(models, "hupa0003p")["version"] == int(result.version_dir.name)


def test_versions_increase_and_leave_no_temporary_directories(run, config):
    result, models = run
    second = run_patient("hupa0003p", HP, config, models_dir=models, dataset=result.dataset)
    assert int(second.version_dir.name) == int(result.version_dir.name) + 1
    assert latest_version(models, "hupa0003p") == int(second.version_dir.name)
    assert [p.name for p in (models / "hupa0003p").iterdir() if not p.name.isdigit()] == []


def test_half_written_version_is_not_a_version(tmp_path):
    (tmp_path / "p" / "7" / "variables").mkdir(parents=True)  # no saved_model.pb yet
    assert versions(tmp_path, "p") == []


def test_training_is_reproducible_with_a_seed(run, config):
    from pipeline import training

    result, _ = run
    training._PRETRAINED.clear()  # population pretraining runs again too, not from the process cache
    again = run_patient("hupa0003p", HP, config, export=False, dataset=result.dataset)
    np.testing.assert_allclose(again.predictions["model"], result.predictions["model"], rtol=1e-4, atol=0.05)


def test_untrained_network_starts_at_ridge_regression(run, config):
    """ridge_init: before any training the network is exactly a ridge regression on its own window
    statistics, so training only adds what the hidden layers find beyond a linear model."""
    from sklearn.linear_model import Ridge

    from pipeline.model import build_model, predict

    ds = run[0].dataset
    model = build_model(HP, ds.train.X, ds.train.y, config.series, config.training)
    assert config.training.ridge_init
    # the same regression in closed form by scikit-learn, on the same normalised windows and target
    flat = model.get_layer("flatten")(model.get_layer("normalise")(ds.train.X)).numpy().astype(float)
    gi = config.series.features.index("glucose")
    ridge = Ridge(alpha=config.training.ridge_alpha).fit(flat, ds.train.y - ds.train.X[:, -1, gi])
    test_flat = model.get_layer("flatten")(model.get_layer("normalise")(ds.test.X)).numpy().astype(float)
    expected = ds.test.X[:, -1, gi] + ridge.predict(test_flat)
    np.testing.assert_allclose(predict(model, ds.test.X), expected, rtol=1e-4, atol=0.05)
    hidden_weights = model.get_layer("delta").get_weights()[0][flat.shape[1]:]
    assert not hidden_weights.any()
