"""A loaded SavedModel version: its signatures, TF Serving metadata, and a micro-batcher.

TensorFlow is imported lazily (inside ``load_servable``), so importing this module stays cheap. Each
signature runs on TFLite where that gives TensorFlow's answers (``serving.lite``), else on TensorFlow.

Batching: every model call has a fixed cost (~0.2 ms for TensorFlow, a few µs for TFLite) besides
its per-row cost, so concurrent small requests for the same model version are coalesced. The batcher never waits on a
timer: while one batch runs in the inference thread, the requests that arrive queue up and go together
in the next call ("natural" batching), so a lone request pays no added latency and a burst of
concurrent ones shares one call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.lite import NumpyFn

log = logging.getLogger("serving.runtime")

_TF_DTYPES = {
    "float32": ("DT_FLOAT", np.float32),
    "float64": ("DT_DOUBLE", np.float64),
    "float16": ("DT_HALF", np.float16),
    "int32": ("DT_INT32", np.int32),
    "int64": ("DT_INT64", np.int64),
    "int16": ("DT_INT16", np.int16),
    "int8": ("DT_INT8", np.int8),
    "uint8": ("DT_UINT8", np.uint8),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None: unknown rank

    @property
    def batchable(self) -> bool:
        return bool(self.shape) and self.shape[0] is None


@dataclass
class Signature:
    name: str
    inputs: dict[str, TensorInfo]
    outputs: list[str]
    run: NumpyFn  # numpy in, numpy out
    engine: str = "tensorflow"  # or "tflite"

    @property
    def single_input(self) -> TensorInfo | None:
        return next(iter(self.inputs.values())) if len(self.inputs) == 1 else None


class Servable:
    """One loaded version of one model."""

    def __init__(self, name: str, version: int, path: Path, loaded: Any, signatures: dict[str, Signature]):
        self.name = name
        self.version = version
        self.path = path
        self._loaded = loaded  # keeps the TF objects (variables, functions) alive
        self.signatures = signatures
        self._batchers: dict[str, Batcher] = {}
        self._metadata: dict[str, Any] | None = None

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call a signature synchronously (numpy in, numpy out)."""
        return self.signatures[signature].run(inputs)

    def batcher(self, signature: str, executor: ThreadPoolExecutor, max_rows: int, inline_rows: int,
                on_batch: Callable[[int], None] | None = None) -> Batcher:
        b = self._batchers.get(signature)
        if b is None:
            info = self.signatures[signature].single_input
            assert info is not None
            b = self._batchers[signature] = Batcher(
                lambda x, _s=signature, _n=info.name: self.run(_s, {_n: x}), executor, max_rows, inline_rows,
                on_batch,
            )
        return b

    def metadata(self) -> dict[str, Any]:
        """The ``signature_def`` map as TF Serving's metadata endpoint prints it (from saved_model.pb)."""
        if self._metadata is None:
            self._metadata = signature_def_json(self.path)
        return self._metadata

    def warmup(self) -> None:
        """Run each signature once on zeros so the first client request pays no tracing cost."""
        for name, sig in self.signatures.items():
            if all(t.shape is not None and all(d is not None for d in t.shape[1:]) for t in sig.inputs.values()):
                feed = {k: np.zeros((1, *t.shape[1:]), dtype=t.dtype) for k, t in sig.inputs.items()}
                self.run(name, feed)


def signature_def_json(path: Path) -> dict[str, Any]:
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    graph = next((m for m in sm.meta_graphs if "serve" in m.meta_info_def.tags), sm.meta_graphs[0])
    out = {}
    for key, sig in graph.signature_def.items():
        try:
            out[key] = json_format.MessageToDict(
                sig, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        except TypeError:  # protobuf < 5
            out[key] = json_format.MessageToDict(
                sig, preserving_proto_field_name=True, including_default_value_fields=True
            )
    return out


def _tensorflow_fn(fn: Any, outputs: list[str]) -> NumpyFn:
    import tensorflow as tf

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: out[k].numpy() for k in outputs}

    return run


