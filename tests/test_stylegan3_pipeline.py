"""StyleGAN3 through the whole pack, on a tiny seeded config-T/R generator the tests build (no downloads):
projection in W and W+, pivotal tuning (full and rank-4), compact deltas, GANSpace/SeFa on its style layers, the
nodes (load, sample, project, tune, transform, decode, save/load PTI) and the CLI (info, edit --translate/--rotate,
invert)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_generator, tensor_digest
from PIL import Image
from sg3_helpers import SNAPSHOT_PKL

from pti import apply_direction, ganspace, load_delta, pivotal_tune, project, save_delta, sefa
from pti.checkpoints import CheckpointError, save_generator
from pti.cli import main
from pti.discovery import layer_group_range, style_layers
from pti.hashing import state_dict_hash
from pti.image import GeneratorImages
from pti.latent import Latent, synthesize
from pti.stylegan3 import Generator, make_tiny_generator

PHOTO = Path(__file__).resolve().parent.parent / "workflows" / "pti_example_face.png"
STEPS = 10
RES = 32  # the smallest size AlexNet-LPIPS accepts


@pytest.fixture(scope="module")
def G() -> Generator:
    return make_tiny_generator(seed=0, config="t", img_resolution=RES)


@pytest.fixture(scope="module")
def target(G) -> torch.Tensor:
    """An image this generator can reach: its rendering of a random w (as in the StyleGAN2 tests)."""
    with torch.no_grad():
        return G.synthesis(G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(11)), None))


@pytest.fixture(scope="module")
def pivot(G, target) -> Latent:
    return project(G, GeneratorImages(target), space="w", steps=STEPS, seed=0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two renderings in [-1, 1] (the pack's PSNR convention: data range 1 after mapping to 0..1)."""
    return float(-10 * torch.log10(((a - b) / 2).square().mean()))


def _photo(resolution: int) -> torch.Tensor:
    image = Image.open(PHOTO).convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


@pytest.mark.parametrize("space", ["w", "w+"])
def test_projection_improves_on_its_start(G, target, space, pivot):
    latent = pivot if space == "w" else project(G, GeneratorImages(target), space=space, steps=STEPS, seed=0)
    assert latent.ws.shape == (1, G.num_ws, G.w_dim) and latent.noises == {}
    assert latent.generator_hash == state_dict_hash(G)
    assert latent.meta["final_lpips"] < latent.meta["start_lpips"]
    if space == "w+":
        assert not torch.allclose(latent.ws[0, 0], latent.ws[0, -1])  # one w per layer, moved independently


def test_pivotal_tuning_fits_the_photo_and_keeps_buffers(G, pivot):
    """Tuning on the example face: PSNR rises well above G(pivot) (the random tiny model is far from any face);
    only synthesis parameters move (the input transform, Fourier
    frequencies, filters, magnitude EMAs and the mapping network stay as loaded)."""
    photo = _photo(G.img_resolution)
    before = psnr(synthesize(G, pivot), photo)
    tuned = pivotal_tune(G, GeneratorImages(photo), pivot, steps=20, target_psnr=0, seed=0, lr=1e-2)
    after = psnr(synthesize(tuned, pivot), photo)
    assert after > before + 2, (before, after)
    base_state, tuned_state = G.state_dict(), tuned.state_dict()
    parameters = {name for name, _ in G.named_parameters()}
    for name, value in base_state.items():
        if name not in parameters or name.startswith("mapping."):
            assert torch.equal(value, tuned_state[name]), f"{name} changed"
    assert any(not torch.equal(base_state[n], tuned_state[n]) for n in parameters if n.startswith("synthesis."))
    assert state_dict_hash(G) == pivot.generator_hash, "the base generator was modified"


