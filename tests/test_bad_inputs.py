"""Bad inputs for every node and the core functions behind them: each gives one clear error naming the problem (or a
documented conversion), never a crash deep inside PyTorch, and never modifies the inputs.

The "Bad inputs" table in docs/security.md is this file, row by row.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_generator, peak_rss_reset, status_kb, tensor_digest
from pack_loader import load_pack, pack_module

from pti.checkpoints import CheckpointError, load_generator
from pti.directions import Direction, DirectionError
from pti.edit import apply_direction
from pti.image import prepare_target
from pti.latent import Latent, synthesize
from pti.projection import project
from pti.tune import pivotal_tune

pack = load_pack()
NODES = pack.NODE_CLASS_MAPPINGS
import folder_paths  # noqa: E402  (the fake, importable once the pack is loaded)

STEPS = 2


def _with_defaults(key: str, inputs: dict) -> dict:
    """``inputs`` completed with the widget defaults of the node's other required inputs (the paper's preset, which
    skips the candidate search, where there is a choice), so these tests follow the node's current widget set."""
    completed = dict(inputs)
    for name, spec in NODES[key].INPUT_TYPES()["required"].items():
        if name in completed:
            continue
        kind, options = spec[0], spec[1] if len(spec) > 1 else {}
        if isinstance(kind, list):
            completed[name] = next((o for o in kind if "paper" in o), options.get("default", kind[0]))
        else:
            completed[name] = options.get("default")
    return completed


def run_node(key: str, **inputs):
    """Call node ``key`` as ComfyUI does (inference mode) and check that no input was modified."""
    inputs = _with_defaults(key, inputs)
    before = {name: tensor_digest(_fields(value)) for name, value in inputs.items()}
    node = NODES[key]()
    try:
        with torch.inference_mode():
            return getattr(node, node.FUNCTION)(**inputs)
    finally:
        for name, value in inputs.items():
            assert tensor_digest(_fields(value)) == before[name], f"{key} modified its input {name!r}"


def _fields(value):
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return value


def _pack_generator(**kwargs):
    G = make_generator(**kwargs)
    packed = pack_module("pti.networks").Generator(**G.init_kwargs)
    packed.load_state_dict(G.state_dict())
    return packed.eval()


@pytest.fixture(scope="module")
def G():
    return _pack_generator(resolution=32)


@pytest.fixture(scope="module")
def core_G():
    return make_generator(resolution=32)


def _photo(batch=1, size=40, channels=3, seed=0):
    return torch.rand(batch, size, size, channels, generator=torch.Generator().manual_seed(seed))


def _latent(G, rows=1):
    return run_node("PTI_SampleLatent", generator=G, seed=0, batch_size=rows, truncation_psi=1.0)[0]


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("channels", [5, 8])
def test_wrong_channel_counts(G, channels):
    """IMAGE with 5 or 8 channels (a mask or latent wired in) is refused by name before any work."""
    photo = _photo(channels=channels)
    with pytest.raises(ValueError, match=f"the IMAGE has {channels} channels"):
        run_node("PTI_ProjectPivot", generator=G, image=photo, steps=STEPS, space="W", seed=0)
    with pytest.raises(ValueError, match=f"the IMAGE has {channels} channels"):
        run_node(
            "PTI_PivotalTune", generator=G, image=photo, latent=_latent(G), steps=STEPS, stop_at_psnr=0.0,
            locality=False, seed=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="cannot tell the channel axis|expected an image"):
        prepare_target(torch.rand(channels, 40, 41), 32)


def test_rgba_is_composited_over_white_and_grey_repeated():
    rgb = torch.rand(1, 3, 32, 32)
    transparent = torch.cat([rgb, torch.zeros(1, 1, 32, 32)], dim=1)
    assert torch.equal(prepare_target(transparent, 32), torch.ones(1, 3, 32, 32))
    opaque = torch.cat([rgb, torch.ones(1, 1, 32, 32)], dim=1)
    assert torch.allclose(prepare_target(opaque, 32), rgb * 2 - 1)
    grey = torch.rand(1, 1, 32, 32)
    assert torch.equal(prepare_target(grey, 32), (grey * 2 - 1).expand(1, 3, 32, 32))
    assert prepare_target(np.zeros((32, 32), np.uint8), 32).shape == (1, 3, 32, 32)
    to_targets = pack_module("nodes.common").comfy_to_targets  # the nodes' conversion of an IMAGE
    for channels in (1, 2, 4):
        targets = to_targets(_photo(batch=2, channels=channels), 32).pixels
        assert targets.shape == (2, 3, 32, 32) and targets.min() >= -1 and targets.max() <= 1


