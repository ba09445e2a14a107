"""Lineage of generators: which generators a tuned one derives from.

A generator made from another (a tuned copy, a merged delta) carries the hashes of its ancestors, so a latent made
with the base still drives it. Its own home so the loaders, the StyleGAN3 network and the latent code can all record
lineage without importing each other.
"""

from __future__ import annotations

import torch

from .hashing import generator_hash

# Hashes of the generators a generator derives from (tuned -> base), recorded on generators made from another one.
LINEAGE_ATTRIBUTE = "pti_lineage"


def generator_lineage(G: torch.nn.Module) -> list[str]:
    """This generator's hash followed by the hashes of the generators it was tuned from."""
    own = generator_hash(G)
    return [own] + [h for h in getattr(G, LINEAGE_ATTRIBUTE, ()) if h != own]


def mark_derived(tuned: torch.nn.Module, base: torch.nn.Module) -> torch.nn.Module:
    """Record on a NEW generator that it derives from ``base`` (and its ancestors); returns ``tuned``."""
    setattr(tuned, LINEAGE_ATTRIBUTE, tuple(generator_lineage(base)))
    return tuned
