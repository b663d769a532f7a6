"""Command-line options every command that loads plugins takes, and what they load.

Shared by every ``sltrader`` command (:mod:`sltrader_plugins.cli`) and the bench's
worker process (:mod:`sltrader_plugins.bench.worker`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs

from sltrader_plugins.config import Config, load_config
from sltrader_plugins.manager import PluginManager


def add_plugin_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads plugins takes."""
    parser.add_argument(
        "--plugins",
        metavar="NAMES",
        default=None,
        help="comma-separated plugins to enable for this run ('' for none); "
        "overrides SLTRADER_PLUGINS and the configuration file",
    )
    parser.add_argument(
        "--config", metavar="PATH", type=Path, default=None, help="configuration file"
    )
    parser.add_argument(
        "--strict", action="store_true", help="a plugin that fails to load is an error"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    return attrs.evolve(config, strict=True) if args.strict else config


def load_manager(args: argparse.Namespace, config: Config | None = None) -> PluginManager:
    """A plugin manager with the plugins these arguments choose."""
    manager = PluginManager()
    manager.load(config or config_from_args(args), cli=args.plugins)
    return manager
