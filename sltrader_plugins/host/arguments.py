"""The reference trader's command-line options and how they choose a run's workload."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

from sltrader_plugins.host.workload import workload_from
from sltrader_plugins.options import config_from_args

HOST_EXTRA = "python3 -m pip install 'sltrader-plugins[host]'"


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (one clear line otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def workload_options(
    parser: argparse.ArgumentParser,
    size: str,
    workers: Callable[[str], Any] | None = None,
    workers_help: str = "worker threads",
) -> None:
    """:param workers: the type of ``--workers`` (default: an integer of at least 1)."""
    parser.add_argument(
        "--size",
        choices=("small", "full"),
        default=None,
        help=f"workload (default: [host] size, else {size})",
    )
    parser.set_defaults(default_size=size)
    parser.add_argument("--workers", type=workers or at_least(1), default=None, help=workers_help)
    parser.add_argument("--model", choices=("sgd", "cheap"), default=None, help="model")
    parser.add_argument("--seed", type=at_least(0), default=None, help="market seed")
    parser.add_argument(
        "--latency",
        choices=("lan", "wan"),
        default=None,
        help="latency profile of the exchange (default: [host] latency, else lan; "
        "[host] latency_ms and jitter win over the profile's)",
    )


def host_missing() -> str | None:
    """Why the reference trader cannot run here (its model library is missing), or None."""
    if importlib.util.find_spec("sklearn") is None:
        return f"the reference trader needs scikit-learn, its 'host' extra: {HOST_EXTRA}"
    return None


def workload_for(args: argparse.Namespace) -> Any:
    cycles = getattr(args, "cycles", None)
    config = config_from_args(args)
    workload = workload_from(
        args.size or config.host.get("size") or args.default_size,
        config.host,
        workers=getattr(args, "workers", None),
        model=getattr(args, "model", None),
        seed=args.seed,
        cycles=cycles,
        latency=getattr(args, "latency", None),
    )
    return config, workload