def test_deltas_reload_the_tuned_generator(G, pivot, tmp_path):
    """fp16 delta of a full tuning, and an exact rank-4 delta of a rank-4 tuning, both StyleGAN3 layouts."""
    photo = GeneratorImages(_photo(G.img_resolution))
    full = pivotal_tune(G, photo, pivot, steps=3, target_psnr=0, seed=0)
    low = pivotal_tune(G, photo, pivot, steps=3, target_psnr=0, seed=0, rank=4)
    reference_full, reference_low = synthesize(full, pivot), synthesize(low, pivot)
    reloaded = load_delta(save_delta(full, G, tmp_path / "full.safetensors"), G)
    assert psnr(synthesize(reloaded, pivot), reference_full) > 60
    path = save_delta(low, G, tmp_path / "low.safetensors", mode="lowrank", rank=4)
    assert path.stat().st_size < (tmp_path / "full.safetensors").stat().st_size / 2
    assert psnr(synthesize(load_delta(path, G), pivot), reference_low) > 60
    other = make_tiny_generator(seed=1, config="t", img_resolution=RES)
    with pytest.raises(CheckpointError, match="tuned from base model"):
        load_delta(path, other)


def test_config_r_projects_tunes_and_reloads(tmp_path):
    """Config R (1x1 convolutions, radial filters) through the same path: W+ projection, rank-4 tuning, exact delta."""
    R = make_tiny_generator(seed=2, config="r", img_resolution=RES)
    photo = GeneratorImages(_photo(RES))
    latent = project(R, photo, space="w+", steps=5, seed=0, init_candidates=8)
    assert latent.meta["final_lpips"] < latent.meta["start_lpips"]
    tuned = pivotal_tune(R, photo, latent, steps=3, target_psnr=0, seed=0, rank=4)
    reloaded = load_delta(save_delta(tuned, R, tmp_path / "r.safetensors", mode="lowrank", rank=4), R)
    assert psnr(synthesize(reloaded, latent), synthesize(tuned, latent)) > 60
    assert psnr(synthesize(tuned, latent), synthesize(R, latent)) < 60  # tuning changed the picture


def test_sefa_and_ganspace_on_stylegan3_style_layers(G, pivot, monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path))
    layers = style_layers(G)
    assert [entry[1] for entry in layers] == list(range(1, G.num_ws - 1))  # ws[0] is the input, ws[-1] ToRGB
    assert [entry[0] for entry in layers] == G.synthesis.layer_names[:-1]
    # 2 x cutoff of the style layers at 32 px: 4, 6.7, 11.3, 19, 32, 32 -> coarse (4-8 px) ws 1-2, middle ws 3-6
    assert layer_group_range(G, "coarse") == (1, 3) and layer_group_range(G, "middle") == (3, 7)
    coarse = sefa(G, 3, "coarse", use_cache=False)
    affine = torch.cat([G.synthesis.layers()[i].affine.weight for i in range(2)])
    affine = affine / affine.norm(dim=1, keepdim=True)
    top = coarse[0].vector.double()
    gains = affine.double() @ top
    assert float(gains.norm()) == pytest.approx(math.sqrt(coarse[0].meta["eigenvalue"]), rel=1e-4)
    edited = apply_direction(pivot, coarse[0], 3.0)
    moved = (edited.ws - pivot.ws).abs().sum(dim=2)[0]
    assert bool((moved[1:3] > 0).all()) and float(moved[0] + moved[3:].sum()) == 0
    assert (synthesize(G, edited) - synthesize(G, pivot)).abs().mean() > 1e-3
    components = ganspace(G, 2, num_samples=500, use_cache=False)
    assert components[0].meta["std"] >= components[1].meta["std"] > 0


