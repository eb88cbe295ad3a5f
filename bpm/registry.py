"""Named extension points: one :class:`Registry` per kind of part (neck, loss term, export format ...).

Why: a command's choices, the code that builds a part and the tests that cover every part must all
read one list, written where each part is defined. A new neck, loss term or export format is then
one new module that decorates its builder, plus its test, and nothing else is edited::

    NECKS = Registry("neck", flag="--neck", package="bpm.models.necks")

    @NECKS.register("bnneck")
    def build_bnneck(feature_dim: int) -> nn.Module: ...

    NECKS.get("bnneck")      # the builder; an unknown name is a one-line BpmError naming --neck
    NECKS.names()            # argparse choices, test parametrisation

Registration happens on import. ``package`` names the modules holding the built-in entries, imported
on the first lookup, so that asking for the choices never depends on what happened to be imported.
A name (or alias) registered twice is refused, naming both modules: two files must never silently
decide what a switch value means.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

from bpm.errors import BpmError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind, by canonical name (registration order) and by alias.

    Args:
        kind: what an entry is, for messages (``"neck"``, ``"export format"``).
        flag: the switch whose values these are (``"--neck"``), named in the unknown-name error.
        package: module(s) whose import registers the built-in entries (imported on first lookup).
    """

    def __init__(self, kind: str, *, flag: str = "", package: str | tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.flag = flag
        self._packages = (package,) if isinstance(package, str) else tuple(package)
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._modules: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name`` (and ``aliases``); returns it unchanged."""
        def decorate(entry: T) -> T:
            self.add(name, entry, aliases=aliases, module=getattr(entry, "__module__", "") or "")
            return entry

        return decorate

    def add(self, name: str, entry: T, *, aliases: tuple[str, ...] = (), module: str = "") -> T:
        """Register ``entry`` without a decorator (for entries that are not functions or classes)."""
        for alias in (name, *aliases):
            if alias in self._aliases:
                owner = self._aliases[alias]
                raise BpmError(f"{self.kind} name {alias!r} of {module or name} is already registered by "
                               f"{self._modules.get(owner) or owner} ({owner}); choose another name")
        self._entries[name] = entry
        self._modules[name] = module
        self._aliases.update({alias: name for alias in (name, *aliases)})
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (tests that register a toy entry clean up with this)."""
        canonical = self._aliases.get(name, name)
        self._entries.pop(canonical, None)
        self._modules.pop(canonical, None)
        for alias in [a for a, c in self._aliases.items() if c == canonical]:
            del self._aliases[alias]

    def _load_builtin(self) -> None:
        if not self._loaded:
            self._loaded = True
            for package in self._packages:
                importlib.import_module(package)

    def get(self, name: str) -> T:
        """The entry registered as ``name`` or an alias of it; unknown names are a one-line :class:`BpmError`."""
        self._load_builtin()
        try:
            return self._entries[self._aliases[name]]
        except (KeyError, TypeError):
            what = self.flag or self.kind
            raise BpmError(f"{what}: unknown {self.kind} {name!r}; expected one of {', '.join(self._entries)}") \
                from None

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself, or what it is an alias of)."""
        self.get(name)
        return self._aliases[name]

    def names(self) -> list[str]:
        """Canonical names, in registration order."""
        self._load_builtin()
        return list(self._entries)

    def choices(self) -> list[str]:
        """Every accepted spelling (canonical names, then aliases): argparse ``choices``."""
        self._load_builtin()
        return list(self._entries) + [a for a, c in self._aliases.items() if a != c]

    def __contains__(self, name: object) -> bool:
        self._load_builtin()
        return name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
