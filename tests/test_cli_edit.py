"""`python -m pti edit` and `python -m pti align` end to end on small files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_generator
from PIL import Image

from pti.cli import main
from pti.hashing import state_dict_hash

skimage_data = pytest.importorskip("skimage.data")

# Hand-measured landmarks of the astronaut's face (see tests/test_align.py).
ASTRONAUT_POINTS = "203,101,247,104,225,127,203.5,140.5,245,140.5"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from pti.checkpoints import save_generator
    from pti.latent import Latent

    root = tmp_path_factory.mktemp("cli_edit")
    G = make_generator(resolution=16, w_dim=32)
    save_generator(G, root / "base.safetensors")
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)), None).detach()
    Latent(ws, {}, "w", state_dict_hash(G), {}).save(root / "pivot.safetensors")
    return root, G, ws


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _rendered(G, ws) -> np.ndarray:
    from pti.image import to_pil

    with torch.no_grad():
        return np.asarray(to_pil(G.synthesis(ws, noise_mode="const")[0]), dtype=np.int16)


def test_edit_writes_one_image_per_strength_and_a_strip(files, tmp_path, monkeypatch):
    root, G, ws = files
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["edit", "--latent", str(root / "pivot.safetensors"), "--checkpoint", str(root / "base.safetensors")]
    code = main(args + ["--direction", "sefa:0", "--strength", "-4:4:3", "--row", "1", "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [
        "sefa_all_0_00_-4.00.png",
        "sefa_all_0_01_+0.00.png",
        "sefa_all_0_02_+4.00.png",
        "sefa_all_0_strip.png",
    ]
    # Strength 0 is the pivot itself (row 1); the two ends move away from it in opposite ways.
    assert np.abs(_pixels(out / "sefa_all_0_01_+0.00.png") - _rendered(G, ws[1:2])).max() <= 1
    low, high = _pixels(out / "sefa_all_0_00_-4.00.png"), _pixels(out / "sefa_all_0_02_+4.00.png")
    assert np.abs(low - high).mean() > 5
    strip = Image.open(out / "sefa_all_0_strip.png")
    assert strip.width >= 3 * 16 and strip.height >= 16


def test_edit_decodes_with_the_tuned_generator(files, tmp_path):
    from pti.delta import save_delta
    from pti.networks import clone_generator

    root, G, ws = files
    tuned = clone_generator(G)
    with torch.no_grad():
        tuned.synthesis.b16.torgb.bias.add_(0.5)
    save_delta(tuned, G, tmp_path / "delta.safetensors")
    code = main(
        ["edit", "--latent", str(root / "pivot.safetensors"), "--checkpoint", str(root / "base.safetensors")]
        + ["--tuned", str(tmp_path / "delta.safetensors"), "--direction", "ganspace:1", "--strength", "0"]
        + ["--out", str(tmp_path / "out")]
    )
    assert code == 0
    (image,) = [p for p in (tmp_path / "out").glob("ganspace_1_00_*.png")]
    assert np.abs(_pixels(image) - _rendered(tuned, ws[:1])).max() <= 1
    assert np.abs(_pixels(image) - _rendered(G, ws[:1])).max() > 10


def test_edit_refuses_mismatched_inputs_and_writes_nothing(files, tmp_path, capsys):
    root, G, _ = files
    np.save(tmp_path / "wide.npy", np.ones((1, 512), dtype=np.float32))
    other = make_generator(resolution=16, w_dim=32, seed=9)
    from pti.checkpoints import save_generator

    save_generator(other, tmp_path / "other.safetensors")
    base = ["edit", "--latent", str(root / "pivot.safetensors"), "--out", str(tmp_path / "out")]
    assert main(base + ["--checkpoint", str(root / "base.safetensors"), "--direction", str(tmp_path / "wide.npy")]) == 2
    assert "512-dimensional" in capsys.readouterr().err
    assert main(base + ["--checkpoint", str(tmp_path / "other.safetensors"), "--direction", "sefa:0"]) == 2
    assert "not a tuned version" in capsys.readouterr().err
    assert (
        main(base + ["--checkpoint", str(root / "base.safetensors"), "--direction", "sefa:0", "--strength", "x"]) == 2
    )
    assert not (tmp_path / "out").exists()


def test_align_writes_crop_and_alignment(tmp_path, capsys):
    from pti.align import Alignment

    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    out = tmp_path / "aligned"
    assert (
        main(
            [
                "align",
                str(tmp_path / "astronaut.png"),
                "--out",
                str(out),
                "--size",
                "64",
                "--landmarks",
                ASTRONAUT_POINTS,
            ]
        )
        == 0
    )
    assert Image.open(out / "aligned.png").size == (64, 64)
    alignment = Alignment.load(out / "alignment.json")
    assert alignment.source_size == (512, 512) and alignment.crop_size == 64
    assert json.loads((out / "alignment.json").read_text())["method"] == "manual"

    Image.fromarray(np.full((80, 120, 3), 128, dtype=np.uint8)).save(tmp_path / "blank.png")
    code = main(["align", str(tmp_path / "blank.png"), "--out", str(tmp_path / "blank"), "--size", "32"])
    assert code == 2 and "error:" in capsys.readouterr().err
    code = main(
        ["align", str(tmp_path / "blank.png"), "--out", str(tmp_path / "blank"), "--size", "32", "--fallback", "center"]
    )
    assert code == 0 and Alignment.load(tmp_path / "blank" / "alignment.json").method == "center"