def test_memory_estimate_covers_what_autograd_saves():
    """The estimate the nodes hand ComfyUI before projection/tuning counts StyleGAN3's maps (no resolution blocks):
    measured 1.35-1.64x what autograd keeps for T and R at 32 and 64 px, batches 1 and 3."""
    from pti import memory

    torch.manual_seed(0)
    wide = Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=64, img_channels=3, channel_base=2048, channel_max=64)
    for G in (make_tiny_generator(config="t"), make_tiny_generator(config="r"), wide):
        G.requires_grad_(True)
        for batch in (1, 3):
            seen: set[tuple[int, int]] = set()

            def pack(tensor: torch.Tensor, seen=seen) -> torch.Tensor:
                seen.add((tensor.untyped_storage().data_ptr(), tensor.numel() * tensor.element_size()))
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                G.synthesis(torch.randn(batch, G.num_ws, G.w_dim))
            saved = sum(size for _, size in seen)
            estimate = memory.optimisation_bytes(G, batch, lpips_net=None, tunes_weights=False)
            assert saved <= estimate <= 3 * saved, (G.config_name, G.img_resolution, batch, saved, estimate)
    assert memory.inference_bytes(wide, 2) == 2 * memory.inference_bytes(wide, 1) > 0


# ------------------------------------------------------------------------------------------------------ nodes


@pytest.fixture(scope="module")
def nodes():
    from pack_loader import load_pack, pack_module

    pack = load_pack()
    return pack.NODE_CLASS_MAPPINGS, pack_module


def _run(nodes_and_modules, key, **inputs):
    nodes, _ = nodes_and_modules
    before = {name: tensor_digest(_plain(v)) for name, v in inputs.items()}
    node = nodes[key]()
    with torch.inference_mode():
        result = getattr(node, node.FUNCTION)(**inputs)
    assert all(tensor_digest(_plain(v)) == before[name] for name, v in inputs.items()), f"{key} changed an input"
    return result


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return value


def test_nodes_load_project_tune_transform_edit_and_save_stylegan3(nodes, G):
    import folder_paths

    _, pack_module = nodes
    folder = Path(folder_paths.get_folder_paths("stylegan")[0])
    packed = pack_module("pti.stylegan3").Generator(**G.init_kwargs)  # ComfyUI holds the pack's own classes
    packed.load_state_dict(G.state_dict())
    pack_module("pti.checkpoints").save_generator(packed, folder / "tiny_sg3.safetensors")
    (loaded,) = _run(nodes, "PTI_LoadStyleGAN", model_name="tiny_sg3.safetensors")
    assert type(loaded).__name__ == "Generator" and type(loaded).__module__.endswith("pti.stylegan3")
    (sampled,) = _run(nodes, "PTI_SampleLatent", generator=loaded, seed=3, batch_size=2, truncation_psi=0.7)
    (images,) = _run(nodes, "PTI_Decode", generator=loaded, latent=sampled, truncation_psi=1.0, noise_mode="const")
    assert images.shape == (2, RES, RES, 3)

    photo = images[:1]
    latent, reconstruction = _run(
        nodes, "PTI_ProjectPivot", generator=loaded, image=photo, steps=3, space="W", seed=0, preset="fast"
    )
    tuned, tuned_image = _run(
        nodes, "PTI_PivotalTune", generator=loaded, image=photo, latent=latent, steps=3, stop_at_psnr=0.0,
        locality=False, seed=0,
    )  # fmt: skip
    assert tuned_image.shape == reconstruction.shape == (1, RES, RES, 3)
    # The transform composes with tuning: the tuned generator's picture of the same pivot moves a quarter width.
    (moved,) = _run(nodes, "PTI_StyleGAN3Transform", generator=tuned, translate_x=0.25, translate_y=0.0, rotate=0.0)
    (plain,) = _run(nodes, "PTI_Decode", generator=tuned, latent=latent, truncation_psi=1.0, noise_mode="const")
    (shifted,) = _run(nodes, "PTI_Decode", generator=moved, latent=latent, truncation_psi=1.0, noise_mode="const")
    overlap = float((shifted[:, :, 8:] - plain[:, :, :-8]).abs().mean())
    assert overlap < float((shifted - plain).abs().mean()) / 3, "translate_x moves the picture right"

    direction, directions, preview = _run(
        nodes, "PTI_ComputeDirections", generator=loaded, method="sefa", num_components=3, component=0,
        layers="coarse", num_samples=100, seed=0, preview_components=2, preview_strength=3.0,
    )  # fmt: skip
    assert len(directions) == 3 and direction.layers == (1, 3) and preview.shape[0] == 1
    (edited,) = _run(
        nodes, "PTI_ApplyLatentEdit", latent=latent, direction=direction, mode="single", strength=3.0, strengths="",
        layer_start=-1, layer_end=-1,
    )  # fmt: skip
    (edited_image,) = _run(nodes, "PTI_Decode", generator=tuned, latent=edited, truncation_psi=1.0, noise_mode="const")
    assert float((edited_image - plain).abs().mean()) > 1e-3

    save = dict(base_generator=loaded, tuned_generator=tuned, latent=latent, name="sg3 face")
    _run(nodes, "PTI_SavePTI", destination="output/pti", delta="auto", **save)
    rebuilt, loaded_latent = _run(nodes, "PTI_LoadPTI", base_generator=loaded, name="sg3 face [output]")
    (again,) = _run(
        nodes, "PTI_Decode", generator=rebuilt, latent=loaded_latent, truncation_psi=1.0, noise_mode="const"
    )
    assert float((again - plain).abs().max()) < 0.01

    sg2 = pack_module("pti.networks").Generator(**make_generator(resolution=16).init_kwargs).eval()
    with pytest.raises(ValueError, match="needs a StyleGAN3 generator"):
        _run(nodes, "PTI_StyleGAN3Transform", generator=sg2, translate_x=0.1, translate_y=0.0, rotate=0.0)


