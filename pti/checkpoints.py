"""Generator checkpoints in, generator checkpoints out: one loader, one error type.

``load_generator(source)`` returns this project's ``pti.networks.Generator`` (eval mode, float32, on the requested
device, with ``G.source_info``) from any of these, recognised by their first bytes rather than their extension:

==============================  =========================================  ======================================
Format                          Typical file                               How it is read
==============================  =========================================  ======================================
pti generator                   ``*.safetensors`` (``save_generator``)     header validated, config from metadata,
                                                                           weight hash verified
NVIDIA stylegan2-ada-pytorch    ``network-snapshot-*.pkl``, ``ffhq.pkl``   restricted unpickler; ``G_ema`` rebuilt
and stylegan3 (StyleGAN2 and    ``stylegan3-r-ffhqu-1024x1024.pkl``        from its ``_init_kwargs`` and tensors;
StyleGAN3 T/R; also TF pickles                                             the pickled source code is never run;
converted by their ``legacy.py``)                                          StyleGAN3 -> ``pti.stylegan3``
rosinality stylegan2-pytorch    ``*.pt`` (``torch.save``, zip or legacy)   restricted unpickler over the archive;
                                                                           ``g_ema`` renamed to NVIDIA's layout
==============================  =========================================  ======================================

Also here: ``save_generator`` (atomic, optional fp16 storage), ``describe_checkpoint`` (for ``python -m pti
info``), ``read_safetensors``/``write_safetensors`` (header-validating reader and atomic writer shared by the
delta, direction and latent files), ``read_torch_file`` (any other ``torch.save`` file, e.g. detector weights or
directions, through the same restricted unpickler) and ``export_rosinality_state_dict`` (the mapping below,
inverted).

Safety: no file is ever passed to ``pickle.load`` or ``torch.load``. Pickled data goes through
``pti.safe_pickle``, which interprets the pickle instructions itself and maps an explicit allow-list of globals
(tensor rebuilding, storage types, ``OrderedDict``, NVIDIA's persistence hook, ``EasyDict``, ``argparse.Namespace``,
numpy dtypes, scalars and numeric arrays, both ``numpy.core`` and ``numpy._core`` spellings) to inert replacements;
any other global stops the load with a ``CheckpointError`` naming it, before anything is called. TensorFlow-era
pickles (``dnnlib.tflib.network.Network``) are refused with an explanation. A StyleGAN3 generator is recognised by
its Fourier-feature input (``synthesis.input.*``) and its configuration is bounds-checked before it is built.

rosinality -> NVIDIA parameter mapping (``k`` counts upsampling blocks from 0, block resolution ``r = 8 * 2**k``;
``b4`` and ``b{r}`` are short for ``synthesis.b4`` and ``synthesis.b{r}``):

========================================  ================================  =======================================
rosinality ``g_ema``                      this project (NVIDIA names)       layout change
========================================  ================================  =======================================
``style.{i+1}.weight`` / ``.bias``        ``mapping.fc{i}.weight/.bias``    none (both store w / lr_mul, 0.01)
``latent_avg`` (top level, optional)      ``mapping.w_avg``                 ``[1, C]`` or ``[C]`` -> ``[C]``
``input.input``                           ``b4.const``                      ``[1, C, 4, 4]`` -> ``[C, 4, 4]``
``conv1.conv.weight``                     ``b4.conv1.weight``               ``[1, O, I, 3, 3]`` -> ``[O, I, 3, 3]``
``conv1.conv.modulation.weight/.bias``    ``b4.conv1.affine.weight/.bias``  none
``conv1.noise.weight``                    ``b4.conv1.noise_strength``       ``[1]`` -> ``[]``
``conv1.activate.bias``                   ``b4.conv1.bias``                 none
``noises.noise_0``                        ``b4.conv1.noise_const``          ``[1, 1, 4, 4]`` -> ``[4, 4]``
``to_rgb1.conv.*``                        ``b4.torgb.*``                    as for ``conv1.conv.*``
``to_rgb1.bias``                          ``b4.torgb.bias``                 ``[1, 3, 1, 1]`` -> ``[3]``
``convs.{2k}.*`` (upsampling)             ``b{r}.conv0.*``                  as for ``conv1``
``convs.{2k+1}.*``                        ``b{r}.conv1.*``                  as for ``conv1``
``noises.noise_{2k+1}``                   ``b{r}.conv0.noise_const``        ``[1, 1, r, r]`` -> ``[r, r]``
``noises.noise_{2k+2}``                   ``b{r}.conv1.noise_const``        ``[1, 1, r, r]`` -> ``[r, r]``
``to_rgbs.{k}.*``                         ``b{r}.torgb.*``                  as for ``to_rgb1``
``*.blur.kernel``, ``*.upsample.kernel``  ``resample_filter`` buffers       checked to be the [1, 3, 3, 1] filter
========================================  ================================  =======================================

Channels: rosinality uses 512 up to 32 px and ``2**14 * channel_multiplier / res`` above, which is NVIDIA's
``min(channel_base // res, channel_max)`` with ``channel_base = 16384 * channel_multiplier`` and ``channel_max =
512``; the loader reads the actual widths from the weights and derives ``channel_base``/``channel_max`` from them.
Both apply the upsampling convolution as the same transposed convolution, so its kernel copies unchanged
(checked numerically against rosinality's own ``model.py``). Without ``latent_avg`` in the file, ``w_avg`` is the
mean of the mapping network over 10,000 seeded ``z`` (recorded in ``G.source_info["w_avg"]``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from . import catalogue, ops, stylegan3
from .atomic import write_atomically
from .downloads import WeightStore
from .hashing import remember_hash, state_dict_hash
from .networks import Generator
from .safe_pickle import (
    NVIDIA_PICKLE_GLOBALS,
    ForbiddenGlobalError,
    Namespace,
    PersistentObject,
    PickleError,
    TensorRef,
    TorchArchive,
    load_torch_file,
    safe_unpickle,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
DEFAULT_GENERATOR_FILE = DEFAULT_MODEL_DIR / "generator.safetensors"
#: The embedded StyleGAN3 (config R) face model: ``load_generator("default-stylegan3")``.
STYLEGAN3_GENERATOR_FILE = DEFAULT_MODEL_DIR / "stylegan3_r.safetensors"
#: Names ``load_generator`` accepts for the models shipped in ``pti/default_model``, and what they are.
EMBEDDED_GENERATORS = {"default": "default", "default-stylegan3": "StyleGAN3"}
FORMAT_NAME = "pti-generator"
FORMAT_VERSION = "1"
SUPPORTED = (
    "supported: this project's .safetensors (save_generator), NVIDIA stylegan2-ada-pytorch and stylegan3 network "
    "pickles (.pkl, StyleGAN2 and StyleGAN3 configs T/R), rosinality stylegan2-pytorch checkpoints (.pt)"
)
W_AVG_SAMPLES = 10_000

PathLike = str | os.PathLike
AnyGenerator = Generator | stylegan3.Generator


class CheckpointError(ValueError):
    """A checkpoint could not be read; the message names the file, what was found and what is supported."""


# ====================================================================================================================
# safetensors (validated reader, atomic writer)

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _safetensors_layout(f: BinaryIO, file_size: int, path: Path) -> tuple[dict[str, tuple], dict[str, str], int]:
    """Parse and validate a safetensors header: ``({name: (dtype, shape, begin, end)}, metadata, data_start)``."""
    if file_size < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({file_size} bytes, the header alone needs 8+)")
    header_len = int.from_bytes(f.read(8), "little")
    if header_len > min(_MAX_SAFETENSORS_HEADER, file_size - 8):
        raise CheckpointError(
            f"{path}: safetensors header claims {header_len} bytes but the file has {file_size - 8} after the "
            "length field; the file is truncated or not a safetensors file"
        )
    try:
        header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_start = 8 + header_len
    data_size = file_size - data_start
    entries: dict[str, tuple] = {}
    for name, info in header.items():
        problem = _safetensors_entry_problem(info, data_size)
        if problem:
            raise CheckpointError(f"{path}: tensor '{name}' in the safetensors header is invalid: {problem}")
        entries[name] = (_SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]), *info["data_offsets"])
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items())
    for (_, prev_end, prev), (begin, _, name) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise CheckpointError(f"{path}: tensors '{prev}' and '{name}' overlap in the safetensors data")
    return entries, metadata, data_start


def _safetensors_entry_problem(info: Any, data_size: int) -> str | None:
    if not isinstance(info, dict) or info.get("dtype") not in _SAFETENSORS_DTYPES:
        dtype = info.get("dtype") if isinstance(info, dict) else None
        return f"dtype {dtype!r} not in {sorted(_SAFETENSORS_DTYPES)}"
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        return f"shape {shape!r} is not a list of non-negative ints"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        return f"data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        return f"data_offsets {offsets} fall outside the {data_size} data bytes (truncated file?)"
    expected = math.prod(shape) * torch.empty(0, dtype=_SAFETENSORS_DTYPES[info["dtype"]]).element_size()
    if end - begin != expected:
        return f"{end - begin} bytes for shape {shape} of {info['dtype']}, expected {expected}"
    return None


def read_safetensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file as ``(tensors, metadata)`` after validating its header.

    The header length is checked against the file size before anything is allocated; dtypes must be plain numeric
    types; every tensor's byte range must lie inside the file, match its shape and not overlap another.
    """
    path = _existing_file(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        entries, metadata, data_start = _safetensors_layout(f, file_size, path)
        tensors = {}
        for name, (dtype, shape, begin, end) in entries.items():
            f.seek(data_start + begin)
            data = f.read(end - begin)
            if len(data) != end - begin:
                raise CheckpointError(f"{path}: truncated while reading tensor '{name}'")
            flat = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(shape)
    return tensors, metadata


def write_safetensors(path: PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` + string ``metadata`` atomically (``pti.atomic``: temporary file beside it, then rename)."""
    from safetensors.torch import save_file

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return write_atomically(path, lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


# ====================================================================================================================
# torch.save files that are not generators (detector weights, direction files)


def read_torch_file(path: PathLike) -> Any:
    """The object in a ``torch.save`` file, read by the restricted unpickler (no code runs), tensors loaded.

    Anything the allow-list refuses, a corrupt archive or implausibly deep nesting is a ``CheckpointError``.
    """
    try:
        return load_torch_file(path)
    except PickleError as exc:
        raise CheckpointError(f"{path}: cannot read this torch file safely ({exc})") from exc
    except RecursionError:
        raise CheckpointError(f"{path}: the torch file nests containers implausibly deep") from None


# ====================================================================================================================
# Saving this project's format


def save_generator(
    G: AnyGenerator, path: PathLike, fp16: bool = False, provenance: dict[str, Any] | None = None
) -> Path:
    """Save ``G`` as a self-describing ``.safetensors`` (config, provenance and weight hash in the metadata).

    ``fp16=True`` halves the file by storing floating-point tensors as float16; they load back as float32, and the
    recorded hash is that of the stored values, so it matches the generator ``load_generator`` returns.
    """
    if not isinstance(G, (Generator, stylegan3.Generator)):
        raise TypeError(f"save_generator expects a pti.networks or pti.stylegan3 Generator, got {type(G).__name__}")
    store_dtype = torch.float16 if fp16 else torch.float32
    tensors = {
        name: t.detach().to("cpu", store_dtype if t.is_floating_point() else t.dtype).contiguous()
        for name, t in G.state_dict().items()
    }
    try:
        config = json.dumps(G.init_kwargs, sort_keys=True)
        provenance_json = json.dumps(provenance or {}, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"generator config and provenance must be JSON-serialisable: {exc}") from None
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config,
        "provenance": provenance_json,
        "hash": state_dict_hash(tensors),
    }
    return write_safetensors(path, tensors, metadata)


# ====================================================================================================================
# Shared helpers


def _existing_file(source: PathLike) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        if path.is_symlink():  # a symlink to a real file is fine (shared model folders); a broken one is named
            raise CheckpointError(
                f"{path} is a symbolic link to {os.readlink(path)}, which is missing or loops back on itself; "
                "fix the link or pass the file itself"
            )
        raise CheckpointError(f"checkpoint not found: {path} ({SUPPORTED})")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass the checkpoint file itself ({SUPPORTED})")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device); pass the checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy probably failed")
    return path


def _resolve_source(source: PathLike | None) -> Path:
    name = "default" if source is None else source.strip().lower() if isinstance(source, str) else None
    if name in EMBEDDED_GENERATORS:
        path = DEFAULT_GENERATOR_FILE if name == "default" else STYLEGAN3_GENERATOR_FILE
        if not path.is_file():
            raise CheckpointError(
                f"the embedded {EMBEDDED_GENERATORS[name]} model is not present in this install (expected {path}); "
                f"pass a checkpoint path instead ({SUPPORTED})"
            )
        return path
    return _existing_file(source)


_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def sniff_format(path: PathLike) -> str:
    """``'safetensors'``, ``'torch-zip'``, ``'torch-legacy'`` or ``'pickle'``, from the file's first bytes."""
    path = _existing_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head.startswith(_LEGACY_TORCH_PREFIX):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if len(head) >= 9 and head[8:9] == b"{":
        raise CheckpointError(f"{path}: looks like a safetensors file but is truncated ({size} bytes)")
    raise CheckpointError(
        f"{path}: not a recognised generator checkpoint (starts with {head[:8]!r}, {size} bytes); {SUPPORTED}"
    )


def _plain(value: Any, path: Path, where: str) -> Any:
    """Constructor kwargs from a pickle as plain JSON-able Python (EasyDict -> dict, tuple -> list)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, path, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, path, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"{path}: generator argument {where} holds a {type(value).__name__}, expected plain data")


def _first(names: list[str], count: int = 5, sep: str = ", ") -> str:
    return sep.join(names[:count]) + (f"{sep}... ({len(names) - count} more)" if len(names) > count else "")


def _build_generator(config: dict[str, Any], state: dict[str, torch.Tensor], path: Path, found: str) -> AnyGenerator:
    """``Generator(**config)`` (StyleGAN2, or ``pti.stylegan3.Generator`` when ``state`` has StyleGAN3's input
    layer) loaded strictly from ``state``; mismatches become ``CheckpointError``."""
    network: type[torch.nn.Module] = Generator
    try:
        if stylegan3.is_stylegan3_state(state):  # the Fourier-feature input exists only in StyleGAN3
            network = stylegan3.Generator
            stylegan3.check_config(config)  # its filter design runs on the CPU even on the meta device
        # Shapes first, on the meta device: nothing is allocated, so a configuration inflated by a hostile or damaged
        # file (w_dim 10^6, negative or zero sizes) is refused before it could claim any memory.
        with torch.device("meta"):
            expected = network(**config).state_dict()
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError, OverflowError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: {found} has a generator configuration this project cannot build ({exc}); config: {config}"
        ) from None
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} tensors ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
        )
    if unexpected:
        problems.append(f"unexpected tensors ({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})")
    if mismatched:
        problems.append(f"shape mismatches ({_first(mismatched, sep='; ')})")
    if problems:
        raise CheckpointError(f"{path}: {found} does not match its generator configuration: {'; '.join(problems)}")
    G = network(**config)  # as large as the tensors the file really holds
    G.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return G


# ====================================================================================================================
# Project format


def _load_pti_safetensors(path: Path) -> tuple[AnyGenerator, dict[str, Any]]:
    tensors, metadata = read_safetensors(path)
    fmt = metadata.get("format")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: safetensors file with format {fmt!r}, expected {FORMAT_NAME!r} (a generator saved by "
            f"save_generator); {SUPPORTED}"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: {FORMAT_NAME} format version {metadata.get('format_version')!r} is not supported by this "
            f"version (reads version {FORMAT_VERSION}); update the package"
        )
    try:
        config = json.loads(metadata["config"])
        provenance = json.loads(metadata.get("provenance") or "{}")
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: generator metadata is missing or not JSON ({exc})") from None
    stored_dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()})
    G = _build_generator(config, tensors, path, "the pti generator file")
    recorded = metadata.get("hash")
    actual = state_dict_hash(G)
    if recorded and recorded != actual:
        raise CheckpointError(
            f"{path}: weights hash to {actual} but the file records {recorded}; the file is corrupt or was edited"
        )
    return G, {"format": "pti-safetensors", "provenance": provenance, "stored_dtype": ",".join(stored_dtypes)}


# ====================================================================================================================
# NVIDIA stylegan2-ada-pytorch pickles


def _persistent_state(obj: PersistentObject, path: Path, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a pickled persistent module tree (parameters, persistent buffers, submodules)."""
    if depth > 32:
        raise CheckpointError(f"{path}: module tree nested implausibly deep at '{prefix}'")
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    result: dict[str, torch.Tensor] = {}
    for table in ("_parameters", "_buffers"):
        entries = state.get(table) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"{path}: module '{prefix or obj.class_name}' has a malformed {table}")
        for name, tensor in entries.items():
            if tensor is None or (table == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, TensorRef):
                raise CheckpointError(f"{path}: {prefix}{name} is a {type(tensor).__name__}, expected a tensor")
            result[f"{prefix}{name}"] = _load_tensor(tensor, path, f"{prefix}{name}")
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"{path}: submodule {prefix}{name} is a {type(child).__name__}, not a network module")
        result.update(_persistent_state(child, path, f"{prefix}{name}.", depth + 1))
    return result


def _load_tensor(ref: TensorRef, path: Path, name: str) -> torch.Tensor:
    try:
        return ref.load()
    except PickleError as exc:
        raise CheckpointError(f"{path}: tensor {name} is damaged: {exc}") from None


def _load_nvidia_pickle(path: Path) -> tuple[AnyGenerator, dict[str, Any]]:
    with open(path, "rb") as f:
        data = _unpickle(path, lambda: safe_unpickle(f, NVIDIA_PICKLE_GLOBALS))
    # The averaged generator is the one to use; a pickle holding only the training-time G still works.
    if isinstance(data, dict):
        network = "G_ema" if "G_ema" in data else "G"
        found = data.get(network)
    else:
        network, found = "pickle", data
    if not isinstance(found, PersistentObject) or found.class_name != "Generator":
        what = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path}: pickle holds {what}, expected an NVIDIA network pickle with a 'G_ema' Generator; {SUPPORTED}"
        )
    init_args = found.state.get("_init_args") or ()
    init_kwargs = found.state.get("_init_kwargs")
    if init_args or not isinstance(init_kwargs, dict):
        raise CheckpointError(f"{path}: {network} was pickled without keyword constructor arguments; cannot rebuild")
    config = _plain(init_kwargs, path, network)
    state = _persistent_state(found, path)
    G = _build_generator(config, state, path, f"the NVIDIA pickle's {network}")
    contents = sorted(map(str, data)) if isinstance(data, dict) else []
    return G, {"format": "nvidia-pkl", "network": network, "pickle_contents": contents}


def _unpickle(path: Path, read: Callable[[], Any]) -> Any:
    """Run a safe unpickling step, translating its errors into ``CheckpointError`` naming ``path``."""
    try:
        return read()
    except ForbiddenGlobalError as exc:
        if exc.name.startswith("dnnlib.tflib."):
            raise CheckpointError(
                f"{path}: this is a TensorFlow StyleGAN/StyleGAN2 pickle (dnnlib.tflib.network.Network), which is "
                "not supported; convert it to PyTorch first with NVIDIA's stylegan2-ada-pytorch "
                "(python legacy.py --source=IN.pkl --dest=OUT.pkl) in an environment you trust"
            ) from None
        raise CheckpointError(f"{path}: {exc}; {SUPPORTED}") from None
    except PickleError as exc:
        raise CheckpointError(f"{path}: cannot read the pickle, the file is corrupt or truncated ({exc})") from None


# ====================================================================================================================
# rosinality stylegan2-pytorch checkpoints

_RESAMPLE_TAPS = (1, 3, 3, 1)

# Per-tensor layout changes as "rosinality shape from NVIDIA shape"; values are only reshaped, never reordered.
_LAYOUTS: dict[str, Callable[[list[int]], list[int]]] = {
    "same": lambda s: s,
    "lead1": lambda s: [1, *s],  # conv weights [1, O, I, k, k], const [1, C, 4, 4], noise strength [1]
    "noise": lambda s: [1, 1, *s],
    "rgb_bias": lambda s: [1, s[0], 1, 1],
}


def _rosinality_table(num_mapping: int, resolution: int) -> list[tuple[str, str, str]]:
    """``(nvidia_name, rosinality_name, layout)`` for every weight of a rosinality ``Generator``."""
    table = []
    for i in range(num_mapping):
        table += [(f"mapping.fc{i}.{p}", f"style.{i + 1}.{p}", "same") for p in ("weight", "bias")]

    def styled_conv(nv: str, ro: str, noise_index: int) -> list[tuple[str, str, str]]:
        return [
            (f"{nv}.weight", f"{ro}.conv.weight", "lead1"),
            (f"{nv}.affine.weight", f"{ro}.conv.modulation.weight", "same"),
            (f"{nv}.affine.bias", f"{ro}.conv.modulation.bias", "same"),
            (f"{nv}.noise_strength", f"{ro}.noise.weight", "lead1"),
            (f"{nv}.bias", f"{ro}.activate.bias", "same"),
            (f"{nv}.noise_const", f"noises.noise_{noise_index}", "noise"),
        ]

    def to_rgb(nv: str, ro: str) -> list[tuple[str, str, str]]:
        return [
            (f"{nv}.weight", f"{ro}.conv.weight", "lead1"),
            (f"{nv}.affine.weight", f"{ro}.conv.modulation.weight", "same"),
            (f"{nv}.affine.bias", f"{ro}.conv.modulation.bias", "same"),
            (f"{nv}.bias", f"{ro}.bias", "rgb_bias"),
        ]

    table.append(("synthesis.b4.const", "input.input", "lead1"))
    table += styled_conv("synthesis.b4.conv1", "conv1", 0)
    table += to_rgb("synthesis.b4.torgb", "to_rgb1")
    for k in range(int(math.log2(resolution)) - 2):
        block = f"synthesis.b{8 * 2**k}"
        table += styled_conv(f"{block}.conv0", f"convs.{2 * k}", 2 * k + 1)
        table += styled_conv(f"{block}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        table += to_rgb(f"{block}.torgb", f"to_rgbs.{k}")
    return table


def _rosinality_kernels(resolution: int) -> dict[str, torch.Tensor]:
    """rosinality's fixed blur/upsample kernels (normalised [1,3,3,1] outer product times 4)."""
    kernel = ops.setup_filter(list(_RESAMPLE_TAPS)) * 4
    names = [f"convs.{2 * k}.conv.blur.kernel" for k in range(int(math.log2(resolution)) - 2)]
    names += [f"to_rgbs.{k}.upsample.kernel" for k in range(int(math.log2(resolution)) - 2)]
    return {name: kernel.clone() for name in names}


def export_rosinality_state_dict(G: Generator) -> dict[str, torch.Tensor]:
    """``G``'s weights in rosinality's ``Generator`` layout (inverse of the import mapping; ``w_avg`` not included).

    Only generators rosinality's architecture can express: unconditional, ``skip``, ``z_dim == w_dim``,
    no ``conv_clamp``, [1, 3, 3, 1] filters. (rosinality's own class additionally fixes the channel widths.)
    """
    synthesis_kwargs = G.init_kwargs.get("synthesis_kwargs", {})
    mapping_kwargs = G.init_kwargs.get("mapping_kwargs", {})
    if (
        G.c_dim
        or G.z_dim != G.w_dim
        or synthesis_kwargs.get("architecture", "skip") != "skip"
        or synthesis_kwargs.get("conv_clamp") is not None
        or tuple(synthesis_kwargs.get("resample_filter", _RESAMPLE_TAPS)) != _RESAMPLE_TAPS
        or mapping_kwargs.get("embed_features") is not None
        or mapping_kwargs.get("layer_features") not in (None, G.w_dim)
    ):
        raise ValueError("rosinality's Generator can only express unconditional skip generators with z_dim == w_dim")
    state = G.state_dict()
    result = {}
    for nv, ro, layout in _rosinality_table(G.mapping.num_layers, G.img_resolution):
        tensor = state[nv].detach().cpu()
        result[ro] = tensor.reshape(_LAYOUTS[layout](list(tensor.shape))).clone()
    result.update(_rosinality_kernels(G.img_resolution))
    return result


def _infer_rosinality_config(state: dict[str, torch.Tensor], path: Path, lr_mlp: float) -> dict[str, Any]:
    """Generator kwargs (in NVIDIA's terms) that reproduce a rosinality ``g_ema`` state dict."""
    num_mapping = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    num_upsampling = sum(1 for k in state if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    if num_mapping == 0 or "input.input" not in state or "style.1.weight" not in state:
        raise CheckpointError(f"{path}: rosinality g_ema lacks style.1.weight / input.input; not a StyleGAN2 G")
    resolution = 4 * 2**num_upsampling
    style_dim = state["style.1.weight"].shape[1]
    channels = {4: state["input.input"].shape[1]}
    for k in range(num_upsampling):
        weight = state.get(f"convs.{2 * k}.conv.weight")
        if weight is None or weight.ndim != 5:
            raise CheckpointError(f"{path}: rosinality g_ema lacks convs.{2 * k}.conv.weight [1, O, I, 3, 3]")
        channels[8 * 2**k] = weight.shape[1]
    channel_max = max(channels.values())
    bases = {c * res for res, c in channels.items() if c < channel_max}
    channel_base = bases.pop() if len(bases) == 1 else channel_max * resolution
    if bases or any(min(channel_base // res, channel_max) != c for res, c in channels.items()):
        raise CheckpointError(
            f"{path}: channel widths {channels} do not follow a min(base / res, max) layout; cannot convert"
        )
    for name, kernel in _rosinality_kernels(resolution).items():
        if name in state and not torch.allclose(state[name].float(), kernel, atol=1e-6):
            raise CheckpointError(f"{path}: {name} is not the [1, 3, 3, 1] filter; custom blur kernels are unsupported")
    return dict(
        z_dim=style_dim,
        c_dim=0,
        w_dim=style_dim,
        img_resolution=resolution,
        img_channels=state["to_rgb1.bias"].shape[1] if "to_rgb1.bias" in state else 3,
        mapping_kwargs=dict(num_layers=num_mapping, lr_multiplier=lr_mlp),
        synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, architecture="skip"),
    )


def _rosinality_to_nvidia(
    state: dict[str, torch.Tensor], config: dict[str, Any], path: Path
) -> dict[str, torch.Tensor]:
    """Rename and reshape a rosinality state dict into this project's names (shapes checked against ``G``)."""
    template = Generator(**config).state_dict()
    table = _rosinality_table(config["mapping_kwargs"]["num_layers"], config["img_resolution"])
    known = {ro for _, ro, _ in table} | set(_rosinality_kernels(config["img_resolution"]))
    missing = [ro for _, ro, _ in table if ro not in state]
    unexpected = [k for k in state if k not in known]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: rosinality g_ema does not match a {config['img_resolution']}px generator: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    result = {}
    for nv, ro, layout in table:
        want = _LAYOUTS[layout](list(template[nv].shape))
        tensor = state[ro]
        if list(tensor.shape) != want:
            raise CheckpointError(
                f"{path}: {ro} has shape {list(tensor.shape)}, expected {want} (for {nv} {list(template[nv].shape)})"
            )
        result[nv] = tensor.reshape(template[nv].shape)
    for name, tensor in template.items():  # fixed buffers rosinality does not store
        if name.endswith("resample_filter"):
            result[name] = tensor
    return result


def _load_torch_checkpoint(path: Path) -> tuple[Generator, dict[str, Any]]:
    with TorchArchive(path) as archive:
        data = _unpickle(path, archive.load)
        if isinstance(data, dict) and "g_ema" in data:
            weights, latent_avg, args = data["g_ema"], data.get("latent_avg"), data.get("args")
        elif isinstance(data, dict) and "style.1.weight" in data:
            weights, latent_avg, args = data, None, None
        else:
            found = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(
                f"{path}: torch archive holds {found}, expected a rosinality checkpoint with 'g_ema'; {SUPPORTED}"
            )
        if not isinstance(weights, dict) or not all(isinstance(v, TensorRef) for v in weights.values()):
            raise CheckpointError(f"{path}: 'g_ema' is not a state dict of tensors")
        state = {name: _load_tensor(ref, path, name) for name, ref in weights.items()}
        if isinstance(latent_avg, TensorRef):
            latent_avg = _load_tensor(latent_avg, path, "latent_avg")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    lr_mlp = args.get("lr_mlp", 0.01) if isinstance(args, Namespace) else 0.01
    config = _infer_rosinality_config(state, path, float(lr_mlp))
    converted = _rosinality_to_nvidia(state, config, path)
    style_dim = config["w_dim"]
    if isinstance(latent_avg, torch.Tensor):
        if latent_avg.numel() != style_dim:
            raise CheckpointError(f"{path}: latent_avg has shape {list(latent_avg.shape)}, expected [{style_dim}]")
        converted["mapping.w_avg"] = latent_avg.reshape(style_dim)
        w_avg_note = "latent_avg from the checkpoint"
    else:
        converted["mapping.w_avg"] = torch.zeros(style_dim)
        w_avg_note = f"mean of the mapping network over {W_AVG_SAMPLES} z (seed 0); the file has no latent_avg"
    G = _build_generator(config, converted, path, "the rosinality g_ema")
    if not isinstance(latent_avg, torch.Tensor):
        _estimate_w_avg(G)
    return G, {"format": "rosinality-pt", "w_avg": w_avg_note}


@torch.no_grad()
def _estimate_w_avg(G: Generator, samples: int = W_AVG_SAMPLES, seed: int = 0) -> None:
    """Set ``G.mapping.w_avg`` to the mean mapping output over ``samples`` seeded z (in place, G is new)."""
    rng = torch.Generator().manual_seed(seed)
    total = torch.zeros(G.w_dim, dtype=torch.float64)
    for start in range(0, samples, 2500):
        z = torch.randn(min(2500, samples - start), G.z_dim, generator=rng)
        total += G.mapping(z, None, skip_w_avg_update=True)[:, 0].double().sum(0)
    G.mapping.w_avg.copy_((total / samples).float())


# ====================================================================================================================
# Public entry points

_LOADERS: dict[str, Callable[[Path], tuple[AnyGenerator, dict[str, Any]]]] = {
    "safetensors": _load_pti_safetensors,
    "pickle": _load_nvidia_pickle,
    "torch-zip": _load_torch_checkpoint,
    "torch-legacy": _load_torch_checkpoint,
}


def load_generator(
    source: PathLike | None = None, device: str | torch.device = "cpu", store: WeightStore | None = None
) -> AnyGenerator:
    """Load a generator from ``source``: a path, ``None``/``"default"`` for the embedded StyleGAN2 face model,
    ``"default-stylegan3"`` for the embedded StyleGAN3 (config R) one, or a published checkpoint's catalogue name
    (``"ffhq-1024"``, ``python -m pti fetch-model --list``), found on ``store``'s search path or downloaded into its
    first folder on first use (``pti.catalogue``).

    The format is recognised from the file's content (see the module docstring). The result is a new float32
    ``Generator`` (``pti.stylegan3.Generator`` for StyleGAN3 checkpoints) in eval mode on ``device``, with
    ``G.source_info`` = {format, path, hash, ...}.
    Raises ``CheckpointError`` for anything that cannot be read safely and completely.
    """
    device = _check_device(device)
    item = _catalogue_entry(source)
    if item is None:
        path = _resolve_source(source)
        G, info = _LOADERS[sniff_format(path)](path)
    else:
        path, G, info = _load_catalogued(item, store or WeightStore())
    G = G.eval().to(device)
    G.source_info = {"format": info.pop("format"), "path": str(path), "hash": state_dict_hash(G), **info}
    remember_hash(G, G.source_info["hash"])
    log.debug("loaded %s generator from %s (hash %s)", G.source_info["format"], path, G.source_info["hash"])
    return G


def _catalogue_entry(source: PathLike | None) -> catalogue.CatalogueEntry | None:
    """The catalogue entry ``source`` names, unless it is an existing path (a user's file always wins)."""
    if not isinstance(source, str) or Path(source).expanduser().exists():
        return None
    return catalogue.lookup(source)


def _load_catalogued(item: catalogue.CatalogueEntry, store: WeightStore) -> tuple[Path, AnyGenerator, dict]:
    """Fetch a catalogue entry on first use and read it like any user file. A fresh download that the reader
    refuses (an HTML error page, a truncated or foreign file) is deleted, so the next run downloads again."""
    fresh = store.find(item.filename) is None
    path = catalogue.fetch(item.name, store)
    try:
        return (path, *_LOADERS[sniff_format(path)](path))
    except CheckpointError as exc:
        if not fresh:
            raise
        catalogue.forget_download(path)
        raise CheckpointError(
            f"what {item.source_url()} returned is not a readable StyleGAN checkpoint ({exc}); the downloaded file "
            f"was deleted. Check the URL or {catalogue.MIRROR_VARIABLE}"
        ) from exc


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or a ``ValueError`` saying why it cannot be used here."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested, but CUDA is not available in this PyTorch install")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested, but Metal (MPS) is not available on this machine")
    return device


def describe_checkpoint(source: PathLike | None, store: WeightStore | None = None) -> dict[str, Any]:
    """Summary of a checkpoint for ``python -m pti info``: format, geometry, size and weight hash (and, for a
    published checkpoint the pack downloaded, its download record: URL, size, SHA-256)."""
    G = load_generator(source, store=store)
    path = Path(G.source_info["path"])
    synthesis_kwargs = G.init_kwargs.get("synthesis_kwargs", {})
    summary = {
        "format": G.source_info["format"],
        "path": str(path),
        "resolution": G.img_resolution,
        "num_ws": G.num_ws,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "c_dim": G.c_dim,
        "img_channels": G.img_channels,
        "architecture": (
            G.config_name if isinstance(G, stylegan3.Generator) else synthesis_kwargs.get("architecture", "skip")
        ),
        "mapping_layers": G.mapping.num_layers,
        "parameters": G.num_parameters(),
        "file_size": path.stat().st_size,
        "hash": G.source_info["hash"],
    }
    if "w_avg" in G.source_info:
        summary["w_avg"] = G.source_info["w_avg"]
    if G.source_info.get("provenance"):
        summary["provenance"] = G.source_info["provenance"]
    record = catalogue.read_record(path)
    if record is not None:
        summary["download"] = record
    return summary


__all__ = [
    "CheckpointError",
    "DEFAULT_MODEL_DIR",
    "EMBEDDED_GENERATORS",
    "STYLEGAN3_GENERATOR_FILE",
    "describe_checkpoint",
    "export_rosinality_state_dict",
    "load_generator",
    "read_safetensors",
    "read_torch_file",
    "save_generator",
    "sniff_format",
    "write_safetensors",
]