def load_servable(name: str, version: int, path: Path, engine: str = "auto") -> Servable:
    """``tf.saved_model.load`` a version directory and describe its signatures; raises on failure.

    ``engine``: ``auto`` runs each signature on TFLite when it converts and agrees with TensorFlow,
    ``tflite`` requires that (the load fails otherwise), ``tensorflow`` never converts.
    """
    import tensorflow as tf

    from serving import lite

    if engine not in lite.ENGINES:
        raise ValueError(f"engine must be one of {', '.join(lite.ENGINES)}, got {engine!r}")

    loaded = tf.saved_model.load(str(path), tags=["serve"])
    signatures: dict[str, Signature] = {}
    for sig_name, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        inputs = {}
        for in_name, spec in kwargs.items():
            dtype_name = spec.dtype.name
            if dtype_name not in _TF_DTYPES:
                raise ValueError(f"signature {sig_name!r} input {in_name!r}: dtype {dtype_name} is not supported")
            shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
            inputs[in_name] = TensorInfo(in_name, np.dtype(_TF_DTYPES[dtype_name][1]), shape)
        outputs = sorted(fn.structured_outputs)
        sig = signatures[sig_name] = Signature(sig_name, inputs, outputs, _tensorflow_fn(fn, outputs))
        if engine == "tensorflow":
            continue
        try:
            runner, diff = lite.convert(Path(path), sig_name, inputs, outputs, sig.run)
        except lite.LiteUnavailable as exc:
            if engine == "tflite":
                raise ValueError(f"signature {sig_name!r} cannot run on TFLite: {exc}") from None
            log.info("model %s version %d signature %s: TensorFlow (%s)", name, version, sig_name, exc)
            continue
        sig.run, sig.engine = runner, "tflite"
        log.info("model %s version %d signature %s: TFLite (max difference from TensorFlow %.2g on the probe)",
                 name, version, sig_name, diff)
    if not signatures:
        raise ValueError(f"{path}: the SavedModel has no signatures")
    servable = Servable(name, version, Path(path), loaded, signatures)
    servable.warmup()
    return servable


class Batcher:
    """Coalesces concurrent single-input requests of one signature into one model call.

    ``submit`` must be called on the event loop. Batches below ``inline_rows`` rows run right on the
    loop (a thread hand-off costs more than the call); larger ones run in the inference thread so the
    loop keeps accepting and parsing requests meanwhile.
    """

    def __init__(self, run: Callable[[np.ndarray], dict[str, np.ndarray]], executor: ThreadPoolExecutor,
                 max_rows: int = 2048, inline_rows: int = 0, on_batch: Callable[[int], None] | None = None):
        self._run = run
        self._on_batch = on_batch
        self._executor = executor
        self.max_rows = max_rows
        self.inline_rows = inline_rows
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._busy = False
        self._scheduled = False
        self.calls = 0
        self.rows = 0

    async def submit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((x, fut))
        if not self._busy and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        return await fut

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        items, rows = [], 0
        while self._pending:
            x, fut = self._pending[0]
            if items and rows + len(x) > self.max_rows:
                break
            self._pending.pop(0)
            if fut.cancelled():
                continue
            items.append((x, fut))
            rows += len(x)
        return items

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if self._busy:
            return
        items = self._take()
        if not items:
            return
        xs = [x for x, _ in items]
        batch = xs[0] if len(xs) == 1 else np.concatenate(xs)
        self.calls += 1
        self.rows += len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch))
        if len(batch) <= self.inline_rows:
            try:
                result = self._run(batch)
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                self._deliver(items, None, exc)
            else:
                self._deliver(items, result, None)
            if self._pending and not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush, loop)
            return
        self._busy = True
        cfut = loop.run_in_executor(self._executor, self._run, batch)
        cfut.add_done_callback(lambda f: self._done(loop, items, f))

    def _done(self, loop: asyncio.AbstractEventLoop, items, f: asyncio.Future) -> None:
        self._busy = False
        exc = f.exception()
        self._deliver(items, None if exc else f.result(), exc)
        if self._pending and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    @staticmethod
    def _deliver(items, result: dict[str, np.ndarray] | None, exc: BaseException | None) -> None:
        if exc is not None:
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(exc)
            return
        assert result is not None
        start = 0
        for x, fut in items:
            end = start + len(x)
            if not fut.done():
                fut.set_result({k: v[start:end] for k, v in result.items()})
            start = end
