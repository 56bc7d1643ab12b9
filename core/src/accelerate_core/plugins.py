"""The plugin manager: discovery, registry, selection and diagnostics.

Built-in plugins are registered first, through the same hooks as external ones; entry points of the
group ``accelerate_core`` follow, sorted by name. Registration order never decides behaviour: names
are unique (a clash is an error naming both distributions) and family hooks are asked only of the
plugin that owns the selected name.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .builtin import BUILTIN_PLUGINS, defaults
from .errors import PluginConflictError, PluginError, PluginNotInstalledError
from .launch_options import ALIAS_TYPES, CORE_OPTIONS, OPTION_TYPES
from .specs import (
    BackendSpec,
    DeviceSpec,
    ExportedName,
    LaunchAlias,
    LaunchOption,
    PrecisionSpec,
    TrackerSpec,
)
from .version import __version__

ENTRY_POINT_GROUP = "accelerate_core"
DISABLE_AUTOLOAD_ENV = "ACCELERATE_CORE_DISABLE_PLUGIN_AUTOLOAD"
ALLOWED_PLUGINS_ENV = "ACCELERATE_CORE_PLUGINS"
CORE_DISTRIBUTION = "accelerate-core"
BUILTIN_LABEL = "accelerate-core (built-in)"

# Where the in-repo plugins are published, so a missing one is an error naming the pip command.
KNOWN_DISTRIBUTIONS = {
    "ddp": "accelerate-ddp",
    "fsdp": "accelerate-fsdp",
    "deepspeed": "accelerate-deepspeed",
    "fp8": "accelerate-fp8",
}
# Libraries a plugin must import only inside hook bodies, never when its entry point loads.
HEAVY_MODULES = ("deepspeed", "torchao", "transformer_engine", "msamp", "apex")


class PluginLoadWarning(UserWarning):
    """A plugin that was not selected failed to load; it is skipped."""


@dataclass
class EntryPointRecord:
    """One installed entry point, as read from metadata (``accel env`` shows these)."""

    name: str
    value: str
    distribution: str
    version: str
    status: str = "not loaded"  # loaded | failed | incompatible | disabled | not loaded
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Registered:
    """A record from a discovery hook, with the plugin and distribution that registered it."""

    spec: Any
    plugin: object
    distribution: str


def core_version() -> str:
    return __version__


def installed_entry_points() -> list[EntryPointRecord]:
    """Entry points of the group, from metadata only: nothing is imported. Sorted by name."""
    records = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        records.append(
            EntryPointRecord(
                name=ep.name,
                value=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else "unknown",
                version=dist.version if dist is not None else "unknown",
            )
        )
    return sorted(records, key=lambda r: (r.name, r.distribution))


def incompatibility(distribution: str, core: str | None = None) -> str | None:
    """Why ``distribution`` cannot run with this core, from its declared requirement, or None.

    Checked from metadata before the plugin is imported, so an incompatible plugin never crashes.
    """
    from packaging.requirements import InvalidRequirement, Requirement  # ~40 ms: only when used
    from packaging.version import Version

    core = core or core_version()
    try:
        requires = importlib_metadata.requires(distribution) or []
    except importlib_metadata.PackageNotFoundError:
        return None
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.replace("_", "-").lower() != CORE_DISTRIBUTION or req.marker is not None:
            continue
        if req.specifier and not req.specifier.contains(Version(core), prereleases=True):
            return (
                f"{distribution} requires {CORE_DISTRIBUTION}{req.specifier} but "
                f"{CORE_DISTRIBUTION} {core} is installed; upgrade one of them "
                f"(pip install -U {distribution} {CORE_DISTRIBUTION})"
            )
    return None


def _autoload_allowed(environ: dict[str, str]) -> tuple[bool, set[str]]:
    disabled = environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    allowed = {n.strip() for n in environ.get(ALLOWED_PLUGINS_ENV, "").split(",") if n.strip()}
    return not disabled, allowed


class PluginManager:
    """Owns the pluggy manager, the registry of names, and the owner-only hook callers."""

    def __init__(
        self,
        builtins: Sequence[object] | None = None,
        *,
        load_entry_points: bool = True,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.entry_points: list[EntryPointRecord] = []
        self._distribution: dict[int, str] = {}
        self._registry: dict[str, dict[str, Registered]] | None = None
        self._conflicts: list[str] = []
        self._callers: dict[tuple[str, int], Any] = {}
        self.defaults = defaults
        for plugin in BUILTIN_PLUGINS if builtins is None else builtins:
            self.register(plugin, BUILTIN_LABEL)
        if self.pm.get_name(defaults) is None:
            self.register(defaults, BUILTIN_LABEL)
        if load_entry_points:
            self._load_entry_points(dict(os.environ if environ is None else environ))

    # ------------------------------------------------------------------ registration

    def register(self, plugin: object, distribution: str, name: str | None = None) -> None:
        """Register a plugin object (module or instance) coming from ``distribution``."""
        self.pm.register(plugin, name=name)
        self._distribution[id(plugin)] = distribution
        self._registry = None
        self._callers.clear()

    def _load_entry_points(self, environ: dict[str, str]) -> None:
        autoload, allowed = _autoload_allowed(environ)
        by_name = {ep.name: ep for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)}
        for record in installed_entry_points():
            self.entry_points.append(record)
            if not autoload and record.name not in allowed:
                record.status = "disabled"
                continue
            reason = incompatibility(record.distribution)
            if reason is not None:
                record.status, record.error = "incompatible", reason
                record.exception = PluginError(reason)
                warnings.warn(
                    f"accelerate-core plugin '{record.name}' skipped: {reason}",
                    PluginLoadWarning,
                    stacklevel=3,
                )
                continue
            before = {m for m in HEAVY_MODULES if m in sys.modules}
            try:
                plugin = by_name[record.name].load()
            except Exception as exc:  # a broken plugin must not break the others
                record.status, record.error, record.exception = "failed", _describe(exc), exc
                warnings.warn(
                    f"accelerate-core plugin '{record.name}' from {record.distribution} "
                    f"{record.version} failed to load and is skipped: {_describe(exc)}",
                    PluginLoadWarning,
                    stacklevel=3,
                )
                continue
            heavy = sorted(m for m in HEAVY_MODULES if m in sys.modules and m not in before)
            if heavy:
                warnings.warn(
                    f"accelerate-core plugin '{record.name}' imported {', '.join(heavy)} when "
                    "its entry point loaded; import heavy libraries inside hook bodies instead",
                    PluginLoadWarning,
                    stacklevel=3,
                )
            label = f"{record.distribution} {record.version}"
            if self.pm.is_registered(plugin):
                continue  # one module exposed under two entry-point names
            try:
                self.register(plugin, label, name=f"{ENTRY_POINT_GROUP}:{record.name}")
            except pluggy.PluginValidationError as exc:  # hooks written for another core
                reason = _hook_mismatch(record, exc)
                record.status, record.error = "incompatible", reason
                record.exception = PluginError(reason)
                record.exception.__cause__ = exc
                warnings.warn(
                    f"accelerate-core plugin '{record.name}' skipped: {reason}",
                    PluginLoadWarning,
                    stacklevel=3,
                )
                continue
            record.status = "loaded"

    # ------------------------------------------------------------------ registry

    def distribution_of(self, plugin: object) -> str:
        return self._distribution.get(id(plugin), "unknown distribution")

    def _collect(self, hook_name: str, kind: type) -> dict[str, Registered]:
        found: dict[str, Registered] = {}
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            result = impl.function()
            dist = self.distribution_of(impl.plugin)
            for spec in result or ():
                if not isinstance(spec, kind):
                    raise PluginError(
                        f"plugin {self.pm.get_name(impl.plugin)!r} ({dist}) returned "
                        f"{spec!r} from {hook_name}; expected {kind.__name__} records"
                    )
                if spec.name in found:
                    other = found[spec.name]
                    self._conflicts.append(
                        f"{kind.__name__.removesuffix('Spec').lower()} '{spec.name}' is registered "
                        f"by both {other.distribution} and {dist}; uninstall one of them"
                    )
                    continue
                found[spec.name] = Registered(spec, impl.plugin, dist)
        return found

    def registry(self, strict: bool = True) -> dict[str, dict[str, Registered]]:
        """``{kind: {name: Registered}}`` per kind (backend, precision, device, tracker).

        Conflicts raise when ``strict``.
        """
        if self._registry is None:
            self._conflicts = []
            self._registry = {
                "backend": self._collect("accelerate_core_backends", BackendSpec),
                "precision": self._collect("accelerate_core_precisions", PrecisionSpec),
                "device": self._collect("accelerate_core_devices", DeviceSpec),
                "tracker": self._collect("accelerate_core_trackers", TrackerSpec),
            }
        if strict and self._conflicts:
            raise PluginConflictError("; ".join(self._conflicts))
        return self._registry

    def exported_names(self) -> dict[str, Registered]:
        """``{name: Registered(ExportedName)}`` from every plugin; a name offered twice raises."""
        before = len(self._conflicts)
        found = self._collect("accelerate_core_exported_names", ExportedName)
        clashes = self._conflicts[before:]
        del self._conflicts[before:]
        if clashes:
            raise PluginConflictError("; ".join(clashes))
        return found

    @property
    def conflicts(self) -> list[str]:
        self.registry(strict=False)
        return list(self._conflicts)

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry()[kind])

    def select(self, kind: str, name: str) -> Registered:
        """Return the record for ``name`` or raise an error that says how to get it."""
        entries = self.registry()[kind]
        if name in entries:
            return entries[name]
        raise self._missing(kind, name, entries)

    def _missing(self, kind: str, name: str, entries: dict[str, Registered]) -> PluginError:
        for record in self.entry_points:
            if record.name == name and record.exception is not None:
                err = PluginError(
                    f"{kind} '{name}' is not available: plugin '{name}' from "
                    f"{record.distribution} {record.version} could not be loaded: {record.error}"
                )
                err.__cause__ = record.exception
                return err
            if record.name == name and record.status == "disabled":
                return PluginNotInstalledError(
                    f"{kind} '{name}' is installed ({record.distribution}) but plugin autoloading "
                    f"is disabled by {DISABLE_AUTOLOAD_ENV}; add '{name}' to {ALLOWED_PLUGINS_ENV}"
                )
        available = ", ".join(sorted(entries)) or "none"
        dist = KNOWN_DISTRIBUTIONS.get(name)
        hint = (
            f"pip install {dist}"
            if dist
            else "install the package that provides it (accel env lists installed plugins)"
        )
        return PluginNotInstalledError(
            f"{kind} '{name}' is not installed; {hint} (installed {kind}s: {available})"
        )

    # ------------------------------------------------------------------ calling

    def owner_caller(self, hook_name: str, owner: object) -> Any:
        """A hook caller that asks only ``owner`` and then the core's defaults (which run last)."""
        key = (hook_name, id(owner))
        caller = self._callers.get(key)
        if caller is None:
            keep = {id(owner), id(self.defaults)}
            others = [p for p in self.pm.get_plugins() if id(p) not in keep]
            caller = self.pm.subset_hook_caller(hook_name, others)
            self._callers[key] = caller
        return caller

    def call_owner(self, hook_name: str, owner: object, **kwargs: Any) -> Any:
        return self.owner_caller(hook_name, owner)(**kwargs)

    def call_all(self, hook_name: str, **kwargs: Any) -> list[Any]:
        return getattr(self.pm.hook, hook_name)(**kwargs)

    def failed_entry_points(self) -> Iterable[EntryPointRecord]:
        return [r for r in self.entry_points if r.exception is not None]

    def _option_distribution(self, option: LaunchOption) -> str:
        """The distribution of the plugin that offers ``option`` (the core for its own)."""
        if option.target is None:
            return CORE_DISTRIBUTION
        kind, name = option.target
        registered = self.registry(strict=False)[kind].get(name)
        return registered.distribution if registered is not None else "unknown distribution"

    def launch_options(self) -> list[LaunchOption]:
        """The core's launch options followed by every plugin's, checked for clashes."""
        options = list(CORE_OPTIONS)
        owners = {o.dest: CORE_DISTRIBUTION for o in CORE_OPTIONS}
        owners.update({"config_file": CORE_DISTRIBUTION, "dry_run": CORE_DISTRIBUTION})
        for impl in self.pm.hook.accelerate_core_launch_options.get_hookimpls():
            dist = self.distribution_of(impl.plugin)
            for option in impl.function() or ():
                if not isinstance(option, LaunchOption):
                    raise PluginConflictError(
                        f"plugin {self.pm.get_name(impl.plugin)!r} ({dist}) returned {option!r} "
                        "from accelerate_core_launch_options; expected LaunchOption records"
                    )
                if option.type not in OPTION_TYPES or option.target is None:
                    raise PluginConflictError(
                        f"launch option '--{option.name}' of {dist} needs a type among "
                        f"{', '.join(OPTION_TYPES)} and a backend= or precision= it applies to"
                    )
                if option.dest in owners:
                    raise PluginConflictError(
                        f"launch option '--{option.name}' is offered by both {owners[option.dest]}"
                        f" and {dist}; uninstall one of them"
                    )
                owners[option.dest] = dist
                options.append(option)
        return options

    def launch_aliases(self, options: Sequence[LaunchOption] | None = None) -> list[LaunchAlias]:
        """Every plugin's ``LaunchAlias`` records (HF's spellings), checked for clashes."""
        options = self.launch_options() if options is None else options
        # An alias may share its name with an option of its own plugin: HF's spelling of that
        # option, whose translation accepts HF's values as well as the option's.
        option_owner = {o.dest: self._option_distribution(o) for o in options}
        owners: dict[str, str] = {}
        reserved = ("config_file", "dry_run", "module", "script", "script_args", "help")
        owners.update(dict.fromkeys(reserved, CORE_DISTRIBUTION))
        aliases = []
        for impl in self.pm.hook.accelerate_core_launch_aliases.get_hookimpls():
            dist = self.distribution_of(impl.plugin)
            for alias in impl.function() or ():
                if not isinstance(alias, LaunchAlias) or alias.type not in ALIAS_TYPES:
                    raise PluginConflictError(
                        f"plugin {self.pm.get_name(impl.plugin)!r} ({dist}) returned {alias!r} "
                        "from accelerate_core_launch_aliases; expected LaunchAlias records "
                        f"with a type among {', '.join(ALIAS_TYPES)}"
                    )
                if alias.name in option_owner and option_owner[alias.name] != dist:
                    owners.setdefault(alias.name, option_owner[alias.name])
                if alias.name in owners:
                    raise PluginConflictError(
                        f"launch flag '--{alias.name}' is offered by both {owners[alias.name]} "
                        f"and {dist}; uninstall one of them"
                    )
                owners[alias.name] = dist
                aliases.append(alias)
        return sorted(aliases, key=lambda a: a.name)