def test_one_pixel_grey_image_is_upscaled_and_projected(G):
    target = prepare_target(torch.full((3, 1, 1), 0.25), 32)
    assert target.shape == (1, 3, 32, 32) and torch.allclose(target, torch.full_like(target, -0.5), atol=1e-5)
    latent, reconstruction = run_node(
        "PTI_ProjectPivot", generator=G, image=_photo(size=1, channels=1), steps=1, space="W", seed=0
    )
    assert torch.isfinite(latent.ws).all() and reconstruction.shape == (1, 32, 32, 3)


@pytest.fixture(scope="module")
def downscale_8000px():
    """Peak RSS growth (MB) of turning an 8000 x 8000 RGB photo (192 MB as 8-bit) into a 256 px target."""
    if not peak_rss_reset():
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak RSS")
    photo = np.empty((8000, 8000, 3), np.uint8)
    photo[...] = (np.arange(8000, dtype=np.uint32) * 7 % 256).astype(np.uint8)[:, None, None]
    peak_rss_reset()
    before = status_kb("VmRSS")
    target = prepare_target(photo, 256)
    growth = (status_kb("VmHWM") - before) / 1024
    expected = photo[:32, :32].astype(np.float32).mean(axis=(0, 1)) / 255 * 2 - 1  # first pixel = area mean
    return growth, target, expected


FLOAT_COPY_MB = 8000 * 8000 * 3 * 4 / 2**20  # one full-resolution float32 copy: 732 MB


def test_8000px_photo_is_downscaled_without_a_full_resolution_float_copy(downscale_8000px):
    """The photo is cropped and area-averaged one band of rows at a time, straight from its 8-bit pixels: the peak
    stays far below one full-size float32 copy (the old path made two, ~1.47 GB), and the result is still the exact
    area average."""
    growth, target, expected = downscale_8000px
    assert target.shape == (1, 3, 256, 256)
    assert np.allclose(target[0, :, 0, 0].numpy(), expected, atol=1e-4)
    one_copy = f"one float32 copy is {FLOAT_COPY_MB:.0f} MB"
    assert growth < 0.25 * FLOAT_COPY_MB, f"peak RSS grew by {growth:.0f} MB ({one_copy})"


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_pixels_are_refused_by_the_nodes(value):
    photo = _photo()
    photo[0, 5, 5, 0] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        pack_module("nodes.common").comfy_to_targets(photo, 32)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_pixels_are_refused_by_the_core(value):
    from pti.image import as_targets

    photo = torch.rand(1, 3, 32, 32)
    photo[0, 0, 5, 5] = value
    with pytest.raises(ValueError, match="NaN|infinite|finite"):
        as_targets(photo, 32, "cpu")


def test_empty_batches(G, core_G):
    with pytest.raises(ValueError, match="the IMAGE batch is empty"):
        run_node("PTI_ProjectPivot", generator=G, image=_photo(batch=0), steps=STEPS, space="W", seed=0)
    empty_latent = pack_module("pti.latent").Latent(torch.zeros(0, G.num_ws, G.w_dim), {}, "w", "", {})
    with pytest.raises(ValueError, match="the latent batch is empty"):
        run_node("PTI_Decode", generator=G, latent=empty_latent, truncation_psi=1.0, noise_mode="const")
    with pytest.raises(ValueError, match="empty"):
        run_node(
            "PTI_SaveImage", images=torch.zeros(0, 8, 8, 3), filename_prefix="x", layout="separate", grid_columns=0
        )
    with pytest.raises(ValueError, match="no images|at least one|empty"):
        project(core_G, [], steps=1)


def test_batch_size_mismatch_between_images_and_latents(G, core_G):
    with pytest.raises(ValueError, match=r"got 3 image\(s\) but 2 pivot latent\(s\)"):
        run_node(
            "PTI_PivotalTune", generator=G, image=_photo(batch=3), latent=_latent(G, rows=2), steps=STEPS,
            stop_at_psnr=0.0, locality=False, seed=0,
        )  # fmt: skip
    pivots = Latent(torch.zeros(2, core_G.num_ws, core_G.w_dim), {}, "w", "", {})
    with pytest.raises(ValueError, match="3 images but 2 pivots"):
        pivotal_tune(core_G, torch.zeros(3, 3, 32, 32), pivots, steps=1)
    with pytest.raises(ValueError, match="2 latent"):
        run_node("PTI_SaveImage", images=_photo(batch=3), filename_prefix="x", layout="separate", grid_columns=0,
                 latent=_latent(G, rows=2))  # fmt: skip


