"""Lazy attribute loading for the sub-packages (keeps ``import tflib.tl`` cheap)."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, table: dict[str, str]):
    """Return ``(__getattr__, __dir__)`` resolving ``name -> package.module.name`` on first use.

    ``table`` maps an exported name to the sub-module (relative, without the dot) that defines it.
    """

    def __getattr__(name: str):
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(table)

    return __getattr__, __dir__
