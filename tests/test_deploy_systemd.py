"""The systemd unit, its PostgreSQL drop-in and the sysusers/tmpfiles files: what they promise, and a daemon
started with the unit's own environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from tests.daemon_proc import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "deploy" / "systemd"
STATE = "/var/lib/joulemeter"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: systemd keys repeat (Environment=), so no dict per section."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def one(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, (key, values)
    return values[0]


def environment(section: list[tuple[str, str]]) -> dict[str, str]:
    return dict(v.split("=", 1) for k, v in section if k == "Environment")


def test_unit_restarts_runs_as_its_own_user_and_keeps_its_ledger_in_the_state_directory() -> None:
    unit = parse_unit(SYSTEMD / "joulemeter.service")
    service = unit["Service"]
    assert one(service, "Restart") == "on-failure"
    user = one(service, "User")
    assert user == "joulemeter" and one(service, "Group") == user
    assert one(service, "StateDirectory") == "joulemeter"
    env = environment(service)
    assert make_url(env["TELEMETRY_DB"]).database == f"{STATE}/telemetry.db"
    assert env["TELEMETRY_HOST"] == "127.0.0.1"
    exe, *args = one(service, "ExecStart").split()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(exe).name in scripts and scripts[Path(exe).name] == "telemetry_service.cli:main" and args == ["serve"]
    assert one(service, "KillSignal") == "SIGTERM" and int(one(service, "TimeoutStopSec")) >= 10
    assert ("PrivateDevices", "yes") not in service  # NVML needs /dev/nvidia*
    assert one(unit["Install"], "WantedBy") == "multi-user.target"
    # the user exists once sysusers.d has run, and the RAPL rule grants its group read access
    assert re.search(rf"^u {user} - ", (SYSTEMD / "joulemeter.sysusers").read_text(), re.M)
    rapl = [line.split() for line in (SYSTEMD / "joulemeter-rapl.conf").read_text().splitlines()
            if line and not line.startswith("#")]
    assert rapl and all(r[0] == "z" and r[1].endswith("/energy_uj") and r[2] == "0440" and r[4] == user for r in rapl)


def test_postgresql_drop_in_points_at_a_shared_server_without_a_password_in_the_unit() -> None:
    drop_in = parse_unit(SYSTEMD / "joulemeter.service.d" / "postgresql.conf")
    env = environment(drop_in["Service"])
    url = make_url(env["TELEMETRY_DB"])
    assert url.drivername == "postgresql+psycopg" and url.password is None and url.host
    cred = one(drop_in["Service"], "LoadCredential").split(":")[0]
    assert env["PGPASSFILE"] == f"%d/{cred}"
    assert one(drop_in["Unit"], "After") == "network-online.target"
    assert one(drop_in["Unit"], "StartLimitIntervalSec") == "0"


def test_the_daemon_starts_with_the_units_environment(tmp_path: Path) -> None:
    """The unit's settings, with its state directory moved into the test's folder, are a working daemon."""
    env = environment(parse_unit(SYSTEMD / "joulemeter.service")["Service"])
    env = {k: v.replace(STATE, str(tmp_path / "state")) for k, v in env.items()}
    d = DaemonProcess(tmp_path, db=env.pop("TELEMETRY_DB"), env=env).start()
    try:
        health = httpx.get(f"{d.url}/healthz", timeout=5).json()
    finally:
        d.stop()
    assert health["status"] == "ok" and health["db"] == "sqlite"
    assert (tmp_path / "state" / "telemetry.db").is_file()
