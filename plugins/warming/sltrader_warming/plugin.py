"""The ``warming`` plugin's hook implementations."""

from __future__ import annotations


class WarmingPlugin:
    """Placeholder: implements no hook yet."""
