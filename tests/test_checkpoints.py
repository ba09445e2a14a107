"""Checkpoint formats: round trips reproduce outputs, foreign formats convert exactly, hostile files run nothing."""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import make_generator, tensor_digest
from hostile_files import nvidia_modules, nvidia_pickle_bytes

from pti import checkpoints
from pti.checkpoints import (
    CheckpointError,
    describe_checkpoint,
    export_rosinality_state_dict,
    load_generator,
    read_safetensors,
    save_generator,
)
from pti.delta import save_delta
from pti.hashing import state_dict_hash
from pti.latent import Latent


def _outputs(G, seed: int = 1, **kwargs) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, G.z_dim, generator=gen)
    c = torch.randn(2, G.c_dim, generator=gen) if G.c_dim else None
    with torch.no_grad():
        return G(z, c, noise_mode="const", **kwargs)


# ====================================================================================================================
# Project format


@pytest.mark.parametrize(
    "resolution, architecture, c_dim, fp16",
    [
        (32, "skip", 0, False),
        (64, "resnet", 0, False),
        (256, "orig", 0, False),
        (32, "skip", 4, False),
        (32, "orig", 0, True),
        (64, "resnet", 3, True),
        (256, "skip", 0, True),
    ],
)
def test_safetensors_round_trip_reproduces_outputs(tmp_path, resolution, architecture, c_dim, fp16):
    G = make_generator(resolution, architecture, c_dim=c_dim)
    before = tensor_digest(G)
    path = save_generator(G, tmp_path / "g.safetensors", fp16=fp16, provenance={"trained_on": "test"})
    assert tensor_digest(G) == before, "saving must not modify the generator"
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"], "no temporary file may be left behind"

    H = load_generator(path)
    assert not H.training and H.init_kwargs == G.init_kwargs
    assert all(t.dtype == torch.float32 for t in H.state_dict().values())
    assert H.source_info["format"] == "pti-safetensors"
    assert H.source_info["hash"] == state_dict_hash(H) == read_safetensors(path)[1]["hash"]
    assert H.source_info["provenance"] == {"trained_on": "test"}
    reference, restored = _outputs(G, truncation_psi=0.7), _outputs(H, truncation_psi=0.7)
    if fp16:
        error = (restored - reference).abs().max().item()
        assert 0 < error < 0.02 * reference.abs().max().item()
        assert H.source_info["stored_dtype"] == "float16"
    else:
        assert torch.equal(restored, reference)
        assert H.source_info["hash"] == state_dict_hash(G)


def test_fp16_file_is_about_half_the_size(tmp_path):
    G = make_generator(64)
    full = save_generator(G, tmp_path / "full.safetensors").stat().st_size
    half = save_generator(G, tmp_path / "half.safetensors", fp16=True).stat().st_size
    assert 0.4 < half / full < 0.6


def test_metadata_records_config_and_overwrite_is_atomic(tmp_path):
    G, other = make_generator(32), make_generator(32, seed=5)
    path = tmp_path / "g.safetensors"
    save_generator(other, path)
    save_generator(G, path)  # replaces the previous file as a whole
    tensors, meta = read_safetensors(path)
    assert meta["format"] == "pti-generator" and meta["format_version"] == "1"
    assert json.loads(meta["config"]) == G.init_kwargs
    assert meta["hash"] == state_dict_hash(G) == state_dict_hash(tensors)


def test_saved_files_are_readable_by_others_like_any_saved_image(tmp_path):
    """safetensors itself creates 0600 files; a generator, pivot or delta saved here is 0644 like a PNG."""
    G = make_generator(32)
    tuned = copy.deepcopy(G)
    with torch.no_grad():
        tuned.synthesis.b4.conv1.bias.add_(0.1)
    written = [
        save_generator(G, tmp_path / "g.safetensors"),
        save_delta(tuned, G, tmp_path / "delta.safetensors"),
        Latent(ws=torch.zeros(1, G.num_ws, G.w_dim)).save(tmp_path / "pivot.safetensors"),
    ]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name


