"""StyleGAN3: the plain-PyTorch port against tensors made with NVIDIA's own code, the filtered leaky ReLU against
their reference op, the loader on a snapshot their training loop pickled (both numpy spellings), the pack's own
file format, and translation/rotation through the input transform."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sg3_helpers import (
    CONFIGS,
    REFERENCE_TRANSFORM,
    SNAPSHOT_OUTPUTS,
    SNAPSHOT_PKL,
    generator_kwargs,
    numpy1_spelling,
    reference,
    reference_state,
)

from pti import ops
from pti.checkpoints import (
    CheckpointError,
    describe_checkpoint,
    load_generator,
    read_safetensors,
    save_generator,
    write_safetensors,
)
from pti.hashing import state_dict_hash
from pti.stylegan3 import (
    Generator,
    design_lowpass_filter,
    make_tiny_generator,
    modulated_conv2d,
    set_transform,
    transform_matrix,
)


@pytest.fixture(scope="module")
def ref():
    return reference()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_nvidia_outputs_for_every_config(ref, name):
    """NVIDIA's state dict loads strictly; ws and images agree with theirs (measured: ws exact, images <= 4.3e-7)."""
    G = Generator(**generator_kwargs(name)).eval()
    state = reference_state(ref, name)
    designed = G.state_dict()
    assert designed.keys() == state.keys()  # same names, including the identity filters NVIDIA leaves out
    for key in designed:  # our filter design, padding schedule and channel widths match theirs
        assert designed[key].shape == state[key].shape, key
        if key.endswith(("up_filter", "down_filter")):
            torch.testing.assert_close(designed[key], state[key], rtol=0, atol=1e-7)
    G.load_state_dict(state, strict=True)
    with torch.no_grad():
        ws = G.mapping(ref[f"{name}/z"], ref.get(f"{name}/c"), truncation_psi=float(ref[f"{name}/psi"]))
        img = G.synthesis(ws, noise_mode="const")
    assert _relative(ws, ref[f"{name}/ws"]) < 1e-5
    assert img.shape == ref[f"{name}/img"].shape
    assert _relative(img, ref[f"{name}/img"]) < 1e-4  # the issue asks for 1e-3


@pytest.mark.parametrize("name", ["t_cond", "r"])
def test_magnitude_ema_updates_as_nvidia_does(ref, name):
    """``update_emas=True`` moves every layer's input-magnitude EMA exactly as NVIDIA's training step does; the
    default leaves them alone (projection and tuning never change them)."""
    G = Generator(**generator_kwargs(name)).eval()
    G.load_state_dict(reference_state(ref, name))
    ws = ref[f"{name}/ws"]
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        G.synthesis(ws)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    with torch.no_grad():
        G.synthesis(ws, update_emas=True)
    prefix = f"{name}/ema_after/"
    expected = {k[len(prefix) :]: v for k, v in ref.items() if k.startswith(prefix)}
    assert len(expected) == G.synthesis.num_layers + 1
    for key, value in expected.items():
        assert not torch.equal(before[key].reshape(1), value)
        torch.testing.assert_close(G.state_dict()[key].reshape(1), value, rtol=1e-5, atol=0)


@pytest.mark.parametrize("case", range(4))
def test_filtered_lrelu_matches_nvidia_reference_op(ref, case):
    """Separable and radial filters, up 2/4, down 2, asymmetric padding, clamp, slope 1 (ToRGB): bit-identical."""
    up, down, *pad, gain, slope, clamp = ref[f"fl{case}/params"].tolist()
    y = ops.filtered_lrelu(
        ref[f"fl{case}/x"],
        ref.get(f"fl{case}/fu"),
        ref.get(f"fl{case}/fd"),
        ref[f"fl{case}/b"],
        up=int(up),
        down=int(down),
        padding=[int(p) for p in pad],
        gain=gain,
        slope=slope,
        clamp=None if clamp < 0 else clamp,
    )
    assert y.shape == ref[f"fl{case}/y"].shape
    assert _relative(y, ref[f"fl{case}/y"]) < 1e-6


