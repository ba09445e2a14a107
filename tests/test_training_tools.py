"""The tools that made the embedded default model: supervised training, the adversarial phase, direction fitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pti.checkpoints import load_generator
from pti.synthetic import faces
from tools import fit_directions, train_default_model

TINY = [
    "--resolution", "16", "--w-dim", "16", "--mapping-layers", "2", "--channel-base", "128", "--channel-max", "16",
    "--batch", "4", "--lpips-weight", "0", "--log-every", "1000", "--threads", "1",
]  # fmt: skip


def _renderer_error(path, z: torch.Tensor) -> float:
    G = load_generator(path)
    with torch.no_grad():
        return (G(z, noise_mode="const") - faces.render_from_z(z, 16)).abs().mean().item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny supervised run (60 iterations), its state and the exported files, plus the untrained export."""
    folder = tmp_path_factory.mktemp("train")
    state = folder / "state.pt"
    common = [*TINY, "--state", str(state), "--minutes", "10", "--lr", "1e-2", "--ema-beta", "0.9"]
    train_default_model.main([*common, "--max-iterations", "0"])
    train_default_model.main(["--state", str(state), "--export", str(folder / "untrained.safetensors")])
    train_default_model.main([*common, "--max-iterations", "60", "--resume"])
    train_default_model.main(["--state", str(state), "--export", str(folder / "trained.safetensors")])
    return folder


def test_supervised_training_learns_the_renderer_and_exports_a_loadable_model(trained):
    z = faces.sample_z(32, seed=5)
    before = _renderer_error(trained / "untrained.safetensors", z)
    after = _renderer_error(trained / "trained.safetensors", z)
    assert after < 0.8 * before, (before, after)
    G = load_generator(trained / "trained.safetensors")
    assert G.source_info["provenance"]["iterations"] == 60
    recorded = G.source_info["provenance"]["settings"]["state"]  # given as an absolute path: recorded relative
    assert recorded.endswith("/state.pt") and not Path(recorded).is_absolute(), recorded
    assert G.init_kwargs["mapping_kwargs"]["lr_multiplier"] == 1.0  # the mapping network really trains


def test_second_stage_records_the_stage_it_started_from(trained, tmp_path):
    state = tmp_path / "stage2.pt"
    common = [*TINY, "--state", str(state), "--minutes", "10", "--feature-weight", "2"]
    train_default_model.main([*common, "--init", str(trained / "state.pt"), "--max-iterations", "4"])
    train_default_model.main([*common, "--resume", "--max-iterations", "7"])
    (trained / "state.pt").rename(tmp_path / "moved.pt")  # the history travels inside the state
    try:
        train_default_model.main(["--state", str(state), "--export", str(tmp_path / "g.safetensors")])
    finally:
        (tmp_path / "moved.pt").rename(trained / "state.pt")
    provenance = load_generator(tmp_path / "g.safetensors").source_info["provenance"]
    stages = provenance["stages"]
    assert [stage["iterations"] for stage in stages] == [60, 7] and provenance["iterations"] == 67
    assert stages[0]["settings"]["init"] is None and stages[1]["settings"]["feature_weight"] == 2
    assert provenance["images_seen"] == stages[0]["images_seen_at_end"] + 7 * 4
    assert provenance["wall_minutes"] == pytest.approx(sum(stage["wall_minutes"] for stage in stages), abs=0.11)


def test_adversarial_phase_runs_resumes_and_records_itself(trained, tmp_path):
    state = tmp_path / "adversarial.pt"
    common = [*TINY, "--adversarial", "--state", str(state), "--minutes", "10", "--r1-every", "2"]
    train_default_model.main([*common, "--init", str(trained / "state.pt"), "--max-iterations", "3"])
    train_default_model.main([*common, "--resume", "--max-iterations", "5"])
    saved = torch.load(state, map_location="cpu", weights_only=True)
    assert saved["adversarial_iteration"] == 5 and saved["iteration"] == 60
    assert any(key.startswith("b16.") for key in saved["D"])
    train_default_model.main(["--state", str(state), "--export", str(tmp_path / "g.safetensors")])
    provenance = load_generator(tmp_path / "g.safetensors").source_info["provenance"]
    assert "adversarial fine-tune (5 iterations" in provenance["method"]
    with pytest.raises(SystemExit, match="--init"):
        train_default_model.main([*TINY, "--adversarial", "--state", str(tmp_path / "none.pt")])


def test_mean_shift_directions_follow_the_planted_factors_and_stay_in_distribution():
    """W = attributes mixed into 12 dims + strong unrelated variance in other dims: the mean-shift direction is the
    planted factor; the LDA normal leans into the low-variance dims (precision weighting)."""
    generator = torch.Generator().manual_seed(0)
    n, w_dim = 20_000, 12
    attributes = torch.rand([n, 2], generator=generator)
    factors = torch.linalg.qr(torch.randn([w_dim, w_dim], generator=generator))[0][:, :2].T  # orthonormal [2, 12]
    nuisance = torch.randn([n, w_dim], generator=generator) * torch.linspace(0.02, 3.0, w_dim)
    w = attributes @ factors * 4.0 + nuisance
    shifts, _ = fit_directions.fit_mean_shifts(w, attributes)
    normals, r2 = fit_directions.fit_boundaries(w, attributes)
    assert torch.allclose(shifts.norm(dim=1), torch.ones(2)) and torch.allclose(normals.norm(dim=1), torch.ones(2))
    assert (shifts * factors).sum(1).min() > 0.95  # cosine with the planted factor
    assert (normals * factors).sum(1).max() < (shifts * factors).sum(1).min()
    assert (w @ normals.T).std(0).max() < (w @ shifts.T).std(0).min()  # the normal points where w barely varies
    assert r2.min() > 0.5  # the boundary fit itself is good: the difference is where its normal points


