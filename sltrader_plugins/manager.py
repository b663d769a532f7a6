"""Finding, choosing, loading and validating plugins; isolating their faults.

Plugins are entry points of the group ``sltrader``. An entry point names a module or a
class; a class is instantiated once per manager, so two hosts in one process never share
a plugin's state. Which plugins load is decided before anything is imported (block list
first, as tox does), so a disabled plugin's import errors cannot break start-up.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

from sltrader_plugins import hookspecs
from sltrader_plugins.bounded import DaemonThreads, Outcome
from sltrader_plugins.buffers import LentBuffers
from sltrader_plugins.config import DEFAULT_HOOK_TIMEOUT_S, Config, ConfigError
from sltrader_plugins.marks import always_inline, inline_test
from sltrader_plugins.model import finite_number
from sltrader_plugins.protocols import HostServices
from sltrader_plugins.tally import Tally

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sltrader"
ENV_PLUGINS = "SLTRADER_PLUGINS"
_GUARDED = "__sltrader_guarded__"  # set on a hook implementation the manager has wrapped


def _plugin_of(answer: Answer) -> str:
    return answer.plugin


def _no_plugin(**_: Any) -> None:
    return None


def _no_answers(**_: Any) -> list[Any]:
    return []  # what pluggy answers for a hook that is not firstresult


class _FixedHooks:
    """See :meth:`PluginManager.fixed_hooks`. The call sites use only the answers of
    ``firstresult`` hooks, for which pluggy too answers ``None`` when no plugin does."""

    def __init__(self, relay: Any, names: Iterable[str]) -> None:
        for name in names:
            caller = getattr(relay, name)
            impls = caller.get_hookimpls()
            firstresult = bool(caller.spec.opts.get("firstresult"))
            if not impls:
                setattr(self, name, _no_plugin if firstresult else _no_answers)
            elif any(impl.kwargnames for impl in impls) or caller.spec.kwargnames:
                setattr(self, name, caller)  # arguments with defaults: pluggy's rules
            else:
                setattr(self, name, _calling(impls, firstresult))


def _calling(impls: list[pluggy.HookImpl], firstresult: bool) -> Callable[..., Any]:
    """A hook's implementations called as pluggy calls them (last registered first, each
    with its own arguments, ``firstresult``: the first answer that is not ``None``, else
    every such answer) without pluggy's machinery per call (wrappers, tracing, checks),
    none of which the fixed plugins use: a call site makes several calls per symbol."""
    calls = [(impl.function, tuple(impl.argnames)) for impl in reversed(impls)]
    if firstresult and len(calls) == 1:
        ((function, names),) = calls

        def first_of_one(**kwargs: Any) -> Any:
            return function(*[kwargs[name] for name in names])

        return first_of_one

    def each(**kwargs: Any) -> Any:
        answers = []
        for function, names in calls:
            answer = function(*[kwargs[name] for name in names])
            if answer is not None:
                if firstresult:
                    return answer
                answers.append(answer)
        return None if firstresult else answers

    return each


@attrs.frozen
class Answer:
    """A plugin's answer to an answer hook, with the plugin's name: the manager's guard
    tags every answer, so the call site that finds it wrong blames the right plugin."""

    value: Any
    plugin: str


class Prediction(float):
    """A plugin's ``before_predict`` answer: the number, and the plugin that gave it.

    A float, so that whoever calls the hook relay gets the number it always got; the name
    lets ``Plugins.predict`` blame the plugin when the number is outside the model's range.
    """

    __slots__ = ("plugin",)

    def __new__(cls, value: float, plugin: str) -> Prediction:
        self = super().__new__(cls, value)
        self.plugin = plugin
        return self


class PluginError(Exception):
    """A plugin cannot be chosen or loaded (unknown name; in strict mode, a failed plugin)."""


@attrs.frozen
class PluginInfo:
    """One installed plugin and whether it is active.

    :ivar reason: why it is not active (``None`` when it is).
    """

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()
    active: bool = False
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class EnableList:
    """The names that may load and where that choice came from."""

    names: tuple[str, ...] | None  #: ``None``: every installed plugin
    source: str  #: ``"cli"``, ``"environment"``, ``"file"`` or ``"default"``

    @property
    def explicit(self) -> bool:
        """Chosen for this run (CLI or environment): overrides the file's ``enabled``."""
        return self.source in ("cli", "environment")


