"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

from typing import Any

import attrs


def _int_at_least(minimum: int) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        # section_from has already checked the type for file input; this guards direct use.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"'{attribute.name}' must be an integer >= {minimum}, got {value!r}")

    return check


def _number_at_least(minimum: float, *, inclusive: bool) -> Any:
    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value >= minimum if inclusive else value > minimum)
        ok = ok and value == value and value != float("inf")  # NaN and inf never make sense
        if not ok:
            relation = ">=" if inclusive else ">"
            raise ValueError(
                f"'{attribute.name}' must be a finite number {relation} {minimum}, got {value!r}"
            )

    return check


@attrs.frozen
class BatchingConfig:
    """Knobs of the micro-batcher; defaults were chosen by measurement (docs/batching.md).

    :ivar max_batch_size: a batch is dispatched as soon as it holds this many requests.
    :ivar max_wait_ms: the longest the oldest request of a batch waits for company before
        the batch is dispatched anyway; ``0`` never waits (only size, idle and flush).
    :ivar queue_limit: requests inside the batcher (waiting or being predicted) at most;
        a caller beyond it waits for room, up to ``timeout_ms``, then predicts unbatched.
    :ivar timeout_ms: how long a caller waits for a batch someone else is running (or for
        room in the queue) before it gives up on the batch and predicts by itself.
    """

    max_batch_size: int = attrs.field(default=32, validator=_int_at_least(1))
    max_wait_ms: float = attrs.field(default=2.0, validator=_number_at_least(0.0, inclusive=True))
    queue_limit: int = attrs.field(default=1024, validator=_int_at_least(1))
    timeout_ms: float = attrs.field(
        default=1000.0, validator=_number_at_least(0.0, inclusive=False)
    )

    def __attrs_post_init__(self) -> None:
        if self.queue_limit < self.max_batch_size:
            # A full batch must fit in the queue, or size-dispatch could never happen.
            raise ValueError(
                f"'queue_limit' must be >= 'max_batch_size' ({self.max_batch_size}), "
                f"got {self.queue_limit}"
            )

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0
