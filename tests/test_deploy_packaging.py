"""`pip install .`: the wheel carries both console scripts, the migrations and their alembic.ini, and bounded
dependencies; the migrations run from the installed package, not only from a source checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from telemetry_service.store.migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("joulemeter-*.whl")
    return path


def _dist_info(z: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in z.namelist() if n.endswith(f".dist-info/{name}")]
    return z.read(member).decode()


def test_wheel_has_the_console_scripts_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = _dist_info(z, "entry_points.txt")
    assert "telemetry-service = telemetry_service.cli:main" in entry_points
    assert "joulemeter-train = trainer.cli:main" in entry_points
    for needed in ("telemetry_service/store/alembic.ini", "telemetry_service/store/migrate.py",
                   "telemetry_service/store/migrations/env.py", "telemetry_service/store/migrations/script.py.mako",
                   "telemetry_service/store/migrations/versions/0001_baseline.py"):
        assert needed in names, needed


def test_every_dependency_is_bounded(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        requires = [line.split(":", 1)[1].strip() for line in _dist_info(z, "METADATA").splitlines()
                    if line.startswith("Requires-Dist:")]
    assert requires
    for req in requires:
        spec = req.split(";")[0]
        if re.match(r"^joulemeter\[", spec):  # the project's own extras
            continue
        assert ">=" in spec and "<" in spec.replace("<=", ""), f"unbounded: {req}"


def test_installed_package_migrates_a_ledger(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import telemetry_service, sys; print(telemetry_service.__file__);"
            "from telemetry_service.cli import main; sys.exit(main(['migrate', '--db', sys.argv[1]]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'ledger.db'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    where, status = done.stdout.strip().splitlines()[-2:]
    assert where.startswith(str(site))
    assert status.endswith(f"schema revision {head_revision()}")