def parse_names(text: str) -> tuple[str, ...]:
    """Split a comma-separated enable list; an empty string means no plugins."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def resolve_enable_list(
    config: Config, cli: str | None = None, environ: Mapping[str, str] | None = None
) -> EnableList:
    """Apply the precedence CLI > environment (``SLTRADER_PLUGINS``) > file > defaults.

    :param cli: the ``--plugins`` option, ``None`` when not given (``""`` means none).
    """
    environ = os.environ if environ is None else environ
    if cli is not None:
        return EnableList(parse_names(cli), "cli")
    if ENV_PLUGINS in environ:
        return EnableList(parse_names(environ[ENV_PLUGINS]), "environment")
    if config.enable is not None:
        return EnableList(config.enable, "file")
    return EnableList(None, "default")


def installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``sltrader`` entry points on ``sys.path``, by name.

    A distribution found twice on ``sys.path`` counts once, its first (importlib's rule,
    by the name in its folder's: no distribution's metadata is parsed to find them).
    """
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted(found, key=lambda ep: ep.name)


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:  # pragma: no cover - entry points from distributions() carry one
        return "?", "?"
    metadata = dist.metadata  # parsed anew on every read: once
    return metadata["Name"] or "?", metadata["Version"] or "?"


class PluginManager:
    """The host's handle on its plugins: ``manager.hook.<name>(**kwargs)`` calls a hook.

    Register everything (``load``, ``register``) before worker threads start; calling
    hooks is thread-safe afterwards. Whatever the order of registration, each hook calls
    the plugins in the order :mod:`sltrader_plugins.hookspecs` states: by name, with
    ``tryfirst`` and ``trylast`` implementations first and last.

    A plugin's main-loop hooks (every hook but :data:`hookspecs.WORKER_HOOKS`) run on a
    thread the manager keeps for that plugin, and the caller waits for each at most
    ``hook_timeout_s`` (``None``: in the caller's thread, without a bound); see
    :mod:`sltrader_plugins.bounded`. Those marked :func:`~sltrader_plugins.marks.nonblocking` run in
    the caller's thread, and those marked :func:`~sltrader_plugins.marks.nonblocking_while` there
    while their test holds.
    """

    def __init__(self, hook_timeout_s: float | None = DEFAULT_HOOK_TIMEOUT_S) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.hook = self._pm.hook
        self._infos: dict[str, PluginInfo] = {}
        self._lock = threading.Lock()
        self._faults = Tally(overflow=("(others)", "(others)"))  # by (plugin, hook)
        self._failed_at_start: set[str] = set()
        self.config = Config()  #: what ``load`` was given; plugins' settings come from it
        self.hook_timeout_s = hook_timeout_s
        self._hook_threads: dict[str, DaemonThreads] = {}
        self._registered: dict[str, object] = {}  #: by name, what ``register`` accepted
        self._started = False  #: after ``start`` the plugins are fixed (hooks run in threads)
        self._ordered = True  #: False while ``load`` registers: it orders them once at its end

    # -- loading --------------------------------------------------------------------

    def load(
        self,
        config: Config,
        cli: str | None = None,
        environ: Mapping[str, str] | None = None,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    ) -> list[PluginInfo]:
        """Load the chosen installed plugins and register them.

        :param cli: the ``--plugins`` option of this run (``None``: not given).
        :param environ: the environment (default ``os.environ``).
        :param entry_points: the installed entry points (default: discovered).
        :return: every installed plugin with its state, sorted by name.
        :raises PluginError: an enable list names a plugin that is not installed; in strict
            mode, a plugin fails to import or to validate.
        """
        if self._started:
            raise PluginError("cannot load plugins: the plugins have been started")
        self.config = config
        self.hook_timeout_s = config.hook_timeout_s
        eps = list(installed_entry_points() if entry_points is None else entry_points)
        by_name: dict[str, importlib.metadata.EntryPoint] = {}
        for ep in eps:
            if ep.name in by_name:
                dist, version = _dist_of(ep)
                first = _dist_of(by_name[ep.name])[0]
                reason = f"entry point name already provided by {first}"
                self._fail(PluginInfo(ep.name, dist, version, reason=reason), config.strict)
                continue
            by_name[ep.name] = ep
        _check_sections(config, sorted(by_name))
        enable = resolve_enable_list(config, cli, environ)
        if enable.names is not None:
            unknown = sorted(set(enable.names) - set(by_name))
            if unknown:
                installed = ", ".join(sorted(by_name)) or "none"
                raise PluginError(
                    f"unknown plugin(s) {', '.join(unknown)} in the enable list "
                    f"(from {enable.source}); installed plugins: {installed}"
                )
        imported: list[tuple[PluginInfo, object]] = []
        for name, ep in sorted(by_name.items()):
            dist, version = _dist_of(ep)
            info = PluginInfo(name, dist, version)
            if enable.names is not None and name not in enable.names:
                self._pm.set_blocked(name)
                reason = f"not in the enable list (from {enable.source})"
                self._infos[name] = attrs.evolve(info, reason=reason)
            elif not enable.explicit and not config.plugin_enabled(name):
                self._pm.set_blocked(name)
                self._infos[name] = attrs.evolve(info, reason="disabled by config")
            else:
                plugin = self._import_one(ep, info, config.strict)
                if plugin is not None:
                    imported.append((info, plugin))
        # Registered last name first, they are already in the calling order: putting them
        # in order at the end then only guards them (registering costs a trader's start-up).
        self._ordered = False
        try:
            for info, plugin in reversed(imported):
                self._register_imported(plugin, info, config.strict)
        finally:
            self._ordered = True
            self._call_in_name_order()
        return self.plugins()

    def _import_one(
        self, ep: importlib.metadata.EntryPoint, info: PluginInfo, strict: bool
    ) -> object | None:
        try:
            obj = ep.load()
            return obj() if inspect.isclass(obj) else obj
        except Exception as exc:
            reason = f"failed to import: {type(exc).__name__}: {exc}"
            self._fail(attrs.evolve(info, reason=reason), strict, exc)
            return None

    def _register_imported(self, plugin: object, info: PluginInfo, strict: bool) -> None:
        try:
            self.register(plugin, info.name)
        except PluginError as exc:
            self._fail(attrs.evolve(info, reason=str(exc)), strict, exc)
            return
        self._infos[info.name] = attrs.evolve(info, active=True, hooks=self.hooks_of(info.name))

    def _fail(self, info: PluginInfo, strict: bool, cause: Exception | None = None) -> None:
        if strict:
            raise PluginError(f"plugin {info.name!r} ({info.distribution}): {info.reason}") from (
                cause
            )
        log.error("plugin %r (%s) not loaded: %s", info.name, info.distribution, info.reason)
        self._infos[info.name] = info

    def register(self, plugin: object, name: str) -> None:
        """Register ``plugin`` under ``name`` after validating its hook implementations.

        :raises PluginError: a hook implementation names no known hook, takes an argument
            its hook does not have, is a hook wrapper or ``trylast``; or the manager has
            started (hooks may be running in other threads). The plugin is then not
            registered.
        """
        if self._started:
            raise PluginError(f"cannot register {name!r}: the plugins have been started")
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # Some pluggy versions register the plugin before validating it
            if self._pm.get_plugin(name) is plugin:
                self._pm.unregister(plugin)
            raise PluginError(f"invalid hook implementation: {exc}") from exc
        except ValueError as exc:  # already registered, or blocked
            raise PluginError(str(exc)) from exc
        unknown = sorted(
            caller.name
            for caller in self._pm.get_hookcallers(plugin) or []
            if not caller.has_spec()
        )
        if unknown:
            self._pm.unregister(plugin)
            known = ", ".join(sorted(self.hook_names()))
            raise PluginError(f"unknown hook(s) {', '.join(unknown)}; known hooks: {known}")
        for refused, why in (
            # A wrapper sees and may replace every plugin's answer unchecked: the one way
            # round the guard, so not part of the contract (observe with tryfirst).
            (lambda impl: impl.hookwrapper or impl.wrapper, "hook wrapper(s)"),
            # pluggy calls trylast ones last registered first, against the name order.
            (lambda impl: impl.trylast, "trylast implementation(s)"),
        ):
            hooks = sorted(
                caller.name
                for caller in self._pm.get_hookcallers(plugin) or []
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and refused(impl)
            )
            if hooks:
                self._pm.unregister(plugin)
                raise PluginError(f"{why} {', '.join(hooks)} are not supported")
        self._registered[name] = plugin
        if self._ordered:
            self._call_in_name_order()
        if name not in self._infos:
            self._infos[name] = PluginInfo(
                name, "(registered directly)", "", self.hooks_of(name), active=True
            )

    def _call_in_name_order(self) -> None:
        """Register the plugins last name first, unless they already are: pluggy calls the
        last registered first, so each hook then calls the plugins in name order (the
        contract's order), whatever order they were registered in. Guard every hook
        implementation not yet guarded (registering anew makes them all new)."""
        # A name blocked since (load's enable list) was unregistered by pluggy: forget it.
        self._registered = {
            name: plugin
            for name, plugin in self._registered.items()
            if self._pm.get_plugin(name) is plugin
        }
        calling_order = sorted(self._registered, reverse=True)
        registered = [name for name, _ in self._pm.list_name_plugin() if name in self._registered]
        if registered != calling_order:
            for plugin in self._registered.values():
                self._pm.unregister(plugin)
            for name in calling_order:
                self._pm.register(self._registered[name], name=name)
        for name in calling_order:
            plugin = self._registered[name]
            for caller in self._pm.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not hasattr(impl.function, _GUARDED):
                        impl.function = self._guard(impl.function, name, caller.name, plugin)

    def _unregister(self, name: str) -> None:
        plugin = self._registered.pop(name, None)
        if plugin is not None:
            self._pm.unregister(plugin)

    def hook_names(self) -> list[str]:
        """Every hook of the contract."""
        return [name for name in dir(self.hook) if not name.startswith("_")]

    def hooks_of(self, name: str) -> tuple[str, ...]:
        """The hooks the plugin registered as ``name`` implements (none if unknown)."""
        plugin = self._pm.get_plugin(name)
        callers = self._pm.get_hookcallers(plugin) if plugin is not None else None
        return tuple(sorted(caller.name for caller in callers or []))

    def plugins(self) -> list[PluginInfo]:
        """Every installed plugin seen by ``load`` (and every registered one), by name."""
        return [self._infos[name] for name in sorted(self._infos)]

    def active_names(self) -> list[str]:
        """The names of the active plugins, in name order."""
        return [info.name for info in self.plugins() if info.active]

    # -- fault isolation --------------------------------------------------------------

    def _guard(
        self, function: Callable[..., Any], plugin: str, hook: str, registered: object
    ) -> Callable[..., Any]:
        starting = hook == "on_start"
        check = _RESULT_CHECKS.get(hook)
        inline = inline_test(function)
        thread = None
        if hook not in hookspecs.WORKER_HOOKS and not always_inline(inline):
            # One thread per plugin: its main-loop hooks never run concurrently, and a
            # hung one holds that thread only (its later calls are skipped until it returns).
            thread = self._hook_threads.get(plugin)
            if thread is None:
                thread = self._hook_threads[plugin] = DaemonThreads(
                    f"sltrader-hooks-{plugin}", limit=1
                )

        # pluggy passes arguments that have defaults in the implementation by keyword
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = self.hook_timeout_s
                if thread is None or bound is None or (inline and inline(registered)):
                    result = function(*args, **kwargs)
                else:
                    outcome, result = thread.call(function, args, kwargs, bound)
                    if outcome is not Outcome.DONE:
                        # One line for the call that overran; the calls it makes the
                        # plugin skip until it returns are only counted.
                        reason = _LATE[outcome].format(bound=bound)
                        self._record_fault(plugin, hook, reason, quiet=outcome is Outcome.BUSY)
                        return None
            except ConfigError:
                if starting:
                    raise  # a wrong setting is the user's to fix, not a fault to hide
                self._record_fault(plugin, hook, exc_info=True)
                return None
            except Exception:
                self._record_fault(plugin, hook, exc_info=True)
                return None
            if result is None or check is None:
                return result
            return check(self, plugin, result)

        setattr(guarded, _GUARDED, True)
        return guarded

    def _record_fault(
        self,
        plugin: str,
        hook: str,
        reason: str | None = None,
        exc_info: bool = False,
        quiet: bool = False,
    ) -> None:
        """Count a fault of ``plugin`` in ``hook``; log the first of each pair, unless
        ``quiet`` (a consequence of a fault already logged)."""
        with self._lock:
            first = self._faults.add((plugin, hook))
            if hook == "on_start":
                self._failed_at_start.add(plugin)
        if first and not quiet:
            what = "raised" if reason is None else reason
            log.error(
                "plugin %r %s in hook %r; the host falls back to its own behaviour "
                "(further faults of this plugin in this hook are only counted)",
                plugin,
                what,
                hook,
                exc_info=exc_info,
            )

    def fault(self, plugin: str, hook: str, reason: str) -> None:
        """Report a fault found outside a hook call (a plugin's buffers, say)."""
        self._record_fault(plugin, hook, reason)

    def faults(self) -> dict[str, int]:
        """Faults of plugins' hooks (exceptions, wrong returns), as ``{"plugin.hook": n}``."""
        with self._lock:
            faults = sorted(self._faults.counts().items())
        return {f"{plugin}.{hook}": n for (plugin, hook), n in faults}

    # -- lifecycle --------------------------------------------------------------------

    def start(self, services: HostServices) -> None:
        """Call each plugin's ``on_start`` with its own settings.

        A plugin whose ``on_start`` raises is unregistered.

        :raises ConfigError: a plugin refused its configuration section.
        """
        self._started = True
        plugins = [(name, p) for name, p in self._pm.list_name_plugin() if p is not None]
        for name, plugin in reversed(plugins):  # pluggy's order: last registered first
            others = [p for _, p in plugins if p is not plugin]
            call = self._pm.subset_hook_caller("on_start", remove_plugins=others)
            call(services=services, settings=self.config.settings(name))
        for name in sorted(self._failed_at_start):
            self._unregister(name)
            info = self._infos[name]
            self._infos[name] = attrs.evolve(info, active=False, reason="failed in on_start")
        self._failed_at_start.clear()

    def fixed_hooks(self) -> Any:
        """The hooks as call sites call them once the plugins are fixed (after
        :meth:`start`): ``hooks.<name>(**kwargs)`` answers as ``hook.<name>`` does, the
        plugins called in the same order, each through its guard; a hook no plugin
        implements is a function that does nothing, and the others call the guarded
        implementations without pluggy's machinery per call (a call site may make several
        calls per symbol)."""
        return _FixedHooks(self.hook, self.hook_names())

    def metrics(self) -> dict[str, float]:
        """Every plugin's ``report_metrics``, merged (names carry the plugin's prefix).

        Plugins in name order, each plugin's counters in the order it returned them: a
        plugin puts first what a user needs first, and the report shows them that way.
        """

        def plugin(result: dict[str, float]) -> str:  # one plugin's: "<plugin>.<metric>"
            return next(iter(result), "").split(".")[0]

        merged: dict[str, float] = {}
        for result in sorted(self.hook.report_metrics(), key=plugin):
            merged.update(result)
        return merged

    def summaries(self) -> dict[str, str]:
        """Every plugin's ``report_summary`` line, by plugin name (in name order)."""
        answers: list[Answer] = self.hook.report_summary()
        return {answer.plugin: answer.value for answer in sorted(answers, key=_plugin_of)}

    def shutdown(self, bound: float | None = None) -> None:
        """Call ``on_shutdown``, then let the plugins' hook threads end (never waits).

        :param bound: wait for each plugin at most this long, if shorter than
            ``hook_timeout_s`` (and in place of none).
        """
        if bound is not None:
            self.hook_timeout_s = min(bound, self.hook_timeout_s or bound)
        try:
            self.hook.on_shutdown()
        finally:
            for thread in self._hook_threads.values():
                thread.stop()


