"""The project configuration: one file (`glucose-forecast.toml`) read by every part.

Lookup order for the file: the ``path`` argument, ``$GLUCOSE_FORECAST_CONFIG``, then
``glucose-forecast.toml`` in the current directory or the repository root. Single values can be
overridden by environment variables (``GF_GATEWAY_PORT``, ``GF_SERVER_PORTS``, ``GF_WEBAPP_PORT``,
``GF_MODELS_DIR``, ``GF_TUNING_PRESET``); the config is validated as a whole and every problem is
reported with the field that holds it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_NAME = "glucose-forecast.toml"
ENV_CONFIG = "GLUCOSE_FORECAST_CONFIG"

# A patient id is a model name, a URL path segment and part of Kubernetes object names:
# a DNS-1123 label, short enough to leave room for suffixes such as "-serving".
PATIENT_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
READERS = ("hupa", "ohio", "canonical")
CARB_UNITS = {"g": 1.0, "portion": 10.0}
PARAMETER_NAMES = ("learning_rate", "dense1", "dense2", "epochs")


class ConfigError(InputError):
    """The configuration is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Patient:
    id: str
    file: Path
    reader: str
    carb_unit: str = "g"
    test_file: Path | None = None  # e.g. OhioT1DM <id>-ws-testing.xml

    @property
    def carb_scale(self) -> float:
        """Grams per logged carbohydrate unit."""
        return CARB_UNITS[self.carb_unit]


@dataclass(frozen=True)
class SeriesSpec:
    interval_minutes: int = 5
    features: tuple[str, ...] = ("glucose", "insulin", "carbs")
    window: int = 15
    horizon: int = 6
    max_fill_minutes: int = 15
    hidden_gap_minutes: int = 60

    @property
    def max_fill_steps(self) -> int:
        return self.max_fill_minutes // self.interval_minutes


