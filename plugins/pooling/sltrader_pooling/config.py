"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

import attrs

from sltrader_plugins import integer

MIB = 1 << 20


@attrs.frozen
class PoolingConfig:
    """Settings of the pooling plugin.

    :ivar max_idle_bytes: the most bytes of idle buffers the whole pool keeps, over all
        idle builds. Buffers beyond it are dropped on release.
    :ivar max_idle_builds: the most idle per-build buffer sets kept; ``None`` (the
        default, not expressible in TOML) means the host's worker count plus one (the
        most builds that run at once: one per worker, and one on the main loop).
    :ivar max_pooled_bytes: arrays larger than this are plain ``np.empty``: one huge
        request must not pin its memory in the pool.
    :ivar poison: fill every buffer with NaN (or -1, for integers) when its build
        releases it: a debug aid that shows a feature computation reading memory it did
        not write. Costs a fill per buffer.
    :ivar step_aside: measure while it runs whether its work pays on this trader, and
        step aside while it does not (docs/plugins.md, "Pays or steps aside"); false:
        always work.
    """

    max_idle_bytes: int = attrs.field(default=32 * MIB, validator=integer(min=0))
    max_idle_builds: int | None = attrs.field(default=None, validator=integer(min=0, optional=True))
    max_pooled_bytes: int = attrs.field(default=8 * MIB, validator=integer(min=1))
    poison: bool = False
    step_aside: bool = True
