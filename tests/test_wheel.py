"""The wheel, installed into a fresh virtual environment, migrates and seeds a database
from outside the checkout: the migrations ship inside the package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_installed_wheel_upgrades_and_seeds(tmp_path):
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("biobank-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    _run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel))

    workdir = tmp_path / "elsewhere"  # not the checkout: nothing may come from the source tree
    workdir.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BIOBANK_")},
        "BIOBANK_DATABASE_URL": f"sqlite:///{tmp_path / 'installed.db'}",
        "BIOBANK_CONFIG": str(tmp_path / "config.toml"),
        "PYTHONPATH": "",
    }
    biobank = str(venv / "bin" / "biobank")
    upgraded = _run(biobank, "db", "upgrade", cwd=workdir, env=env)
    assert "set-pin admin" in upgraded.stderr
    _run(biobank, "demo", "--participants", "20", cwd=workdir, env=env)
    _run(biobank, "db", "check", cwd=workdir, env=env)
    listed = _run(biobank, "-u", "pi", "participant", "list", "--json", cwd=workdir, env=env)
    assert len(json.loads(listed.stdout)) == 20
    origin = _run(
        str(venv / "bin" / "python"),
        "-c",
        "import migrations, biobank; print(migrations.__file__, biobank.__file__)",
        cwd=workdir,
        env=env,
    )
    assert str(ROOT) not in origin.stdout and "site-packages" in origin.stdout
