"""Exceptions shared across the core."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class Cancelled(RuntimeError):
    """Raised by long-running functions when their ``cancel`` callback asks them to stop; nothing is saved."""


class OutOfMemory(RuntimeError):
    """A GPU (or MPS) ran out of memory; the message says which setting to lower."""


def _is_out_of_memory(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom_type) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


@contextlib.contextmanager
def explain_out_of_memory(stage: str, resolution: int, advice: str) -> Iterator[None]:
    """Turn an accelerator out-of-memory error inside the block into ``OutOfMemory`` with what to lower."""
    try:
        yield
    except Exception as exc:
        if not _is_out_of_memory(exc) or isinstance(exc, OutOfMemory):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(
            f"out of GPU memory during {stage} at {resolution}px: {advice}, or run on the CPU (--device cpu)"
        ) from exc
