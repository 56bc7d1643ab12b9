"""Names of Hugging Face Accelerate's API that belong to one backend, resolved lazily.

HF exports ``FullyShardedDataParallelPlugin``, ``DeepSpeedPlugin``, ``DummyOptim``... from its
core. Here each is defined by its backend's package, which returns an ``ExportedName`` record
from ``accelerate_core_exported_names``; ``accelerate_core`` and ``accelerate_core.utils`` look
the name up on first use (a module ``__getattr__``). The core only knows which backend each
name belongs to, so that importing it works without the backend and using it says what to
install.
"""

from __future__ import annotations

import importlib
from typing import Any, NoReturn

from .errors import PluginError
from .plugins import get_plugin_manager

# HF's backend-specific public names -> the backend that defines them.
BACKEND_NAMES = {
    "DDPCommunicationHookType": "ddp",
    "FullyShardedDataParallelPlugin": "fsdp",
    "DeepSpeedPlugin": "deepspeed",
    "DummyOptim": "deepspeed",
    "DummyScheduler": "deepspeed",
}


def _import(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class MissingBackendName(type):
    """Type of the stand-in for a name whose backend is missing: using it raises why."""

    _backend: str

    def _raise(cls) -> NoReturn:
        try:
            get_plugin_manager().select("backend", cls._backend)
        except PluginError as error:
            raise type(error)(
                f"{cls.__name__} is defined by the '{cls._backend}' backend: {error}"
            ) from error.__cause__
        raise PluginError(  # the backend is there but does not define the name
            f"{cls.__name__}: the installed '{cls._backend}' backend does not define it; "
            f"upgrade it (pip install -U accelerate-{cls._backend})"
        )

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        cls._raise()

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        cls._raise()

    def __iter__(cls) -> NoReturn:
        cls._raise()


def missing(name: str, backend: str) -> MissingBackendName:
    return MissingBackendName(
        name,
        (),
        {
            "_backend": backend,
            "__module__": __name__,
            "__doc__": f"Stand-in: {name} is defined by the '{backend}' backend's package.",
        },
    )


def resolve(name: str) -> Any:
    """The object a plugin exports as ``name``; a raising stand-in when its backend is missing.

    ``AttributeError`` for names neither a plugin nor ``BACKEND_NAMES`` knows.
    """
    registered = get_plugin_manager().exported_names().get(name)
    if registered is not None:
        return _import(registered.spec.target)
    if name in BACKEND_NAMES:
        return missing(name, BACKEND_NAMES[name])
    raise AttributeError(name)


def known_names() -> list[str]:
    """Every name ``resolve`` answers (for ``dir()``)."""
    return sorted(set(BACKEND_NAMES) | set(get_plugin_manager().exported_names()))
