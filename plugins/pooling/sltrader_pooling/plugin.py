"""The ``pooling`` plugin's hook implementations."""

from __future__ import annotations


class PoolingPlugin:
    """Placeholder: implements no hook yet."""