def test_filtered_lrelu_gradients_match_finite_differences():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    fu = design_lowpass_filter(8, 3, 4, 16).double()
    fd = design_lowpass_filter(8, 3, 4, 16, radial=True).double()
    assert torch.autograd.gradcheck(
        lambda x, b: ops.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[3, 4, 3, 4], clamp=3.0), (x, b)
    )


@pytest.mark.parametrize("index", range(4))
def test_filter_design_matches_nvidia(ref, index):
    numtaps, cutoff, width, fs, radial = ref[f"filter{index}/args"].tolist()
    f = design_lowpass_filter(int(numtaps), cutoff, width, fs, radial=bool(radial))
    assert f.ndim == (2 if radial else 1)
    torch.testing.assert_close(f, ref[f"filter{index}/f"], rtol=0, atol=1e-7)
    assert design_lowpass_filter(1, cutoff, width, fs) is None


def test_modulated_conv_input_gain_scales_the_input():
    x, w, s = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(2, 4)
    gain = torch.tensor(0.3)
    torch.testing.assert_close(
        modulated_conv2d(x, w, s, padding=1, input_gain=gain), modulated_conv2d(x * 0.3, w, s, padding=1)
    )
    with pytest.raises(ValueError, match="do not fit"):
        modulated_conv2d(x, w, torch.randn(2, 5))


def test_nvidia_training_snapshot_loads_as_g_ema(tmp_path):
    """The snapshot NVIDIA's training loop pickled (numpy 2, ``numpy._core`` arrays in module state) loads G_ema
    without running code and reproduces NVIDIA's images; the numpy 1.x spelling loads to the same weights."""
    G = load_generator(SNAPSHOT_PKL)
    assert isinstance(G, Generator) and G.config_name == "stylegan3-r"
    assert G.source_info["network"] == "G_ema"
    assert G.source_info["pickle_contents"] == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    outputs = read_safetensors(SNAPSHOT_OUTPUTS)[0]
    with torch.no_grad():
        ws = G.mapping(outputs["z"], None)
        img = G(outputs["z"], None)
    assert _relative(ws, outputs["ws"]) < 1e-5
    assert _relative(img, outputs["img"]) < 1e-4

    data = SNAPSHOT_PKL.read_bytes()
    assert b"numpy._core.multiarray" in data and b"_reconstruct" in data
    old = numpy1_spelling(data)
    assert b"numpy._core" not in old and b"numpy.core.multiarray" in old
    path = tmp_path / "numpy1.pkl"
    path.write_bytes(old)
    assert load_generator(path).source_info["hash"] == G.source_info["hash"]


def test_describe_stylegan3_checkpoint():
    info = describe_checkpoint(SNAPSHOT_PKL)
    assert info["architecture"] == "stylegan3-r"
    assert (info["resolution"], info["num_ws"], info["w_dim"]) == (16, 6, 8)


def test_pti_file_round_trip_keeps_every_buffer(tmp_path, ref):
    G = Generator(**generator_kwargs("r_cond")).eval()
    G.load_state_dict(reference_state(ref, "r_cond"))
    G = set_transform(G, translate=(0.1, 0.2), rotate=30)
    path = save_generator(G, tmp_path / "g.safetensors", provenance={"source": "test"})
    loaded = load_generator(path)
    assert isinstance(loaded, Generator) and loaded.init_kwargs == G.init_kwargs
    assert state_dict_hash(loaded) == state_dict_hash(G)
    torch.testing.assert_close(loaded.synthesis.input.transform, G.synthesis.input.transform, rtol=0, atol=0)
    half = load_generator(save_generator(G, tmp_path / "g16.safetensors", fp16=True))
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    with torch.no_grad():
        assert _relative(half(z, c), G(z, c)) < 2e-2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"filter_size": 10**6}, "filter_size"),
        ({"num_layers": 10**5}, "num_layers"),
        ({"img_resolution": 2**20}, "img_resolution"),
        ({"margin_size": -3}, "margin_size"),
        ({"first_cutoff": float("nan")}, "first_cutoff"),
        ({"lrelu_upsampling": 10**4}, "lrelu_upsampling"),
        ({"evil": 1}, "unknown StyleGAN3"),
        ({"conv_clamp": "256"}, "conv_clamp"),
        ({"num_critical": 6}, "num_critical"),
    ],
)
def test_hostile_stylegan3_configs_are_refused_before_building(tmp_path, change, message):
    """A config that would make the CPU design a 10^6-tap filter or a million layers is refused by name."""
    G = make_tiny_generator(img_resolution=16)
    path = save_generator(G, tmp_path / "g.safetensors")
    tensors, metadata = read_safetensors(path)
    config = json.loads(metadata["config"])
    config.update(change)
    metadata["config"] = json.dumps(config)
    write_safetensors(path, tensors, metadata)
    with pytest.raises(CheckpointError, match=message):
        load_generator(path)


