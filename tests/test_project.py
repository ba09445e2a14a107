"""Projection (PTI stage 1): finds latents that reproduce generated images, never touches G, and Latent files."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT, make_generator, tensor_digest
from safetensors.torch import save_file

from pti.errors import Cancelled
from pti.image import GeneratorImages
from pti.latent import Latent, synthesize
from pti.metrics import lpips_distance, mse
from pti.projection import project

FAST = dict(lpips_net="alex", num_w_samples=64)


def identifiable_generator():
    """A tiny generator whose image depends clearly on w (w_dim 4), no per-pixel noise, outputs roughly in [-1, 1]."""
    G = make_generator(w_dim=4, z_dim=4)
    with torch.no_grad():
        for name, param in G.named_parameters():
            if name.endswith("noise_strength"):
                param.zero_()
            if "torgb.weight" in name:
                param.mul_(0.3)
    return G


def render_w(G, w):
    with torch.no_grad():
        return G.synthesis(w.expand(-1, G.num_ws, -1), noise_mode="const")


@pytest.fixture(scope="module")
def recovery():
    G = identifiable_generator()
    w_true = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(5)), None)[:, :1].detach()
    target = render_w(G, w_true)
    digests = tensor_digest(G), tensor_digest(target)
    latent = project(G, GeneratorImages(target), space="w", steps=40, init_candidates=16, **FAST)
    return G, w_true, target, latent, digests


def test_projection_beats_w_avg_and_recovers_the_generating_w(recovery):
    G, w_true, target, latent, _ = recovery
    w_avg = G.mapping.w_avg.view(1, 1, -1)
    start, found = render_w(G, w_avg), synthesize(G, latent)
    assert lpips_distance(found, target) < 0.25 * lpips_distance(start, target)
    assert mse(found, target) < 0.25 * mse(start, target)
    # W space: one w for every layer, and it moved most of the way from w_avg to the generating w.
    assert torch.equal(latent.ws[:, :1].expand_as(latent.ws), latent.ws)
    assert (latent.ws[0, 0] - w_true[0, 0]).norm() < 0.6 * (w_avg[0, 0] - w_true[0, 0]).norm()
    assert latent.meta["final_lpips"] < latent.meta["start_lpips"]


def test_generator_and_target_are_left_untouched(recovery):
    G, _, target, _, (g_digest, t_digest) = recovery
    assert tensor_digest(G) == g_digest and tensor_digest(target) == t_digest
    assert all(p.grad is None for p in G.parameters())


def test_w_plus_batch_noise_maps_and_progress(tiny_generator):
    G = tiny_generator
    with torch.no_grad():
        targets = G(torch.randn(2, G.z_dim), noise_mode="const").clamp(-1, 1)
    calls = []
    latent = project(
        G, GeneratorImages(targets), space="w+", steps=3, progress=lambda *a: calls.append(a), preview_every=2, **FAST
    )
    assert latent.ws.shape == (2, G.num_ws, G.w_dim) and latent.space == "w+"
    assert not torch.equal(latent.ws[:, 0], latent.ws[:, 1])  # one w per layer
    assert set(latent.noises) == set(G.synthesis.noise_layers())
    for noise in latent.noises.values():  # renormalised after every step
        assert noise.shape[:2] == (2, 1)
        assert noise[0].mean().abs() < 1e-4 and noise[0].square().mean() == pytest.approx(1, abs=1e-3)
    assert [c[0] for c in calls] == list(range(1, 7)) and {c[1] for c in calls} == {6}
    previews = [c[3] for c in calls if c[3] is not None]
    assert previews and previews[0].shape == (3, 32, 32) and 0 <= previews[0].min() <= previews[0].max() <= 1


def test_projection_works_under_inference_mode_and_can_be_cancelled(tiny_generator):
    with torch.inference_mode():
        G = make_generator()
        target = torch.zeros(1, 3, 32, 32)
        latent = project(G, target, steps=2, **FAST)
    assert latent.ws.shape == (1, G.num_ws, G.w_dim)
    with pytest.raises(Cancelled):
        project(tiny_generator, target, steps=5, cancel=lambda: True, **FAST)


def test_bad_arguments_are_refused(tiny_generator):
    with pytest.raises(ValueError, match="space"):
        project(tiny_generator, torch.zeros(1, 3, 32, 32), space="z")
    with pytest.raises(ValueError, match="unknown projection option"):
        project(tiny_generator, torch.zeros(1, 3, 32, 32), stepz=3)


def test_latent_file_round_trip_and_row_operations(tmp_path):
    ws = torch.randn(2, 6, 8)
    noises = {"b4.conv1": torch.randn(2, 1, 4, 4), "b8.conv0": torch.randn(2, 1, 8, 8)}
    latent = Latent(ws, noises, "w+", "abcd", {"steps": 3})
    loaded = Latent.load(latent.save(tmp_path / "lat.safetensors"))
    assert tensor_digest([loaded.ws, loaded.noises]) == tensor_digest([ws, noises])
    assert (loaded.space, loaded.generator_hash, loaded.meta) == ("w+", "abcd", {"steps": 3})
    row = latent.select(1)
    assert (
        len(row) == 1
        and torch.equal(row.ws[0], ws[1])
        and torch.equal(row.noises["b8.conv0"][0], noises["b8.conv0"][1])
    )
    both = Latent.cat([row, latent.select(0)])
    assert len(both) == 2 and torch.equal(both.ws[1], ws[0])
    copy = latent.clone()
    copy.ws.add_(1)
    assert torch.equal(latent.ws, ws)


def test_latent_load_refuses_other_files(tmp_path):
    save_file({"ws": torch.zeros(1, 2, 3)}, str(tmp_path / "other.safetensors"), metadata={"format": "x"})
    with pytest.raises(ValueError, match="not a PTI latent"):
        Latent.load(tmp_path / "other.safetensors")
    bad = {"ws": torch.zeros(1, 2, 3), "noise.b8.conv0": torch.zeros(1, 1, 4, 4)}
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata={"format": "pti-latent", "space": "w"})
    with pytest.raises(ValueError, match="must be"):
        Latent.load(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError):
        Latent.load(tmp_path / "junk.safetensors")


def test_out_of_memory_becomes_a_message_naming_the_setting_to_lower(monkeypatch):
    """An accelerator OOM inside projection surfaces as pti.OutOfMemory with advice, not a raw CUDA error."""
    import pti.projection as project_module
    from pti.errors import OutOfMemory

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(project_module, "_sample_w", exhausted)
    G = make_generator()
    with pytest.raises(OutOfMemory, match=r"during projection at 32px: lower lpips_resolution") as info:
        project_module.project(G, torch.zeros(1, 3, 32, 32), steps=1)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)


def test_public_names_stay_callable_after_their_modules_load():
    """``pti.project`` is the function on every access, not the submodule after the first (a loop over photos)."""
    import subprocess
    import sys

    import pti

    code = (
        "import pti, torch\n"
        "for name in pti.__all__:\n"
        "    if name != '__version__':\n"
        "        first, second = getattr(pti, name), getattr(pti, name)\n"
        "        assert first is second and not isinstance(second, type(pti)), name\n"
        "assert callable(pti.project) and callable(pti.project)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=120)
    submodules = {path.stem for path in (REPO_ROOT / "pti").glob("*.py")}
    assert not submodules & set(pti.__all__), "a public name equals a submodule name and would be shadowed"
