"""Name → object registries (architectures, losses, penalties, datasets, extractors)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ganhpo.errors import UnknownNameError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(name: str, valid: list[str] | tuple[str, ...]) -> str | None:
    """The valid name closest to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


class Registry(Generic[T]):
    """A mapping from names to objects whose failed lookups list the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its argument under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``."""
        self.register(name)(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            hint = closest(name, self.names())
            did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean}; "
                f"choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