def test_transform_matrix_is_nvidias_convention(ref):
    """NVIDIA's reference t_cond was rendered with their ``make_transform`` inverted; ours gives the same matrix."""
    expected = reference_state(ref, "t_cond")["synthesis.input.transform"]
    torch.testing.assert_close(transform_matrix(**REFERENCE_TRANSFORM), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(transform_matrix(), torch.eye(3))


def _sg3_for_equivariance() -> Generator:
    """Built at 32 px with a wide margin, so the translated content stays inside the computed area."""
    torch.manual_seed(3)
    return Generator(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, channel_base=512, channel_max=16,
        num_layers=6, margin_size=10, mapping_kwargs=dict(num_layers=2),
    ).eval()  # fmt: skip


def test_translation_through_the_transform_moves_the_picture():
    """translate=(0.25, 0) shifts the image 8 px right at 32 px (alias-free: the overlap matches, PSNR > 30 dB);
    the input generator is not modified."""
    G = _sg3_for_equivariance()
    before = state_dict_hash(G)
    moved = set_transform(G, translate=(0.25, 0.0))
    assert state_dict_hash(G) == before
    ws = G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(0)), None)
    with torch.no_grad():
        img, shifted = G.synthesis(ws), moved.synthesis(ws)
    overlap, reference_part = shifted[..., 8:], img[..., :-8]
    peak = float(img.abs().max())
    psnr = 10 * math.log10(peak**2 / float((overlap - reference_part).square().mean()))
    unmoved = 10 * math.log10(peak**2 / float((shifted - img).square().mean()))
    assert psnr > 30 and unmoved < psnr - 10


def test_rotation_through_the_transform_turns_the_picture():
    """Config R is rotation-equivariant: rotate=90 turns the picture a quarter turn counter-clockwise as displayed
    (measured: exact to float32 round-off inside a centred disc); -90 turns it the other way."""
    torch.manual_seed(3)
    G = Generator(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, channel_base=1024, channel_max=32,
        num_layers=6, margin_size=10, conv_kernel=1, use_radial_filters=True, mapping_kwargs=dict(num_layers=2),
    ).eval()  # fmt: skip
    ws = G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(1)), None)
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    disc = (yy**2 + xx**2) < 12**2
    with torch.no_grad():
        img = G.synthesis(ws)
        for angle, quarter_turns in ((90, 1), (-90, -1)):
            rotated = set_transform(G, rotate=angle).synthesis(ws)
            error = float((rotated - torch.rot90(img, k=quarter_turns, dims=(2, 3)))[..., disc].square().mean())
            wrong_way = float((rotated - torch.rot90(img, k=-quarter_turns, dims=(2, 3)))[..., disc].square().mean())
            assert error < 1e-10 < wrong_way


def test_set_transform_refuses_stylegan2():
    from conftest import make_generator

    with pytest.raises(TypeError, match="StyleGAN3"):
        set_transform(make_generator(resolution=16))


def test_no_noise_inputs():
    G = make_tiny_generator(img_resolution=16)
    assert G.synthesis.noise_layers() == {}
    ws = G.mapping(torch.randn(1, 16), None)
    with pytest.raises(ValueError, match="no noise inputs"):
        G.synthesis(ws, noises={"b4.conv1": torch.zeros(1, 1, 4, 4)})
    with pytest.raises(ValueError, match=r"ws must be \[N, 8, 16\]"):
        G.synthesis(ws[:, :3])
