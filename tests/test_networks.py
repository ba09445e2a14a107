"""The generator: reference outputs, NVIDIA parameter names, shapes, truncation, noise modes, fused/unfused."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT, make_generator
from safetensors.torch import load_file

from pti import ops
from pti.networks import Discriminator, Generator

REFERENCE = REPO_ROOT / "tests" / "data" / "reference_outputs_16px.safetensors"


def _reference_generator(arch: str) -> Generator:
    return Generator(
        z_dim=16,
        c_dim=3,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=0, conv_clamp=256, architecture=arch),
    ).eval()


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_matches_reference_implementation_outputs(arch):
    """State dicts saved from NVIDIA's implementation load strictly and reproduce its images to 1e-4 relative."""
    data = load_file(REFERENCE)
    state = {k[len(f"{arch}/state/") :]: v for k, v in data.items() if k.startswith(f"{arch}/state/")}
    G = _reference_generator(arch)
    G.load_state_dict(state, strict=True)
    with torch.no_grad():
        ws = G.mapping(data[f"{arch}/z"], data[f"{arch}/c"], truncation_psi=0.7, truncation_cutoff=2)
        torch.testing.assert_close(ws, data[f"{arch}/ws"], rtol=1e-5, atol=1e-6)
        expected = data[f"{arch}/img"]
        for fused in (True, False):
            img = G.synthesis(ws, noise_mode="const", fused_modconv=fused)
            rel = ((img - expected).abs().max() / expected.abs().max()).item()
            assert rel < 1e-4, f"{arch} fused={fused}: relative error {rel:.2e}"


def test_parameter_names_follow_nvidia_layout():
    G = make_generator(resolution=16, architecture="resnet")
    names = set(G.state_dict())
    expected = {
        "mapping.w_avg",
        "mapping.fc0.weight",
        "mapping.fc1.bias",
        "synthesis.b4.const",
        "synthesis.b4.resample_filter",
        "synthesis.b4.conv1.weight",
        "synthesis.b4.conv1.noise_const",
        "synthesis.b4.conv1.noise_strength",
        "synthesis.b4.conv1.affine.weight",
        "synthesis.b4.conv1.affine.bias",
        "synthesis.b8.conv0.resample_filter",
        "synthesis.b8.skip.weight",
        "synthesis.b16.torgb.weight",
        "synthesis.b16.torgb.affine.bias",
    }
    assert expected <= names
    assert "synthesis.b8.torgb.weight" not in names  # resnet: toRGB only in the last block


@pytest.mark.parametrize("resolution,num_ws", [(16, 6), (32, 8), (64, 10), (256, 14), (1024, 18)])
def test_num_ws_follows_resolution(resolution, num_ws):
    G = Generator(
        z_dim=8,
        c_dim=0,
        w_dim=8,
        img_resolution=resolution,
        img_channels=3,
        synthesis_kwargs=dict(channel_base=resolution * 2, channel_max=4),
    )
    assert G.num_ws == num_ws
    assert len(G.synthesis.noise_layers()) == num_ws - 1


@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_output_shape_and_range(arch, resolution):
    G = make_generator(resolution=resolution, architecture=arch)
    with torch.no_grad():
        img = G(torch.randn(3, G.z_dim), None, noise_mode="const")
    assert img.shape == (3, 3, resolution, resolution)
    assert torch.isfinite(img).all()


def test_conditional_generator_uses_label():
    G = make_generator(c_dim=4)
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        a = G(z, torch.eye(4)[:2], noise_mode="const")
        b = G(z, torch.eye(4)[2:], noise_mode="const")
    assert (a - b).abs().mean() > 1e-3
    with pytest.raises(ValueError, match=r"c must be \[N, 4\]"):
        G(z, None)


def test_truncation_psi_zero_returns_w_avg_and_cutoff_limits_layers():
    G = make_generator()
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0)
        torch.testing.assert_close(ws, G.mapping.w_avg.expand_as(ws))
        full = G.mapping(z, None)
        cut = G.mapping(z, None, truncation_psi=0, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], G.mapping.w_avg.expand(4, 3, -1))
    torch.testing.assert_close(cut[:, 3:], full[:, 3:])


