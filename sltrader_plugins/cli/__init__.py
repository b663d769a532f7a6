"""The ``sltrader`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from sltrader_plugins import __version__
from sltrader_plugins.config import Config, ConfigError
from sltrader_plugins.manager import PluginError, PluginInfo, PluginManager
from sltrader_plugins.options import add_plugin_options, load_manager


def _format_plugins(infos: Sequence[PluginInfo]) -> str:
    if not infos:
        return "no plugins installed"
    lines = []
    for info in infos:
        state = "active" if info.active else f"inactive: {info.reason}"
        lines.append(f"{info.name} ({info.distribution} {info.version}): {state}")
        if info.hooks:
            lines.append(f"    hooks: {', '.join(info.hooks)}")
    return "\n".join(lines)


def cmd_plugins(args: argparse.Namespace) -> int:
    manager = load_manager(args)
    infos = manager.plugins()
    if args.json:
        print(json.dumps({"plugins": [info.as_dict() for info in infos]}, indent=2))
    else:
        print(_format_plugins(infos))
    return 0


class _VersionAction(argparse.Action):
    """``--version`` that also lists the installed plugins (as pytest's does)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        manager = PluginManager()
        try:
            infos = manager.load(Config(), environ={})
        except PluginError as exc:  # pragma: no cover - only duplicate names in strict mode
            parser.exit(2, f"sltrader: {exc}\n")
        plugins = ", ".join(f"{i.name}-{i.version}" for i in infos) or "none"
        print(f"sltrader {__version__}\nplugins: {plugins}")
        parser.exit(0)


#: Commands that need nothing beyond the plugins: for them (and ``--version``) the parser is
#: built without the other commands, whose module imports the reference trader, the
#: bench, the served exchange and their output.
LIGHT_COMMANDS = frozenset({"plugins"})


def _light(argv: Sequence[str]) -> bool:
    words = [arg for arg in argv if not arg.startswith("-")]
    return words[0] in LIGHT_COMMANDS if words else "--version" in argv


def build_parser(light: bool = False) -> argparse.ArgumentParser:
    """The ``sltrader`` parser; ``light``: with the commands of :data:`LIGHT_COMMANDS` only."""
    parser = argparse.ArgumentParser(prog="sltrader", description=__doc__)
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list installed plugins and their state")
    add_plugin_options(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)
    if not light:
        from sltrader_plugins.cli.commands import add_commands  # see LIGHT_COMMANDS

        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(light=_light(given))
    args = parser.parse_args(given)
    # the command line as typed, for a saved result to say what made it (bench --trader)
    args.argv = ["sltrader", *given]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # urllib3 warns of each retry of a keep-alive connection the server closed, a routine
    # event; the exchange client raises what really fails, naming the URL
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        return int(args.func(args))
    except (ConfigError, PluginError) as exc:
        print(f"sltrader: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run's cycles (start-up, a bench): nothing to report
        print("sltrader: interrupted", file=sys.stderr)
        return 130
