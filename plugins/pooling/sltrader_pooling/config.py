"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

import attrs

from sltrader_plugins import SettingError, integer, one_of

MIB = 1 << 20


@attrs.frozen
class PoolingConfig:
    """Settings of the pooling plugin; the defaults are from the measurements in
    ``docs/pooling.md``.

    :ivar max_idle_bytes: the most bytes of idle buffers the whole pool keeps, over all
        idle builds. Buffers beyond it are dropped on release.
    :ivar max_idle_builds: the most idle per-build buffer sets kept; ``None`` (the
        default, not expressible in TOML) means the host's worker count plus one (the
        most builds that run at once: one per worker, and one on the main loop).
    :ivar min_pooled_bytes: arrays smaller than this are plain ``np.empty``.
    :ivar max_pooled_bytes: arrays larger than this are plain ``np.empty``: one huge
        request must not pin its memory in the pool.
    :ivar classes_per_doubling: size classes between two powers of two, itself a power
        of two up to 64 (1: powers of two only, up to 50 % slack; 4: up to 25 %). A
        buffer is reused for any length of its class.
    :ivar poison: fill every reused buffer with NaN (or -1, for integers) before handing
        it out: a debug aid that shows a feature computation reading memory it did not
        write. Costs a fill per buffer.
    """

    max_idle_bytes: int = attrs.field(default=32 * MIB, validator=integer(min=0))
    max_idle_builds: int | None = attrs.field(default=None, validator=integer(min=0, optional=True))
    min_pooled_bytes: int = attrs.field(default=0, validator=integer(min=0))
    max_pooled_bytes: int = attrs.field(default=8 * MIB, validator=integer(min=1))
    classes_per_doubling: int = attrs.field(default=4, validator=one_of(1, 2, 4, 8, 16, 32, 64))
    poison: bool = False

    def __attrs_post_init__(self) -> None:
        if self.max_pooled_bytes < self.min_pooled_bytes:
            raise SettingError(
                "max_pooled_bytes",
                f"at least 'min_pooled_bytes' ({self.min_pooled_bytes})",
                self.max_pooled_bytes,
            )
