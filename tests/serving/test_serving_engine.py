"""The execution engine behind a signature: TFLite only where it gives TensorFlow's answers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf

from serving import lite
from serving.runtime import load_servable
from tests.serving_fixtures import CONTRACT_MODEL


@pytest.fixture(scope="module")
def model_path(tiny_models_dir):
    return tiny_models_dir / CONTRACT_MODEL / "1"


@pytest.fixture(scope="module")
def reference(model_path):
    fn = tf.saved_model.load(str(model_path)).signatures["serving_default"]
    return lambda x: fn(window=tf.constant(x))["glucose"].numpy()


def windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = 120 + rng.normal(0, 35, (n, 15))
    ins = rng.choice([0.0, 0.0, 0.3, 2.5], (n, 15))
    carbs = rng.choice([0.0] * 9 + [45.0], (n, 15))
    return np.stack([g, ins, carbs], axis=-1).astype(np.float32)


def test_auto_serves_the_exported_model_on_tflite_with_tensorflows_answers(model_path, reference):
    servable = load_servable(CONTRACT_MODEL, 1, model_path, engine="auto")
    assert servable.signatures["serving_default"].engine == "tflite"
    for n in (1, 7, 64, 1000):
        X = windows(n, seed=n)
        got = servable.run("serving_default", {"window": X})["glucose"]
        np.testing.assert_allclose(got, reference(X), rtol=1e-5, atol=1e-4)


def test_tensorflow_engine_never_converts(model_path, reference):
    servable = load_servable(CONTRACT_MODEL, 1, model_path, engine="tensorflow")
    assert servable.signatures["serving_default"].engine == "tensorflow"
    X = windows(5)
    np.testing.assert_array_equal(servable.run("serving_default", {"window": X})["glucose"], reference(X))


def test_results_are_not_overwritten_by_later_calls(model_path):
    """The interpreter's output buffer is reused: every caller must get its own copy."""
    servable = load_servable(CONTRACT_MODEL, 1, model_path, engine="tflite")
    a, b = windows(4, seed=1), windows(4, seed=2)
    first = servable.run("serving_default", {"window": a})["glucose"]
    kept = first.copy()
    servable.run("serving_default", {"window": b})
    np.testing.assert_array_equal(first, kept)


def test_concurrent_callers_get_their_own_answers(model_path, reference):
    servable = load_servable(CONTRACT_MODEL, 1, model_path, engine="tflite")
    inputs = [windows(1 + i % 5, seed=i) for i in range(24)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = servable.run("serving_default", {"window": inputs[i]})["glucose"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, X in enumerate(inputs):
        np.testing.assert_allclose(results[i], reference(X), rtol=1e-5, atol=1e-4)


def test_a_disagreeing_conversion_is_refused(model_path, reference):
    servable = load_servable(CONTRACT_MODEL, 1, model_path, engine="tensorflow")
    sig = servable.signatures["serving_default"]
    off_by_one = lambda feed: {"glucose": reference(feed["window"]) + 1.0}  # noqa: E731
    with pytest.raises(lite.LiteUnavailable, match="differs from TensorFlow"):
        lite.convert(model_path, "serving_default", sig.inputs, sig.outputs, off_by_one)


@pytest.fixture(scope="module")
def integer_model(tmp_path_factory):
    """A SavedModel TFLite is not used for: an int64 input."""

    class Counter(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="counts")])
        def serve(self, counts):
            return {"total": tf.reduce_sum(counts, axis=1)}

    path = tmp_path_factory.mktemp("int-model") / "1"
    module = Counter()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_auto_keeps_tensorflow_where_tflite_does_not_apply(integer_model):
    servable = load_servable("counter", 1, integer_model, engine="auto")
    assert servable.signatures["serving_default"].engine == "tensorflow"
    out = servable.run("serving_default", {"counts": np.array([[1, 2, 3]], dtype=np.int64)})
    assert out["total"].tolist() == [6]


def test_tflite_engine_fails_the_load_with_the_reason(integer_model):
    with pytest.raises(ValueError, match=r"'serving_default' cannot run on TFLite: input 'counts'"):
        load_servable("counter", 1, integer_model, engine="tflite")


def test_unknown_engine_is_rejected(model_path):
    with pytest.raises(ValueError, match="engine must be one of auto, tflite, tensorflow"):
        load_servable(CONTRACT_MODEL, 1, model_path, engine="fast")
