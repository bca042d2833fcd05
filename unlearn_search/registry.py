"""A name-keyed registry, the one mechanism behind datasets, models, attacks and unlearning methods.

Modelled on timm's ``@register_model``: each family file registers its members under a short name, and everything
else (CLI choices, MLproject entry points, test parametrisation) is derived from the registry, so adding a member
is one new file and one import line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; unknown names raise `UsageError` listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` stores the decorated object under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; valid: {self.valid()}") from None

    def valid(self) -> str:
        """The valid names, as an error message lists them."""
        return ", ".join(self.names())

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