def test_feature_loss_sees_only_the_facial_features():
    z = faces.sample_z(4, seed=11)
    target = faces.render_from_z(z, 32)
    assert train_default_model.feature_loss(target, target, z, 32) == 0
    shifted = faces.params_from_z(z)
    shifted[:, faces.ATTRIBUTE_NAMES.index("shirt_color")] += 0.5  # a change away from the face
    outside = train_default_model.feature_loss(faces.render(shifted, 32), target, z, 32)
    smiling = faces.params_from_z(z)
    smiling[:, faces.ATTRIBUTE_NAMES.index("smile")] = 1.0 - smiling[:, faces.ATTRIBUTE_NAMES.index("smile")]
    inside = train_default_model.feature_loss(faces.render(smiling, 32), target, z, 32)
    assert inside > 0.02 and inside > 50 * outside, (inside, outside)  # a long chin can reach the shirt
    # while the whole-image L1 sees the shirt 10x more than the smile
    assert (faces.render(shifted, 32) - target).abs().mean() > 10 * (faces.render(smiling, 32) - target).abs().mean()


def test_widening_keeps_the_images_and_the_new_channels_can_learn():
    narrow_args = train_default_model.parse_args([*TINY])
    wide_args = train_default_model.parse_args([*TINY, "--channel-base", "256", "--channel-max", "32"])
    torch.manual_seed(1)
    narrow = train_default_model.build_generator(narrow_args)
    for param in narrow.parameters():  # move away from the initialisation so "kept" means something
        param.data.add_(torch.randn_like(param) * 0.1)
    torch.manual_seed(2)
    wide = train_default_model.build_generator(wide_args)
    widened = train_default_model.load_widened(wide, narrow.state_dict())
    assert "synthesis.b16.conv1.weight" in widened and "synthesis.b16.torgb.weight" in widened
    assert wide.num_parameters() > 2 * narrow.num_parameters()
    z = faces.sample_z(4, seed=3)
    with torch.no_grad():
        assert torch.allclose(wide(z, noise_mode="const"), narrow(z, noise_mode="const"), atol=1e-5)
    loss = (wide(z, noise_mode="const") - faces.render_from_z(z, 16)).abs().mean()
    (gradient,) = torch.autograd.grad(loss, wide.synthesis.b16.conv1.weight)
    old_out, old_in = narrow.synthesis.b16.conv1.weight.shape[:2]
    assert gradient.shape[1] > old_in
    assert gradient[:old_out, old_in:].abs().sum() > 0  # the zero-started links from new channels get gradient
    with pytest.raises(ValueError, match="cannot widen"):
        train_default_model.load_widened(narrow, wide.state_dict())


def test_stylegan3_r_training_updates_magnitudes_and_exports_with_its_own_record(tmp_path):
    from pti import stylegan3

    state = tmp_path / "sg3.pt"
    common = [*TINY, "--arch", "stylegan3-r", "--channel-base", "256", "--num-layers", "4", "--margin-size", "2"]
    common += ["--state", str(state), "--minutes", "10", "--lr", "1e-2", "--ema-beta", "0.9"]
    train_default_model.main([*common, "--max-iterations", "30"])
    out = tmp_path / "stylegan3_r.safetensors"
    train_default_model.main(["--state", str(state), "--export", str(out)])
    G = load_generator(out)
    assert isinstance(G, stylegan3.Generator) and G.config_name == "stylegan3-r" and G.z_dim == faces.NUM_PARAMETERS
    magnitudes = [layer.magnitude_ema.item() for layer in G.synthesis.layers()]
    assert all(m != 1.0 for m in magnitudes), "the training pass records each layer's input magnitude"
    assert G.source_info["provenance"]["method"].startswith("stylegan3-r: ")
    assert (tmp_path / "stylegan3_r_training.json").is_file() and (tmp_path / "stylegan3_r_samples.png").is_file()
    assert not (tmp_path / "training.json").exists(), "the default model's record is not overwritten"


def test_train_encoder_learns_and_saves_a_loadable_encoder_with_its_record(tmp_path):
    from pti.encoder import load_encoder
    from tools import train_encoder

    out = tmp_path / "encoder.safetensors"
    args = ["--max-steps", "30", "--warmup", "1", "--lr", "2e-3", "--batch", "8", "--validation", "32"]
    train_encoder.main([*args, "--eval-minutes", "0", "--minutes", "10", "--out", str(out)])
    encoder = load_encoder(out)
    record = encoder.meta["provenance"]
    assert record["steps"] == 30 and record["tool"] == "tools/train_encoder.py"
    history = record["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == 30
    assert history[-1]["latent_error"] < 0.9 * history[0]["latent_error"]  # it learns within 30 steps
    assert record["best"]["psnr"] == max(h["psnr"] for h in history)  # the best state is the one saved
