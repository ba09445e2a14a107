"""The PTI nodes driven the way ComfyUI drives them, against the fakes in tests/fake_comfy.

Every node call goes through ``run_node``, which hashes each input before and after (nodes must never modify what
they are given: ComfyUI shares outputs by reference) and runs under ``torch.inference_mode()`` like ComfyUI.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import re
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_generator, tensor_digest
from pack_loader import load_pack, pack_module
from PIL import Image

pack = load_pack()
NODES = pack.NODE_CLASS_MAPPINGS

import comfy.model_management  # noqa: E402  (the fakes are importable once the pack is loaded)
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

CORE_VALUE_TYPES = {"IMAGE", "STRING", "INT", "FLOAT", "BOOLEAN", "MASK"}
STEPS = 3


def run_node(key: str, **inputs):
    """Call node ``key`` like ComfyUI (inference mode, fresh instance); assert no input changed."""
    before = {name: tensor_digest(_hashable(value)) for name, value in inputs.items()}
    node = NODES[key]()
    with torch.inference_mode():
        result = getattr(node, node.FUNCTION)(**inputs)
    for name, value in inputs.items():
        assert tensor_digest(_hashable(value)) == before[name], f"{key} modified its input {name!r}"
    return result


def _hashable(value):
    """Latents and directions are dataclasses: hash their fields."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    return value


def to_pack_generator(G):
    """The same weights as an instance of the pack's own Generator class (ComfyUI imports the pack's copy of pti)."""
    packed = pack_module("pti.networks").Generator(**G.init_kwargs)
    packed.load_state_dict(G.state_dict())
    return packed.eval()


@pytest.fixture(autouse=True)
def fresh_progress():
    comfy.utils.reset()
    comfy.model_management.interrupt_current_processing(False)
    yield
    comfy.utils.reset()


@pytest.fixture(scope="module")
def generator():
    return to_pack_generator(make_generator(resolution=32))


@pytest.fixture(scope="module")
def other_generator():
    return to_pack_generator(make_generator(resolution=32, seed=5))


@pytest.fixture(scope="module")
def photo(generator):
    """A 'photo' the generator can reach: its own image of a random w, larger than the model (48 px), as IMAGE."""
    with torch.no_grad():
        ws = generator.mapping(torch.randn(2, generator.z_dim, generator=torch.Generator().manual_seed(3)), None)
        images = generator.synthesis(ws, noise_mode="const")
    images = torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear", align_corners=False)
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def projected(generator, photo):
    """Both photos projected in one call (W+, from the average face, few steps); also the progress it reported."""
    comfy.utils.reset()
    latent, reconstruction = run_node(
        "PTI_ProjectPivot", generator=generator, image=photo, steps=STEPS, space="W+", seed=0, preset="fast"
    )
    return latent, reconstruction, list(comfy.utils.UPDATES)


@pytest.fixture(scope="module")
def tuned(generator, photo, projected):
    """Multi-image pivotal tuning of both photos."""
    tuned_generator, reconstruction = run_node(
        "PTI_PivotalTune",
        generator=generator,
        image=photo,
        latent=projected[0],
        steps=STEPS,
        stop_at_psnr=0.0,
        locality=False,
        seed=0,
    )
    return tuned_generator, reconstruction


def direction(name="test", w_dim=32, layers=None, seed=0):
    vector = torch.randn(w_dim, generator=torch.Generator().manual_seed(seed))
    return pack_module("pti.directions").Direction(name, vector / vector.norm(), layers, {})


def latent_of(G, rows=1, seed=0):
    return run_node("PTI_SampleLatent", generator=G, seed=seed, batch_size=rows, truncation_psi=1.0)[0]


def comfy_target(image, resolution):
    """IMAGE -> [-1, 1] targets at the generator resolution, with the pack's own conversion."""
    return pack_module("nodes.common").comfy_to_targets(image, resolution).pixels


# ----------------------------------------------------------------------------------------------- pack contract


def test_every_key_is_prefixed_and_every_node_documented():
    assert NODES, "the pack registered no nodes"
    for key, cls in NODES.items():
        assert key.startswith("PTI_"), key
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[key].endswith("(PTI)")
        assert cls.CATEGORY.split("/")[0] == "PTI"
        assert len(cls.DESCRIPTION) > 40, key
        aliases = getattr(cls, "SEARCH_ALIASES", None)
        assert aliases and all(isinstance(a, str) and a.strip() for a in aliases), f"{key} has no search aliases"
        assert callable(getattr(cls, cls.FUNCTION)), key
        outputs = cls.RETURN_TYPES
        if outputs:
            assert len(cls.OUTPUT_TOOLTIPS) == len(outputs) == len(cls.RETURN_NAMES), key
        else:
            assert cls.OUTPUT_NODE, f"{key} has no outputs, so it must be an output node"
        for type_name in outputs:
            assert type_name in CORE_VALUE_TYPES or type_name.startswith("PTI_"), (key, type_name)
        for section, inputs in cls.INPUT_TYPES().items():
            if section == "hidden":
                continue
            for name, spec in inputs.items():
                assert spec[1].get("tooltip"), f"{key}.{name} has no tooltip"
                type_name = spec[0]
                assert isinstance(type_name, list) or type_name in CORE_VALUE_TYPES or type_name.startswith("PTI_")


