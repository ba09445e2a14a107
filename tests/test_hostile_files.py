"""Hostile-file corpus, generated here: every loader refuses it with its own error naming the problem, no code
from the file runs (each payload would create a sentinel file), and nothing is allocated from a size a header
claims before that size is checked against the file (peak RSS growth and an address-space limit prove it).

Loaders: ``load_generator`` (safetensors / NVIDIA pickle / torch zip / torch legacy), ``read_safetensors``,
``load_directions`` (.npy / .pt / .safetensors), ``Latent.load`` and ``load_delta``.
Decision on symbolic links: a link to a real file is accepted (ComfyUI model folders are often links into a shared
model store, and safety depends on the bytes, never on the path); a dangling link or a link loop is refused with
an error that says it is a broken link.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import resource
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import peak_rss_reset, status_kb
from hostile_files import nvidia_modules, nvidia_pickle_bytes, rosinality_bytes, tiny_generator, tuned_copy

from pti.checkpoints import CheckpointError, load_generator, read_safetensors, save_generator  # noqa: E402
from pti.directions import Direction, DirectionError, load_direction, load_directions, save_directions  # noqa: E402


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


# ====================================================================================================================
# Payloads: pickles whose execution creates ``sentinel``


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _getattr_chain(command: str) -> bytes:
    """getattr(__import__('os'), 'system')(command) as raw protocol-4 instructions."""
    return (
        b"\x80\x04" + _unicode("builtins") + _unicode("getattr") + b"\x93"
        + _unicode("builtins") + _unicode("__import__") + b"\x93" + _unicode("os") + b"\x85R"
        + _unicode("system") + b"\x86R" + _unicode(command) + b"\x85R."
    )  # fmt: skip


def _memo_obfuscated_global(command: str) -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo (no GLOBAL text in sight)."""
    return (
        b"\x80\x04" + _unicode("os") + b"\x94" + _unicode("system") + b"\x94" + b"h\x00h\x01\x93"
        + _unicode(command) + b"\x85R."
    )  # fmt: skip