# -------------------------------------------------------------------------------------------------------- CLI


def test_cli_info_describes_the_nvidia_snapshot(capsys):
    assert main(["info", str(SNAPSHOT_PKL)]) == 0
    out = capsys.readouterr().out
    assert "architecture: stylegan3-r" in out and "num_ws: 6" in out and "format: nvidia-pkl" in out


def test_cli_edit_translate_and_rotate(G, pivot, tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "cache"))
    base = save_generator(G, tmp_path / "sg3.safetensors")
    pivot.save(tmp_path / "pivot.safetensors")
    args = ["edit", "--latent", str(tmp_path / "pivot.safetensors"), "--checkpoint", str(base)]
    args += ["--direction", "sefa:0", "--strength", "0"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--translate", "0.25", "0", "--rotate", "0", "--out", str(tmp_path / "moved")]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain" / "sefa_all_0_00_+0.00.png"), dtype=np.int16)
    moved = np.asarray(Image.open(tmp_path / "moved" / "sefa_all_0_00_+0.00.png"), dtype=np.int16)
    assert np.abs(moved[:, 8:] - plain[:, :-8]).mean() < np.abs(moved - plain).mean() / 3

    sg2 = save_generator(make_generator(resolution=16), tmp_path / "sg2.safetensors")
    sg2_pivot = tmp_path / "sg2_pivot.safetensors"
    Latent(torch.zeros(1, 8, 32), {}, "w", "", {}).save(sg2_pivot)
    code = main(["edit", "--latent", str(sg2_pivot), "--checkpoint", str(sg2), "--direction", "sefa:0",
                 "--strength", "0", "--rotate", "10", "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2


def test_cli_invert_stylegan3(G, tmp_path):
    base = save_generator(G, tmp_path / "sg3.safetensors")
    out = tmp_path / "out"
    code = main(["invert", str(PHOTO), "--checkpoint", str(base), "--out", str(out), "--steps-pivot", "3",
                 "--steps-tune", "3", "--stop-psnr", "0", "--device", "cpu"])  # fmt: skip
    assert code == 0
    written = {p.name for p in out.iterdir()}
    assert {"pivot.safetensors", "tuned_delta.safetensors", "comparison.png"} <= written, written
    tuned = load_delta(out / "tuned_delta.safetensors", G)
    assert isinstance(tuned, Generator)
