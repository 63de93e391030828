"""Dockerfile and docker-compose.yml, checked by reading (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from aegis.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_is_multi_stage_and_runs_as_non_root():
    instructions = dockerfile_instructions()
    assert sum(1 for k, _ in instructions if k == "FROM") >= 2
    users = [v for k, v in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_entrypoint_is_the_console_script_and_cmd_is_run():
    instructions = dict(dockerfile_instructions())
    entry = json.loads(instructions["ENTRYPOINT"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["aegis-kernel"] and "aegis-kernel" in scripts
    assert json.loads(instructions["CMD"]) == ["run"]
    assert instructions["STOPSIGNAL"] == "SIGTERM"


def test_dockerfile_healthcheck_probes_healthz():
    instructions = dict(dockerfile_instructions())
    assert "/healthz" in instructions["HEALTHCHECK"]


def test_dockerfile_copies_every_package_folder():
    copied = {
        v.split()[0] for k, v in dockerfile_instructions() if k == "COPY" and "--from" not in v
    }
    for folder in ("aegis", "kernel", "ringbuffer", "processes", "schema", "pyproject.toml"):
        assert folder in copied


def test_compose_runs_postgres_redis_and_the_kernel_with_a_longer_grace_than_shutdown():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "aegis"} <= set(services)
    kernel = services["aegis"]
    assert kernel["environment"]["AEGIS_DATABASE_URL"].startswith("postgresql://")
    assert kernel["environment"]["AEGIS_REDIS_URL"].startswith("redis://")
    grace = int(re.fullmatch(r"(\d+)s", kernel["stop_grace_period"]).group(1))
    assert grace > Settings.load({}).shutdown_deadline_s


def test_compose_environment_names_only_known_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["services"]["aegis"]["environment"].items()}
    Settings.load(env)  # raises ConfigError on an unknown or bad variable
