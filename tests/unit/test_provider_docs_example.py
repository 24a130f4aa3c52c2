"""The example plugin in docs/writing-a-provider.md works and passes the conformance kit.

Its files are cut out of the markdown (each fenced block follows a `<!-- file: NAME -->`
comment) and installed into a temporary directory on sys.path, with a dist-info built
from the example's own pyproject, so its entry point is found like a pip-installed
plugin's. The example's test class then runs here, so the docs cannot rot.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wa_gateway.testing import ProviderConformance

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-provider.md"
_FILE_BLOCK = re.compile(
    r"<!-- file: (?P<name>\S+) -->\s*```\w*\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE
)


def example_files() -> dict[str, str]:
    files = {match["name"]: match["code"] for match in _FILE_BLOCK.finditer(DOC.read_text())}
    assert files, f"{DOC} has no '<!-- file: NAME -->' blocks"
    return files


FILES = example_files()
PYPROJECT: dict[str, Any] = tomllib.loads(FILES["pyproject.toml"])
MODULES: list[str] = PYPROJECT["tool"]["setuptools"]["py-modules"]


def _example_test_class() -> type[ProviderConformance]:
    name = next(name for name in FILES if name.startswith("tests/"))
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(compile(FILES[name], f"{DOC}:{name}", "exec"), namespace)
    (test_class,) = (
        value
        for value in namespace.values()
        if isinstance(value, type)
        and issubclass(value, ProviderConformance)
        and value is not ProviderConformance
    )
    return test_class


TestDocsExampleConformance = _example_test_class()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A site-packages holding the example as pip would install it."""
    project = PYPROJECT["project"]
    site = tmp_path_factory.mktemp("site-packages")
    for module in MODULES:
        (site / f"{module}.py").write_text(FILES[f"{module}.py"])
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
            for group, entries in project["entry-points"].items()
        )
    )
    yield site
    for module in MODULES:
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
def example_installed(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(example_site))


def test_example_plugin_is_under_50_lines() -> None:
    lines = FILES["pyproject.toml"].splitlines() + [
        line for module in MODULES for line in FILES[f"{module}.py"].splitlines()
    ]
    assert len(lines) < 50


def test_example_is_a_wa_gateway_plugin_distribution() -> None:
    project = PYPROJECT["project"]
    assert project["name"].startswith("wa-gateway-")
    assert "wa-gateway" in project["dependencies"]
    assert set(project["entry-points"]["wa_gateway"].values()) <= set(MODULES)
