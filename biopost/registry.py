"""One small registry for everything that plugs into the core by name.

Tasks, rewards, modalities, encoder backends, generation engines and `biopost <group>` commands
each have one `Registry`. An entry is either an object, or a lazy reference `"module:attribute"`
that is imported on first `get` — so a torch-free modality record can name its torch-using
encoder backends without importing them, and `biopost sweep plan` stays torch-free.

Registering a different object under a taken name is an error: two packages silently fighting
over "format" would change what a run optimizes. Re-registering the same object (a module
imported twice) or the same lazy reference is a no-op.

Modality packages are discovered through the entry-point group `biopost.modalities`
(`discover()`); no entry script needs a side-effect import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from biopost.errors import NotRegisteredError, UserError

T = TypeVar("T")

ENTRY_POINT_GROUP = "biopost.modalities"


class RegistryError(UserError, ValueError):
    """A conflicting registration (a duplicate name, a bad lazy reference)."""


@dataclass(frozen=True)
class _Lazy:
    ref: str  # "package.module:attribute"

    def load(self, kind: str, name: str):
        module, _, attr = self.ref.partition(":")
        try:
            obj = importlib.import_module(module)
        except ImportError as e:
            raise NotRegisteredError(f"{kind} {name!r} is registered as {self.ref!r}, but its module "
                                     f"cannot be imported ({e}); is its package (and its extra) installed?") from e
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


# Lazy registrations made before the registry of their kind was created (see `defer`).
_PENDING: dict[str, list[tuple[str, str, str]]] = {}
_ALL: dict[str, "Registry"] = {}


def defer(kind: str, name: str, ref: str, help: str = "") -> None:
    """Register `"module:attribute"` under `name` in the registry of `kind`, without importing the
    module that defines that registry. Plug-in modules use it for registries that live in layers a
    login-node tool must not import (the tiny-model builders live in biopost.model)."""
    if kind in _ALL:
        _ALL[kind].register_lazy(name, ref, help=help)
    else:
        _PENDING.setdefault(kind, []).append((name, ref, help))


class Registry(Generic[T]):
    """Name -> object, for one kind of thing ("task", "reward", "encoder backend", ...)."""

    def __init__(self, kind: str, *, discover_on_miss: bool = True):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._help: dict[str, str] = {}
        self._discover_on_miss = discover_on_miss
        _ALL[kind] = self
        for name, ref, help_ in _PENDING.pop(kind, []):
            self.register_lazy(name, ref, help=help_)

    def register(self, name: str, obj: T, *, replace: bool = False, help: str = "") -> T:
        """Register `obj` under `name`; returns `obj` so it can decorate or be assigned."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        old = self._entries.get(name)
        if old is not None and not replace and not _same(old, obj):
            raise RegistryError(f"{self.kind} {name!r} is already registered ({_describe(old)}); "
                                f"refusing to replace it with {_describe(obj)} (pass replace=True to override)")
        self._entries[name] = obj
        if help or name not in self._help:
            self._help[name] = help
        return obj

    def register_lazy(self, name: str, ref: str, *, replace: bool = False, help: str = "") -> None:
        """Register `"module:attribute"`, imported on first `get(name)`."""
        if not isinstance(ref, str) or ":" not in ref:
            raise RegistryError(f"{self.kind} {name!r}: a lazy reference is 'module:attribute', got {ref!r}")
        self.register(name, _Lazy(ref), replace=replace, help=help)

    def get(self, name: str) -> T:
        if name not in self._entries and self._discover_on_miss:
            discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            failed = f"; plug-ins that failed to load: {'; '.join(DISCOVERY_PROBLEMS)}" if DISCOVERY_PROBLEMS else ""
            raise NotRegisteredError(f"unknown {self.kind} {name!r}; registered: {known}{failed}")
        obj = self._entries[name]
        if isinstance(obj, _Lazy):
            obj = obj.load(self.kind, name)
            self._entries[name] = obj
        return obj

    def names(self) -> list[str]:
        if self._discover_on_miss:
            discover()
        return sorted(self._entries)

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        if name not in self._entries and self._discover_on_miss:
            discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unregister(self, name: str) -> None:
        """Tests use this to undo what they registered."""
        self._entries.pop(name, None)
        self._help.pop(name, None)


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, _Lazy) and isinstance(b, _Lazy):
        return a.ref == b.ref
    # a lazy reference resolved earlier, registered again as the object it named (or vice versa)
    if isinstance(a, _Lazy) or isinstance(b, _Lazy):
        lazy, obj = (a, b) if isinstance(a, _Lazy) else (b, a)
        module, _, attr = lazy.ref.partition(":")
        return getattr(obj, "__module__", None) == module and getattr(obj, "__qualname__", None) == attr
    return False


def _describe(obj) -> str:
    if isinstance(obj, _Lazy):
        return obj.ref
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "name", None) or type(obj).__qualname__
    return f"{module}:{qual}"


# --- discovery of modality packages -------------------------------------------------------------

_discovered = False
_discovering = False
DISCOVERY_PROBLEMS: list[str] = []


def discover(*, force: bool = False) -> None:
    """Import every module named in the `biopost.modalities` entry-point group, once.

    Each such module is torch-free and registers a Modality record (and lazy references to its
    tasks, rewards, backends and commands). A package whose entry point fails to import is noted
    in DISCOVERY_PROBLEMS and otherwise ignored, so one broken plug-in does not take the others down;
    asking for one of its names then says it is not registered and lists what is.
    """
    global _discovered, _discovering
    if (_discovered and not force) or _discovering:
        return
    _discovering = True
    try:
        from importlib.metadata import entry_points
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as e:  # a third-party plug-in's import failure must not hide the others
                DISCOVERY_PROBLEMS.append(f"{ep.name} ({ep.value}): {type(e).__name__}: {e}")
        _discovered = True
    finally:
        _discovering = False
