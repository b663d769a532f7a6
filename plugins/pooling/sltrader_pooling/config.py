"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

from typing import Any

import attrs

MIB = 1 << 20


def _power_of_two(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ValueError(f"'{attribute.name}' must be a power of two (1, 2, 4, ...): {value}")


def _above_min_pooled(instance: PoolingConfig, attribute: attrs.Attribute, value: int) -> None:
    if value < instance.min_pooled_bytes:
        raise ValueError(
            f"'{attribute.name}' must be >= 'min_pooled_bytes' "
            f"({instance.min_pooled_bytes}): {value}"
        )


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
    :ivar classes_per_doubling: size classes between two powers of two (1: powers of two
        only, up to 50 % slack; 4: up to 25 %). A buffer is reused for any length of its
        class.
    :ivar poison: fill every reused buffer with NaN (or -1, for integers) before handing
        it out: a debug aid that shows a feature computation reading memory it did not
        write. Costs a fill per buffer.
    """

    max_idle_bytes: int = attrs.field(default=32 * MIB, validator=attrs.validators.ge(0))
    max_idle_builds: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )
    min_pooled_bytes: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    max_pooled_bytes: int = attrs.field(
        default=8 * MIB, validator=[attrs.validators.ge(1), _above_min_pooled]
    )
    classes_per_doubling: int = attrs.field(default=4, validator=_power_of_two)
    poison: bool = False
