"""The model manager: which versions exist on disk, which are loaded, and swapping them while serving.

Like TF Serving's file-system polling: every ``poll_seconds`` each model's ``base_path`` is scanned for
numbered version directories; the version policy picks the ones to serve (latest 1 by default); new
ones are loaded (and warmed up) *before* they take traffic, and versions the policy drops are unloaded
after the switch. Requests in flight on an old version finish on it: they hold a reference to it.

A version directory is only loaded when it is complete and settled: ``saved_model.pb`` present, the
``variables`` index present when the directory has variables, and no file in it changed during a short
settle interval. A failing load is reported in the model status and retried only when the directory
changes, while the previous version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serving.modelconfig import ModelSpec, load_model_config, specs_from_models_dir
from serving.rest import ServingError
from serving.runtime import Servable, load_servable

log = logging.getLogger("serving.models")

# TF Serving's ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Numbered sub-directories holding a SavedModel (hidden/temporary directories are ignored)."""
    out: dict[int, Path] = {}
    try:
        entries = list(Path(base_path).iterdir())
    except OSError:
        return out
    for p in entries:
        if p.name.isdigit() and p.is_dir() and ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()):
            out[int(p.name)] = p
    return out


def fingerprint(path: Path) -> tuple:
    """Names, sizes and modification times of every file under ``path``."""
    items = []
    for f in sorted(Path(path).rglob("*")):
        try:
            st = f.stat()
        except OSError:
            continue
        items.append((str(f.relative_to(path)), st.st_size, st.st_mtime_ns))
    return tuple(items)


def is_complete(path: Path) -> bool:
    variables = Path(path) / "variables"
    if variables.is_dir() and any(variables.iterdir()):
        return (variables / "variables.index").is_file()
    return True


@dataclass
class VersionState:
    version: int
    path: Path
    state: str = START
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None
    failed_fingerprint: tuple | None = None

    def as_json(self) -> dict:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


@dataclass
class ModelState:
    spec: ModelSpec
    versions: dict[int, VersionState] = field(default_factory=dict)
    # What requests see: version -> servable, rebuilt and swapped atomically.
    serving: dict[int, Servable] = field(default_factory=dict)