@pytest.mark.parametrize("kwargs", [dict(w_dim=16, z_dim=16), dict(resolution=64)])
def test_latent_from_a_different_generator(G, core_G, kwargs):
    """num_ws (resolution) or w_dim differ: refused with both shapes named, by nodes and the core."""
    other = _pack_generator(**kwargs)
    latent = _latent(other)
    with pytest.raises(ValueError, match="it was made with a different model"):
        run_node("PTI_Decode", generator=G, latent=latent, truncation_psi=1.0, noise_mode="const")
    with pytest.raises(ValueError, match="it was made with a different model"):
        run_node(
            "PTI_PivotalTune", generator=G, image=_photo(), latent=latent, steps=STEPS, stop_at_psnr=0.0,
            locality=False, seed=0,
        )  # fmt: skip
    core_latent = Latent(latent.ws.clone(), {}, "w", "", {})
    with pytest.raises(ValueError, match="project the image with this generator"):
        synthesize(core_G, core_latent)


def test_latent_of_the_same_shape_from_an_unrelated_generator(G):
    latent = _latent(_pack_generator(resolution=32, seed=9))
    with pytest.raises(ValueError, match="not a tuned version of it"):
        run_node("PTI_Decode", generator=G, latent=latent, truncation_psi=1.0, noise_mode="const")


def test_direction_of_the_wrong_size(G, core_G):
    wrong = pack_module("pti.directions").Direction("ffhq_smile", torch.ones(512), None, {})
    with pytest.raises(ValueError, match=r"512-dimensional but the generator's w_dim is 32"):
        run_node("PTI_ApplyLatentEdit", latent=_latent(G), direction=wrong, mode="single", strength=1.0,
                 strengths="", layer_start=-1, layer_end=-1)  # fmt: skip
    layered = pack_module("pti.directions").Direction("deep", torch.ones(20, 32), None, {})
    with pytest.raises(ValueError, match="has 20 layers but the generator has num_ws=8"):
        run_node("PTI_ApplyLatentEdit", latent=_latent(G), direction=layered, mode="single", strength=1.0,
                 strengths="", layer_start=-1, layer_end=-1)  # fmt: skip
    with pytest.raises(DirectionError, match="512-dimensional"):
        apply_direction(torch.zeros(1, core_G.num_ws, core_G.w_dim), Direction("x", torch.ones(512)), 1.0)


def test_missing_or_renamed_model_files(tmp_path, G):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_generator(tmp_path / "ffhq.pkl")
    message = NODES["PTI_LoadStyleGAN"].VALIDATE_INPUTS("renamed.pkl")
    assert "renamed.pkl" in message and "not found" in message
    with pytest.raises(FileNotFoundError, match="renamed.pkl"):
        run_node("PTI_LoadStyleGAN", model_name="renamed.pkl")
    assert "not found" in NODES["PTI_LoadPTI"].VALIDATE_INPUTS("gone")
    with pytest.raises(FileNotFoundError, match="gone"):
        run_node("PTI_LoadPTI", base_generator=G, name="gone")
    assert "neither a shipped attribute nor a file" in NODES["PTI_LoadDirection"].VALIDATE_INPUTS("gone.npy")
    assert "not found" in NODES["PTI_ReadRecipe"].VALIDATE_INPUTS("gone.png")


def test_no_face_found():
    """A blank photo: 'error' says no face was found (or that no detector is installed); 'center crop' goes on."""
    blank = torch.full((1, 64, 64, 3), 0.5)
    with pytest.raises(ValueError, match="no face|landmarks by hand|detector"):
        run_node("PTI_AlignFace", image=blank, size=32, detector="auto", fallback="error", landmarks="")
    aligned, alignments = run_node(
        "PTI_AlignFace", image=blank, size=32, detector="auto", fallback="center crop", landmarks=""
    )
    assert aligned.shape == (1, 32, 32, 3) and "fallback_reason" in alignments[0].meta
    with pytest.raises(ValueError, match="landmarks"):
        run_node("PTI_AlignFace", image=blank, size=32, detector="auto", fallback="error", landmarks="1,2,3")


def test_damaged_recipe_in_a_png(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("pti_recipe", '{"format": "pti-recipe", "shape": [8, 32], "rows": [{"ws": "AAAA"}]}')
    Image.new("RGB", (8, 8)).save(f"{folder_paths.get_input_directory()}/damaged.png", pnginfo=info)
    with pytest.raises(ValueError, match="recipe cannot be read"):
        run_node("PTI_ReadRecipe", image="damaged.png")
    Image.new("RGB", (8, 8)).save(f"{folder_paths.get_input_directory()}/plain.png")
    with pytest.raises(ValueError, match="has no PTI recipe"):
        run_node("PTI_ReadRecipe", image="plain.png")


def test_invalid_save_names_are_refused_before_writing(G):
    for name in ("../escape", ".hidden", "a/b", ""):
        assert NODES["PTI_SavePTI"].VALIDATE_INPUTS(name) is not True
