"""Test double of ``comfy.utils``: ``ProgressBar`` with ComfyUI's signature, plus a record of every update.

As in ComfyUI, ``ProgressBar`` forwards each update to a global hook. The default hook here does what ComfyUI's
server hook does first (``throw_exception_if_processing_interrupted``), then records the call in ``UPDATES`` so
tests can inspect steps, totals and previews.
"""

from __future__ import annotations

from typing import Any

from . import model_management

PROGRESS_BAR_HOOK = None
UPDATES: list[dict[str, Any]] = []


def set_progress_bar_global_hook(function) -> None:
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


def recording_hook(value, total, preview_image, prompt_id=None, node_id=None) -> None:
    """Mirror of the server hook: honour an interrupt, then remember the update."""
    model_management.throw_exception_if_processing_interrupted()
    UPDATES.append({"value": value, "total": total, "preview": preview_image, "node_id": node_id})


def reset() -> None:
    """Forget recorded updates and reinstall the recording hook (test helper, not part of ComfyUI)."""
    UPDATES.clear()
    set_progress_bar_global_hook(recording_hook)


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)


reset()
