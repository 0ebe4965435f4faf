"""A small registry: decorator registration plus lazy ``"module:Attr"`` entries.

Lazy entries keep optional backends (spconv, MinkowskiEngine, nuscenes-devkit) unimported until a
config asks for them (lm-evaluation-harness ``lm_eval/api/registry.py`` pattern). Unknown names fail
with a did-you-mean suggestion.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T] | None:
        """``@reg.register("name")`` on a class/function, or ``reg.register("name", "pkg.mod:Attr")``."""
        if target is not None:
            self._add(name, target)
            return None

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def _add(self, name: str, target: T | str) -> None:
        existing = self._entries.get(name)
        if existing is not None and existing is not target and not isinstance(existing, str):
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self._entries))}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def build(registry: Registry[Any], name: str, **kwargs: Any) -> Any:
    return registry.get(name)(**kwargs)