@dataclass(frozen=True)
class SplitSpec:
    test_fraction: float = 0.3
    validation_fraction: float = 0.2


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float = 0.001
    dense1: int = 64
    dense2: int = 32
    epochs: int = 30
    seed: int = 12347

    def as_dict(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "dense1": self.dense1,
            "dense2": self.dense2,
            "epochs": self.epochs,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class TrainingSpec:
    population_pretraining: bool = True
    finetune_lr_factor: float = 0.33
    l2: float = 0.001
    patience: int = 8
    batch_size: int = 32
    ridge_init: bool = True  # start the output layer at ridge regression, the hidden path at zero
    ridge_alpha: float = 1.0  # its L2 penalty (on the normalised window)


@dataclass(frozen=True)
class TuningSpec:
    preset: str = "default"
    random_state: int = 12347
    max_trial_count: int = 10
    parallel_trial_count: int = 2
    max_failed_trial_count: int = 3
    goal: float = 25.0


@dataclass(frozen=True)
class Ports:
    container: int = 8501
    servers: tuple[int, ...] = (8601, 8602)
    gateway: int = 8080
    webapp: int = 8501


@dataclass(frozen=True)
class Images:
    registry: str = "glucose-forecast"
    serving_base: str = "tensorflow/serving:2.20.0"
    tag: str = "v1"


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    series: SeriesSpec
    split: SplitSpec
    model: Hyperparameters
    training: TrainingSpec
    tuning: TuningSpec
    search: dict[str, dict[str, dict[str, Any]]]
    ports: Ports
    images: Images
    patients: tuple[Patient, ...]
    models_dir: Path = field(default=Path("models"))

    @property
    def patient_ids(self) -> list[str]:
        return [p.id for p in self.patients]

    def patient(self, patient_id: str) -> Patient:
        for p in self.patients:
            if p.id == patient_id:
                return p
        raise ConfigError(f"unknown patient {patient_id!r}; configured: {', '.join(self.patient_ids)}")

    def search_space(self, preset: str | None = None) -> dict[str, dict[str, Any]]:
        name = preset or self.tuning.preset
        if name not in self.search:
            raise ConfigError(f"{self.path}: [search.{name}] not found; presets: {', '.join(self.search)}")
        return self.search[name]


def find_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    for candidate in (Path.cwd() / CONFIG_NAME, REPO_ROOT / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{CONFIG_NAME} not found in {Path.cwd()} or {REPO_ROOT}; set {ENV_CONFIG}")


def validate_patient_id(pid: Any, where: str = "patient id") -> str:
    if not isinstance(pid, str) or not PATIENT_ID_RE.match(pid):
        raise ConfigError(
            f"{where}: {pid!r} is not a valid patient id: use 1-40 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it is a Kubernetes name and a URL path segment)"
        )
    return pid


def _section(raw: dict[str, Any], name: str, cls: type, where: Path) -> Any:
    values = raw.get(name, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    known = set(cls.__dataclass_fields__)
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: [{name}] has unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    defaults = cls()
    out = {}
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is tuple:
            if not isinstance(value, list):
                raise ConfigError(f"{where}: [{name}].{key} must be a list")
            value = tuple(value)
        elif expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(f"{where}: [{name}].{key} must be {expected.__name__}, got {value!r}")
        out[key] = value
    return cls(**out)


def _validate_search(search: Any, where: Path) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(search, dict) or not search:
        raise ConfigError(f"{where}: [search.<preset>] tables are required")
    for preset, space in search.items():
        missing = set(PARAMETER_NAMES) - set(space)
        if missing:
            raise ConfigError(f"{where}: [search.{preset}] lacks parameter(s) {sorted(missing)}")
        for pname, spec in space.items():
            loc = f"{where}: search.{preset}.{pname}"
            if pname not in PARAMETER_NAMES:
                raise ConfigError(f"{loc}: unknown parameter; tunable: {', '.join(PARAMETER_NAMES)}")
            kind = spec.get("type")
            if kind in ("double", "int"):
                if "min" not in spec or "max" not in spec:
                    raise ConfigError(f"{loc}: {kind} needs min and max")
                if spec["min"] > spec["max"]:
                    raise ConfigError(f"{loc}: min {spec['min']} > max {spec['max']}")
            elif kind in ("discrete", "categorical"):
                if not spec.get("values"):
                    raise ConfigError(f"{loc}: {kind} needs a non-empty values list")
            else:
                raise ConfigError(f"{loc}: type must be double, int, discrete or categorical, got {kind!r}")
    return search


def _env_overrides(ports: Ports, tuning: TuningSpec) -> tuple[Ports, TuningSpec]:
    def port(name: str, value: int) -> int:
        raw = os.environ.get(name)
        if raw is None:
            return value
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"environment {name}={raw!r}: not a TCP port")
        return int(raw)

    servers = ports.servers
    if os.environ.get("GF_SERVER_PORTS"):
        raw = os.environ["GF_SERVER_PORTS"]
        parts = [p.strip() for p in raw.split(",")]
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in parts):
            raise ConfigError(f"environment GF_SERVER_PORTS={raw!r}: expected comma-separated TCP ports, e.g. 8601,8602")
        servers = tuple(int(p) for p in parts)
    ports = Ports(
        container=ports.container,
        servers=servers,
        gateway=port("GF_GATEWAY_PORT", port("GATEWAY_PORT", ports.gateway)),
        webapp=port("GF_WEBAPP_PORT", ports.webapp),
    )
    if os.environ.get("GF_TUNING_PRESET"):
        tuning = TuningSpec(**{**tuning.__dict__, "preset": os.environ["GF_TUNING_PRESET"]})
    return ports, tuning


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the offending field."""
    root = path.resolve().parent
    series = _section(raw, "series", SeriesSpec, path)
    # The readers produce exactly these three; the order is free.
    if sorted(series.features) != ["carbs", "glucose", "insulin"]:
        raise ConfigError(f"{path}: [series].features must be a permutation of glucose, insulin, carbs")
    if series.window < 2 or series.horizon < 1:
        raise ConfigError(f"{path}: [series] window must be >= 2 and horizon >= 1")
    split = _section(raw, "split", SplitSpec, path)
    for name in ("test_fraction", "validation_fraction"):
        if not 0 < getattr(split, name) < 1:
            raise ConfigError(f"{path}: [split].{name} must be between 0 and 1")
    model = _section(raw, "model", Hyperparameters, path)
    training = _section(raw, "training", TrainingSpec, path)
    for name, low in (("finetune_lr_factor", 0.0), ("ridge_alpha", 0.0), ("patience", 0), ("batch_size", 0)):
        if not getattr(training, name) > low:
            raise ConfigError(f"{path}: [training].{name} must be > {low:g}, got {getattr(training, name)!r}")
    if training.l2 < 0:
        raise ConfigError(f"{path}: [training].l2 must be >= 0, got {training.l2!r}")
    tuning = _section(raw, "tuning", TuningSpec, path)
    ports = _section(raw, "ports", Ports, path)
    images = _section(raw, "images", Images, path)
    ports, tuning = _env_overrides(ports, tuning)
    search = _validate_search(raw.get("search"), path)
    if tuning.preset not in search:
        raise ConfigError(f"{path}: [tuning].preset {tuning.preset!r} is not one of {sorted(search)}")

    entries = raw.get("patients")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: at least one [[patients]] entry is required")
    patients: list[Patient] = []
    for i, entry in enumerate(entries):
        where = f"{path}: patients[{i}]"
        unknown = set(entry) - {"id", "file", "reader", "carb_unit", "test_file"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        pid = validate_patient_id(entry.get("id"), f"{where}.id")
        if pid in {p.id for p in patients}:
            raise ConfigError(f"{where}.id: duplicate patient id {pid!r}")
        if entry.get("reader") not in READERS:
            raise ConfigError(f"{where}.reader: must be one of {', '.join(READERS)}, got {entry.get('reader')!r}")
        if entry.get("carb_unit", "g") not in CARB_UNITS:
            raise ConfigError(f"{where}.carb_unit: must be one of {', '.join(CARB_UNITS)}")
        if not isinstance(entry.get("file"), str):
            raise ConfigError(f"{where}.file: a path to the patient's data file is required")
        test_file = entry.get("test_file")
        patients.append(
            Patient(
                id=pid,
                file=(root / entry["file"]),
                reader=entry["reader"],
                carb_unit=entry.get("carb_unit", "g"),
                test_file=(root / test_file) if test_file else None,
            )
        )
    models_dir = Path(os.environ.get("GF_MODELS_DIR", root / "models"))
    return Config(path, root, series, split, model, training, tuning, search, ports, images, tuple(patients), models_dir)


@lru_cache(maxsize=8)
def _load_cached(path: Path, mtime: float, env_key: tuple[tuple[str, str], ...]) -> Config:
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, path)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the project configuration (cached per file version and GF_* env)."""
    p = find_config_path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    env_key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("GF_") or k == "GATEWAY_PORT"))
    return _load_cached(p.resolve(), p.stat().st_mtime, env_key)
