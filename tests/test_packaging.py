"""The distribution installs one top-level import name, `aegis`, with its data and SQL files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_dir_maps_every_folder_under_aegis():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    assert mapping["aegis.kernel"] == "kernel"
    assert mapping["aegis.ringbuffer"] == "ringbuffer"
    assert mapping["aegis.processes"] == "processes"
    assert mapping["aegis.schema"] == "schema"
    assert all(
        name == "aegis" or name.startswith("aegis.")
        for name in config["tool"]["setuptools"]["packages"]
    )


def test_every_python_folder_is_a_declared_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    reverse = {v: k for k, v in config["tool"]["setuptools"]["package-dir"].items()}
    for init in ROOT.glob("**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts[0] in {".venv", "tests", "benchmarks", "build"}:
            continue
        top = reverse[rel.parts[0]]
        name = ".".join([top, *rel.parts[1:]])
        assert name in declared, f"{rel} is not listed in pyproject packages"


def test_console_script_entry_point_is_aegis_cli_main():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["scripts"]["aegis-kernel"] == "aegis.cli:main"


def test_cli_help_lists_every_subcommand():
    out = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("run", "simulate", "backtest", "train", "migrate", "status"):
        assert command in out


def test_cli_bad_configuration_exits_with_config_code_and_names_the_variable():
    import os

    env = {**os.environ, "AEGIS_NO_SUCH_SETTING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "aegis.cli", "status"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 78
    assert "AEGIS_NO_SUCH_SETTING" in proc.stderr