def test_model_folders_are_registered():
    names = folder_paths.folder_names_and_paths
    stylegan_dirs, extensions = names["stylegan"]
    assert stylegan_dirs[0] == os.path.join(folder_paths.models_dir, "stylegan")
    assert {".pkl", ".pt", ".pth", ".safetensors"} <= set(extensions)
    assert names["stylegan_pti"][0][0] == os.path.join(folder_paths.models_dir, "stylegan", "pti")
    assert names["stylegan_directions"][0][0] == os.path.join(folder_paths.models_dir, "stylegan", "directions")
    assert names["pti_weights"][0][0] == os.path.join(folder_paths.models_dir, "pti_weights")
    assert folder_paths.supported_pt_extensions == {
        ".ckpt",
        ".pt",
        ".pt2",
        ".bin",
        ".pth",
        ".safetensors",
        ".pkl",
        ".sft",
    }


# Keys registered by ComfyUI's nodes.py (0.3.64), plus the StyleGAN pack that already owns "LoadStyleGAN".
KNOWN_NODE_KEYS = """
KSampler CheckpointLoaderSimple CLIPTextEncode CLIPSetLastLayer VAEDecode VAEEncode VAEEncodeForInpaint VAELoader
EmptyLatentImage LatentUpscale LatentUpscaleBy LatentFromBatch RepeatLatentBatch SaveImage PreviewImage LoadImage
LoadImageMask LoadImageOutput ImageScale ImageScaleBy ImageInvert ImageBatch ImagePadForOutpaint EmptyImage
ConditioningAverage ConditioningCombine ConditioningConcat ConditioningSetArea ConditioningSetAreaPercentage
ConditioningSetAreaStrength ConditioningSetMask KSamplerAdvanced SetLatentNoiseMask LatentComposite LatentBlend
LatentRotate LatentFlip LatentCrop LoraLoader CLIPLoader UNETLoader DualCLIPLoader CLIPVisionEncode StyleModelApply
unCLIPConditioning ControlNetApply ControlNetApplyAdvanced ControlNetLoader DiffControlNetLoader StyleModelLoader
CLIPVisionLoader VAEDecodeTiled VAEEncodeTiled unCLIPCheckpointLoader GLIGENLoader GLIGENTextBoxApply
InpaintModelConditioning CheckpointLoader DiffusersLoader LoadLatent SaveLatent ConditioningZeroOut
ConditioningSetTimestepRange LoraLoaderModelOnly LoadStyleGAN
""".split()