def test_noise_modes():
    G = make_generator()
    ws = G.mapping(torch.randn(2, G.z_dim), None).detach()
    with torch.no_grad():
        const_a = G.synthesis(ws, noise_mode="const")
        const_b = G.synthesis(ws, noise_mode="const")
        random_a = G.synthesis(ws, noise_mode="random")
        random_b = G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
        zero_noise = {k: torch.zeros(l.resolution, l.resolution) for k, l in G.synthesis.noise_layers().items()}
        explicit_zero = G.synthesis(ws, noise_mode="const", noises=zero_noise)
    assert torch.equal(const_a, const_b)
    assert not torch.equal(random_a, random_b)
    assert (none - const_a).abs().max() > 1e-4
    torch.testing.assert_close(explicit_zero, none)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")


def test_bad_ws_shape_names_expected_shape():
    G = make_generator()
    with pytest.raises(ValueError, match=rf"ws must be \[N, {G.num_ws}, {G.w_dim}\]"):
        G.synthesis(torch.zeros(1, G.num_ws + 1, G.w_dim))


def test_fused_and_unfused_modconv_agree_and_backpropagate():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 8, 8)
    weight = torch.randn(4, 8, 3, 3, requires_grad=True)
    styles = torch.randn(3, 8)
    f = ops.setup_filter([1, 3, 3, 1])
    for up in (1, 2):
        a = ops.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, fused=True)
        b = ops.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, fused=False)
        assert a.shape == (3, 4, 8 * up, 8 * up)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    b.square().mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_modconv_picks_grouped_only_for_one_undifferentiated_sample(monkeypatch):
    """The per-call rule: grouped for a single rendered sample; shared for batches and for anything differentiated
    (projection, tuning, training), where it was measured faster (benchmarks/bench_networks.py)."""
    original = ops.conv2d_resample
    convolved_weights = []
    monkeypatch.setattr(
        ops, "conv2d_resample", lambda x, w, **kwargs: convolved_weights.append(w) or original(x, w, **kwargs)
    )

    def strategy(batch: int, grad_enabled: bool = True, needs_grad: str = "") -> str:
        tensors = {"x": torch.randn(batch, 8, 8, 8), "weight": torch.randn(4, 8, 3, 3), "styles": torch.randn(batch, 8)}
        if needs_grad:
            tensors[needs_grad].requires_grad_(True)
        with torch.set_grad_enabled(grad_enabled):
            ops.modulated_conv2d(tensors["x"], tensors["weight"], tensors["styles"], padding=1)
        # The shared path convolves with the layer's own weight; the grouped one with per-sample modulated weights.
        return "shared" if convolved_weights[-1] is tensors["weight"] else "grouped"

    assert strategy(1) == "grouped"
    assert strategy(4) == "shared"
    for needs_grad in ("x", "weight", "styles"):
        assert strategy(1, needs_grad=needs_grad) == "shared", needs_grad
        assert strategy(1, grad_enabled=False, needs_grad=needs_grad) == "grouped", needs_grad


def test_upsample_and_downsample_preserve_constant_images():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 0.5)
    up = ops.upsample2d(x, f)
    down = ops.downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.5))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.5))


def test_training_mode_tracks_w_avg():
    G = make_generator()
    before = G.mapping.w_avg.clone()
    G.train()
    G.mapping(torch.randn(8, G.z_dim), None)
    assert not torch.equal(before, G.mapping.w_avg)
    G.eval()
    after = G.mapping.w_avg.clone()
    G.mapping(torch.randn(8, G.z_dim), None)
    assert torch.equal(after, G.mapping.w_avg)


def test_discriminator_matches_nvidias_outputs():
    """NVIDIA's Discriminator(c_dim=0, 32 px) state dict loads strictly by name and gives its logits exactly."""
    stored = load_file(str(REPO_ROOT / "tests" / "data" / "reference_discriminator_32px.safetensors"))
    images, logits = stored.pop("input"), stored.pop("output")
    D = Discriminator(32, channel_base=256, channel_max=32).eval()
    D.load_state_dict(stored, strict=True)
    with torch.no_grad():
        assert torch.allclose(D(images), logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(D(images.flip(-1)), logits, atol=1e-3)  # the logits depend on the input
    assert Discriminator(**D.init_kwargs).state_dict().keys() == D.state_dict().keys()
