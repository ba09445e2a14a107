"""Exceptions shared across the core."""

from __future__ import annotations


class Cancelled(RuntimeError):
    """Raised by long-running functions when their ``cancel`` callback asks them to stop; nothing is saved."""