def core_node_keys() -> set[str]:
    """Every node key ComfyUI registers: read from the checkout at COMFYUI_DIR when set, else the list above."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        return set(KNOWN_NODE_KEYS)
    root = Path(comfy_dir)
    sources = [root / "nodes.py", *sorted(root.glob("comfy_extras/*.py")), *sorted(root.glob("comfy_api_nodes/*.py"))]
    keys = set(KNOWN_NODE_KEYS)
    for source in sources:
        text = source.read_text(errors="replace")
        for table in re.finditer(r"NODE_CLASS_MAPPINGS\s*=\s*\{(.*?)\n\}", text, re.S):
            keys.update(re.findall(r'^\s*"([^"]+)"\s*:', table.group(1), re.M))
        keys.update(re.findall(r'node_id\s*=\s*"([^"]+)"', text))  # nodes written with the V3 schema API
    assert len(keys) > 300, f"found only {len(keys)} core node keys under {comfy_dir}: is it a ComfyUI checkout?"
    return keys


def test_no_key_collides_with_comfyui_core_nodes():
    core = core_node_keys()
    assert not set(NODES) & core
    assert not any(key.startswith("PTI_") for key in core), "the prefix must stay unique to this pack"


# --------------------------------------------------------------------------------------------------- loading


def test_load_stylegan_lists_loads_and_caches_checkpoints(generator):
    folder = Path(folder_paths.get_folder_paths("stylegan")[0])
    (folder / "pti" / "someone").mkdir(parents=True, exist_ok=True)
    (folder / "pti" / "someone" / "delta.safetensors").write_bytes(b"not listed")
    path = pack_module("pti.checkpoints").save_generator(generator, folder / "tiny.safetensors")
    node = NODES["PTI_LoadStyleGAN"]
    choices = node.INPUT_TYPES()["required"]["model_name"][0]
    assert "tiny.safetensors" in choices and "(embedded default)" == choices[0]
    assert not any(c.startswith("pti") for c in choices), "saved results must not be offered as checkpoints"

    (loaded,) = run_node("PTI_LoadStyleGAN", model_name="tiny.safetensors")
    assert tensor_digest(loaded) == tensor_digest(generator)
    assert run_node("PTI_LoadStyleGAN", model_name="tiny.safetensors")[0] is loaded, "loaded models are cached"

    signature = node.IS_CHANGED("tiny.safetensors")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert node.IS_CHANGED("tiny.safetensors") != signature

    message = node.VALIDATE_INPUTS("missing.pkl")
    assert "missing.pkl" in message and "models" in message
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        run_node("PTI_LoadStyleGAN", model_name="missing.pkl")


def test_load_stylegan_refuses_a_damaged_file():
    folder = Path(folder_paths.get_folder_paths("stylegan")[0])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.pkl").write_bytes(b"\x80\x04this is not a checkpoint")
    with pytest.raises(ValueError, match="broken.pkl"):
        run_node("PTI_LoadStyleGAN", model_name="broken.pkl")


def test_load_stylegan_offers_published_checkpoints_and_downloads_on_first_use(monkeypatch):
    """A catalogue label downloads from the mirror into models/stylegan with the node's progress bar; Cancel midway
    leaves nothing in the list, and the next run resumes where it stopped."""
    from hostile_files import nvidia_pickle_bytes, tiny_generator
    from loopback_server import serve_files

    node = NODES["PTI_LoadStyleGAN"]
    label = pack_module("pti.catalogue").CATALOGUE["ffhq-256"].label
    choices = node.INPUT_TYPES()["required"]["model_name"][0]
    assert label in choices and "~280 MB" in label and "non-commercial" in label and "downloads on first use" in label
    assert node.VALIDATE_INPUTS(label) is True and node.VALIDATE_INPUTS("ffhq-256") is True
    folder = Path(folder_paths.get_folder_paths("stylegan")[0])
    G = tiny_generator(seed=5)
    data = nvidia_pickle_bytes(G)
    monkeypatch.setattr(pack_module("pti.downloads"), "CHUNK_BYTES", 1024)

    def cancel_halfway(value, total, preview, prompt_id=None, node_id=None):
        comfy.utils.recording_hook(value, total, preview, node_id=node_id)
        if value >= total // 2:
            comfy.model_management.interrupt_current_processing(True)

    with serve_files() as server:
        server.files["/stylegan2-ffhq-256x256.pkl"] = data
        monkeypatch.setenv("PTI_MODEL_MIRROR", server.url)
        comfy.utils.set_progress_bar_global_hook(cancel_halfway)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_node("PTI_LoadStyleGAN", model_name=label)
        assert "stylegan2-ffhq-256x256.pkl" not in folder_paths.get_filename_list("stylegan")
        assert comfy.utils.UPDATES[-1]["total"] == len(data)

        comfy.utils.set_progress_bar_global_hook(comfy.utils.recording_hook)
        (loaded,) = run_node("PTI_LoadStyleGAN", model_name=label)
        assert server.requests[-1][1] is not None and server.requests[-1][1].startswith("bytes=")
        assert tensor_digest(loaded.state_dict()) == tensor_digest(G.state_dict())
        assert "stylegan2-ffhq-256x256.pkl" in node.INPUT_TYPES()["required"]["model_name"][0]
        assert node.IS_CHANGED(label) == node.IS_CHANGED("stylegan2-ffhq-256x256.pkl")
        assert run_node("PTI_LoadStyleGAN", model_name=label)[0] is loaded and len(server.requests) == 2
    pack_module("pti.catalogue").forget_download(folder / "stylegan2-ffhq-256x256.pkl")


def test_embedded_default_model_loads_when_shipped():
    default_file = pack_module("pti.checkpoints").DEFAULT_GENERATOR_FILE
    if not default_file.is_file():
        assert "reinstall" in NODES["PTI_LoadStyleGAN"].VALIDATE_INPUTS("(embedded default)")
        pytest.skip(f"the embedded model is not shipped yet ({default_file})")
    (G,) = run_node("PTI_LoadStyleGAN", model_name="(embedded default)")
    (image,) = run_node("PTI_Decode", generator=G, latent=latent_of(G), truncation_psi=0.7, noise_mode="const")
    assert image.shape == (1, G.img_resolution, G.img_resolution, 3)


def test_embedded_stylegan3_is_a_choice_that_the_transform_accepts():
    assert NODES["PTI_LoadStyleGAN"].INPUT_TYPES()["required"]["model_name"][0][:2] == [
        "(embedded default)",
        "(embedded StyleGAN3)",
    ]
    sg3_file = pack_module("pti.checkpoints").STYLEGAN3_GENERATOR_FILE
    if not sg3_file.is_file():
        assert "reinstall" in NODES["PTI_LoadStyleGAN"].VALIDATE_INPUTS("(embedded StyleGAN3)")
        pytest.skip(f"the embedded StyleGAN3 is not shipped yet ({sg3_file})")
    assert NODES["PTI_LoadStyleGAN"].VALIDATE_INPUTS("(embedded StyleGAN3)") is True
    (G,) = run_node("PTI_LoadStyleGAN", model_name="(embedded StyleGAN3)")
    assert G.config_name == "stylegan3-r"
    latent = latent_of(G)
    (moved,) = run_node("PTI_StyleGAN3Transform", generator=G, translate_x=0.15, translate_y=0.0, rotate=20.0)
    (plain,) = run_node("PTI_Decode", generator=G, latent=latent, truncation_psi=1.0, noise_mode="const")
    (turned,) = run_node("PTI_Decode", generator=moved, latent=latent, truncation_psi=1.0, noise_mode="const")
    assert plain.shape == turned.shape == (1, 64, 64, 3)
    assert (plain - turned).abs().mean() > 0.02


# ------------------------------------------------------------------------------------------ sampling, decoding


def test_sample_latent_is_seeded(generator):
    a = latent_of(generator, rows=3, seed=11)
    b = latent_of(generator, rows=3, seed=11)
    c = latent_of(generator, rows=1, seed=12)
    assert a.ws.shape == (3, generator.num_ws, generator.w_dim)
    assert torch.equal(a.ws, b.ws)
    assert torch.allclose(a.ws[1:2], c.ws, atol=1e-6), "row i of a batch is the sample of seed + i"
    assert not torch.equal(a.ws[0], a.ws[1])


def test_decode_renders_images_and_truncates(generator):
    latent = latent_of(generator, rows=3, seed=1)
    (images,) = run_node("PTI_Decode", generator=generator, latent=latent, truncation_psi=1.0, noise_mode="const")
    assert images.shape == (3, 32, 32, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0 <= images.min() and images.max() <= 1
    with torch.no_grad():
        expected = (generator.synthesis(latent.ws, noise_mode="const").clamp(-1, 1) + 1) / 2
    assert torch.allclose(images, expected.permute(0, 2, 3, 1), atol=1e-5)
    (average,) = run_node("PTI_Decode", generator=generator, latent=latent, truncation_psi=0.0, noise_mode="const")
    assert torch.allclose(average[0], average[2], atol=1e-6), "psi = 0 renders every latent as w_avg"
    assert not torch.allclose(images[0], images[2], atol=1e-3)


def test_decode_refuses_a_latent_of_another_model(generator, other_generator):
    wrong_shape = latent_of(to_pack_generator(make_generator(resolution=16)))
    with pytest.raises(ValueError, match="different model"):
        run_node("PTI_Decode", generator=generator, latent=wrong_shape, truncation_psi=1.0, noise_mode="const")
    with pytest.raises(ValueError, match="not a tuned version"):
        run_node(
            "PTI_Decode", generator=generator, latent=latent_of(other_generator), truncation_psi=1.0, noise_mode="const"
        )


def test_blend_latents_lerp_slerp_and_style_mix(generator, other_generator):
    a, b = latent_of(generator, rows=2, seed=1), latent_of(generator, rows=1, seed=2)
    before = tensor_digest([a.ws, b.ws])
    blend = dict(latent_a=a, latent_b=b, layer_start=0, layer_end=4)
    assert torch.allclose(run_node("PTI_BlendLatents", mode="lerp", t=0.0, **blend)[0].ws, a.ws)
    assert torch.allclose(run_node("PTI_BlendLatents", mode="lerp", t=1.0, **blend)[0].ws, b.ws.expand_as(a.ws))
    half = run_node("PTI_BlendLatents", mode="lerp", t=0.5, **blend)[0]
    assert torch.allclose(half.ws, (a.ws + b.ws) / 2, atol=1e-6) and len(half) == 2
    arc = run_node("PTI_BlendLatents", mode="slerp", t=0.5, **blend)[0].ws
    assert not torch.allclose(arc, half.ws) and torch.allclose(
        arc.norm(dim=-1), (a.ws.norm(dim=-1) + b.ws.norm(dim=-1)) / 2, rtol=0.2
    )
    mixed = run_node("PTI_BlendLatents", mode="style mix", t=0.5, **blend)[0]
    assert torch.equal(mixed.ws[:, :4], b.ws[:, :4].expand(2, -1, -1)) and torch.equal(mixed.ws[:, 4:], a.ws[:, 4:])
    assert mixed.meta["rows"][0]["blends"] == [{"blend": "style mix", "layers": [0, 4]}]
    images = run_node("PTI_Decode", generator=generator, latent=mixed, truncation_psi=1.0, noise_mode="const")[0]
    assert images.shape[0] == 2
    assert tensor_digest([a.ws, b.ws]) == before  # inputs untouched
    with pytest.raises(ValueError, match="unrelated generators"):
        run_node("PTI_BlendLatents", mode="lerp", t=0.5, **{**blend, "latent_b": latent_of(other_generator)})


# ----------------------------------------------------------------------------------------------- inversion


def test_project_pivot_fits_the_photos(generator, photo, projected):
    latent, reconstruction, _updates = projected
    assert latent.ws.shape == (2, generator.num_ws, generator.w_dim) and latent.space == "w+"
    assert reconstruction.shape == (2, 32, 32, 3)
    target = comfy_target(photo, 32)
    fit = ((reconstruction.permute(0, 3, 1, 2) * 2 - 1) - target).square().mean()
    start = latent_of(generator, rows=8, seed=40)
    (random_images,) = run_node("PTI_Decode", generator=generator, latent=start, truncation_psi=1.0, noise_mode="const")
    random_fit = ((random_images.permute(0, 3, 1, 2) * 2 - 1)[:, None] - target[None]).square().mean()
    assert fit < random_fit, "the pivots must resemble their photos more than random samples do"


def test_project_pivot_reports_progress_and_previews(projected):
    updates = projected[2]
    assert [u["value"] for u in updates] == list(range(1, 2 * STEPS + 1)), "two images count on one bar"
    assert {u["total"] for u in updates} == {2 * STEPS}
    previews = [u["preview"] for u in updates if u["preview"] is not None]
    assert previews, "no live preview was sent"
    kind, picture, max_size = previews[-1]
    assert kind == "JPEG" and isinstance(picture, Image.Image) and max_size == 512


def test_cancel_stops_projection_within_one_step(generator, photo):
    def interrupt_at_third(value, total, preview, prompt_id=None, node_id=None):
        comfy.utils.recording_hook(value, total, preview, node_id=node_id)
        if value == 3:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(interrupt_at_third)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node("PTI_ProjectPivot", generator=generator, image=photo[:1], steps=50, space="W", seed=0, preset="fast")
    assert [u["value"] for u in comfy.utils.UPDATES] == [1, 2, 3], "work went on after Cancel"
    assert not comfy.model_management.processing_interrupted(), "the interrupt flag is consumed, as in ComfyUI"


def test_cancel_stops_tuning(generator, photo, projected):
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_node(
            "PTI_PivotalTune",
            generator=generator,
            image=photo,
            latent=projected[0],
            steps=50,
            stop_at_psnr=0.0,
            locality=False,
            seed=0,
        )
    assert comfy.utils.UPDATES == []


def test_pivotal_tune_returns_a_new_generator_closer_to_the_photo(generator, photo, projected, tuned):
    latent, before, _updates = projected
    tuned_generator, after = tuned
    assert tuned_generator is not generator
    assert tensor_digest(tuned_generator) != tensor_digest(generator)
    target = comfy_target(photo, 32)
    error_before = ((before.permute(0, 3, 1, 2) * 2 - 1) - target).square().mean()
    error_after = ((after.permute(0, 3, 1, 2) * 2 - 1) - target).square().mean()
    assert error_after < error_before
    # The pivot stays valid for the base generator too (before/after comparisons).
    (again,) = run_node("PTI_Decode", generator=generator, latent=latent, truncation_psi=1.0, noise_mode="const")
    assert torch.allclose(again, before, atol=1e-5)


def test_pivotal_tune_checks_its_inputs(generator, other_generator, photo, projected):
    latent = projected[0]
    arguments = dict(generator=generator, steps=1, stop_at_psnr=0.06, locality=False, seed=0)
    with pytest.raises(ValueError, match="1 image.*2 pivot"):
        run_node("PTI_PivotalTune", image=photo[:1], latent=latent, **arguments)
    with pytest.raises(ValueError, match="empty"):
        run_node("PTI_PivotalTune", image=photo[:0], latent=latent, **arguments)
    with pytest.raises(ValueError, match="channels"):
        run_node("PTI_PivotalTune", image=torch.rand(1, 32, 32, 5), latent=latent, **arguments)
    with pytest.raises(ValueError, match="not a tuned version"):
        run_node("PTI_PivotalTune", image=photo, latent=latent_of(other_generator, rows=2), **arguments)


def test_images_are_prepared_for_the_generator(photo):
    """RGBA (alpha over white) and grey photos are accepted; any size is centre-cropped and resized."""
    rgb = comfy_target(photo[:1], 32)
    opaque = comfy_target(torch.cat([photo[:1], torch.ones(1, 48, 48, 1)], dim=-1), 32)
    assert torch.allclose(opaque, rgb, atol=1e-6)
    transparent = comfy_target(torch.cat([photo[:1], torch.zeros(1, 48, 48, 1)], dim=-1), 32)
    assert torch.allclose(transparent, torch.ones_like(rgb))
    grey = comfy_target(photo[:1].mean(-1, keepdim=True), 32)
    assert grey.shape == (1, 3, 32, 32) and torch.equal(grey[:, 0], grey[:, 2])
    wide = comfy_target(torch.rand(1, 32, 64, 3), 32)
    assert wide.shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------------------------------- editing


def test_apply_edit_single_and_sweep(generator):
    latent = latent_of(generator, rows=2, seed=3)
    d = direction()
    common = dict(latent=latent, direction=d, strengths="-2:2:5", layer_start=-1, layer_end=-1)
    (single,) = run_node("PTI_ApplyLatentEdit", mode="single", strength=1.5, **common)
    assert torch.allclose(single.ws - latent.ws, 1.5 * d.vector.expand_as(latent.ws), atol=1e-6)
    (sweep,) = run_node("PTI_ApplyLatentEdit", mode="sweep", strength=0.0, **common)
    assert sweep.ws.shape == (10, generator.num_ws, generator.w_dim)
    strengths = [-2.0, -1.0, 0.0, 1.0, 2.0]
    for row in range(2):
        for j, s in enumerate(strengths):
            edited = sweep.ws[row * 5 + j]
            assert torch.allclose(edited, latent.ws[row] + s * d.vector, atol=1e-6)
    recipe = sweep.meta["rows"][8]
    assert recipe["edits"] == [{"direction": "test", "strength": 1.0, "layers": [0, generator.num_ws]}]
    assert recipe["seed"] == 4 and recipe["stage"] == "sample", "row 8 comes from the second sample (seed 3 + 1)"


def test_apply_edit_layer_range(generator):
    latent = latent_of(generator, seed=4)
    d = direction(layers=(2, 4))
    arguments = dict(latent=latent, direction=d, mode="single", strength=3.0, strengths="")
    (own,) = run_node("PTI_ApplyLatentEdit", layer_start=-1, layer_end=-1, **arguments)
    changed = (own.ws - latent.ws).abs().amax(dim=2)[0] > 0
    assert changed.tolist() == [False, False, True, True, False, False, False, False]
    (custom,) = run_node("PTI_ApplyLatentEdit", layer_start=5, layer_end=-1, **arguments)
    changed = (custom.ws - latent.ws).abs().amax(dim=2)[0] > 0
    assert changed.tolist() == [False] * 5 + [True] * 3, "an explicit start overrides the direction's (2, 4)"
    (ranged,) = run_node("PTI_ApplyLatentEdit", layer_start=-1, layer_end=3, **arguments)
    changed = (ranged.ws - latent.ws).abs().amax(dim=2)[0] > 0
    assert changed.tolist() == [True] * 3 + [False] * 5
    assert own.space == "w+"
    node = NODES["PTI_ApplyLatentEdit"]
    assert "greater" in node.VALIDATE_INPUTS("single", "", 4, 2)
    assert "start:stop:count" in node.VALIDATE_INPUTS("sweep", "a:b", -1, -1)
    assert node.VALIDATE_INPUTS("sweep", "-1, 0, 2", -1, -1) is True


def test_apply_edit_refuses_a_direction_of_another_size(generator):
    with pytest.raises(ValueError, match="w_dim"):
        run_node(
            "PTI_ApplyLatentEdit",
            latent=latent_of(generator),
            direction=direction(w_dim=16),
            mode="single",
            strength=1.0,
            strengths="",
            layer_start=-1,
            layer_end=-1,
        )


def test_load_direction_from_files(generator):
    folder = Path(folder_paths.get_folder_paths("stylegan_directions")[0])
    folder.mkdir(parents=True, exist_ok=True)
    vector = direction(seed=9).vector
    np.save(folder / "smile_boundary.npy", vector.numpy()[None])  # InterFaceGAN boundaries are [1, w_dim]
    node = NODES["PTI_LoadDirection"]
    assert "smile_boundary.npy" in node.INPUT_TYPES()["required"]["direction"][0]
    (loaded,) = run_node("PTI_LoadDirection", direction="smile_boundary.npy", entry="")
    assert torch.allclose(loaded.vector, vector)
    assert "neither" in node.VALIDATE_INPUTS("nothing.npy")
    (folder / "evil.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }")
    with pytest.raises(ValueError):
        run_node("PTI_LoadDirection", direction="evil.npy", entry="")


def test_shipped_directions_when_present():
    names = NODES["PTI_LoadDirection"].INPUT_TYPES()["required"]["direction"][0]
    shipped = pack_module("nodes.editing").shipped_direction_names()
    if not shipped:
        pytest.skip("the embedded model's directions are not shipped yet")
    assert set(shipped) <= set(names) and {"age", "smile", "pose", "yaw"} <= set(shipped)
    (d,) = run_node("PTI_LoadDirection", direction=shipped[0], entry="")
    assert d.name == shipped[0]
    # Connected to an FFHQ-shaped generator, "smile" is FFHQ's 512-d boundary, and it edits that generator's latents.
    ffhq_shaped = to_pack_generator(make_generator(z_dim=512, w_dim=512))
    (smile,) = run_node("PTI_LoadDirection", direction="smile", entry="", generator=ffhq_shaped)
    assert smile.w_dim == 512
    latent = latent_of(ffhq_shaped)
    (edited,) = run_node(
        "PTI_ApplyLatentEdit", latent=latent, direction=smile, mode="single", strength=2.0, strengths="",
        layer_start=-1, layer_end=-1,
    )  # fmt: skip
    assert torch.allclose(edited.ws - latent.ws, 2.0 * smile.vector.expand_as(latent.ws), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------- io


def test_save_and_load_pti_round_trip(generator, other_generator, projected, tuned):
    latent = projected[0]
    tuned_generator, reconstruction = tuned
    save = dict(base_generator=generator, tuned_generator=tuned_generator, latent=latent, name="face one")
    result = run_node("PTI_SavePTI", destination="models/stylegan/pti", delta="fp16", **save)
    folder = Path(result["ui"]["text"][0])
    assert sorted(p.name for p in folder.iterdir()) == ["delta.safetensors", "pivot.safetensors"], "temp files left"
    run_node("PTI_SavePTI", destination="output/pti", delta="auto", **save)
    names = NODES["PTI_LoadPTI"].INPUT_TYPES()["required"]["name"][0]
    assert "face one" in names and "face one [output]" in names

    for name, tolerance in (("face one", 0.01), ("face one [output]", 0.01)):
        rebuilt, loaded_latent = run_node("PTI_LoadPTI", base_generator=generator, name=name)
        assert torch.equal(loaded_latent.ws.cpu(), latent.ws.cpu())
        (images,) = run_node(
            "PTI_Decode", generator=rebuilt, latent=loaded_latent, truncation_psi=1.0, noise_mode="const"
        )
        assert (images - reconstruction).abs().max() < tolerance, f"{name}: the reloaded result renders differently"
    with pytest.raises(ValueError, match="tuned from base model"):
        run_node("PTI_LoadPTI", base_generator=other_generator, name="face one")
    assert "not found" in NODES["PTI_LoadPTI"].VALIDATE_INPUTS("nobody")
    assert "invalid name" in NODES["PTI_SavePTI"].VALIDATE_INPUTS("../escape")
    with pytest.raises(ValueError, match="not tuned from"):
        run_node("PTI_SavePTI", destination="output/pti", delta="fp16", **{**save, "base_generator": other_generator})


def test_save_image_recipe_reproduces_the_picture(generator):
    base = latent_of(generator, rows=1, seed=21)
    (edited,) = run_node(
        "PTI_ApplyLatentEdit",
        latent=base,
        direction=direction(),
        mode="sweep",
        strength=0.0,
        strengths="-1, 2",
        layer_start=-1,
        layer_end=-1,
    )
    (images,) = run_node("PTI_Decode", generator=generator, latent=edited, truncation_psi=1.0, noise_mode="const")
    workflow = {"nodes": [], "links": []}
    result = run_node(
        "PTI_SaveImage",
        images=images,
        filename_prefix="recipes/test",
        layout="separate",
        grid_columns=0,
        latent=edited,
        prompt={"1": {"class_type": "PTI_Decode"}},
        extra_pnginfo={"workflow": workflow},
    )
    saved = result["ui"]["images"]
    assert [s["subfolder"] for s in saved] == ["recipes", "recipes"]
    second = Path(folder_paths.get_output_directory()) / "recipes" / saved[1]["filename"]
    with Image.open(second) as picture:
        assert json.loads(picture.text["workflow"]) == workflow and "prompt" in picture.text
        pixels = torch.from_numpy(np.asarray(picture.convert("RGB"))).float() / 255
    assert (pixels - images[1]).abs().max() <= 1 / 255 + 1e-6

    shutil.copy(second, Path(folder_paths.get_input_directory()) / "edited.png")
    node = NODES["PTI_ReadRecipe"]
    assert "edited.png" in node.INPUT_TYPES()["required"]["image"][0]
    latent, recipe = run_node("PTI_ReadRecipe", image="edited.png")
    assert torch.equal(latent.ws, edited.ws[1:2]), "the recipe stores the exact latent"
    assert json.loads(recipe)["rows"][0]["edits"][0]["strength"] == 2.0
    (again,) = run_node("PTI_Decode", generator=generator, latent=latent, truncation_psi=1.0, noise_mode="const")
    assert torch.allclose(again, images[1:2], atol=1e-6)

    grid = run_node(
        "PTI_SaveImage", images=images, filename_prefix="grid", layout="grid", grid_columns=0, latent=edited
    )["ui"]["images"]
    assert len(grid) == 1
    grid_path = Path(folder_paths.get_output_directory()) / grid[0]["filename"]
    with Image.open(grid_path) as picture:
        assert picture.size == (64, 32)
    # The node shows small results through a copy enlarged by a whole factor (nearest pixels), same name, in temp/.
    assert grid[0]["type"] == "temp"
    with Image.open(Path(folder_paths.get_temp_directory()) / grid[0]["filename"]) as shown:
        assert shown.size == (256, 128)
        enlarged = np.asarray(shown.convert("RGB"))
    with Image.open(grid_path) as picture:
        assert np.array_equal(enlarged[::4, ::4], np.asarray(picture.convert("RGB")))
    shutil.copy(grid_path, Path(folder_paths.get_input_directory()) / "grid.png")
    assert torch.equal(run_node("PTI_ReadRecipe", image="grid.png")[0].ws, edited.ws)

    with pytest.raises(ValueError, match="2 image.*1 latent"):
        run_node("PTI_SaveImage", images=images, filename_prefix="x", layout="separate", grid_columns=0, latent=base)
    Image.new("RGB", (8, 8)).save(Path(folder_paths.get_input_directory()) / "plain.png")
    with pytest.raises(ValueError, match="no PTI recipe"):
        run_node("PTI_ReadRecipe", image="plain.png")


def test_align_face_finds_faces_itself_and_face_index_picks_one():
    """No landmarks typed in: the node runs the detector (weights searched in models/pti_weights, then the default
    folder). Two real faces side by side: index 0 is the larger, index 1 the other."""
    photos = Path(__file__).parent / "data" / "photos"
    large = np.asarray(Image.open(photos / "obama.jpg").convert("RGB"), dtype=np.float32) / 255
    small = np.asarray(Image.open(photos / "biden.jpg").convert("RGB"), dtype=np.float32)[::2, ::2] / 255
    canvas = np.ones((large.shape[0], large.shape[1] + small.shape[1], 3), dtype=np.float32)
    canvas[:, : large.shape[1]] = large
    canvas[: small.shape[0], large.shape[1] :] = small
    image = torch.from_numpy(canvas)[None]
    common = dict(image=image, size=64, detector="auto", fallback="error", landmarks="")
    crops, alignments = run_node("PTI_AlignFace", **common)
    (second,) = run_node("PTI_AlignFace", face_index=1, **common)[1]
    assert crops.shape == (1, 64, 64, 3)
    assert alignments[0].method == "mtcnn" and alignments[0].meta["faces_found"] == 2
    assert np.array(alignments[0].landmarks)[:, 0].max() < large.shape[1] < np.array(second.landmarks)[:, 0].min()


def test_download_progress_drives_the_bar_and_honours_cancel():
    progress = pack_module("nodes.common").DownloadProgress()
    progress(1 << 20, 4 << 20)
    progress(4 << 20, 4 << 20)
    assert [(u["value"], u["total"]) for u in comfy.utils.UPDATES] == [(1 << 20, 4 << 20), (4 << 20, 4 << 20)]
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        progress(4 << 20, 4 << 20)


def test_generators_and_lpips_go_through_comfyui_model_management(generator, photo, projected):
    """Pivotal Tune asks ComfyUI to load the generator and LPIPS with the memory the tune needs (so ComfyUI can evict
    other models first), registers the tuned generator as a model of its own, and lets it go when the graph drops
    it. "Unload models" moves every registered module to the offload device."""
    mm = comfy.model_management
    mm.LOAD_REQUESTS.clear()
    tuned_generator, _ = run_node(
        "PTI_PivotalTune",
        generator=generator,
        image=photo,
        latent=projected[0],
        steps=1,
        stop_at_psnr=0.0,
        locality=False,
        seed=0,
    )
    managed = pack_module("nodes.managed_models")
    estimate = pack_module("pti.memory").optimisation_bytes(generator, 2, "alex", tunes_weights=True)
    loads = [([ref().model for ref in refs], memory) for refs, memory in mm.LOAD_REQUESTS]
    modules, memory = loads[0]
    assert modules[0] is generator and type(modules[1]).__name__ == "LPIPS" and memory == estimate > 0
    assert any(tuned_generator in modules for modules, _ in loads[1:])
    tuned_patcher = managed.patcher_of(tuned_generator)
    assert tuned_patcher is not managed.patcher_of(generator)
    assert copy.deepcopy(tuned_generator).__dict__.get(managed.PATCHER_ATTRIBUTE) is None

    mm.unload_all_models()
    assert generator.device == tuned_generator.device == mm.unet_offload_device()
    mm.load_models_gpu([tuned_patcher])  # loaded again, as a later node would
    released = weakref.ref(tuned_generator)
    del tuned_generator, tuned_patcher, modules, loads
    gc.collect()
    assert released() is None
    assert all(ref() is None or ref().model is not None for ref in mm.current_loaded_models)