class ModelManager:
    """Holds every model's versions; ``poll_once`` reconciles with the disk (thread-safe)."""

    def __init__(
        self,
        *,
        models_dir: Path | None = None,
        model_config: Path | None = None,
        specs: list[ModelSpec] | None = None,
        poll_seconds: float = 2.0,
        settle_seconds: float = 0.2,
        loader: Callable[[str, int, Path], Servable] = load_servable,
    ):
        if models_dir is None and model_config is None and specs is None:
            raise ValueError("give a models directory, a model config file or model specs")
        self._fixed_specs = specs
        self.models_dir = Path(models_dir) if models_dir else None
        self.model_config = Path(model_config) if model_config else None
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self._loader = loader
        self._models: dict[str, ModelState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_mtime: float | None = None
        self.on_change: Callable[[], None] | None = None

    # ------------------------------------------------------------------------------ configuration
    def _specs(self) -> list[ModelSpec]:
        if self._fixed_specs is not None:
            return list(self._fixed_specs)
        if self.model_config is not None:
            return load_model_config(self.model_config, models_dir=self.models_dir)
        assert self.models_dir is not None
        return specs_from_models_dir(self.models_dir)

    def _refresh_specs(self) -> None:
        if self.model_config is not None:
            try:
                mtime = self.model_config.stat().st_mtime
            except OSError as exc:
                if self._config_mtime is None:
                    raise
                log.error("model config %s unreadable (%s); keeping the current models", self.model_config, exc)
                return
            if mtime == self._config_mtime:
                return
            try:
                specs = self._specs()
            except Exception as exc:
                if self._config_mtime is None:
                    raise
                log.error("model config %s is invalid (%s); keeping the current models", self.model_config, exc)
                self._config_mtime = mtime
                return
            self._config_mtime = mtime
        else:
            specs = self._specs()
        wanted = {s.name: s for s in specs}
        with self._lock:
            for name in list(self._models):
                if name not in wanted:
                    log.info("model %s removed from the configuration; unloading", name)
                    state = self._models.pop(name)
                    for vs in state.versions.values():
                        vs.state, vs.servable = END, None
            for name, spec in wanted.items():
                if name in self._models:
                    self._models[name].spec = spec
                else:
                    log.info("model %s: watching %s (policy %s)", name, spec.base_path, spec.policy.render())
                    self._models[name] = ModelState(spec)

    # ------------------------------------------------------------------------------------ polling
    def poll_once(self) -> None:
        """Reconcile every model with its directory: load wanted versions, then unload the rest."""
        self._refresh_specs()
        for name in list(self._models):
            state = self._models.get(name)
            if state is not None:
                self._reconcile(state)

    def _reconcile(self, state: ModelState) -> None:
        name, spec = state.spec.name, state.spec
        on_disk = scan_versions(spec.base_path)
        wanted = spec.policy.select(list(on_disk))
        changed = False
        for v in wanted:
            vs = state.versions.get(v)
            if vs is not None and vs.state == AVAILABLE:
                continue
            path = on_disk[v]
            if vs is not None and vs.failed_fingerprint is not None and vs.failed_fingerprint == fingerprint(path):
                continue  # failed before and unchanged since
            if not is_complete(path):
                log.info("model %s version %d: incomplete (variables index missing); waiting", name, v)
                continue
            fp = fingerprint(path)
            newest = max((m for _, _, m in fp), default=0) / 1e9
            if time.time() - newest < self.settle_seconds:
                time.sleep(self.settle_seconds)
            if fingerprint(path) != fp:
                log.info("model %s version %d: still being written; waiting", name, v)
                continue
            vs = state.versions[v] = VersionState(v, path, LOADING)
            t0 = time.perf_counter()
            try:
                servable = self._loader(name, v, path)
            except Exception as exc:  # noqa: BLE001 - any load failure is reported, the old version stays
                vs.state, vs.error_code = END, "UNKNOWN"
                vs.error_message = f"Failed to load {path}: {type(exc).__name__}: {exc}"[:2000]
                vs.failed_fingerprint = fp
                log.error("model %s version %d: load failed: %s", name, v, exc)
                continue
            vs.servable, vs.state = servable, AVAILABLE
            log.info("model %s version %d: loaded from %s in %.2fs", name, v, path, time.perf_counter() - t0)
            changed = True
        # Switch traffic, then unload what the policy no longer wants.
        serving = {v: vs.servable for v, vs in state.versions.items()
                   if v in wanted and vs.state == AVAILABLE and vs.servable is not None}
        if not serving and state.serving:
            # Nothing wanted is loadable (e.g. the new version failed and the old one was deleted):
            # keep serving what is loaded rather than going dark.
            serving = {v: s for v, s in state.serving.items() if v in on_disk} or state.serving
        for v, vs in state.versions.items():
            if v not in serving and vs.state == AVAILABLE:
                vs.state = UNLOADING
                changed = True
        if serving.keys() != state.serving.keys():
            changed = True
        state.serving = serving
        for v, vs in state.versions.items():
            if vs.state == UNLOADING:
                vs.servable = None
                vs.state = END
                log.info("model %s version %d: unloaded", name, v)
        if changed and self.on_change:
            self.on_change()

    def start(self) -> None:
        """Load everything once (blocking), then keep polling in a background thread."""
        self.poll_once()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="model-poller", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must survive anything on disk
                log.exception("model poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    # ----------------------------------------------------------------------------------- queries
    def model_names(self) -> list[str]:
        return sorted(self._models)

    def has_model(self, name: str) -> bool:
        return name in self._models

    def serving_versions(self, name: str) -> list[int]:
        state = self._models.get(name)
        return sorted(state.serving) if state else []

    def loaded(self) -> list[Servable]:
        return [s for m in list(self._models.values()) for s in m.serving.values()]

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses, with TF Serving's error codes and messages."""
        state = self._models.get(name)
        if label is not None:
            if state is None:
                raise ServingError(404, f"Servable not found for request: Latest({name})")
            labels = state.spec.label_map
            if label not in labels:
                raise ServingError(400, f"Unrecognized servable version label: {label}")
            version = labels[label]
        if state is None:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingError(404, f"Servable not found for request: {what}")
        serving = state.serving
        if version is None:
            if not serving:
                raise ServingError(404, f"Servable not found for request: Latest({name})")
            return serving[max(serving)]
        servable = serving.get(version)
        if servable is None:
            raise ServingError(404, f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[dict]:
        state = self._models.get(name)
        if state is None or not state.versions:
            raise ServingError(404, f"Could not find any versions of model {name}")
        if label is not None:
            labels = state.spec.label_map
            if label not in labels:
                raise ServingError(400, f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is not None:
            vs = state.versions.get(version)
            if vs is None:
                raise ServingError(404, f"Could not find version {version} of model {name}")
            return [vs.as_json()]
        return [vs.as_json() for _, vs in sorted(state.versions.items(), reverse=True)]
