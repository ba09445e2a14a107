"""Encoders: published e4e / pSp checkpoints read safely and reproducing the original code, this project's format,
and the encoder shipped for the embedded model."""

from __future__ import annotations

import json
import pickle
import subprocess

import pytest
import torch
from conftest import REPO_ROOT
from encoder_fixtures import SEED, latent_avg, reference_images, synthetic_weights, write_checkpoint
from safetensors import safe_open

from pti.checkpoints import CheckpointError
from pti.encoder import DEFAULT_ENCODER, Encoder, EncoderConfig, load_encoder, save_encoder

REFERENCE = REPO_ROOT / "tests" / "data" / "encoder_reference.safetensors"


def _reference() -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(REFERENCE), framework="pt") as f:
        configs = json.loads(f.metadata()["configs"])
        return configs, {key: f.get_tensor(key) for key in f.keys()}


def _small_config(**overrides) -> EncoderConfig:
    fields = dict(num_ws=6, w_dim=16, stage_units=(1, 1, 2, 1), stage_channels=(8, 12, 16, 24), input_resolution=32)
    return EncoderConfig(**{**fields, **overrides})


@pytest.mark.parametrize("tag", ["e4e_1024", "e4e_256", "psp_256"])
def test_published_checkpoint_reproduces_the_original_code(tmp_path, tag, monkeypatch):
    """The reference ws were computed by encoder4editing's / pixel2style2pixel's own pSp (eval mode,
    ``return_latents=True``) on a checkpoint with exactly these weights; here the same file is written with
    ``torch.save`` and read by ``load_encoder`` with torch.load and pickle.load disabled."""
    configs, reference = _reference()
    config = configs[tag]
    num_ws = reference[tag].shape[1]
    path = write_checkpoint(tmp_path / f"{tag}.pt", [(n, s) for n, s in config["shapes"]], config["opts"], num_ws)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load / pickle.load must not be used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    encoder = load_encoder(path)
    assert encoder.num_ws == num_ws and encoder.config.arch == ("psp" if tag.startswith("psp") else "e4e")
    with torch.no_grad():
        ws = encoder(reference_images(2, 256))
    expected = reference[tag]
    assert ws.shape == expected.shape
    relative = float((ws - expected).norm() / expected.norm())
    # The encoder's own part (without latent_avg) must match as closely: latent_avg alone would not pass.
    codes, expected_codes = ws - latent_avg(num_ws), expected - latent_avg(num_ws)
    assert float((codes - expected_codes).norm() / expected_codes.norm()) < 1e-3
    assert relative < 1e-3
    # Different images give different ws, and layers differ (the per-layer deltas / heads are live).
    assert float((codes[0] - codes[1]).abs().mean()) > 0.05
    assert float((codes[:, 0] - codes[:, -1]).abs().mean()) > 0.05


def test_start_from_latent_avg_off_adds_nothing(tmp_path):
    configs, _ = _reference()
    config = configs["e4e_256"]
    shapes = [(n, s) for n, s in config["shapes"]]
    on = load_encoder(write_checkpoint(tmp_path / "on.pt", shapes, config["opts"], 14))
    off = load_encoder(
        write_checkpoint(tmp_path / "off.pt", shapes, {**config["opts"], "start_from_latent_avg": False}, 14)
    )
    images = reference_images(1, 256)
    with torch.no_grad():
        difference = on(images) - off(images)
    torch.testing.assert_close(difference[0], latent_avg(14), rtol=1e-5, atol=1e-5)


def test_hostile_checkpoint_is_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", str(sentinel)],))

    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": {"a": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="subprocess.Popen"):
        load_encoder(tmp_path / "evil.pt")
    assert not sentinel.exists()


