"""TensorFlow Lite execution of a SavedModel signature, used only where it gives TensorFlow's answers.

A TensorFlow eager call costs ~0.2 ms of Python and runtime overhead whatever the batch, which at small
batches is most of a predict request's CPU time; the same graph converted to TFLite runs in a few
microseconds. At load, each signature is converted (``tf.lite.TFLiteConverter``, float32, no
quantisation or other optimisation) and run on a probe batch beside the SavedModel's own function;
only a signature whose outputs agree within float32 rounding is served by TFLite, any other (an op
TFLite lacks, integer or unknown-shape inputs, a mismatch) keeps TensorFlow. The REST contract is
unchanged: the contract tests compare every answer with ``tf.saved_model.load`` of the same model.

The interpreter comes from ``ai_edge_litert`` (LiteRT, TFLite's successor), else from ``tf.lite``.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("serving.lite")

ENGINES = ("auto", "tflite", "tensorflow")
PROBE_ROWS = 64
# Agreement required of TFLite on the probe batch: float32 rounding of a different summation order.
RTOL, ATOL_SCALE = 1e-4, 1e-5

NumpyFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class LiteUnavailable(Exception):
    """The signature cannot be served by TFLite (the message says why)."""


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the serving extra installs ai-edge-litert
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    return Interpreter


class LiteSignature:
    """One converted signature; thread-safe (one interpreter per concurrent caller, reused)."""

    def __init__(self, flatbuffer: bytes, signature: str, outputs: list[str]):
        self._flatbuffer = flatbuffer
        self._signature = signature
        self._outputs = outputs
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._idle.put(self._new_runner())

    def _new_runner(self) -> Any:
        interpreter = _interpreter_class()(model_content=self._flatbuffer, num_threads=1)
        return interpreter.get_signature_runner(self._signature)  # keeps its interpreter alive

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            runner = self._idle.get_nowait()
        except queue.Empty:
            runner = self._new_runner()
        try:
            out = runner(**inputs)
            # The runner's output arrays are views of interpreter memory that the next call overwrites.
            return {k: np.array(out[k], copy=True) for k in self._outputs}
        finally:
            self._idle.put(runner)


def _probe(inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """A deterministic batch for every input: zeros, then values spread over several magnitudes."""
    rng = np.random.default_rng(12347)
    feed = {}
    for name, info in inputs.items():
        shape = (PROBE_ROWS, *info.shape[1:])
        x = rng.normal(0.0, 1.0, shape) * rng.choice([1.0, 10.0, 100.0], size=(PROBE_ROWS,) + (1,) * (len(shape) - 1))
        x[0] = 0.0
        feed[name] = x.astype(info.dtype)
    return feed


def convert(path: Path, signature: str, inputs: dict[str, Any], outputs: list[str],
            reference: NumpyFn) -> tuple[LiteSignature, float]:
    """Convert one signature and check it against ``reference``; (runner, max abs difference)."""
    for name, info in inputs.items():
        if info.dtype != np.float32 or info.shape is None or not info.shape or info.shape[0] is not None \
                or any(d is None for d in info.shape[1:]):
            raise LiteUnavailable(f"input {name!r} is not a float32 batch of fixed shape")
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(path), signature_keys=[signature])
        flatbuffer = converter.convert()
        runner = LiteSignature(flatbuffer, signature, outputs)
    except Exception as exc:  # noqa: BLE001 - any converter failure means: stay on TensorFlow
        raise LiteUnavailable(f"conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    feed = _probe(inputs)
    want = reference(feed)
    try:
        got = runner(feed)
    except Exception as exc:  # noqa: BLE001
        raise LiteUnavailable(f"probe run failed: {type(exc).__name__}: {exc}") from None
    worst = 0.0
    for name in outputs:
        a, b = np.asarray(want[name], dtype=np.float64), np.asarray(got.get(name), dtype=np.float64)
        if a.shape != b.shape:
            raise LiteUnavailable(f"output {name!r} has shape {b.shape}, TensorFlow gives {a.shape}")
        scale = max(1.0, float(np.abs(a).max()))
        if not np.allclose(b, a, rtol=RTOL, atol=ATOL_SCALE * scale):
            raise LiteUnavailable(f"output {name!r} differs from TensorFlow by up to {np.abs(a - b).max():.3g}")
        worst = max(worst, float(np.abs(a - b).max()))
    return runner, worst
