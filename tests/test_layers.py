"""The import layers of tflib: dependencies point downwards, there are no cycles, imports stay light.

The graph is read from the source with ``ast`` (nothing is imported for it). Every ``import``
counts, including those inside functions and methods: deferring an import hides a cycle from
the interpreter, it does not remove the dependency. Only imports under ``if TYPE_CHECKING:``
(type hints, never executed) are left out of the cycle checks; they still count for the layer
rules. ``from tflib.models import X`` is resolved through the package's lazy ``_EXPORTS``
table to the module that defines ``X``.

Layers (issue 10, section 5): ``models`` never imports ``train``, ``tl``, ``pp`` or ``pl``;
``tokenize`` imports none of ``models``, ``train``, ``tl``, ``pp``, ``pl``; ``datasets`` none of
``models``, ``train``, ``tl``; ``stats`` neither ``tl`` nor ``train``.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tflib"

FORBIDDEN = {
    "models": {"train", "tl", "pp", "pl"},
    "tokenize": {"models", "train", "tl", "pp", "pl"},
    "datasets": {"models", "train", "tl"},
    "stats": {"tl", "train"},
}
HEAVY = ("scanpy", "torch", "scvi", "scvelo", "cellrank")


# ---- the graph -----------------------------------------------------------------------------------
def _module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of tflib (packages by their ``__init__``)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _subpackage(name: str) -> str:
    """``tflib.models.hf`` -> ``models``; ``tflib.utils`` -> ``utils``; ``tflib`` -> ``tflib``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _lazy_table(package: str) -> dict[str, str]:
    """The ``_EXPORTS`` dict literal of a package ``__init__`` (name -> defining module)."""
    tree = ast.parse(MODULES[package].read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and isinstance(node.value, ast.Dict):
            return {k.value: f"{package}.{v.value}" for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    return {}


def _type_checking_nodes(tree) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` blocks."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    found.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return found


def _resolve(target: str, name: str | None) -> str | None:
    """The tflib module that ``from target import name`` (or ``import target``) depends on."""
    if not target.startswith("tflib") or target.split(".")[0] != "tflib":
        return None
    if name is not None and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"                                   # from tflib.models import hf
    if target in MODULES:
        if name is not None and _is_package(target):
            return _lazy_table(target).get(name, target)            # a lazily exported name
        return target
    while target and target not in MODULES:                        # import tflib.x.y of a missing module
        target = target.rpartition(".")[0]
    return target or None


def import_edges():
    """``[(importer, imported, path, line, typing_only)]`` over every import in tflib."""
    edges = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = _type_checking_nodes(tree)
        package = mod if _is_package(mod) else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                targets = [(target, a.name) for a in node.names]
            else:
                continue
            for target, name in targets:
                dep = _resolve(target, name)
                if dep is not None and dep != mod:
                    edges.append((mod, dep, path.relative_to(ROOT), node.lineno, id(node) in typing_only))
    return edges


EDGES = import_edges()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _explain(component, key) -> str:
    """The import statements that close a cycle, as ``file:line a -> b``."""
    members = set(component)
    lines = sorted({f"{p}:{line} ({a} -> {b})" for a, b, p, line, typing in EDGES
                    if not typing and key(a) in members and key(b) in members and key(a) != key(b)})
    return " <-> ".join(component) + "\n      " + "\n      ".join(lines)


# ---- (a) static checks ---------------------------------------------------------------------------
def test_the_graph_sees_relative_deferred_and_lazy_imports():
    """The checks below can only fail if the graph holds these edges; make sure it does."""
    pairs = {(a, b) for a, b, *_ in EDGES}
    assert ("tflib.models.hf", "tflib.models.blocks") in pairs or ("tflib.models.hf", "tflib.models.transformer") in pairs
    assert ("tflib.train.pretrain", "tflib.train.data") in pairs                 # relative: from .data import
    assert ("tflib.train.pretrain", "tflib.models.transformer") in pairs         # lazy: from tflib.models import X
    assert ("tflib.train.checkpoints", "tflib.models.transformer") in pairs    # inside a function, lazy
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_depend_downwards_only():
    bad = sorted({f"{p}:{line}: {a} imports {b}" for a, b, p, line, _ in EDGES
                  if _subpackage(b) in FORBIDDEN.get(_subpackage(a), ())})
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)


def test_no_import_cycle_between_subpackages():
    graph = defaultdict(set)
    for a, b, _, _, typing in EDGES:
        if not typing and _subpackage(a) != _subpackage(b):
            graph[_subpackage(a)].add(_subpackage(b))
    found = _cycles(graph)
    assert not found, "import cycles between subpackages:\n  " + "\n  ".join(_explain(c, _subpackage) for c in found)


def test_no_import_cycle_inside_a_subpackage():
    graph = defaultdict(set)
    for a, b, _, _, typing in EDGES:
        if not typing and _subpackage(a) == _subpackage(b):
            graph[a].add(b)
    found = _cycles(graph)
    assert not found, "import cycles between modules:\n  " + "\n  ".join(_explain(c, lambda m: m) for c in found)


# ---- tflib's own namespace -----------------------------------------------------------------------
def test_dir_tflib_lists_only_real_subpackages():
    import tflib

    listed = {n for n in dir(tflib) if not n.startswith("_") and n not in {"annotations", "importlib"}}
    on_disk = {_subpackage(m) for m in MODULES if m != "tflib" and not _subpackage(m).startswith("_")}
    missing = sorted(n for n in listed if n not in on_disk)
    assert not missing, f"dir(tflib) lists {missing}, which do not exist"
    assert "widgets" in listed                                       # issue 14: it exists now
    for name in listed:
        assert getattr(tflib, name) is not None                      # each listed name loads
    with pytest.raises(AttributeError, match="no attribute 'gadgets'"):
        tflib.gadgets


# ---- (b) light imports, (c) every module imports in a fresh interpreter ----------------------------
def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.parametrize("statement", ["import tflib", "import tflib.tokenize",
                                       "import tflib.tokenize as t; [getattr(t, n) for n in t.__all__]"])
def test_light_imports_load_no_heavy_library(statement):
    out = _fresh(f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`{statement}` loads {loaded}"


def test_every_module_imports_cleanly():
    names = sorted(MODULES)
    code = (
        "import importlib, json, traceback\n"
        f"failed = {{}}\nfor name in {names!r}:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except BaseException:\n        failed[name] = traceback.format_exc(limit=-3)\n"
        "print(json.dumps(failed))\n"
    )
    out = _fresh(code)
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert not failed, "modules that fail to import:\n" + "\n".join(f"{k}:\n{v}" for k, v in failed.items())


# ---- split modules keep their old import paths, and the book shows real code ----------------------
OLD_PATHS = {
    "tflib.models.transformer": ["ACTIVATIONS", "TranscriptformerConfig", "TranscriptformerOutput", "Packing",
                                 "Embeddings", "SelfAttention", "MLP", "Block", "Encoder", "MLMHead",
                                 "ClassificationHead", "Transcriptformer"],
    "tflib.train.finetuning": ["FinetuneConfig", "CellModel", "FinetunedModel", "finetune", "MODES"],
    "tflib.train.pretrain": ["PretrainConfig", "PretrainResult", "run_pretraining", "lr_at", "step_seed",
                             "save_checkpoint", "load_checkpoint", "latest_checkpoint", "RESUME_KEYS", "main"],
}


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_split_modules_keep_their_public_names(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in OLD_PATHS[module] if not hasattr(mod, n)]
    assert not missing, f"{module} no longer provides {missing}"
    package = importlib.import_module(module.rpartition(".")[0])
    for name in package.__all__:                                      # every lazy export resolves
        assert getattr(package, name) is not None, name


def _literalincludes():
    """``(page, line, target file, pyobject)`` for every ``literalinclude`` with ``:pyobject:``."""
    pages = sorted((ROOT / "notebooks").glob("*.py")) + sorted((ROOT / "book").glob("*.md"))
    found = []
    for page in pages:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if "{literalinclude}" in line:
                target = (page.parent / line.split("}", 1)[1].strip()).resolve()
                for nxt in lines[i + 1:i + 6]:
                    if ":pyobject:" in nxt:
                        found.append((page.relative_to(ROOT), i + 1, target, nxt.split(":pyobject:")[1].strip()))
                        break
    return found


def test_literalincludes_point_at_the_code_they_show():
    includes = _literalincludes()
    assert any(t.name == "blocks.py" for _, _, t, _ in includes)    # chapter 05 shows the real blocks
    bad = []
    for page, line, target, obj in includes:
        if not target.is_file():
            bad.append(f"{page}:{line}: {target} does not exist")
            continue
        tree = ast.parse(target.read_text())
        names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
        if obj.split(".")[0] not in names:
            bad.append(f"{page}:{line}: {target.relative_to(ROOT)} defines no {obj}")
    assert not bad, "\n".join(bad)
