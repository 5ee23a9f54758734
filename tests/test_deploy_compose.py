"""docker-compose.yml, the Dockerfile and the Prometheus/Grafana files they mount: valid, and wired to each other.

`docker compose config` validates the compose files where the compose plugin is installed; the Compose
Specification's JSON schema (vendored in tests/schemas) validates them everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from telemetry_service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "docker" / "compose.gpu.yml"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_is_valid(path: Path) -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(_yaml(path))]
    assert errors == []
    if _docker_compose_works():
        files = [arg for f in COMPOSE_FILES[: COMPOSE_FILES.index(path) + 1] for arg in ("-f", str(f))]
        done = subprocess.run(["docker", "compose", *files, "config", "--quiet"], cwd=ROOT, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr


def test_the_schema_check_catches_mistakes() -> None:
    schema = json.loads((ROOT / "tests" / "schemas" / "compose-spec.json").read_text())
    broken = _compose()
    broken["services"]["joulemeter"]["ports"] = "8765"
    broken["services"]["grafana"]["enviroment"] = {}
    messages = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)]
    assert len(messages) == 2, messages


def test_mounted_files_exist_and_the_services_point_at_each_other() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"joulemeter", "prometheus", "grafana"}
    mounts: dict[str, dict[str, Path]] = {}
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
                mounts.setdefault(name, {})[target] = ROOT / source
            else:
                assert source in compose["volumes"], f"{name} uses an undeclared volume {source}"

    port = services["joulemeter"]["environment"]["TELEMETRY_PORT"]
    prom_config = _yaml(mounts["prometheus"]["/etc/prometheus/prometheus.yml"])
    targets = [t for job in prom_config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"joulemeter:{port}"]
    for rule_file in prom_config["rule_files"]:
        assert rule_file in mounts["prometheus"], f"{rule_file} is not mounted into Prometheus"

    provisioning = mounts["grafana"]["/etc/grafana/provisioning"]
    datasource = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    assert any(p.endswith(":9090") for p in services["prometheus"]["ports"])
    provider = _yaml(provisioning / "dashboards" / "joulemeter.yml")["providers"][0]
    dashboards = mounts["grafana"][provider["options"]["path"]]
    assert dashboards == ROOT / "dashboards" / "grafana"
    assert (dashboards / "joulemeter.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/joulemeter.json"
    # every port published to the host is published on loopback only
    for name, svc in services.items():
        for p in svc.get("ports", []):
            assert p.startswith("127.0.0.1:"), (name, p)


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_the_installed_daemon_cpu_only() -> None:
    text = _dockerfile()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["telemetry-service"] and entry[0] in project["scripts"] and cmd == ["serve"]
    assert '".[postgres]"' in text  # psycopg, for a shared PostgreSQL ledger
    assert "torch" not in text and "[train]" not in text
    assert re.search(r"^USER joulemeter$", text, re.M)
    env = dict(re.findall(r"(TELEMETRY_[A-Z_]+)=(\S+)", text))
    assert re.search(rf"^EXPOSE {env['TELEMETRY_PORT']}$", text, re.M)
    assert env["TELEMETRY_DB"].startswith("sqlite:////var/lib/joulemeter/")
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def _telemetry_vars() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in _compose()["services"]["joulemeter"]["environment"]:
        found.setdefault(name, []).append("docker-compose.yml")
    for name in re.findall(r"(TELEMETRY_[A-Z_]+)=", _dockerfile()):
        found.setdefault(name, []).append("Dockerfile")
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in {".service", ".conf", ".env", ".sh", ".sbatch", ""}:
            for name in re.findall(r"\b(TELEMETRY_[A-Z_]+)=", path.read_text(errors="replace")):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_telemetry_variable_set_in_deployment_files_is_a_setting() -> None:
    """Settings ignore unknown variables, so a misspelt one would be dropped without a word: catch it here."""
    fields = {f"TELEMETRY_{name.upper()}" for name in Settings.model_fields}
    # what the trainer's client reads, not the daemon
    client = {"TELEMETRY_URL", "TELEMETRY_RUN_ID"}
    found = _telemetry_vars()
    assert "TELEMETRY_DB" in found and "TELEMETRY_NODE" in found
    unknown = {name: where for name, where in found.items() if name not in fields | client}
    assert unknown == {}
