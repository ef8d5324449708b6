"""The sync Lambda: applies SQS FIFO batches to the legacy database, exactly once and in order.

This package never imports `generator`; the two meet only through the versioned registry
file (build/registry.json).
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
