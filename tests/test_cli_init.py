"""`python -m pti invert --init ...`: start from an encoder or a saved latent, or keep it as the pivot (0 steps)."""

from __future__ import annotations

import json

import torch

from pti.checkpoints import load_generator
from pti.cli import main
from pti.encoder import Encoder, EncoderConfig, save_encoder
from pti.latent import Latent
from tools.build_workflows import EXAMPLE_IMAGE, WORKFLOW_DIR

EXAMPLE = str(WORKFLOW_DIR / EXAMPLE_IMAGE)
QUICK = ["--steps-tune", "2", "--device", "cpu"]


def test_init_from_a_saved_latent_with_zero_steps_keeps_it(tmp_path):
    G = load_generator()
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(8)), None).detach()
    Latent(ws, space="w", generator_hash="").save(tmp_path / "start.safetensors")
    out = tmp_path / "out"
    argv = ["invert", EXAMPLE, "--out", str(out), "--init", f"latent:{tmp_path / 'start.safetensors'}"]
    assert main([*argv, "--steps-pivot", "0", *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init"] == "latent:start.safetensors" and metrics["projection_steps"] == 0
    assert torch.equal(Latent.load(out / "pivot.safetensors").ws, ws)


def test_init_from_an_encoder_file_and_refining(tmp_path):
    G = load_generator()
    config = EncoderConfig(num_ws=G.num_ws, w_dim=G.w_dim, stage_units=(1, 1, 1, 1), input_resolution=64,
                           stage_channels=(8, 8, 16, 16))  # fmt: skip
    torch.manual_seed(0)
    encoder = Encoder(config, latent_avg=G.mapping.w_avg[None]).eval()
    path = save_encoder(encoder, tmp_path / "mine.safetensors")
    out = tmp_path / "out"
    assert main(["invert", EXAMPLE, "--out", str(out), "--init", f"e4e:{path}", "--steps-pivot", "3", *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init"] == "encoder:mine.safetensors" and metrics["projection_steps"] == 3


def test_bad_init_is_an_error_message(tmp_path, capsys):
    assert main(["invert", EXAMPLE, "--out", str(tmp_path), "--init", "pivot.safetensors", *QUICK]) == 2
    assert "--init must be e4e:PATH, latent:PATH" in capsys.readouterr().err
    assert main(["invert", EXAMPLE, "--out", str(tmp_path), "--init", f"e4e:{tmp_path}/absent.pt", *QUICK]) == 2
    assert "encoder not found" in capsys.readouterr().err