def test_wrong_checkpoints_say_what_is_wrong(tmp_path):
    configs, _ = _reference()
    config = configs["e4e_256"]
    shapes = [(n, s) for n, s in config["shapes"]]
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, tmp_path / "generator.pt")
    with pytest.raises(CheckpointError, match="no 'encoder"):
        load_encoder(tmp_path / "generator.pt")
    state = {f"encoder.{k}": v for k, v in synthetic_weights(shapes).items() if "styles.13." not in k}
    torch.save({"state_dict": state, "opts": config["opts"], "latent_avg": latent_avg(14)}, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="missing.*styles.13"):
        load_encoder(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="encoder_type 'Unknown'"):
        load_encoder(write_checkpoint(tmp_path / "t.pt", shapes, {**config["opts"], "encoder_type": "Unknown"}, 14))
    with pytest.raises(CheckpointError, match="encoder not found.*e4e"):
        load_encoder(tmp_path / "absent.pt")


def test_own_format_round_trip_and_resizing(tmp_path):
    torch.manual_seed(SEED)
    encoder = Encoder(_small_config(), latent_avg=torch.randn(6, 16)).eval()
    for module in encoder.modules():  # non-trivial BatchNorm statistics, so a lost buffer would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = save_encoder(encoder, tmp_path / "enc.safetensors", provenance={"note": "test"})
    loaded = load_encoder(path)
    assert loaded.config == encoder.config and loaded.meta["provenance"] == {"note": "test"}
    images = reference_images(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), encoder(images))
        # Other sizes are resized to the encoder's input resolution (antialiased bilinear).
        big = reference_images(3, 128)
        resized = torch.nn.functional.interpolate(big, size=(32, 32), mode="bilinear", antialias=True)
        torch.testing.assert_close(loaded(big), loaded(resized))
    half = load_encoder(save_encoder(encoder, tmp_path / "half.safetensors", fp16=True))
    with torch.no_grad():
        assert float((half(images) - encoder(images)).abs().max()) < 0.05
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        loaded(images[:, :1])


def test_architectures_differ_as_designed():
    """e4e: layer 0 is w0 and later layers add deltas; pSp: independent heads; w: the same w on every layer."""
    torch.manual_seed(0)
    images = reference_images(2, 32)
    with torch.no_grad():
        single = Encoder(_small_config(arch="w")).eval()(images)
        assert torch.equal(single[:, 0], single[:, -1])
        e4e = Encoder(_small_config(arch="e4e")).eval()
        ws = e4e(images)
        torch.testing.assert_close(ws[:, 0], e4e.net.styles[0](_coarse(e4e, images)))
        assert not torch.allclose(ws[:, 0], ws[:, -1])


def _coarse(encoder: Encoder, images: torch.Tensor) -> torch.Tensor:
    x = encoder.net.input_layer(images)
    return encoder.net.body(x)


def test_shipped_encoder_inverts_the_embedded_model():
    """The shipped encoder (<= 30 MB) gives back the w of held-out samples of the embedded generator: its
    reconstructions are far closer than w_avg's, in one forward pass."""
    from pti.checkpoints import load_generator
    from pti.metrics import psnr

    assert DEFAULT_ENCODER.is_file() and DEFAULT_ENCODER.stat().st_size <= 30 * 2**20
    G = load_generator()
    encoder = load_encoder()
    assert (encoder.num_ws, encoder.w_dim, encoder.config.input_resolution) == (G.num_ws, G.w_dim, G.img_resolution)
    z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(4242))
    with torch.no_grad():
        ws = G.mapping(z, None)
        images = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
        predicted = encoder(images)
        mean = G.synthesis(encoder.latent_avg.expand(16, G.num_ws, -1), noise_mode="const")
        rendered = G.synthesis(predicted, noise_mode="const")
    encoded_db = float(psnr(rendered.clamp(-1, 1), images).mean())
    mean_db = float(psnr(mean.clamp(-1, 1), images).mean())
    assert encoded_db > mean_db + 5, (encoded_db, mean_db)
    assert float((predicted - ws).norm(dim=-1).mean()) < 0.5 * float((ws - encoder.latent_avg).norm(dim=-1).mean())