def payloads(sentinel: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (text the refusal must contain, pickle bytes that would create ``sentinel``)."""
    touch = f"touch {sentinel}"
    create = f"open({str(sentinel)!r}, 'w').close()"
    system = f"{os.system.__module__}.system"
    return {
        "os.system": (system, pickle.dumps(_Reduce(os.system, touch))),
        "subprocess": ("subprocess.Popen", pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(sentinel)]))),
        "exec": ("builtins.exec", pickle.dumps(_Reduce(exec, create))),
        "eval-protocol-2": ("builtins.eval", pickle.dumps(_Reduce(eval, create), protocol=2)),
        "eval-python2-name": ("builtins.eval", b"c__builtin__\neval\n(" + b"V" + create.encode() + b"\ntR."),
        "getattr-chain": ("builtins.getattr", _getattr_chain(touch)),
        "memo-obfuscated": ("os.system", _memo_obfuscated_global(touch)),
        "inst-opcode": ("unsupported pickle instruction", b"(V" + touch.encode() + b"\nios\nsystem\n."),
        "nested-in-state-dict": ("builtins.exec", pickle.dumps({"g_ema": {"style.1.weight": _Reduce(exec, create)}})),
        "tensor-hook": (
            system,
            pickle.dumps(_Reduce(torch._utils._rebuild_parameter, 1, False, _Reduce(os.system, touch))),
        ),
    }


def test_payloads_are_live(tmp_path):
    """Every payload really creates its sentinel under plain pickle.loads (harmless here: it only touches a file in
    tmp_path), so each refusal test below would fail if a loader ran it."""
    sentinel = tmp_path / "SENTINEL"
    for name, (_, data) in payloads(sentinel).items():
        with contextlib.suppress(Exception):  # the payload runs before the surrounding object fails to build
            pickle.loads(data)
        for _ in range(100):  # subprocess.Popen / os.system finish asynchronously or in a child
            if sentinel.exists():
                break
            time.sleep(0.05)
        assert sentinel.exists(), f"payload {name} did not run under pickle.loads"
        sentinel.unlink()


def _torch_zip(path: Path, data_pkl: bytes, extra: dict[str, bytes] | None = None, compress: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for name, data in (extra or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


def _torch_legacy(path: Path, data_pkl: bytes, keys: list[str] | None = None, tail: bytes = b"") -> Path:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}))
    path.write_bytes(header + data_pkl + pickle.dumps(keys or [], protocol=2) + tail)
    return path


CONTAINERS = {
    "generator .pkl": (".pkl", lambda p, d: _write(p, d), load_generator, CheckpointError),
    "generator torch zip": (".pt", _torch_zip, load_generator, CheckpointError),
    "generator torch legacy": (".pt", _torch_legacy, load_generator, CheckpointError),
    "direction .pt zip": (".pt", _torch_zip, load_directions, DirectionError),
    "direction .pt legacy": (".pth", _torch_legacy, load_directions, DirectionError),
}


@pytest.mark.parametrize("payload", list(payloads(Path("x"))))
@pytest.mark.parametrize("container", list(CONTAINERS))
def test_code_in_pickles_is_refused_by_name_and_never_runs(tmp_path, payload, container):
    sentinel = tmp_path / "SENTINEL"
    expected, data = payloads(sentinel)[payload]
    suffix, write, load, error = CONTAINERS[container]
    path = write(tmp_path / f"file{suffix}", data)
    with pytest.raises(error) as info:
        load(path)
    message = str(info.value)
    # Protocol-0 text pickles do not even look like a network pickle to the format sniffer.
    assert expected in message or (container == "generator .pkl" and "not a recognised generator" in message)
    assert str(path) in message
    assert not sentinel.exists()


# ====================================================================================================================
# NVIDIA persistence: module_src is never run


def _sentinel_source(sentinel: Path) -> str:
    return f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\nclass Generator: pass\n"


def test_persistence_module_src_is_live_but_never_run(tmp_path, G):
    sentinel = tmp_path / "SENTINEL"
    data = nvidia_pickle_bytes(G, _sentinel_source(sentinel))
    with nvidia_modules(run_module_src=True):
        pickle.loads(data)  # what NVIDIA's own loader does
    assert sentinel.exists()
    sentinel.unlink()
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(data)
    H = load_generator(path)  # a well-formed snapshot loads: the code is dropped, the weights kept
    assert H.source_info["format"] == "nvidia-pkl" and not sentinel.exists()
    with torch.no_grad():
        ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
        assert torch.equal(H.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))


def test_persistence_object_with_a_payload_in_its_state_is_refused(tmp_path, G):
    sentinel = tmp_path / "SENTINEL"
    with nvidia_modules() as nv:
        G.evil = _Reduce(os.system, f"touch {sentinel}")  # lands in the pickled __dict__
        try:
            data = pickle.dumps({"G_ema": nv.persistent(G, _sentinel_source(sentinel), G.init_kwargs)})
        finally:
            del G.evil
    path = tmp_path / "g.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"refused global '(posix|os)\.system'"):
        load_generator(path)
    assert not sentinel.exists()


def test_persistence_pickle_without_a_generator_is_refused(tmp_path):
    with nvidia_modules() as nv:
        data = pickle.dumps({"D": nv.persistent(torch.nn.Linear(3, 1), "import os; os.system('x')")})
    path = tmp_path / "d.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="expected an NVIDIA network pickle with a 'G_ema' Generator"):
        load_generator(path)


# ====================================================================================================================
# Bounded memory: header sizes are checked against the file before anything is allocated


@contextlib.contextmanager
def bounded_memory(limit_mb: int = 64):
    """Fail if the block's peak RSS grows by more than ``limit_mb`` or if it asks for 1 GiB of address space.

    The address-space limit catches allocations that a lazy allocator would not yet have touched (RSS alone
    would miss a 10 GB ``malloc`` that is never written).
    """
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc to measure peak RSS")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    address_space = status_kb("VmSize") * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space + (1 << 30), hard))
    reset = peak_rss_reset()
    before = status_kb("VmRSS")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if reset:
        growth_mb = (status_kb("VmHWM") - before) / 1024
        assert growth_mb < limit_mb, f"peak RSS grew by {growth_mb:.0f} MB"


def _raw_safetensors(path: Path, header: dict, data: bytes = b"", claimed_len: int | None = None) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob) if claimed_len is None else claimed_len) + blob + data)
    return path


TERA = 10**12
HUGE_SHAPE = [10**6, 10**6]  # 4 TB of float32


def _huge_safetensors_cases(tmp_path: Path) -> dict[str, Path]:
    return {
        "header length 10^12": _raw_safetensors(tmp_path / "a.safetensors", {}, b"\0" * 64, claimed_len=TERA),
        "header length 2^33": _raw_safetensors(tmp_path / "b.safetensors", {}, b"\0" * 64, claimed_len=1 << 33),
        "tensor of 4 TB": _raw_safetensors(
            tmp_path / "c.safetensors",
            {"ws": {"dtype": "F32", "shape": HUGE_SHAPE, "data_offsets": [0, 4 * 10**12]}},
            b"\0" * 64,
        ),
        "tensor of 8 GB inside 64 bytes": _raw_safetensors(
            tmp_path / "d.safetensors",
            {"ws": {"dtype": "F32", "shape": [1 << 31], "data_offsets": [0, 1 << 33]}},
            b"\0" * 64,
        ),
        "overlapping tensors": _raw_safetensors(
            tmp_path / "e.safetensors",
            {
                "a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},
                "b": {"dtype": "F32", "shape": [8], "data_offsets": [16, 48]},
            },
            b"\0" * 48,
        ),
        "negative offsets": _raw_safetensors(
            tmp_path / "f.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8
        ),
        "object dtype": _raw_safetensors(
            tmp_path / "g.safetensors", {"a": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8
        ),
        "header not JSON": _write(tmp_path / "h.safetensors", struct.pack("<Q", 6) + b"{nope}" + b"\0" * 8),
        "header is a list": _write(tmp_path / "i.safetensors", struct.pack("<Q", 2) + b"[]"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _latent_load(path):
    from pti.latent import Latent

    return Latent.load(path)


def _delta_load(path, G):
    from pti.delta import load_delta

    return load_delta(path, G)


SAFETENSORS_LOADERS = {
    "load_generator": (lambda p, G: load_generator(p), CheckpointError),
    "read_safetensors": (lambda p, G: read_safetensors(p), CheckpointError),
    "load_directions": (lambda p, G: load_directions(p, G), DirectionError),
    "Latent.load": (lambda p, G: _latent_load(p), ValueError),
    "load_delta": (_delta_load, CheckpointError),
}


@pytest.mark.parametrize("loader", list(SAFETENSORS_LOADERS))
def test_hostile_safetensors_headers_refused_with_bounded_memory(tmp_path, G, loader):
    load, error = SAFETENSORS_LOADERS[loader]
    for case, path in _huge_safetensors_cases(tmp_path).items():
        with bounded_memory(), pytest.raises(error) as info:
            load(path, G)
        message = str(info.value)
        assert str(path) in message, case
        words = ("header", "truncated", "overlap", "dtype", "offset", "json", "not a recognised", "safetensors")
        assert any(word in message.lower() for word in words), f"{loader} / {case}: {message}"


def test_zip_storage_claims_are_checked_before_reading(tmp_path, G):
    """A torch zip whose pickle declares a 10^11-element storage, and a zip bomb (1 GB of zeros compressed)."""
    buffer = io.BytesIO()
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4)}}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as original:
        data_pkl = next(original.read(n) for n in original.namelist() if n.endswith("data.pkl"))
    claims = _torch_zip(tmp_path / "claims.pt", _with_numel(data_pkl, 10**11), {"data/0": b"\0" * 16})
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", _with_numel(data_pkl, 1 << 25))
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            zeros = bytes(1 << 24)
            for _ in range(8):  # 128 MiB of zeros, about 128 kB on disk
                entry.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    for path, message in ((claims, "pickle says"), (bomb, "zip bomb")):
        for load, error in ((load_generator, CheckpointError), (load_directions, DirectionError)):
            with bounded_memory(), pytest.raises(error, match=message):
                load(path)


def _with_numel(data: bytes, numel: int) -> bytes:
    """A torch.save pickle whose first storage (4 elements) claims ``numel`` elements instead."""
    at = data.index(b"K\x04", data.index(b"storage"))
    return data[:at] + b"\x8a\x08" + numel.to_bytes(8, "little") + data[at + 2 :]


def test_legacy_storage_claims_are_checked_before_reading(tmp_path):
    buffer = io.BytesIO()
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4)}}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    # The pickle and the storage's own header (numel, 8 little-endian bytes, after the key list) agree on 10^11.
    at = data.rindex((4).to_bytes(8, "little"))
    forged = _with_numel(data[:at], 10**11) + (10**11).to_bytes(8, "little") + data[at + 8 :]
    path = _write(tmp_path / "legacy.pt", forged)
    for load, error in ((load_generator, CheckpointError), (load_directions, DirectionError)):
        with bounded_memory(), pytest.raises(error, match="truncated inside storage"):
            load(path)


def test_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path = _write(tmp_path / "boundary.npy", buffer.getvalue() + b"\0" * 64)
    with bounded_memory(), pytest.raises(DirectionError, match="truncated or damaged"):
        load_directions(path)


def test_npy_with_object_array_never_runs_its_pickle(tmp_path):
    sentinel = tmp_path / "SENTINEL"
    array = np.array([_Reduce(os.system, f"touch {sentinel}")], dtype=object)
    path = tmp_path / "boundary.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DirectionError, match="not a plain numeric .npy array"):
        load_directions(path)
    assert not sentinel.exists()


def test_deeply_nested_pickles_are_refused(tmp_path):
    depth = 20_000
    nested = b"\x80\x04" + b"]" * depth + b"a" * (depth - 1) + b"."
    for load, error, suffix in ((load_generator, CheckpointError, ".pt"), (load_directions, DirectionError, ".pt")):
        with pytest.raises(error):
            load(_torch_zip(tmp_path / f"deep{suffix}", nested))
    with pytest.raises(CheckpointError):
        load_generator(_write(tmp_path / "deep.pkl", nested))


# ====================================================================================================================
# Direction files: bad metadata and shapes


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"directions": "[]"}, "must map each name"),
        ({"directions": json.dumps({"a": 5})}, "must map each name"),
        ({"directions": json.dumps({"a": {"layers": "ab"}})}, "must be \\[start, end\\] ints"),
        ({"directions": json.dumps({"a": {"layers": [0, 1, 2]}})}, "must be \\[start, end\\] ints"),
        ({"directions": json.dumps({"a": {"meta": 5}})}, "must be a JSON object"),
        ({"directions": json.dumps({"a": {"meta": {"std": "big"}}})}, "'std'"),
        ({"directions": "{"}, "malformed 'directions'"),
        ({"order": "5"}, "must be a list of names"),
        ({"order": "[[1]]"}, "must be a list of names"),
    ],
)
def test_direction_metadata_of_the_wrong_type_is_refused(tmp_path, metadata, message):
    from pti.checkpoints import write_safetensors

    path = write_safetensors(tmp_path / "dirs.safetensors", {"a": torch.ones(8), "b": torch.ones(8)}, metadata)
    with pytest.raises(DirectionError, match=message):
        load_directions(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"comp": "not a tensor", "std": torch.ones(1)}, "'comp' is a str"),
        ({"comp": torch.tensor(1.0), "std": torch.ones(1)}, "must be \\[components"),
        ({"comp": torch.ones(2, 8), "std": torch.ones(3)}, "2 components but 3 stds"),
        ({"smile": torch.ones(2, 3, 8)}, "vector must be"),
        ({"smile": torch.tensor([float("nan")] * 8)}, "NaN"),
        ({"smile": [1.0, 2.0]}, "not a tensor"),
    ],
)
def test_direction_pt_contents_of_the_wrong_kind_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "d.pt")
    with pytest.raises(DirectionError, match=message):
        load_directions(tmp_path / "d.pt")


def test_direction_of_the_wrong_size_names_both_sizes(tmp_path, G):
    save_directions([Direction("smile", torch.ones(512))], tmp_path / "ffhq.safetensors")
    with pytest.raises(DirectionError, match=r"512-dimensional but the generator's w_dim is 8"):
        load_direction(tmp_path / "ffhq.safetensors", G)


# ====================================================================================================================
# Truncated, empty, directories, links, special files


def _valid_files(tmp_path: Path, G) -> dict[str, tuple[Path, object, type]]:
    from pti.delta import save_delta
    from pti.latent import Latent

    files = {
        "generator safetensors": (save_generator(G, tmp_path / "g.safetensors"), load_generator, CheckpointError),
        "nvidia pickle": (_write(tmp_path / "g.pkl", nvidia_pickle_bytes(G)), load_generator, CheckpointError),
        "rosinality zip": (_write(tmp_path / "g.pt", rosinality_bytes(G)), load_generator, CheckpointError),
        "rosinality legacy": (_write(tmp_path / "gl.pt", rosinality_bytes(G, False)), load_generator, CheckpointError),
    }
    np.save(tmp_path / "d.npy", np.ones((1, G.w_dim), np.float32))
    torch.save({"smile": torch.ones(G.w_dim)}, tmp_path / "d.pt")
    save_directions([Direction("smile", torch.ones(G.w_dim))], tmp_path / "d.safetensors")
    for suffix in ("npy", "pt", "safetensors"):
        files[f"direction {suffix}"] = (tmp_path / f"d.{suffix}", load_directions, DirectionError)
    latent = Latent(torch.zeros(1, G.num_ws, G.w_dim), {}, "w", "", {})
    files["latent"] = (latent.save(tmp_path / "l.safetensors"), Latent.load, ValueError)
    delta = save_delta(tuned_copy(G), G, tmp_path / "delta.safetensors")
    files["delta"] = (delta, lambda p: _delta_load(p, G), CheckpointError)
    return files


def test_truncated_and_empty_files_are_refused_by_every_loader(tmp_path, G):
    refused = 0
    for path, load, error in _valid_files(tmp_path, G).values():
        load(path)  # the intact file loads
        data = path.read_bytes()
        for cut in (0, 1, 8, len(data) // 3, len(data) // 2, len(data) - 1):
            broken = path.with_name(f"cut{cut}-{path.name}")
            broken.write_bytes(data[:cut])
            with pytest.raises(error):
                load(broken)
            refused += 1
    assert refused == 9 * 6


def test_directories_links_and_special_files(tmp_path, G):
    good = save_generator(G, tmp_path / "real.safetensors")
    (tmp_path / "link.safetensors").symlink_to(good)
    assert load_generator(tmp_path / "link.safetensors").source_info["hash"] == load_generator(good).source_info["hash"]

    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (tmp_path / "loop_a.pt").symlink_to(tmp_path / "loop_b.pt")
    (tmp_path / "loop_b.pt").symlink_to(tmp_path / "loop_a.pt")
    (tmp_path / "folder.pkl").mkdir()
    os.mkfifo(tmp_path / "pipe.pkl")  # reading it would block forever
    cases = {
        "dangling.safetensors": "symbolic link",
        "loop_a.pt": "symbolic link",
        "folder.pkl": "is a directory",
        "pipe.pkl": "not a regular file",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_generator(tmp_path / name)
        with pytest.raises(CheckpointError, match=message):
            read_safetensors(tmp_path / name)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_generator("/dev/zero")

    directions = tmp_path / "dirs"
    directions.mkdir()
    (directions / "folder.npy").mkdir()
    (directions / "dangling.pt").symlink_to(directions / "gone.pt")
    os.mkfifo(directions / "pipe.safetensors")
    for name, message in (
        ("folder.npy", "directory"),
        ("dangling.pt", "symbolic link"),
        ("pipe.safetensors", "special"),
    ):
        with pytest.raises(DirectionError, match=message):
            load_directions(directions / name)
        with pytest.raises(DirectionError, match=message):
            load_direction(directions / name)


# ====================================================================================================================
# Latent and delta files with bad contents


def _latent_file(tmp_path: Path, tensors: dict, metadata: dict) -> Path:
    from pti.checkpoints import write_safetensors

    return write_safetensors(tmp_path / "latent.safetensors", tensors, metadata)


@pytest.mark.parametrize(
    "tensors, metadata, message",
    [
        ({"ws": torch.zeros(1, 4, 8)}, {"format": "pti-generator"}, "not a PTI latent"),
        ({"w": torch.zeros(1, 4, 8)}, {"format": "pti-latent"}, "no 'ws'"),
        ({"ws": torch.zeros(4, 8)}, {"format": "pti-latent", "space": "w"}, "\\[N, num_ws, w_dim\\]"),
        ({"ws": torch.zeros(1, 4, 8, dtype=torch.int32)}, {"format": "pti-latent", "space": "w"}, "float"),
        ({"ws": torch.zeros(1, 4, 8)}, {"format": "pti-latent", "space": "z"}, "space"),
        ({"ws": torch.zeros(1, 4, 8), "x": torch.zeros(1)}, {"format": "pti-latent", "space": "w"}, "unexpected"),
        ({"ws": torch.zeros(1, 4, 8), "noise.b4.conv1": torch.zeros(1, 1, 8, 8)}, {"format": "pti-latent",
          "space": "w"}, "must be \\[1, 1, 4, 4\\]"),
        ({"ws": torch.zeros(1, 4, 8)}, {"format": "pti-latent", "space": "w", "meta": "{"}, "malformed metadata"),
    ],
)  # fmt: skip
def test_latent_files_with_bad_contents_are_refused(tmp_path, tensors, metadata, message):
    from pti.latent import Latent

    with pytest.raises(ValueError, match=message):
        Latent.load(_latent_file(tmp_path, tensors, metadata))


def test_latent_meta_must_be_an_object(tmp_path):
    from pti.latent import Latent

    path = _latent_file(tmp_path, {"ws": torch.zeros(1, 4, 8)}, {"format": "pti-latent", "space": "w", "meta": "[]"})
    with pytest.raises(ValueError, match="meta"):
        Latent.load(path)


def test_delta_files_with_bad_contents_are_refused(tmp_path, G):
    from pti.checkpoints import write_safetensors
    from pti.delta import save_delta

    good = save_delta(tuned_copy(G), G, tmp_path / "good.safetensors")
    tensors, metadata = read_safetensors(good)
    other = tiny_generator(seed=1)
    cases = {
        "another base": (tensors, metadata, "was tuned from base model"),
        "not a delta": (tensors, {**metadata, "format": "pti-generator"}, "not a PTI delta"),
        "config not JSON": (tensors, {**metadata, "config": "{"}, "malformed delta metadata"),
        "unknown tensor": ({**tensors, "mapping.fc9.weight.delta": torch.ones(2)}, metadata, "unknown tensor"),
        "foreign key": ({**tensors, "payload": torch.ones(2)}, metadata, "unexpected tensor"),
        "wrong size": ({"synthesis.b4.const.delta": torch.ones(3)}, metadata, "has 3 values"),
        "lonely factor": ({"synthesis.b4.conv1.weight.delta_u": torch.ones(8, 4)}, metadata, "missing or mismatched"),
    }
    for name, (content, meta, message) in cases.items():
        path = write_safetensors(tmp_path / f"{name}.safetensors", content, meta)
        with pytest.raises(CheckpointError, match=message):
            _delta_load(path, other if name == "another base" else G)


@pytest.mark.parametrize(
    "change", [{"w_dim": 10**6, "z_dim": 10**6}, {"w_dim": 0}, {"w_dim": -1}, {"img_resolution": 3}]
)
def test_generator_config_in_metadata_is_checked_before_building(tmp_path, G, change):
    """A damaged or hostile config (found by the fuzzer: w_dim 0 / -1 crashed the constructor) is refused, and an
    inflated one (10^6-wide layers, terabytes of weights) never gets to allocate anything."""
    from pti.checkpoints import write_safetensors

    tensors, metadata = read_safetensors(save_generator(G, tmp_path / "g.safetensors"))
    config = {**json.loads(metadata["config"]), **change}
    path = write_safetensors(tmp_path / "bad.safetensors", tensors, {**metadata, "config": json.dumps(config)})
    with bounded_memory(), pytest.raises(CheckpointError, match="cannot build|does not match its generator"):
        load_generator(path)


# ====================================================================================================================
# numpy arrays in NVIDIA pickles (StyleGAN3 module state): rebuilt as data, never as code


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's own _reconstruct (numpy._core.multiarray with numpy 2)


class _NumpyState:
    """Pickles as ``_reconstruct(ndarray, (0,), b'b')`` followed by BUILD with ``state``, like ``ndarray`` does."""

    def __init__(self, state, subtype=np.ndarray):
        self.state, self.subtype = state, subtype

    def __reduce__(self):
        return (_RECONSTRUCT, (self.subtype, (0,), b"b"), self.state)


def _array_pickle(shape, data, subtype=np.ndarray) -> bytes:
    return pickle.dumps(_NumpyState((1, shape, np.dtype("float32"), False, data), subtype))


def _numpy_cases(sentinel: Path) -> dict[str, tuple[str, bytes]]:
    touch = f"touch {sentinel}"
    f4 = np.dtype("float32")
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy's protocol-5 path: _frombuffer(buffer, dtype, shape, order)
    return {
        "object array holding a payload": (
            "not a supported scalar type",
            pickle.dumps({"G_ema": np.array([_Reduce(os.system, touch)], dtype=object)}),
        ),
        "numpy 1.x spelling, object array": (
            "not a supported scalar type",
            _numpy1(pickle.dumps({"G_ema": np.array([_Reduce(os.system, touch)], dtype=object)})),
        ),
        "array data as a list": ("raw bytes", _array_pickle((2,), [1.0, 2.0])),
        "shape claiming a terabyte": ("does not match", _array_pickle((10**6, 10**6), b"\0" * 8)),
        "negative shape": ("non-negative", _array_pickle((-1, 2), b"\0" * 8)),
        "subtype other than ndarray": ("only accepted as", _array_pickle((2,), b"\0" * 8, np.dtype)),
        "state given twice": ("given twice", _build_twice()),
        "protocol-5 buffer of the wrong size": (
            "does not match",
            pickle.dumps(_Reduce(frombuffer, b"\0" * 8, f4, (100,), "C"), protocol=4),
        ),
        "numpy runstring gadget": (
            "numpy.testing._private.utils.runstring",
            b"\x80\x04" + _unicode("numpy.testing._private.utils") + _unicode("runstring") + b"\x93"
            + _unicode(f"__import__('os').system({touch!r})") + b"}\x86R.",
        ),
        "numpy.load of an embedded file": ("numpy.load", pickle.dumps(_Reduce(np.load, "/etc/passwd"))),
    }  # fmt: skip


def _numpy1(data: bytes) -> bytes:
    from hostile_files import numpy1_spelling

    return numpy1_spelling(data)


def _build_twice() -> bytes:
    """A valid array pickle whose BUILD instruction is repeated (the second state must not overwrite the first)."""
    data = pickle.dumps(np.arange(3, dtype=np.float32), protocol=2)
    build = data.rindex(b"b.")
    state_start = data.index(b"(K\x01")  # MARK, version 1: the state tuple
    return data[:build] + b"b" + data[state_start:build] + b"b."


@pytest.mark.parametrize("case", list(_numpy_cases(Path("x"))))
def test_numpy_reconstruction_is_data_only(tmp_path, case):
    """Arrays, dtypes and scalars are rebuilt from bytes (StyleGAN3 pickles need them); object arrays, code
    gadgets, wrong sizes and odd calls are refused by the loader with its own error, nothing runs, nothing big is
    allocated."""
    sentinel = tmp_path / "SENTINEL"
    message, data = _numpy_cases(sentinel)[case]
    path = _write(tmp_path / "hostile.pkl", data)
    with bounded_memory(), pytest.raises(CheckpointError, match=re.escape(message)):
        load_generator(path)
    assert not sentinel.exists()


def test_numpy_arrays_dtypes_and_scalars_rebuild_exactly():
    """Both spellings, C and Fortran order, big-endian data and numpy's protocol-5 path give the original values."""
    from pti.safe_pickle import NVIDIA_PICKLE_GLOBALS, NumpyArray, safe_unpickle

    values = {
        "c": np.arange(12, dtype=np.float64).reshape(3, 4),
        "f": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "big": np.arange(4, dtype=">f4"),
        "bool": np.array([True, False]),
        "broadcast": np.broadcast_to(np.asarray(36), [2]),  # how StyleGAN3 stores sizes
        "scalar": np.float64(0.25),
    }
    for protocol in (2, 4, 5):
        data = pickle.dumps(values, protocol=protocol)
        for spelling in (data, _numpy1(data)):
            loaded = safe_unpickle(io.BytesIO(spelling), NVIDIA_PICKLE_GLOBALS)
            assert loaded["scalar"] == 0.25
            for key, value in values.items():
                if key == "scalar":
                    continue
                assert isinstance(loaded[key], NumpyArray)
                np.testing.assert_array_equal(loaded[key].value, value)
                assert loaded[key].value.dtype == value.dtype.newbyteorder("=")
