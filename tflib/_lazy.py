"""Lazy attribute loading for the sub-packages (keeps ``import tflib.tl`` cheap)."""
from __future__ import annotations

import importlib
from pathlib import Path


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


def _first_doc_line(path: Path) -> str:
    """The first line of a module's docstring, read from the file (the module is not imported)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    for quote in ('"""', "'''"):
        start = text.find(quote)
        if start != -1 and not text[:start].strip().replace("from __future__ import annotations", ""):
            return text[start + 3:].split("\n", 1)[0].strip().rstrip(quote).strip()
    return ""


def package_doc(package_file: str, summary: str, table: dict[str, str]) -> str:
    """A package docstring that lists every exported name under its topic module.

    ``help(tflib.tl)`` then shows what the package offers, grouped by topic, each topic with the
    first line of its module's docstring. The modules are read as text, not imported, so the
    package stays cheap to import; the list cannot drift from ``table`` (it is built from it).
    """
    folder = Path(package_file).parent
    by_module: dict[str, list[str]] = {}
    for name, module in table.items():
        by_module.setdefault(module, []).append(name)
    lines = [summary, "", "Public names, by topic module (each loaded on first use):", ""]
    for module, names in by_module.items():
        head = _first_doc_line(folder / f"{module}.py") or _first_doc_line(folder / module / "__init__.py")
        lines.append(f"{module}" + (f" -- {head}" if head else ""))
        lines.append("    " + ", ".join(names))
    lines += ["", "Conventions (scanpy's): see CONTRIBUTING.md."]
    return "\n".join(lines)
