"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

import attrs

from sltrader_plugins import finite, integer


@attrs.frozen
class BatchingConfig:
    """Knobs of the micro-batcher; defaults were chosen by measurement (docs/batching.md).

    :ivar max_batch_size: a batch is dispatched as soon as it holds this many requests.
    :ivar max_wait_ms: the longest the oldest request of a batch waits for company before
        the batch is dispatched anyway; ``0`` turns batching off: every request runs at once,
        as a batch of one.
    :ivar timeout_ms: how long a caller waits for a model call someone else is running
        before it gives up on the batch and predicts by itself.
    :ivar step_aside: measure while it runs whether its work pays on this trader, and
        step aside while it does not (docs/plugins.md, "Pays or steps aside"); false:
        always work.
    """

    max_batch_size: int = attrs.field(default=32, validator=integer(min=1, max=65_536))
    max_wait_ms: float = attrs.field(default=5.0, validator=finite(min=0, max=3_600_000))
    timeout_ms: float = attrs.field(default=1000.0, validator=finite(above=0, max=3_600_000))
    step_aside: bool = True

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0