def test_edited_weights_fail_the_hash_check(tmp_path):
    path = save_generator(make_generator(32), tmp_path / "g.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # flip a bit inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was edited"):
        load_generator(path)


def _raw_safetensors(path: Path, header: dict, data: bytes, claimed_len: int | None = None) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if claimed_len is None else claimed_len) + blob + data)
    return path


@pytest.mark.parametrize(
    "header, data, claimed_len, message",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 1 << 40, "header claims"),
        ({"a": {"dtype": "O", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "dtype 'O'"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None, "outside the 8 data"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "expected 12"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "non-negative"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            None,
            "overlap",
        ),
    ],
)
def test_read_safetensors_validates_the_header(tmp_path, header, data, claimed_len, message):
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, data, claimed_len)
    with pytest.raises(CheckpointError, match=message):
        read_safetensors(path)


def test_read_safetensors_returns_tensors_and_metadata(tmp_path):
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    header = {
        "__metadata__": {"format": "x"},
        "v": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "m": {"dtype": "BOOL", "shape": [2], "data_offsets": [24, 26]},
    }
    path = _raw_safetensors(tmp_path / "ok.safetensors", header, values.numpy().tobytes() + b"\x01\x00")
    tensors, meta = read_safetensors(path)
    assert meta == {"format": "x"}
    assert torch.equal(tensors["v"], values) and tensors["m"].tolist() == [True, False]


def test_safetensors_of_another_kind_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"), metadata={"format": "pti-directions"})
    with pytest.raises(CheckpointError, match="format 'pti-directions'"):
        load_generator(tmp_path / "other.safetensors")


# ====================================================================================================================
# NVIDIA stylegan2-ada-pytorch pickles, written the way torch_utils.persistence writes them


def _sentinel_source(sentinel: Path) -> str:
    return f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('module_src ran')\nclass Generator: pass\n"


def _nvidia_pickle(G, path: Path, module_src: str, protocol: int = 4, init_kwargs=None) -> Path:
    path.write_bytes(nvidia_pickle_bytes(G, module_src, protocol, ema_init_kwargs=init_kwargs))
    return path


@pytest.mark.parametrize("protocol", [2, 4])
def test_nvidia_pickle_loads_exactly_and_never_runs_module_src(tmp_path, protocol):
    G = make_generator(32, "resnet", c_dim=2)
    sentinel = tmp_path / "sentinel.txt"
    path = _nvidia_pickle(G, tmp_path / "network-snapshot.pkl", _sentinel_source(sentinel), protocol)

    with nvidia_modules(run_module_src=True):
        pickle.loads(path.read_bytes())  # what pickle.load / NVIDIA's loader does: the embedded source runs
    assert sentinel.exists()
    sentinel.unlink()

    H = load_generator(path)
    assert not sentinel.exists()
    assert H.source_info["format"] == "nvidia-pkl"
    assert H.source_info["pickle_contents"] == ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
    assert H.init_kwargs == G.init_kwargs
    assert torch.equal(_outputs(H, truncation_psi=0.5), _outputs(G, truncation_psi=0.5))


def test_nvidia_pickle_with_inconsistent_kwargs_names_both_shapes(tmp_path):
    G = make_generator(32)
    wrong = {**G.init_kwargs, "w_dim": 16}
    path = _nvidia_pickle(G, tmp_path / "g.pkl", "pass", init_kwargs=wrong)
    with pytest.raises(CheckpointError, match=r"b4\.conv1\.affine\.weight: file \[32, 32\] vs model \[32, 16\]"):
        load_generator(path)


