"""Settings: typed, frozen, read from AEGIS_* variables; bad input is an error naming the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aegis.config import ConfigError, Settings, describe


def test_settings_without_variables_uses_documented_defaults():
    s = Settings.load({})
    assert s.mode == "paper"
    assert s.commission_pct == 0.1
    assert s.home == Path("var")
    assert s.symbols == ()


def test_settings_are_frozen():
    s = Settings.load({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode = "live"  # type: ignore[misc]


def test_settings_environment_values_are_coerced_to_field_types():
    s = Settings.load(
        {
            "AEGIS_TOP_N": "50",
            "AEGIS_COMMISSION_PCT": "0.075",
            "AEGIS_SYMBOLS": "btcusdt, ethusdt",
            "AEGIS_HOME": "/tmp/x",
        }
    )
    assert s.top_n == 50
    assert s.commission_pct == 0.075
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.home == Path("/tmp/x")


def test_settings_unknown_variable_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="AEGIS_TOPN"):
        Settings.load({"AEGIS_TOPN": "5"})


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AEGIS_TOP_N", "many"),
        ("AEGIS_COMMISSION_PCT", "nan"),
        ("AEGIS_COMMISSION_PCT", "-1"),
        ("AEGIS_RING_CAPACITY", "1000"),
        ("AEGIS_MODE", "yolo"),
        ("AEGIS_DECISION_TIMEFRAME", "7m"),
        ("AEGIS_TOP_N", "1.5"),
    ],
)
def test_settings_bad_value_is_an_error_naming_the_variable(var, value):
    with pytest.raises(ConfigError, match=var):
        Settings.load({var: value})


def test_settings_live_mode_without_keys_is_refused():
    with pytest.raises(ConfigError, match="AEGIS_API_KEY"):
        Settings.load({"AEGIS_MODE": "live"})


def test_settings_secret_from_file_is_read_and_never_printed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    s = Settings.load(
        {"AEGIS_MODE": "live", "AEGIS_API_KEY": "key-value", "AEGIS_API_SECRET_FILE": str(secret)}
    )
    assert s.api_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s) and "key-value" not in str(s)


def test_settings_missing_secret_file_is_an_error_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="AEGIS_API_SECRET_FILE"):
        Settings.load({"AEGIS_API_SECRET_FILE": str(tmp_path / "absent")})


def test_settings_config_file_is_read_and_environment_wins(tmp_path):
    path = tmp_path / "aegis.toml"
    path.write_text('top_n = 20\nquote_asset = "FDUSD"\n')
    s = Settings.load({"AEGIS_CONFIG_FILE": str(path), "AEGIS_TOP_N": "30"})
    assert s.top_n == 30
    assert s.quote_asset == "FDUSD"


def test_settings_config_file_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "aegis.toml"
    path.write_text("topn = 20\n")
    with pytest.raises(ConfigError, match="topn"):
        Settings.load({"AEGIS_CONFIG_FILE": str(path)})


def test_settings_replace_validates_like_a_load():
    s = Settings.load({})
    assert s.replace(top_n=7).top_n == 7
    with pytest.raises(ConfigError, match="AEGIS_RING_CAPACITY"):
        s.replace(ring_capacity=3)


def test_describe_lists_every_setting_with_a_meaning():
    rows = describe()
    assert len(rows) == len(dataclasses.fields(Settings))
    assert all(var.startswith("AEGIS_") and doc for var, _, doc in rows)
