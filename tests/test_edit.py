"""Edit directions: file formats (refused safely when wrong), GANSpace/SeFa properties, caching, applying edits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import make_generator, tensor_digest

from pti import discovery
from pti.directions import (
    Direction,
    DirectionError,
    default_directions,
    load_direction,
    load_directions,
    save_directions,
)
from pti.discovery import ganspace, resolve_direction, sefa
from pti.edit import apply_direction, interpolate, parse_strengths, strength_sweep, style_mix


@pytest.fixture(scope="module")
def G():
    return make_generator(resolution=32, w_dim=32)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "cache"))
    discovery.clear_memory_cache()
    yield
    discovery.clear_memory_cache()


def _image_changes(G, ws, directions, strength):
    """Mean absolute pixel change each direction causes at ``strength`` (one batched synthesis call)."""
    batch = torch.cat([ws] + [apply_direction(ws, d, strength) for d in directions])
    with torch.no_grad():
        images = G.synthesis(batch, noise_mode="const").reshape(len(directions) + 1, len(ws), -1)
    return [float((moved - images[0]).abs().mean()) for moved in images[1:]]


# ------------------------------------------------------------------------------------------- GANSpace / SeFa


@pytest.mark.parametrize("method", ["sefa", "ganspace"])
def test_components_orthonormal_deterministic_and_ordered(G, method):
    count = G.w_dim  # every component, so "last" is the weakest there is
    compute = (lambda **kw: sefa(G, count, **kw)) if method == "sefa" else (lambda **kw: ganspace(G, count, 3000, **kw))
    first, second = compute(use_cache=False), compute(use_cache=False)
    vectors = torch.stack([d.vector for d in first])
    assert torch.allclose(vectors @ vectors.T, torch.eye(count), atol=1e-5)
    assert tensor_digest([d.vector for d in first]) == tensor_digest([d.vector for d in second])
    key = "eigenvalue" if method == "sefa" else "std"
    values = [d.meta[key] for d in first]
    assert values == sorted(values, reverse=True) and values[0] > 2 * values[-1]

    # Leading components move the image more than trailing ones (GANSpace strengths count stds).
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1)), None).detach()
    changes = _image_changes(G, ws, first[:3] + first[-3:], 1.0)
    assert np.mean(changes[:3]) > 1.5 * np.mean(changes[3:])


def test_ganspace_seed_and_samples_matter_and_std_scales_strength(G):
    a = ganspace(G, 4, 2000, seed=0, use_cache=False)
    b = ganspace(G, 4, 2000, seed=1, use_cache=False)
    assert not torch.equal(a[0].vector, b[0].vector)
    assert abs(float(a[0].vector @ b[0].vector)) > 0.9  # same leading axis, different samples
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    step = apply_direction(ws, a[0], 2.0) - ws
    assert torch.allclose(step.norm(dim=-1), torch.full((1, G.num_ws), 2.0 * a[0].meta["std"]), atol=1e-5)


def test_ganspace_per_component_layers(G):
    directions = ganspace(G, 3, 1000, layers=[(0, 2), None, (3, G.num_ws)])
    assert [d.layers for d in directions] == [(0, 2), None, (3, G.num_ws)]
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    changed = (apply_direction(ws, directions[0], 1.0) != 0).any(-1)[0]
    assert changed.tolist() == [True, True] + [False] * (G.num_ws - 2)
    with pytest.raises(DirectionError, match="num_ws"):
        ganspace(G, 2, 1000, layers=(0, G.num_ws + 5))


def test_sefa_layer_groups_follow_resolution(G):
    # 32 px: ws 0 = b4.conv1, 1-2 = b8, 3-4 = b16, 5-6 = b32 (toRGB layers are not factorised).
    assert sefa(G, 2, "coarse")[0].layers == (0, 3)
    assert sefa(G, 2, "middle")[0].layers == (3, 7)
    assert sefa(G, 2, "all")[0].layers is None
    with pytest.raises(DirectionError, match="no 'fine' layers"):
        sefa(G, 2, "fine")
    coarse, all_layers = sefa(G, 1, "coarse")[0], sefa(G, 1, "all")[0]
    assert not torch.allclose(coarse.vector, all_layers.vector)


def test_sefa_matches_eigendecomposition_of_normalised_affines(G):
    top = sefa(G, 1, use_cache=False)[0]
    rows = []
    for _, _, _, layer in discovery.style_layers(G):
        weight = layer.affine.weight.detach().double()
        rows.append(weight / weight.norm(dim=1, keepdim=True))
    A = torch.cat(rows)
    # A unit vector achieving the largest ||A v||^2 is the top eigenvector; compare the Rayleigh quotient.
    rayleigh = float((A @ top.vector.double()).norm() ** 2)
    assert rayleigh == pytest.approx(float(torch.linalg.eigvalsh(A.T @ A)[-1]), rel=1e-5)
    assert rayleigh == pytest.approx(top.meta["eigenvalue"], rel=1e-5)


def test_second_use_hits_the_cache_in_memory_then_on_disk(G, tmp_path):
    start = dict(discovery.CACHE_STATS)
    first = ganspace(G, 5, 2000)
    assert discovery.CACHE_STATS["computed"] == start["computed"] + 1
    again = ganspace(G, 5, 2000)
    assert discovery.CACHE_STATS["computed"] == start["computed"] + 1
    assert discovery.CACHE_STATS["memory_hits"] == start["memory_hits"] + 1
    discovery.clear_memory_cache()
    from_disk = ganspace(G, 5, 2000)
    assert discovery.CACHE_STATS["disk_hits"] == start["disk_hits"] + 1
    assert discovery.CACHE_STATS["computed"] == start["computed"] + 1
    for a, b, c in zip(first, again, from_disk):
        assert torch.equal(a.vector, b.vector) and torch.equal(a.vector, c.vector) and a.meta == c.meta
    assert len(list((tmp_path / "cache" / "directions").glob("ganspace-*.safetensors"))) == 1
    # Different parameters or weights are a different cache entry.
    ganspace(G, 5, 2001)
    other = make_generator(resolution=32, w_dim=32, seed=5)
    sefa(G, 3)
    sefa(other, 3)
    assert discovery.CACHE_STATS["computed"] == start["computed"] + 4
    # Mutating a returned direction does not leak into the cache.
    again[0].vector.add_(1.0)
    assert torch.equal(ganspace(G, 5, 2000)[0].vector, first[0].vector)


def test_damaged_cache_file_is_recomputed(G, tmp_path):
    sefa(G, 2)
    discovery.clear_memory_cache()
    (cached,) = (tmp_path / "cache" / "directions").glob("sefa-*.safetensors")
    cached.write_bytes(b"garbage")
    computed = discovery.CACHE_STATS["computed"]
    assert len(sefa(G, 2)) == 2
    assert discovery.CACHE_STATS["computed"] == computed + 1


# --------------------------------------------------------------------------------------------------- files


def test_shared_interfacegan_and_pca_files(shared_dir, G):
    directory = shared_dir / "directions"
    age = load_direction(directory / "age.pt")
    assert age.name == "age" and age.vector.shape == (512,)
    assert float(age.vector.norm()) == pytest.approx(1.0, abs=1e-4)
    pca = load_directions(directory / "ffhq_pca.pt")
    assert len(pca) == 80 and pca["pc0"].meta["std"] > pca["pc79"].meta["std"] > 0
    assert load_direction(f"{directory / 'ffhq_pca.pt'}#pc3").meta["index"] == 3
    with pytest.raises(DirectionError, match=r"512-dimensional.*w_dim is 32"):
        load_direction(directory / "smile.pt", G)
    with pytest.raises(DirectionError, match="pick one of"):
        load_direction(directory / "ffhq_pca.pt")


def test_shipped_names_pick_the_direction_that_fits_the_generator():
    from pti.checkpoints import load_generator
    from pti.directions import shipped_directions
    from pti.latent import Latent
    from pti.tune import pivotal_tune

    ffhq_shaped = make_generator(z_dim=512, w_dim=512)
    assert set(shipped_directions(ffhq_shaped)) == {"age", "smile", "pose"}
    smile = load_direction("smile", ffhq_shaped)
    assert smile.w_dim == 512 and smile.meta["model"] == "ffhq-stylegan2"
    assert resolve_direction("pose", ffhq_shaped).w_dim == 512
    embedded = load_generator()
    assert load_direction("smile", embedded).w_dim == embedded.w_dim == 128
    assert load_direction("smile").w_dim == 128  # no generator: the embedded model's name first
    with pytest.raises(DirectionError, match=r"shipped directions for this generator \(w_dim 128\)"):
        load_direction("age", embedded)
    # The embedded model's directions follow its tunings, not an unrelated model of the same size.
    stranger = make_generator(z_dim=embedded.z_dim, w_dim=128)
    assert "yaw" not in shipped_directions(stranger) and "yaw" in shipped_directions(embedded)
    pivot = Latent(embedded.mapping.w_avg.view(1, 1, -1).expand(1, embedded.num_ws, -1).clone(), space="w")
    photo = torch.rand(1, 3, 64, 64)
    tuned = pivotal_tune(embedded, photo, pivot, steps=1, preset="reference")
    assert "yaw" in shipped_directions(tuned)


def test_shipped_ffhq_directions_are_the_official_files(shared_dir):
    from pti.directions import FFHQ_DIRECTIONS_PATH

    shipped = load_directions(FFHQ_DIRECTIONS_PATH)
    for name, file_name in (("age", "age.pt"), ("smile", "smile.pt"), ("pose", "rotation.pt")):
        official = load_direction(shared_dir / "directions" / file_name).vector
        assert torch.allclose(shipped[name].vector, official / official.norm(), atol=1e-6), name


def test_npy_boundary_and_pickled_npy_refused(tmp_path, G):
    boundary = np.random.default_rng(0).standard_normal((1, G.w_dim)).astype(np.float32)
    np.save(tmp_path / "pose.npy", boundary)
    direction = load_direction(tmp_path / "pose.npy", G)
    assert direction.name == "pose" and torch.equal(direction.vector, torch.from_numpy(boundary[0]))
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionError, match="not a plain numeric"):
        load_direction(tmp_path / "evil.npy")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pt_with_code_is_refused_and_nothing_runs(tmp_path):
    marker = str(tmp_path / "ran")
    torch.save({"boundary": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DirectionError, match="cannot read this torch file safely"):
        load_directions(tmp_path / "evil.pt")
    assert not os.path.exists(marker)


def test_safetensors_round_trip_keeps_order_layers_and_meta(tmp_path, G):
    directions = [
        Direction("zeta", torch.randn(G.w_dim), (1, 3), {"std": 2.5, "note": "x"}),
        Direction("alpha", torch.randn(G.num_ws, G.w_dim), None, {}),
    ]
    save_directions(directions, tmp_path / "mine.safetensors", generator_hash="abc")
    loaded = load_directions(tmp_path / "mine.safetensors", G)
    assert list(loaded) == ["zeta", "alpha"]
    assert torch.equal(loaded["zeta"].vector, directions[0].vector) and loaded["zeta"].layers == (1, 3)
    assert loaded["zeta"].meta["std"] == 2.5 and loaded["zeta"].meta["generator_hash"] == "abc"
    assert torch.equal(loaded["alpha"].vector, directions[1].vector)
    other = make_generator(resolution=16, w_dim=32)
    with pytest.raises(DirectionError, match=f"{G.num_ws} layers.*num_ws={other.num_ws}"):
        load_directions(tmp_path / "mine.safetensors", other)


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_direction(tmp_path / "missing.pt")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(DirectionError, match="unsupported direction file type"):
        load_direction(tmp_path / "x.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(DirectionError, match="not a readable"):
        load_direction(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="not shipped"):
        default_directions(tmp_path / "directions.safetensors")
    with pytest.raises(DirectionError, match="sefa:K"):
        resolve_direction("sefa:x", make_generator(resolution=8))


def test_resolve_direction_specs(G):
    assert resolve_direction("sefa:2", G).meta["index"] == 2
    assert resolve_direction("sefa:0:coarse", G).layers == (0, 3)
    assert resolve_direction("ganspace:1", G).meta["method"] == "ganspace"


# --------------------------------------------------------------------------------------------------- apply


def test_apply_edits_only_chosen_layers_and_never_mutates(G):
    ws = torch.randn(2, G.num_ws, G.w_dim)
    before = tensor_digest(ws)
    direction = Direction("d", torch.randn(G.w_dim), (2, 5))
    edited = apply_direction(ws, direction, -1.5)
    assert tensor_digest(ws) == before
    assert torch.equal(edited[:, :2], ws[:, :2]) and torch.equal(edited[:, 5:], ws[:, 5:])
    assert torch.allclose(edited[:, 2:5], ws[:, 2:5] - 1.5 * direction.vector)
    override = apply_direction(ws, direction, 1.0, layers=(0, 1))
    assert torch.equal(override[:, 1:], ws[:, 1:])
    per_layer = Direction("p", torch.randn(G.num_ws, G.w_dim))
    assert torch.allclose(apply_direction(ws, per_layer, 2.0), ws + 2.0 * per_layer.vector)
    with pytest.raises(DirectionError, match="w_dim is 32"):
        apply_direction(ws, Direction("big", torch.randn(512)), 1.0)


def test_strength_sweep_layout(G):
    ws = torch.randn(2, G.num_ws, G.w_dim)
    direction = Direction("d", torch.randn(G.w_dim))
    sweep = strength_sweep(ws, direction, [-1.0, 0.0, 2.0])
    assert sweep.shape == (6, G.num_ws, G.w_dim)
    assert torch.equal(sweep[1], ws[0]) and torch.equal(sweep[4], ws[1])
    assert torch.allclose(sweep[5], ws[1] + 2.0 * direction.vector)


def test_latent_objects_are_edited_as_new_latents(G):
    latent_module = pytest.importorskip("pti.latent")
    noise = {"b8.conv0": torch.randn(1, 1, 8, 8)}
    latent = latent_module.Latent(torch.randn(1, G.num_ws, G.w_dim), noise, "w", "hash", {"k": 1})
    before = tensor_digest([latent.ws, latent.noises])
    whole = apply_direction(latent, Direction("d", torch.randn(G.w_dim)), 1.0)
    partial = strength_sweep(latent, Direction("d", torch.randn(G.w_dim), (0, 2)), [0.0, 1.0])
    assert isinstance(whole, latent_module.Latent) and whole.space == "w" and whole.generator_hash == "hash"
    assert partial.space == "w+" and len(partial) == 2 and partial.noises["b8.conv0"].shape == (2, 1, 8, 8)
    assert tensor_digest([latent.ws, latent.noises]) == before


def test_interpolation_and_style_mixing(G):
    a, b = torch.randn(1, G.num_ws, G.w_dim), torch.randn(1, G.num_ws, G.w_dim)
    for mode in ("lerp", "slerp"):
        ends = interpolate(a, b, [0.0, 1.0], mode)
        assert torch.allclose(ends[0], a[0], atol=1e-5) and torch.allclose(ends[1], b[0], atol=1e-5)
    mid_lerp, mid_slerp = interpolate(a, b, 0.5, "lerp"), interpolate(a, b, 0.5, "slerp")
    assert torch.allclose(mid_lerp, (a + b) / 2)
    # slerp keeps the (average) norm where lerp shrinks it.
    expected_norm = (a.norm(dim=-1) + b.norm(dim=-1)) / 2
    assert torch.allclose(mid_slerp.norm(dim=-1), expected_norm, atol=1e-4)
    assert (mid_lerp.norm(dim=-1) < expected_norm).all()
    mixed = style_mix(a, b, (3, 6))
    assert torch.equal(mixed[:, 3:6], b[:, 3:6]) and torch.equal(mixed[:, :3], a[:, :3])
    with pytest.raises(DirectionError, match="outside"):
        style_mix(a, b, (3, 99))


def test_parse_strengths():
    assert parse_strengths("-3:3:7") == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert parse_strengths("-2, 0,2.5") == [-2.0, 0.0, 2.5]
    for bad in ("1:2", "a,b", "0:1:0"):
        with pytest.raises(DirectionError):
            parse_strengths(bad)


# ----------------------------------------------------------------------------------------------------------- node


def test_compute_directions_node(G):
    from pack_loader import load_pack, pack_module

    load_pack()
    node_class = pack_module("nodes.directions").ComputeDirections
    for options in node_class.INPUT_TYPES()["required"].values():
        assert options[1].get("tooltip")
    assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES) == len(node_class.OUTPUT_IS_LIST)
    before = tensor_digest(G)
    args = dict(generator=G, method="sefa", num_components=6, component=2, layers="coarse", num_samples=1000, seed=0)
    with torch.inference_mode():
        direction, directions, preview = node_class().compute(**args, preview_components=3, preview_strength=3.0)
        computed = discovery.CACHE_STATS["computed"]
        again = node_class().compute(**{**args, "method": "sefa"}, preview_components=0, preview_strength=3.0)
    assert tensor_digest(G) == before
    assert len(directions) == 6 and direction.name == directions[2].name and direction.layers == (0, 3)
    assert preview.shape == (1, 3 * G.img_resolution, 3 * G.img_resolution, 3)
    assert discovery.CACHE_STATS["computed"] == computed and torch.equal(again[0].vector, direction.vector)
    # The middle column (strength 0) is the same image in every row; the edited columns differ from it.
    size = G.img_resolution
    middle = preview[0, :, size : 2 * size]
    assert torch.allclose(middle[:size], middle[size : 2 * size])
    assert not torch.allclose(preview[0, :size, :size], middle[:size], atol=1e-2)
    with torch.inference_mode():
        gs = node_class().compute(**{**args, "method": "ganspace"}, preview_components=1, preview_strength=1.0)
    assert gs[0].meta["method"] == "ganspace" and gs[0].layers == (0, 3)
    with pytest.raises(ValueError, match="w_dim"):
        node_class().compute(**{**args, "num_components": 64}, preview_components=0, preview_strength=1.0)