def test_tensorflow_pickle_is_refused_with_conversion_advice(tmp_path, monkeypatch):
    network = types.ModuleType("dnnlib.tflib.network")

    class Network:
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    network.Network = Network
    for name in ("dnnlib", "dnnlib.tflib"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", network)
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(pickle.dumps((Network(), Network(), Network()), protocol=3))
    with pytest.raises(CheckpointError, match="TensorFlow.*legacy.py"):
        load_generator(path)


# ====================================================================================================================
# Hostile pickles: refused by name, nothing runs


def _short_unicode(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


def _getattr_chain(command: str) -> bytes:
    """getattr(__import__('os'), 'system')(command), written as raw pickle instructions."""
    return (
        b"\x80\x04"
        + _short_unicode("builtins")
        + _short_unicode("getattr")
        + b"\x93"
        + _short_unicode("builtins")
        + _short_unicode("__import__")
        + b"\x93"
        + _short_unicode("os")
        + b"\x85R"
        + _short_unicode("system")
        + b"\x86R"
        + _short_unicode(command)
        + b"\x85R."
    )


def _reducing(func, *args):
    class Payload:
        def __reduce__(self):
            return (func, args)

    return Payload()


def _payloads(sentinel: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (global the refusal must name, pickle bytes that would create ``sentinel``)."""
    touch = f"touch {sentinel}"
    write = f"open({str(sentinel)!r}, 'w').close()"
    return {
        "os.system": (f"{os.system.__module__}.system", pickle.dumps(_reducing(os.system, touch))),
        "exec": ("builtins.exec", pickle.dumps(_reducing(exec, write))),
        "eval": ("builtins.eval", pickle.dumps(_reducing(eval, write), protocol=2)),
        "getattr": ("builtins.getattr", _getattr_chain(touch)),
        "popen": ("subprocess.Popen", pickle.dumps(_reducing(subprocess.Popen, ["touch", str(sentinel)]))),
        "nested": ("builtins.exec", pickle.dumps({"G_ema": {"weights": [1, _reducing(exec, write)]}})),
    }


def _torch_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def _torch_legacy(path: Path, data_pkl: bytes) -> Path:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}))
    path.write_bytes(header + data_pkl + pickle.dumps([], protocol=2))
    return path


def test_hostile_payloads_are_live(tmp_path):
    """The payloads below really execute under pickle.loads (so the refusal tests can fail)."""
    sentinel = tmp_path / "ran"
    pickle.loads(_payloads(sentinel)["exec"][1])
    assert sentinel.exists()


@pytest.mark.parametrize("payload", ["os.system", "exec", "eval", "getattr", "popen", "nested"])
@pytest.mark.parametrize("container", ["pkl", "torch-zip", "torch-legacy"])
def test_hostile_pickles_are_refused_naming_the_global(tmp_path, payload, container):
    sentinel = tmp_path / "ran"
    global_name, data = _payloads(sentinel)[payload]
    if container == "pkl":
        path = tmp_path / "model.pkl"
        path.write_bytes(data)
    elif container == "torch-zip":
        path = _torch_zip(tmp_path / "model.pt", data)
    else:
        path = _torch_legacy(tmp_path / "model.pt", data)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert f"'{global_name}'" in str(info.value) and str(path) in str(info.value)
    assert not sentinel.exists()


def test_torch_save_of_a_hostile_object_is_refused(tmp_path):
    sentinel = tmp_path / "ran"
    evil = _reducing(subprocess.Popen, ["touch", str(sentinel)])
    torch.save({"g_ema": {"style.1.weight": evil}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="subprocess.Popen"):
        load_generator(tmp_path / "evil.pt")
    assert not sentinel.exists()


# ====================================================================================================================
# rosinality stylegan2-pytorch checkpoints

# Keys of rosinality's Generator(16, 32, n_mlp=2).state_dict(), listed from its own model.py.
ROSINALITY_16PX_KEYS = {
    *(f"style.{i}.{p}" for i in (1, 2) for p in ("weight", "bias")),
    "input.input",
    *(f"noises.noise_{i}" for i in range(5)),
    *(f"{c}.{p}" for c in ("conv1", "convs.0", "convs.1", "convs.2", "convs.3") for p in (
        "conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias")),
    "convs.0.conv.blur.kernel",
    "convs.2.conv.blur.kernel",
    *(f"{t}.{p}" for t in ("to_rgb1", "to_rgbs.0", "to_rgbs.1") for p in (
        "conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias")),
    "to_rgbs.0.upsample.kernel",
    "to_rgbs.1.upsample.kernel",
}  # fmt: skip


def test_exported_rosinality_names_match_rosinality():
    G = make_generator(16, mapping_layers=2)
    state = export_rosinality_state_dict(G)
    assert set(state) == ROSINALITY_16PX_KEYS
    assert state["convs.0.conv.weight"].shape == (1, 32, 32, 3, 3)
    assert state["noises.noise_4"].shape == (1, 1, 16, 16)
    assert state["to_rgbs.1.bias"].shape == (1, 3, 1, 1)


def _rosinality_checkpoint(G, path: Path, zipped: bool = True, latent_avg: bool = True) -> Path:
    g_ema = export_rosinality_state_dict(G)
    adam_state = {  # the structure of torch.optim.Adam(...).state_dict()
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.randn(3), "exp_avg_sq": torch.rand(3)}},
        "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-8, "foreach": None, "params": [0]}],
    }
    checkpoint = {
        "g": g_ema,
        "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
        "g_ema": g_ema,
        "g_optim": adam_state,
        "args": argparse.Namespace(size=G.img_resolution, n_mlp=G.mapping.num_layers, path="lmdb"),
        "ada_aug_p": 0.1,
    }
    if latent_avg:
        checkpoint["latent_avg"] = G.mapping.w_avg.clone()
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zipped)
    return path


@pytest.mark.parametrize("zipped", [True, False])
def test_rosinality_checkpoint_reproduces_outputs(tmp_path, zipped):
    G = make_generator(32, channel_base=128, channel_max=32)
    H = load_generator(_rosinality_checkpoint(G, tmp_path / "050000.pt", zipped))
    assert H.source_info["format"] == "rosinality-pt"
    assert H.source_info["w_avg"] == "latent_avg from the checkpoint"
    synthesis_kwargs = H.init_kwargs["synthesis_kwargs"]
    assert (synthesis_kwargs["channel_base"], synthesis_kwargs["channel_max"]) == (128, 32)
    assert state_dict_hash(H) == state_dict_hash(G)
    assert torch.equal(_outputs(H, truncation_psi=0.6), _outputs(G, truncation_psi=0.6))


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    G = make_generator(32)
    H = load_generator(_rosinality_checkpoint(G, tmp_path / "g.pt", latent_avg=False))
    assert "10000 z" in H.source_info["w_avg"]
    with torch.no_grad():
        independent = G.mapping(torch.randn(20000, G.z_dim, generator=torch.Generator().manual_seed(7)), None)
    spread = independent[:, 0].std(0).norm()
    error = (H.mapping.w_avg - independent[:, 0].mean(0)).norm()
    assert error < 0.05 * spread  # a 10,000-sample mean sits within ~1% of the spread of another estimate
    assert torch.equal(_outputs(H), _outputs(G))  # untruncated outputs do not depend on w_avg


def test_rosinality_shape_mismatch_names_both_shapes(tmp_path):
    G = make_generator(32)
    g_ema = export_rosinality_state_dict(G)
    g_ema["convs.1.conv.modulation.weight"] = torch.zeros(16, 32)
    torch.save({"g_ema": g_ema}, tmp_path / "g.pt")
    with pytest.raises(
        CheckpointError, match=r"convs\.1\.conv\.modulation\.weight has shape \[16, 32\], expected \[32, 32\]"
    ):
        load_generator(tmp_path / "g.pt")


def test_rosinality_missing_keys_are_named(tmp_path):
    g_ema = export_rosinality_state_dict(make_generator(32))
    del g_ema["to_rgbs.1.conv.modulation.bias"]
    torch.save({"g_ema": g_ema}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="missing.*to_rgbs.1.conv.modulation.bias"):
        load_generator(tmp_path / "g.pt")


def test_export_refuses_generators_rosinality_cannot_express():
    with pytest.raises(ValueError, match="unconditional skip"):
        export_rosinality_state_dict(make_generator(32, "resnet"))


# ====================================================================================================================
# Bad paths and damaged files


def test_missing_file_directory_and_empty_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "nope.pkl")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_generator(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(tmp_path / "empty.pt")


def test_unknown_content_is_refused_whatever_the_extension(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not a recognised generator checkpoint.*supported"):
        load_generator(path)


def test_format_is_sniffed_from_content_not_extension(tmp_path):
    G = make_generator(32)
    path = save_generator(G, tmp_path / "generator.safetensors")
    renamed = path.rename(tmp_path / "generator.pkl")
    assert torch.equal(_outputs(load_generator(renamed)), _outputs(G))


@pytest.mark.parametrize("kind", ["safetensors", "pkl", "torch-zip", "torch-legacy"])
def test_truncated_files_are_refused(tmp_path, monkeypatch, kind):
    G = make_generator(32)
    if kind == "safetensors":
        path = save_generator(G, tmp_path / "g.safetensors")
    elif kind == "pkl":
        path = _nvidia_pickle(G, tmp_path / "g.pkl", "pass")
    else:
        path = _rosinality_checkpoint(G, tmp_path / "g.pt", zipped=kind == "torch-zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_generator(path)


def test_pickle_without_a_generator_is_refused(tmp_path):
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="expected an NVIDIA network pickle"):
        load_generator(tmp_path / "list.pkl")
    torch.save({"model": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"keys \['model'\].*expected a rosinality"):
        load_generator(tmp_path / "other.pt")


# ====================================================================================================================
# Default model, devices, description


def test_default_model_missing_and_present(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "DEFAULT_GENERATOR_FILE", tmp_path / "generator.safetensors")
    with pytest.raises(CheckpointError, match="embedded default model is not present"):
        load_generator()
    G = make_generator(32)
    save_generator(G, tmp_path / "generator.safetensors")
    for source in (None, "default"):
        H = load_generator(source, device=torch.device("cpu"))
        assert H.source_info["path"] == str(tmp_path / "generator.safetensors")
        assert torch.equal(_outputs(H), _outputs(G))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CUDA)")
def test_load_to_cuda(tmp_path):
    G = make_generator(32)
    H = load_generator(save_generator(G, tmp_path / "g.safetensors"), device="cuda")
    assert all(t.is_cuda for t in H.state_dict().values())
    torch.testing.assert_close(_outputs(H).cpu(), _outputs(G), rtol=1e-4, atol=1e-4)


def test_describe_checkpoint(tmp_path):
    G = make_generator(64, "resnet", c_dim=3)
    path = save_generator(G, tmp_path / "g.safetensors", provenance={"source": "unit test"})
    info = describe_checkpoint(path)
    assert info["format"] == "pti-safetensors"
    assert (info["resolution"], info["num_ws"], info["z_dim"], info["w_dim"], info["c_dim"]) == (64, 10, 32, 32, 3)
    assert info["architecture"] == "resnet"
    assert info["parameters"] == G.num_parameters()
    assert info["file_size"] == path.stat().st_size
    assert info["hash"] == state_dict_hash(G)
    assert info["provenance"] == {"source": "unit test"}


def test_unusable_devices_are_refused_before_loading(tmp_path):
    path = save_generator(make_generator(32), tmp_path / "g.safetensors")
    with pytest.raises(ValueError, match="invalid device"):
        load_generator(path, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_generator(path, device="cuda")


def test_damaged_tensor_bytes_in_a_torch_zip_are_reported(tmp_path):
    path = tmp_path / "g.pt"
    torch.save({"g_ema": export_rosinality_state_dict(make_generator(32))}, path)
    with zipfile.ZipFile(path) as archive:
        entry = next(info for info in archive.infolist() if info.filename.endswith("/data/3"))
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[entry.header_offset + 26 : entry.header_offset + 30])
    raw[entry.header_offset + 30 + name_len + extra_len + 1] ^= 0xFF  # one byte of the stored tensor data
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is damaged.*CRC"):
        load_generator(path)
