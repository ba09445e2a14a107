"""Cancelling and crashing: no partial file, no modified input, and the next run equals an uninterrupted one.

Projection and tuning are cancelled at several steps (``cancel`` callback in the core, ComfyUI's Cancel button in
the nodes); every saver is made to fail half-way through writing (as a crash or a full disk would).
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import make_generator, tensor_digest

from pti.checkpoints import save_generator
from pti.delta import save_delta
from pti.errors import Cancelled
from pti.image import GeneratorImages
from pti.latent import Latent
from pti.projection import project
from pti.tune import pivotal_tune

STEPS = 3


@pytest.fixture(scope="module")
def G():
    return make_generator(resolution=32)


@pytest.fixture(scope="module")
def image(G):
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(4)), None)
        return GeneratorImages(G.synthesis(ws, noise_mode="const"))


def _cancel_at(step: int):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > step

    return cancel


def _project(G, image, cancel=None):
    return project(G, image, steps=STEPS, seed=3, cancel=cancel, preset="reference", num_w_samples=64)


def test_cancelled_projection_changes_nothing_and_the_rerun_is_identical(G, image):
    reference = _project(G, image)  # also loads LPIPS, whose first construction draws from the global RNG
    before = (tensor_digest(G), tensor_digest(image), torch.get_rng_state())
    for step in range(STEPS):
        with pytest.raises(Cancelled, match=f"projection cancelled at step {step}"):
            _project(G, image, _cancel_at(step))
        assert (tensor_digest(G), tensor_digest(image)) == before[:2]
    again = _project(G, image)
    assert torch.equal(again.ws, reference.ws)
    assert all(torch.equal(again.noises[k], reference.noises[k]) for k in reference.noises)
    assert torch.equal(torch.get_rng_state(), before[2])  # seeded generators only: the global RNG is untouched


def test_cancelled_tuning_changes_nothing_and_the_rerun_is_identical(G, image):
    pivots = Latent(G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(1, G.num_ws, 1), {}, "w", "", {})
    before = (tensor_digest(G), tensor_digest(image), tensor_digest(pivots.ws))
    flags = [p.requires_grad for p in G.parameters()]

    def tune(cancel=None):
        return pivotal_tune(G, image, pivots, steps=STEPS, lpips_threshold=0.0, seed=1, cancel=cancel)

    reference = tensor_digest(tune())
    for step in range(STEPS + 1):
        with pytest.raises(Cancelled, match=f"pivotal tuning cancelled at step {step}"):
            tune(_cancel_at(step))
        assert (tensor_digest(G), tensor_digest(image), tensor_digest(pivots.ws)) == before
        assert [p.requires_grad for p in G.parameters()] == flags and all(p.grad is None for p in G.parameters())
    assert tensor_digest(tune()) == reference


class _DiskFull(OSError):
    pass


def _failing_save_file(monkeypatch):
    """safetensors' writer writes half of the file, then fails (a crash or a full disk mid-write)."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def half_then_fail(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(max(1, f.seek(0, 2) // 2))
        raise _DiskFull("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)


SAVERS = {
    "save_generator": lambda G, path: save_generator(G, path),
    "Latent.save": lambda G, path: Latent(torch.ones(1, G.num_ws, G.w_dim), {}, "w", "", {}).save(path),
    "save_delta": lambda G, path: save_delta(make_generator(32, seed=1), G, path),
}


@pytest.mark.parametrize("saver", list(SAVERS))
def test_a_failed_save_leaves_the_previous_file_intact_and_no_temporary_file(tmp_path, monkeypatch, G, saver):
    save = SAVERS[saver]
    path = tmp_path / "result.safetensors"
    save(G, path)
    previous = path.read_bytes()
    _failing_save_file(monkeypatch)
    with pytest.raises(_DiskFull):
        save(G, path)
    assert path.read_bytes() == previous
    with pytest.raises(_DiskFull):
        save(G, tmp_path / "new.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.safetensors"]


def test_cancel_button_during_node_projection_and_tuning(G, image):
    """ComfyUI's Cancel raises from the progress callback; it propagates unchanged and the rerun is identical."""
    from pack_loader import load_pack, pack_module

    nodes = load_pack().NODE_CLASS_MAPPINGS
    import comfy.model_management  # the test double, importable once the pack is loaded

    packed = pack_module("pti.networks").Generator(**G.init_kwargs)
    packed.load_state_dict(G.state_dict())
    packed.eval()
    photo = ((image.pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()
    spec = nodes["PTI_ProjectPivot"].INPUT_TYPES()["required"]
    choices = {n: next((o for o in s[0] if "paper" in o), s[0][0]) for n, s in spec.items() if isinstance(s[0], list)}
    inputs = {**choices, "generator": packed, "image": photo, "steps": STEPS, "space": "W", "seed": 0}
    digest = tensor_digest(packed)

    def run():
        with torch.inference_mode():
            return nodes["PTI_ProjectPivot"]().project(**inputs)

    reference = run()[0]
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run()
    assert tensor_digest(packed) == digest and tensor_digest(photo) == tensor_digest(inputs["image"])
    assert torch.equal(run()[0].ws, reference.ws)


def _pack():
    from pack_loader import load_pack, pack_module

    return load_pack().NODE_CLASS_MAPPINGS, pack_module


def test_failed_save_pti_keeps_the_previous_pair(tmp_path, monkeypatch, G):
    nodes, pack_module = _pack()
    io_nodes, saved_result = pack_module("nodes.io"), pack_module("pti.saved_result")
    networks, latent_module = pack_module("pti.networks"), pack_module("pti.latent")
    lineage = pack_module("pti.lineage")
    generator_hash = pack_module("pti.hashing").generator_hash

    def packed(seed):
        H = networks.Generator(**G.init_kwargs)
        H.load_state_dict(make_generator(32, seed=seed).state_dict())
        return H.eval()

    base = packed(0)
    monkeypatch.setattr(io_nodes, "_output_pti_dir", lambda: tmp_path)

    def save(rows, tuned):
        latent = latent_module.Latent(torch.zeros(rows, G.num_ws, G.w_dim), {}, "w", generator_hash(base), {})
        with torch.inference_mode():
            nodes["PTI_SavePTI"]().save(base, tuned, latent, "result", "output/pti", "fp16")

    save(1, lineage.mark_derived(packed(1), base))
    before = {p.name: p.read_bytes() for p in (tmp_path / "result").iterdir()}
    monkeypatch.setattr(saved_result, "save_delta", lambda *a, **k: (_ for _ in ()).throw(_DiskFull("disk full")))
    with pytest.raises(_DiskFull):
        save(2, lineage.mark_derived(packed(2), base))
    assert {p.name: p.read_bytes() for p in (tmp_path / "result").iterdir()} == before


def test_failed_save_image_leaves_no_partial_png(monkeypatch):
    nodes, _ = _pack()
    import folder_paths
    from PIL import Image

    real_save = Image.Image.save

    def half_then_fail(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
        raise _DiskFull("disk full")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    folder = folder_paths.get_output_directory()
    before = set(os.listdir(folder))
    with pytest.raises(_DiskFull):
        nodes["PTI_SaveImage"]().save(torch.rand(1, 8, 8, 3), "atomic_check", "separate", 0)
    assert set(os.listdir(folder)) == before