def _hook_mismatch(record: EntryPointRecord, exc: Exception) -> str:
    """Why a plugin whose hooks take arguments this core's hookspecs lack is skipped."""
    details = " ".join(str(exc).split())
    return (
        f"{record.distribution} {record.version} implements a hook with arguments that "
        f"{CORE_DISTRIBUTION} {core_version()} does not provide ({details}); it was written for "
        f"another {CORE_DISTRIBUTION} version: upgrade one of them "
        f"(pip install -U {record.distribution} {CORE_DISTRIBUTION})"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_MANAGER: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (and entry points loaded) on first use."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = PluginManager()
    return _MANAGER


def set_plugin_manager(manager: PluginManager | None) -> None:
    """Replace (or with ``None``, forget) the process-wide manager; for tests and embedding."""
    global _MANAGER
    _MANAGER = manager


def reset_plugin_manager() -> None:
    set_plugin_manager(None)


def collect_launch_options(manager: PluginManager | None = None) -> list[LaunchOption]:
    """The launch options of the core and every installed plugin (``accel launch --help``)."""
    return (manager or get_plugin_manager()).launch_options()


def collect_launch_aliases(manager: PluginManager | None = None) -> list[LaunchAlias]:
    """Hugging Face Accelerate's flag and config-key spellings every installed plugin maps."""
    return (manager or get_plugin_manager()).launch_aliases()
