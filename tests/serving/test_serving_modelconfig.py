"""TF Serving's models.config text format: parsing, errors with line numbers, rendering round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.modelconfig import (
    ModelConfigError,
    ModelSpec,
    VersionPolicy,
    load_model_config,
    parse_model_config,
    render_model_config,
)

FULL = """
# a comment
model_config_list {
  config {
    name: 'hupa0002p'
    base_path: "/models/hupa0002p"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 2 versions: 3 } }
    version_labels { key: "stable" value: 2 }
    version_labels { key: "canary" value: 3 }
  }
  config: {
    name: "hupa0003p", base_path: "relative/hupa0003p";
    model_version_policy: { all: {} }
  }
  config < name: "x" base_path: "/abs/x" model_version_policy { latest { num_versions: 2 } } >
}
"""


def test_parses_every_supported_field(tmp_path):
    specs = parse_model_config(FULL, base_dir=tmp_path)
    a, b, c = specs
    assert a.name == "hupa0002p" and a.base_path == Path("/models/hupa0002p")
    assert a.policy == VersionPolicy("specific", versions=(2, 3))
    assert a.label_map == {"stable": 2, "canary": 3}
    assert b.base_path == (tmp_path / "relative" / "hupa0003p").resolve()
    assert b.policy.kind == "all"
    assert c.policy == VersionPolicy("latest", num_versions=2)


def test_container_paths_map_to_a_local_models_dir(tmp_path):
    specs = parse_model_config(FULL, base_dir=tmp_path, models_dir=tmp_path / "models")
    assert specs[0].base_path == tmp_path / "models" / "hupa0002p"  # /models/hupa0002p does not exist here


def test_policy_selection():
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy("latest", num_versions=2).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy("all").select([2, 1]) == [1, 2]
    assert VersionPolicy("specific", versions=(1, 9)).select([1, 2]) == [1]
    assert VersionPolicy().select([]) == []


@pytest.mark.parametrize("text, fragment", [
    ("model_config_list { config { name: 'a' base_path: '/a' colour: 'red' } }", ":1: unknown field 'colour'"),
    ("model_config_list {\n config {\n name: 'a'\n }\n}", "base_path is required"),
    ("model_config_list { config { base_path: '/a' } }", "name is required"),
    ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
     "duplicate model name"),
    ("model_config_list { config { name: 'a' base_path: '/a' ", "unexpected end of file"),
    ("model_config_list { config { name: a base_path: '/a' } }", "quoted string"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_version_policy { latest { num_versions: 0 } } } }",
     "num_versions must be >= 1"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_version_policy { latest {} all {} } } }",
     "exactly one"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }", "not supported"),
    ("model_config_list { config { name: 'a' base_path: '/a' version_labels { key: 'x' } } }", "key and value"),
    ("model_config_list { config { name: 'a' base_path: '/a' } }\n\n  $", ":3: unexpected character"),
    ("custom_model_config { }", "unknown field 'custom_model_config'"),
])
def test_errors_name_the_line_and_field(text, fragment):
    with pytest.raises(ModelConfigError) as info:
        parse_model_config(text, source="models.config")
    assert fragment in str(info.value)
    assert str(info.value).startswith("models.config")


def test_render_round_trip(tmp_path):
    specs = [
        ModelSpec("a", Path("/models/a")),
        ModelSpec("b", Path("/models/b"), policy=VersionPolicy("specific", versions=(1, 4)), labels=(("stable", 4),)),
        ModelSpec("c", Path("/models/c"), policy=VersionPolicy("all")),
    ]
    path = tmp_path / "models.config"
    path.write_text(render_model_config(specs))
    assert load_model_config(path) == specs


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelConfigError, match="cannot read model config"):
        load_model_config(tmp_path / "nope.config")


def test_cli_writes_models_config_for_every_patient(config, tmp_path):
    from pipeline.cli import main

    out = tmp_path / "models.config"
    assert main(["models-config", "--out", str(out)]) == 0
    specs = load_model_config(out)
    assert [s.name for s in specs] == config.patient_ids
    assert all(s.base_path == Path(f"/models/{s.name}") for s in specs)
