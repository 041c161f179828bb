"""Every public AnnData verb of tflib.pp / tflib.tl / tflib.pl follows one interface (issue 10, section 3).

The rules (scanpy's conventions, see CONTRIBUTING.md):

- options (parameters with a default) are keyword-only; only the data objects and required
  inputs may be positional;
- an output key is called ``key_added``; old names (``key``, ``result_key``) survive only through
  :func:`tflib._compat.renamed_kwargs` for one release;
- ``copy`` and ``overwrite`` default to ``False`` (in place; never replace without being asked);
- the docstring is NumPy style, names the chapter using the verb, has a Returns section, and a
  verb that writes into the AnnData lists the keys it writes.

New verbs are picked up automatically: this test walks the packages' export tables.
"""
from __future__ import annotations

import importlib
import inspect
import re

import pytest

#: First-parameter names that make a public function an AnnData verb.
DATA_FIRST = {"adata", "reference", "query", "reference_model", "train"}
#: Parameter names that denote an output key in the old, inconsistent style.
OLD_OUTPUT_NAMES = {"key", "result_key"}
#: Where a verb writes, its docstring names at least one of these.
KEY_PATTERN = re.compile(r"(obs|obsm|obsp|uns|layers|varm|var)\[")


def _verbs():
    out = []
    for pkg in ("tflib.pp", "tflib.tl", "tflib.pl"):
        mod = importlib.import_module(pkg)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not inspect.isfunction(obj):
                continue
            params = list(inspect.signature(obj).parameters)
            if params and params[0] in DATA_FIRST:
                out.append(pytest.param(pkg, name, obj, id=f"{pkg}.{name}"))
    return out


VERBS = _verbs()


def test_the_walk_finds_the_verbs():
    names = {p.id for p in VERBS}
    assert {"tflib.pp.tokenize", "tflib.tl.embed", "tflib.tl.velocity", "tflib.tl.fates",
            "tflib.pl.fate_donuts"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize("pkg,name,func", VERBS)
def test_options_are_keyword_only(pkg, name, func):
    sig = inspect.signature(func)
    positional_options = [p.name for p in sig.parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                          and p.default is not inspect.Parameter.empty]
    assert not positional_options, (
        f"{pkg}.{name}: options {positional_options} can be passed by position; put them after '*'")


@pytest.mark.parametrize("pkg,name,func", [p for p in VERBS if p.values[0] != "tflib.pl"])
def test_output_keys_are_called_key_added(pkg, name, func):
    params = set(inspect.signature(func).parameters)
    old = sorted(params & OLD_OUTPUT_NAMES)
    assert not old, (f"{pkg}.{name} has parameter(s) {old}: call an output key 'key_added' (and an input "
                     "key by what it reads, e.g. 'tokens_key'); keep the old name with @renamed_kwargs")
    for old_name, new_name in getattr(func, "__renamed_kwargs__", {}).items():
        assert new_name in params and old_name not in params


@pytest.mark.parametrize("pkg,name,func", VERBS)
def test_copy_and_overwrite_default_to_false(pkg, name, func):
    params = inspect.signature(func).parameters
    for flag in ("copy", "overwrite"):
        if flag in params:
            assert params[flag].default is False, f"{pkg}.{name}: {flag} must default to False"
            assert params[flag].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("pkg,name,func", VERBS)
def test_docstring_names_chapter_returns_and_written_keys(pkg, name, func):
    doc = inspect.getdoc(func) or ""
    assert "Parameters\n----------" in doc, f"{pkg}.{name}: NumPy-style Parameters section missing"
    assert re.search(r"[Cc]hapters?\s+\d\d", doc), f"{pkg}.{name}: name the chapter(s) that use it"
    if pkg != "tflib.pl":
        assert "Returns\n-------" in doc, f"{pkg}.{name}: Returns section missing"
    params = inspect.signature(func).parameters
    if "key_added" in params or "copy" in params:
        assert KEY_PATTERN.search(doc), f"{pkg}.{name}: list every key it writes (obs[...], uns[...], ...)"
    if "copy" in params:
        assert "copy" in doc.split("Returns")[0], f"{pkg}.{name}: document what copy=True returns"


@pytest.mark.parametrize("pkg", ["tflib.pp", "tflib.tl", "tflib.pl", "tflib.datasets", "tflib.models",
                                 "tflib.stats", "tflib.train", "tflib.tokenize"])
def test_help_on_a_package_lists_every_public_name(pkg):
    """``help(tflib.tl)`` shows what the package offers, not only a pointer to CONTRIBUTING.md."""
    mod = importlib.import_module(pkg)
    doc = mod.__doc__
    assert doc.startswith(f"{pkg} -- ") and "Public names, by topic module" in doc
    listed = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", doc))
    assert set(mod.__all__) <= listed, sorted(set(mod.__all__) - listed)
    for module in set(mod._EXPORTS.values()):
        assert re.search(rf"^{module} -- \S", doc, re.M), f"{module} has no docstring line in {pkg}'s help"


@pytest.mark.parametrize("pkg", ["tflib.pp", "tflib.tl", "tflib.pl", "tflib.datasets", "tflib.models",
                                 "tflib.stats", "tflib.train", "tflib.tokenize", "tflib.widgets"])
def test_no_public_name_is_shadowed_by_its_module(pkg):
    """Importing ``pkg.mod`` sets ``pkg.mod`` to the module; an exported function called like its own
    module (``stats.pseudobulk`` in ``stats/pseudobulk.py``) then turned into that module."""
    mod = importlib.import_module(pkg)
    for name, module in mod._EXPORTS.items():
        importlib.import_module(f"{pkg}.{module}")
        assert getattr(mod, name) is getattr(importlib.import_module(f"{pkg}.{module}"), name), \
            f"{pkg}.{name} is shadowed by the module {pkg}.{module}; rename the module"
