"""TensorFlow Serving's ``models.config``: the ``model_config_list`` protobuf text format.

The same file configures the production ``tensorflow_model_server --model_config_file=...`` and the
local server. Supported (the fields TF Serving's ``ModelConfig`` uses for SavedModels)::

    model_config_list {
      config {
        name: "hupa0002p"
        base_path: "/models/hupa0002p"
        model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 1 } }   # or all {} / specific { versions: 3 }
        version_labels { key: "stable" value: 3 }
      }
    }

Unknown fields are errors naming the line, as TF Serving rejects them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError


class ModelConfigError(ConfigError):
    """A models.config file is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served (TF Serving's ``ServableVersionPolicy``)."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those present on disk (sorted ascending)."""
        present = sorted(available)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return [v for v in present if v in self.versions]
        return present[-self.num_versions :] if present else []

    def render(self) -> str:
        if self.kind == "all":
            return "all {}"
        if self.kind == "specific":
            return "specific { " + " ".join(f"versions: {v}" for v in self.versions) + " }"
        return f"latest {{ num_versions: {self.num_versions} }}"


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its name, where its numbered version directories live, and the policy."""

    name: str
    base_path: Path
    platform: str = "tensorflow"
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: tuple[tuple[str, int], ...] = ()

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)


# --------------------------------------------------------------------------------------------- lexer
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:;,\[\]])
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    text: str
    line: int


def _tokens(text: str, source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ModelConfigError(f"{source}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return out


def _unquote(tok: _Tok, source: str) -> str:
    body = tok.text[1:-1]
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"{source}:{tok.line}: bad escape in string {tok.text}") from exc


class _Parser:
    """Generic text-format parser producing [(field, value, line)], value a scalar token or a sub-list."""

    def __init__(self, tokens: list[_Tok], source: str):
        self.toks, self.i, self.source = tokens, 0, source

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _next(self, what: str) -> _Tok:
        tok = self._peek()
        if tok is None:
            last = self.toks[-1].line if self.toks else 1
            raise ModelConfigError(f"{self.source}:{last}: unexpected end of file, expected {what}")
        self.i += 1
        return tok

    def message(self, close: str | None) -> list[tuple[str, Any, int]]:
        fields: list[tuple[str, Any, int]] = []
        while True:
            tok = self._peek()
            if tok is None:
                if close:
                    self._next(f"'{close}'")
                return fields
            if tok.kind == "punct" and tok.text == close:
                self.i += 1
                return fields
            if tok.kind == "punct" and tok.text in ",;":
                self.i += 1
                continue
            name = self._next("a field name")
            if name.kind != "ident":
                raise ModelConfigError(f"{self.source}:{name.line}: expected a field name, got {name.text!r}")
            tok = self._next(f"':' or '{{' after {name.text}")
            if tok.kind == "punct" and tok.text == ":":
                tok = self._next(f"a value for {name.text}")
            if tok.kind == "punct" and tok.text in "{<":
                fields.append((name.text, self.message("}" if tok.text == "{" else ">"), name.line))
            elif tok.kind == "punct" and tok.text == "[":
                while True:
                    item = self._next(f"a list item for {name.text}")
                    if item.kind == "punct" and item.text == "]":
                        break
                    if item.kind == "punct" and item.text == ",":
                        continue
                    fields.append((name.text, item, name.line))
            elif tok.kind in ("str", "num", "ident"):
                fields.append((name.text, tok, name.line))
            else:
                raise ModelConfigError(f"{self.source}:{tok.line}: unexpected {tok.text!r} after {name.text}")


# ------------------------------------------------------------------------------------ interpretation
def _check_fields(fields: list[tuple[str, Any, int]], allowed: set[str], where: str, source: str) -> None:
    for name, _value, line in fields:
        if name not in allowed:
            raise ModelConfigError(
                f"{source}:{line}: unknown field {name!r} in {where}; known: {', '.join(sorted(allowed))}"
            )


def _scalar(value: Any, kind: str, name: str, line: int, source: str) -> Any:
    if isinstance(value, list):
        raise ModelConfigError(f"{source}:{line}: {name} must be a {kind}, not a message")
    if kind == "string":
        if value.kind != "str":
            raise ModelConfigError(f"{source}:{line}: {name} must be a quoted string, got {value.text}")
        return _unquote(value, source)
    if kind == "int":
        if value.kind != "num" or not re.fullmatch(r"[-+]?\d+", value.text):
            raise ModelConfigError(f"{source}:{line}: {name} must be an integer, got {value.text}")
        return int(value.text)
    return value.text  # enum identifier


def _message(value: Any, name: str, line: int, source: str) -> list[tuple[str, Any, int]]:
    if not isinstance(value, list):
        raise ModelConfigError(f"{source}:{line}: {name} must be a message {{ ... }}")
    return value


def _policy(fields: list[tuple[str, Any, int]], source: str) -> VersionPolicy:
    _check_fields(fields, {"latest", "all", "specific"}, "model_version_policy", source)
    if len(fields) != 1:
        line = fields[0][2] if fields else 0
        raise ModelConfigError(f"{source}:{line}: model_version_policy needs exactly one of latest, all, specific")
    kind, value, line = fields[0]
    body = _message(value, kind, line, source)
    if kind == "all":
        _check_fields(body, set(), "all", source)
        return VersionPolicy("all")
    if kind == "latest":
        _check_fields(body, {"num_versions"}, "latest", source)
        n = [_scalar(v, "int", k, ln, source) for k, v, ln in body] or [1]
        if n[-1] < 1:
            raise ModelConfigError(f"{source}:{line}: latest.num_versions must be >= 1")
        return VersionPolicy("latest", num_versions=n[-1])
    _check_fields(body, {"versions"}, "specific", source)
    versions = tuple(_scalar(v, "int", k, ln, source) for k, v, ln in body)
    if not versions:
        raise ModelConfigError(f"{source}:{line}: specific needs at least one versions: N")
    return VersionPolicy("specific", versions=versions)


def _resolve_base(raw: str, base_dir: Path | None, models_dir: Path | None, name: str) -> Path:
    """Where base_path points on this machine.

    Relative paths are relative to the config file's directory. An absolute path that does not exist
    here (e.g. ``/models/<name>``, the container mount point) is mapped to ``<models_dir>/<last part>``
    when a local models directory is given, so one file serves both the image and the local server.
    """
    path = Path(raw)
    if not path.is_absolute():
        return ((base_dir or Path.cwd()) / path).resolve()
    if not path.exists() and models_dir is not None:
        return Path(models_dir) / path.name
    return path


_CONFIG_FIELDS = {
    "name",
    "base_path",
    "model_type",
    "model_platform",
    "model_version_policy",
    "version_labels",
    "logging_config",
}


def parse_model_config(
    text: str, *, source: str = "models.config", base_dir: Path | None = None, models_dir: Path | None = None
) -> list[ModelSpec]:
    """Parse a ``model_config_list`` text proto into model specs; errors name line and field."""
    fields = _Parser(_tokens(text, source), source).message(None)
    _check_fields(fields, {"model_config_list"}, "ModelServerConfig", source)
    specs: list[ModelSpec] = []
    for _, top, line in fields:
        for name, value, cline in _message(top, "model_config_list", line, source):
            if name != "config":
                raise ModelConfigError(f"{source}:{cline}: unknown field {name!r} in model_config_list; known: config")
            body = _message(value, "config", cline, source)
            _check_fields(body, _CONFIG_FIELDS, "config", source)
            spec: dict[str, Any] = {"labels": []}
            for key, val, ln in body:
                if key in ("name", "base_path", "model_platform"):
                    spec[key] = _scalar(val, "string", key, ln, source)
                elif key == "model_version_policy":
                    spec["policy"] = _policy(_message(val, key, ln, source), source)
                elif key == "version_labels":
                    entry = _message(val, key, ln, source)
                    _check_fields(entry, {"key", "value"}, "version_labels", source)
                    kv = {k: (v, eln) for k, v, eln in entry}
                    if set(kv) != {"key", "value"}:
                        raise ModelConfigError(f"{source}:{ln}: version_labels needs key and value")
                    label = _scalar(kv["key"][0], "string", "key", kv["key"][1], source)
                    spec["labels"].append((label, _scalar(kv["value"][0], "int", "value", kv["value"][1], source)))
                # model_type (deprecated) and logging_config are accepted and ignored.
            where = f"{source}:{cline}: config"
            if not spec.get("name"):
                raise ModelConfigError(f"{where}: name is required")
            if not spec.get("base_path"):
                raise ModelConfigError(f"{where} {spec['name']!r}: base_path is required")
            if spec["name"] in {s.name for s in specs}:
                raise ModelConfigError(f"{where}: duplicate model name {spec['name']!r}")
            platform = spec.get("model_platform", "tensorflow")
            if platform != "tensorflow":
                raise ModelConfigError(f"{where} {spec['name']!r}: model_platform {platform!r} is not supported")
            specs.append(
                ModelSpec(
                    name=spec["name"],
                    base_path=_resolve_base(spec["base_path"], base_dir, models_dir, spec["name"]),
                    platform=platform,
                    policy=spec.get("policy", VersionPolicy()),
                    labels=tuple(spec["labels"]),
                )
            )
    return specs


def load_model_config(path: str | Path, *, models_dir: Path | None = None) -> list[ModelSpec]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ModelConfigError(f"cannot read model config {p}: {exc.strerror}") from exc
    return parse_model_config(text, source=str(p), base_dir=p.resolve().parent, models_dir=models_dir)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_model_config(specs: list[ModelSpec], *, base_paths: dict[str, str] | None = None) -> str:
    """The ``model_config_list`` text for the given models (``base_paths`` overrides the paths written)."""
    lines = ["# TensorFlow Serving model config, written by `glucose-forecast models-config`.", "model_config_list {"]
    for s in specs:
        path = (base_paths or {}).get(s.name, str(s.base_path))
        lines += [
            "  config {",
            f"    name: {_quote(s.name)}",
            f"    base_path: {_quote(path)}",
            f"    model_platform: {_quote(s.platform)}",
            f"    model_version_policy {{ {s.policy.render()} }}",
        ]
        lines += [f"    version_labels {{ key: {_quote(k)} value: {v} }}" for k, v in s.labels]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def specs_from_models_dir(models_dir: Path) -> list[ModelSpec]:
    """Every sub-directory of ``models_dir`` is a model named after it (hidden ones are skipped)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return [
        ModelSpec(name=p.name, base_path=p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_"))
    ]
