"""Content hashes that identify a generator's weights (used to tie latents and deltas to their base model)."""

from __future__ import annotations

import hashlib
import weakref

import torch

_known: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def state_dict_hash(module_or_state: torch.nn.Module | dict[str, torch.Tensor], length: int = 16) -> str:
    """SHA-256 (hex, first ``length`` chars) over the names, dtypes, shapes and values of every tensor.

    Values are hashed as float32 so a model stored in fp16 and the same model upcast hash alike only if the values
    are equal; device does not matter.
    """
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:length]


def generator_hash(G: torch.nn.Module) -> str:
    """``state_dict_hash`` of a generator, computed once per object.

    For generators that are handed on and never changed in place (loaded, tuned or rebuilt ones: every PTI step
    makes a new generator); hash a generator you modify in place with ``state_dict_hash``.
    """
    known = _known.get(G)
    if known is None:
        known = _known[G] = state_dict_hash(G)
    return known


def remember_hash(G: torch.nn.Module, known_hash: str) -> None:
    """Record the hash of ``G`` computed elsewhere (its loader computes it) so ``generator_hash`` needs no rehash."""
    _known[G] = known_hash