def _check_sections(config: Config, installed: list[str]) -> None:
    """A ``[plugins.<name>]`` section whose name is a near miss of an installed plugin is a
    typo: an error. One for a plugin that is not installed is only noted (uninstalling a
    plugin is a documented way to disable it, and its section may stay)."""
    for name in sorted(set(config.plugins) - set(installed)):
        near = difflib.get_close_matches(name, installed, n=1)
        if near:
            raise ConfigError(
                f"'plugins.{name}': no plugin of that name is installed; "
                f"did you mean 'plugins.{near[0]}'?"
            )
        log.info("'plugins.%s': no plugin of that name is installed; section ignored", name)


_LATE = {
    Outcome.OVERRAN: (
        "did not return within {bound:g} s (hook_timeout_s): abandoned, and its "
        "main-loop hooks are skipped until that call returns"
    ),
    Outcome.BUSY: "was skipped: its call that overran is still running",
}


# -- what a hook may return -----------------------------------------------------------
# Each check gets a non-None result of one plugin and gives what the host receives:
# the result (perhaps wrapped), or None after recording the plugin's fault.


def _check_buffers(manager: PluginManager, plugin: str, result: Any) -> Any:
    if callable(getattr(result, "empty", None)) and callable(getattr(result, "release", None)):
        return LentBuffers(result, plugin, manager.fault)
    manager.fault(plugin, "on_feature_build", f"returned a {type(result).__name__}, not buffers")
    return None


