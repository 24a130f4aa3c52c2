"""Providers are separate distributions: the core wheel holds none, and installing a
plugin wheel is all it takes for `wa-gateway providers` to list it. The core wheel
carries the ledger's migrations: `wa-gateway db upgrade` works from it.

The wheels are built from a copy of the work tree (no build artefacts land in it)
with pip's isolated builds; dependencies come from the package index or pip's cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_PACKAGES = ("wa_gateway_watzap", "wa_gateway_meta", "wa_gateway_twilio", "wa_gateway_sentry")
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".bench",
    ".env",
)


def _run(*command: str | Path, timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    result = subprocess.run(
        [str(part) for part in command],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"},
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _build_wheel(source: Path, out: Path) -> Path:
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", out, source)
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("src") / "wa-gateway"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    return tree


@pytest.fixture(scope="module")
def core_wheel(source_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(source_tree, tmp_path_factory.mktemp("core-wheel"))


def _provider_names(venv: Path) -> set[str]:
    """First column of `wa-gateway providers`, without the header and problem lines."""
    table = _run(venv / "bin" / "wa-gateway", "providers", timeout=60)
    rows = [line for line in table.splitlines()[1:] if line.strip()]
    return {row.split()[0] for row in rows if not row.startswith("broken plugin:")}


def test_core_wheel_contains_no_provider_plugin(core_wheel: Path) -> None:
    names = zipfile.ZipFile(core_wheel).namelist()
    assert "wa_gateway/__init__.py" in names
    kit = ("__init__", "conformance", "fake_api", "messages")
    assert {f"wa_gateway/testing/{module}.py" for module in kit} <= set(names)
    leaked = [name for name in names if name.split("/")[0] in PLUGIN_PACKAGES]
    assert leaked == []


def test_core_wheel_ships_the_ledger_migrations(core_wheel: Path) -> None:
    """`wa-gateway db upgrade` runs from an installed wheel, without the repository."""
    names = set(zipfile.ZipFile(core_wheel).namelist())
    migrations = "wa_gateway/ledger/migrations"
    assert {f"{migrations}/env.py", f"{migrations}/script.py.mako", "wa_gateway/ledger/alembic.ini"} <= names
    assert any(name.startswith(f"{migrations}/versions/0001_") for name in names)


@pytest.mark.slow
def test_installing_the_watzap_wheel_adds_it_to_wa_gateway_providers(
    source_tree: Path, core_wheel: Path, tmp_path: Path
) -> None:
    plugin_wheel = _build_wheel(source_tree / "plugins" / "watzap", tmp_path / "plugin-wheel")
    venv = tmp_path / "venv"
    # A bare venv filled by this interpreter's pip: seconds, where ensurepip takes ~15 s.
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    install = (sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install")

    _run(*install, "--quiet", "--no-compile", core_wheel, timeout=300)
    core_only = _provider_names(venv)
    assert "log" in core_only
    assert "watzap" not in core_only
    # the ledger's migrations come with the wheel (the working directory is the test's tmp_path)
    upgraded = _run(venv / "bin" / "wa-gateway", "--env-file", "", "db", "upgrade", timeout=60)
    assert "schema upgraded from empty to revision" in upgraded

    _run(*install, "--quiet", "--no-compile", plugin_wheel, timeout=300)
    assert _provider_names(venv) == core_only | {"watzap"}
