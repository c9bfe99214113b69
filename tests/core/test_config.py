"""Configuration: the one source of truth rejects bad values naming the field."""

from __future__ import annotations

import tomllib

import pytest

from pipeline.config import REPO_ROOT, ConfigError, parse_config


def _raw():
    return tomllib.loads((REPO_ROOT / "glucose-forecast.toml").read_text())


def test_shipped_config_is_valid(config):
    assert config.series.window == 15 and config.series.horizon == 6
    assert config.series.features == ("glucose", "insulin", "carbs")
    assert all(p.file.is_file() for p in config.patients)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["patients"][0].update(id="HUPA 2"), "patients[0].id: 'HUPA 2' is not a valid patient id"),
        (lambda r: r["patients"][1].update(id=r["patients"][0]["id"]), "duplicate patient id"),
        (lambda r: r["patients"][0].update(reader="excel"), "patients[0].reader"),
        (lambda r: r["series"].update(window="15"), "[series].window must be int"),
        (lambda r: r["series"].update(colour=1), "unknown field(s) ['colour']"),
        (lambda r: r["search"]["default"]["dense1"].update(min=300), "search.default.dense1: min 300 > max 256"),
        (lambda r: r["search"]["seed"]["epochs"].update(values=[]), "search.seed.epochs: discrete needs a non-empty"),
        (lambda r: r["search"]["seed"]["epochs"].update(type="gaussian"), "search.seed.epochs: type must be"),
        (lambda r: r["tuning"].update(preset="nope"), "[tuning].preset 'nope'"),
        (lambda r: r["training"].update(ridge_alpha=0), "[training].ridge_alpha must be > 0"),
        (lambda r: r["training"].update(l2=-1e-3), "[training].l2 must be >= 0"),
        (lambda r: r["training"].update(ridge_init="yes"), "[training].ridge_init must be bool"),
    ],
)
def test_bad_config_names_the_field(mutate, message, tmp_path):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, tmp_path / "glucose-forecast.toml")
    assert message in str(exc.value)


def test_env_overrides(monkeypatch):
    from pipeline.config import load_config

    monkeypatch.setenv("GATEWAY_PORT", "9090")
    assert load_config().ports.gateway == 9090
    monkeypatch.setenv("GF_GATEWAY_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="GF_GATEWAY_PORT"):
        load_config()


def test_server_ports_from_the_environment(monkeypatch):
    from pipeline.config import load_config

    monkeypatch.setenv("GF_SERVER_PORTS", "9601, 9602")
    assert load_config().ports.servers == (9601, 9602)
    monkeypatch.setenv("GF_SERVER_PORTS", "9601,x")
    with pytest.raises(ConfigError, match="GF_SERVER_PORTS"):
        load_config()
