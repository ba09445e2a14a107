"""Encoder nodes (Load Encoder, Encode Image) and Project Pivot's initial latent, driven like ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_generator, tensor_digest
from pack_loader import load_pack, pack_module

pack = load_pack()
NODES = pack.NODE_CLASS_MAPPINGS

import folder_paths  # noqa: E402  (the fakes are importable once the pack is loaded)
from test_nodes import run_node, to_pack_generator  # noqa: E402


@pytest.fixture(scope="module")
def generator():
    return to_pack_generator(make_generator(resolution=32))


@pytest.fixture(scope="module")
def encoder_file(generator):
    """A small random e4e for the test generator, saved in models/stylegan/encoders."""
    encoder_module = pack_module("pti.encoder")
    config = encoder_module.EncoderConfig(
        num_ws=generator.num_ws,
        w_dim=generator.w_dim,
        stage_units=(1, 1, 1, 1),
        stage_channels=(8, 8, 16, 16),
        input_resolution=32,
    )
    torch.manual_seed(0)
    encoder = encoder_module.Encoder(config, latent_avg=generator.mapping.w_avg[None]).eval()
    folder = Path(folder_paths.get_folder_paths("stylegan_encoders")[0])
    return encoder_module.save_encoder(encoder, folder / "tiny_e4e.safetensors")


@pytest.fixture(scope="module")
def photos(generator):
    with torch.no_grad():
        ws = generator.mapping(torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(3)), None)
        images = generator.synthesis(ws, noise_mode="const")
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


def test_load_encoder_lists_and_loads_encoders_and_hides_them_from_generators(encoder_file):
    choices = NODES["PTI_LoadEncoder"].INPUT_TYPES()["required"]["encoder_name"][0]
    assert choices[0].startswith("(embedded") and "tiny_e4e.safetensors" in choices
    generators = NODES["PTI_LoadStyleGAN"].INPUT_TYPES()["required"]["model_name"][0]
    assert not any("tiny_e4e" in name for name in generators), "encoders are not generators"
    (encoder,) = run_node("PTI_LoadEncoder", encoder_name="tiny_e4e.safetensors")
    assert run_node("PTI_LoadEncoder", encoder_name="tiny_e4e.safetensors")[0] is encoder, "cached"
    assert encoder.config.input_resolution == 32 and not encoder.training
    with pytest.raises(ValueError, match="not found"):
        run_node("PTI_LoadEncoder", encoder_name="absent.pt")


def test_encode_image_gives_one_latent_per_photo_tied_to_the_generator(generator, encoder_file, photos):
    (encoder,) = run_node("PTI_LoadEncoder", encoder_name="tiny_e4e.safetensors")
    latent, reconstruction = run_node("PTI_EncodeImage", generator=generator, encoder=encoder, image=photos)
    assert latent.ws.shape == (2, generator.num_ws, generator.w_dim) and latent.space == "w+"
    assert latent.generator_hash == pack_module("pti.hashing").state_dict_hash(generator)
    assert reconstruction.shape == (2, 32, 32, 3)
    expected = encoder(photos.permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(latent.ws, expected, atol=1e-4, rtol=1e-4)
    other = to_pack_generator(make_generator(resolution=64, w_dim=16))
    with pytest.raises(ValueError, match="trained for this generator"):
        run_node("PTI_EncodeImage", generator=other, encoder=encoder, image=photos)


def test_project_pivot_starts_from_the_initial_latent(generator, encoder_file, photos):
    (encoder,) = run_node("PTI_LoadEncoder", encoder_name="tiny_e4e.safetensors")
    start, _ = run_node("PTI_EncodeImage", generator=generator, encoder=encoder, image=photos)
    kept, image = run_node(
        "PTI_ProjectPivot", generator=generator, image=photos, steps=0, space="W", seed=0, initial_latent=start
    )
    assert torch.equal(kept.ws, start.ws) and kept.meta["steps"] == 0 and image.shape == (2, 32, 32, 3)
    refined, _ = run_node(
        "PTI_ProjectPivot", generator=generator, image=photos, steps=3, space="W+", seed=0, initial_latent=start
    )
    assert all(row["steps"] == 3 and row["init"].startswith("encoder:") for row in refined.meta["rows"])
    assert not torch.equal(refined.ws, start.ws)
    assert tensor_digest(refined.ws) != tensor_digest(start.ws)
    with pytest.raises(ValueError, match="steps=0"):
        run_node("PTI_ProjectPivot", generator=generator, image=photos, steps=0, space="W", seed=0)


def test_embedded_encoder_fits_the_embedded_model():
    (G,) = run_node("PTI_LoadStyleGAN", model_name="(embedded default)")
    (encoder,) = run_node("PTI_LoadEncoder", encoder_name="(embedded default model's encoder)")
    assert (encoder.num_ws, encoder.w_dim) == (G.num_ws, G.w_dim)