def _check_prediction(manager: PluginManager, plugin: str, result: Any) -> Any:
    # Finite here; within the model's range where the model is known (Plugins.predict).
    value = finite_number(result)
    if value is None:
        manager.fault(plugin, "before_predict", f"returned {result!r}, not a finite number")
        return None
    return Prediction(value, plugin)


def _check_metrics(manager: PluginManager, plugin: str, result: Any) -> Any:
    if not isinstance(result, Mapping):
        reason = f"returned a {type(result).__name__}, not a mapping"
        manager.fault(plugin, "report_metrics", reason)
        return None
    # A bad entry costs that entry (and one fault), not the plugin's other counters.
    metrics: dict[str, float] = {}
    bad = []
    for name, value in result.items():
        number = finite_number(value)
        if isinstance(name, str) and number is not None:
            metrics[f"{plugin}.{name}"] = number
        else:
            bad.append(f"{name!r}: {value!r}")
    if bad:
        reason = f"returned {', '.join(bad)} (not a name and a finite number)"
        manager.fault(plugin, "report_metrics", reason)
    return metrics


def _check_summary(manager: PluginManager, plugin: str, result: Any) -> Any:
    one_line = isinstance(result, str) and "\n" not in result
    if one_line and len(result) <= hookspecs.SUMMARY_MAX_CHARS:
        return Answer(result, plugin)
    shown = repr(result)[:80]
    reason = f"returned {shown}, not one line of at most {hookspecs.SUMMARY_MAX_CHARS} characters"
    manager.fault(plugin, "report_summary", reason)
    return None


def _tag(manager: PluginManager, plugin: str, result: Any) -> Any:
    # Checked where the fetch's arguments are known (Plugins.fetching), and blamed there.
    return Answer(result, plugin)


_RESULT_CHECKS: dict[str, Callable[[PluginManager, str, Any], Any]] = {
    "serve_klines": _tag,
    "on_feature_build": _check_buffers,
    "before_predict": _check_prediction,
    "report_metrics": _check_metrics,
    "report_summary": _check_summary,
}
