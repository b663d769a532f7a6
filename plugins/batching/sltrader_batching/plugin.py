"""The ``batching`` plugin's hook implementations."""

from __future__ import annotations


class BatchingPlugin:
    """Placeholder: implements no hook yet."""
