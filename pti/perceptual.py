"""LPIPS perceptual distance (Zhang et al. 2018), with weights fetched only when the caller allows it.

``load_lpips`` builds ``lpips.LPIPS`` with a randomly initialised trunk (so torchvision has nothing to download),
then loads the ImageNet backbone from torchvision's cache file, installed by ``python -m pti fetch-weights``, or
fetched on first use into a :class:`~pti.downloads.WeightStore` the caller passes (the ComfyUI nodes do; see
:mod:`pti.lpips_weights`). The calibrated linear heads come from the ``lpips`` package itself.

Input convention: ``model(a, b)`` with images ``[N, 3, H, W]`` in ``[-1, 1]``; returns ``[N, 1, 1, 1]``.
"""

from __future__ import annotations

import logging
import threading
import warnings

import torch

from .downloads import WeightStore
from .lpips_weights import (
    FETCH_COMMAND,
    MissingWeightsError,
    WeightsFetchError,
    backbone_path,
    fetch_weights,
    get_backbone,
    load_backbone_state,
)

__all__ = ["FETCH_COMMAND", "LpipsToTargets", "MissingWeightsError", "load_lpips", "lpips_available"]

log = logging.getLogger(__name__)

_cache: dict[tuple[str, str], torch.nn.Module] = {}
_lock = threading.Lock()


def _build_lpips(net: str, store: WeightStore | None) -> torch.nn.Module:
    import lpips

    backbone_state = load_backbone_state(net, store)  # raises MissingWeightsError before any model is built
    # lpips initialises the trunk randomly before we overwrite it: keep that off the caller's global RNG stream.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated" notice
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    # lpips splits torchvision's ``features`` into slices whose children keep their original indices.
    trunk_state = {}
    for slice_name, block in model.net.named_children():
        for index, _ in block.named_children():
            for param_name, _ in block.get_submodule(index).named_parameters():
                trunk_state[f"{slice_name}.{index}.{param_name}"] = backbone_state[f"features.{index}.{param_name}"]
    model.net.load_state_dict(trunk_state, strict=True)
    model.eval().requires_grad_(False)
    return model


def load_lpips(
    net: str = "alex", device: str | torch.device = "cpu", store: WeightStore | None = None
) -> torch.nn.Module:
    """Frozen LPIPS model in eval mode, cached per (net, device) and safe to request from several threads.

    ``net`` is ``"alex"`` (the paper's recommended forward metric) or ``"vgg"`` (the usual optimisation loss).
    Without ``store`` the backbone must already be installed (``python -m pti fetch-weights``) and nothing is
    downloaded; with a ``store`` that allows downloads (the ComfyUI nodes pass one) a missing backbone is fetched
    into it first. Raises :class:`MissingWeightsError` when it is still missing. The module is shared: do not
    modify it.
    """
    get_backbone(net)
    key = (net, str(torch.device(device)))
    with _lock:
        model = _cache.get(key)
        if model is None:
            if store is not None and store.download and not backbone_path(net, store).is_file():
                _fetch_missing(net, store)
            model = _build_lpips(net, store).to(device)
            _cache[key] = model
            log.debug("LPIPS(%s) ready on %s", net, key[1])
        return model


def _fetch_missing(net: str, store: WeightStore) -> None:
    try:
        fetch_weights((net,), store=store)
    except WeightsFetchError as exc:
        raise MissingWeightsError(
            f"LPIPS needs the ImageNet {get_backbone(net).arch} weights and downloading them failed ({exc}). "
            f"Run `{FETCH_COMMAND}` on a machine with internet access and copy the file into {store.target_dir}."
        ) from exc


def lpips_available(net: str = "alex", store: WeightStore | None = None) -> bool:
    """True when the backbone file for ``net`` is installed (checks the file only; builds nothing)."""
    return backbone_path(net, store).is_file()


class LpipsToTargets(torch.nn.Module):
    """LPIPS distance from images to fixed targets, with the targets' backbone features computed once.

    Projection and tuning compare every step's rendering with the same photos, so the photos' half of LPIPS is
    work done once here instead of every step (as the official projector does with its VGG features). Gives the
    same values as ``model(images, targets[rows])``.
    """

    def __init__(self, model: torch.nn.Module, targets: torch.Tensor):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.target_features = [_unit_channels(f) for f in self._backbone(targets)]

    def _backbone(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.net(self.model.scaling_layer(images)))

    def forward(self, images: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """``[N, 1, 1, 1]`` distances of ``images`` ``[N, 3, H, W]`` to ``targets[rows]`` (or one target for all)."""
        total = 0
        for layer, (features, target) in enumerate(zip(self._backbone(images), self.target_features)):
            difference = (_unit_channels(features) - target[rows]).square()
            total = total + self.model.lins[layer](difference).mean(dim=(2, 3), keepdim=True)
        return total


def _unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each feature vector divided by its channel norm (LPIPS's ``normalize_tensor``)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)
