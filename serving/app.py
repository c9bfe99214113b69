"""The model server as a plain ASGI application (no framework: routing is three regular expressions).

Endpoints (TensorFlow Serving's REST API, same paths, bodies, status codes):

* ``GET  /v1/models/<name>[/versions/<v>|/labels/<l>]``            model version status
* ``GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata``   signature metadata
* ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict``    predict (row or columnar format)
* ``GET  /monitoring/prometheus/metrics``                           Prometheus metrics

Anything a client can send gets a JSON answer with a 4xx status; a 500 means a bug in the server.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import orjson

from serving.metrics import ServerMetrics
from serving.repository import ModelManager
from serving.rest import ServingError, encode_predict, error_body, parse_predict

log = logging.getLogger("serving.app")

PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.I)
STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.I)
METRICS_PATH = "/monitoring/prometheus/metrics"
JSON_HEADERS = [(b"content-type", b"application/json")]
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DRAIN_LIMIT = 256 * 1024 * 1024  # read (and drop) an oversized body up to this size so the client sees the 413


class ClientGone(Exception):
    """The client disconnected before the request body was complete."""


class AccessLog:
    """Structured access log: one JSON object per request, written in batches (cheap per request)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self._buf: list[bytes] = []

    def write(self, record: dict[str, Any]) -> None:
        self._buf.append(orjson.dumps(record) + b"\n")
        if len(self._buf) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass


class ServingApp:
    """ASGI application serving a ``ModelManager``'s models."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        batching: bool = True,
        max_batch_rows: int = 2048,
        inline_rows: int = 64,
        access_log: AccessLog | None = None,
        inference_threads: int = 2,
    ):
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        self.batching = batching
        self.max_batch_rows = max_batch_rows
        self.inline_rows = inline_rows
        self.access_log = access_log
        self.metrics = ServerMetrics()
        self.executor = ThreadPoolExecutor(max_workers=inference_threads, thread_name_prefix="inference")
        self._started = False
        self._flusher: asyncio.Task | None = None
        self.metrics.gauges = self._model_gauges
        manager.on_change = lambda: self._started and self._after_models_changed()

    # -------------------------------------------------------------------------------- lifecycle
    def _model_gauges(self) -> dict[str, tuple[int, int]]:
        out = {}
        for name in self.manager.model_names():
            serving = self.manager.serving_versions(name)
            out[name] = (len(serving), max(serving) if serving else 0)
        return out

    @staticmethod
    def _after_models_changed() -> None:
        """Collect the unloaded versions' garbage once, then freeze what is left.

        With TensorFlow loaded the heap holds ~400k objects and a full collection takes ~0.25 s: left to
        itself, Python would run one at random moments, each a 250 ms stall for every request in
        flight. Frozen objects are skipped by the collector; only model swaps pay for a collection.
        """
        if os.environ.get("GF_SERVING_GC_FREEZE", "1") == "0":
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    async def startup(self) -> None:
        if not self._started:
            await asyncio.get_running_loop().run_in_executor(None, self.manager.start)
            self._started = True
            self._after_models_changed()
            names = self.manager.model_names()
            log.info("serving %d model(s): %s", len(names), ", ".join(
                f"{n} (versions {self.manager.serving_versions(n)})" for n in names) or "none")
        if self.access_log is not None and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.access_log:
                self.access_log.flush()

    async def shutdown(self) -> None:
        if self._flusher:
            self._flusher.cancel()
        self.manager.stop()
        if self.access_log:
            self.access_log.flush()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------------------------- HTTP
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _read_body(self, scope, receive) -> bytes:
        length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ServingError(400, "invalid Content-Length header") from None
                break
        limit = self.max_body_bytes
        too_large = length is not None and length > limit
        if too_large and length > DRAIN_LIMIT:
            raise ServingError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                too_large = True
                if size > DRAIN_LIMIT:
                    break
            if not too_large:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if too_large:
            raise ServingError(413, f"request body of {length or size} bytes exceeds the limit of {limit} bytes")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _http(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        model, api, version, rows, size_in = "-", "other", None, 0, 0
        headers = JSON_HEADERS
        try:
            if path.startswith("/v1/") or path == "/v1":
                if method == "POST" and (m := PREDICT_RE.fullmatch(path)):
                    name, ver, label, verb = m.groups()
                    model, api = name, verb.lower()
                    body = await self._read_body(scope, receive)
                    size_in = len(body)
                    status, payload, version, rows = await self._predict(name, ver, label, api, body)
                elif method == "GET" and (m := STATUS_RE.fullmatch(path)):
                    name, ver, label, sub = m.groups()
                    api = "metadata" if sub else "status"
                    model = name or "-"
                    status, payload = self._get(name, ver, label, bool(sub))
                else:
                    raise ServingError(400, f"Malformed request: {method} {path}")
            elif path == METRICS_PATH and method == "GET":
                api = "metrics"
                status, payload = 200, self.metrics.render()
                headers = [(b"content-type", self.metrics.content_type.encode())]
            else:
                raise ServingError(404, f"Not found: {method} {path} (the API is under /v1/models/)")
        except ServingError as exc:
            status, payload = exc.status, error_body(exc.message)
        except ClientGone:
            return
        except Exception as exc:  # noqa: BLE001 - a server bug: log it, answer 500, keep serving
            log.exception("internal error on %s %s", method, path)
            status, payload = 500, error_body(f"Internal error: {type(exc).__name__}")
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(payload)).encode())],
        })
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - t0
        known = model if model == "-" or self.manager.has_model(model) else "_unknown"
        self.metrics.observe(known, api, status, elapsed)
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.write({
                "ts": round(time.time(), 6),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "method": method,
                "path": path,
                "status": status,
                "model": model,
                "version": version,
                "instances": rows,
                "bytes_in": size_in,
                "bytes_out": len(payload),
                "ms": round(elapsed * 1e3, 3),
            })

    # ---------------------------------------------------------------------------------- handlers
    def _get(self, name: str | None, ver: str | None, label: str | None, metadata: bool) -> tuple[int, bytes]:
        if not name:
            raise ServingError(400, "Missing model name in request.")
        version = int(ver) if ver is not None else None
        if metadata:
            servable = self.manager.resolve(name, version, label)
            doc = {
                "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": servable.metadata()}},
            }
            return 200, orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return 200, orjson.dumps({"model_version_status": self.manager.status(name, version, label)},
                                 option=orjson.OPT_INDENT_2)

    async def _predict(self, name: str, ver: str | None, label: str | None, verb: str, body: bytes):
        servable = self.manager.resolve(name, int(ver) if ver is not None else None, label)
        if verb != "predict":
            raise ServingError(
                400, f"Expected {verb} signature method_name to be tensorflow/serving/{verb}: "
                f"model {name} has predict signatures only; use :predict"
            )
        req = parse_predict(body, servable)
        info = req.signature.single_input
        try:
            if self.batching and info is not None and info.batchable:
                batcher = servable._batchers.get(req.signature.name) or servable.batcher(
                    req.signature.name, self.executor, self.max_batch_rows, self.inline_rows,
                    self.metrics.batch_observer(name),
                )
                outputs = await batcher.submit(req.inputs[info.name])
            elif req.rows <= self.inline_rows:
                outputs = servable.run(req.signature.name, req.inputs)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self.executor, servable.run, req.signature.name, req.inputs)
        except ServingError:
            raise
        except Exception as exc:
            if type(exc).__name__ in ("InvalidArgumentError", "ValueError", "TypeError"):
                raise ServingError(400, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]) from None
            raise
        self.metrics.count_instances(name, req.rows)
        return 200, encode_predict(req, outputs), servable.version, req.rows


def stdout_access_log() -> AccessLog:
    return AccessLog(sys.stdout.buffer)
