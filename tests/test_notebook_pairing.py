"""Every chapter notebook is a clean, paired, well-formed notebook (teaching checklist 8, 9, 16).

For each ``notebooks/*.ipynb``:

a. it has a py:percent twin, and both hold the same cells (types and sources), compared
   through ``jupytext.read`` (never through timestamps);
b. it is committed without outputs or execution counts;
c. its last code cell calls ``footer(`` (the reproducibility footer);
d. it opens with learning objectives and has a "takeaways" section;
e. it is listed in ``_toc.yml`` (the book builds only listed pages).
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import nbformat
import pytest
from _toc import toc_files

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
TWIN_FMT = "py:percent"

SYNC_FIX = (
    "Edit the .py twin (the reviewed source), then run `make sync-notebooks` "
    "(or `.venv/bin/jupytext --sync {py}`); if you edited the .ipynb in Jupyter, "
    "`.venv/bin/jupytext --sync {ipynb}` updates the .py instead."
)
CLEAR_FIX = (
    "Clear them before committing (Jupyter: 'Clear All Outputs', then save), or run "
    "`.venv/bin/python -c \"import nbformat as n; p='{ipynb}'; nb=n.read(p, 4); "
    "[c.update(outputs=[], execution_count=None) for c in nb.cells if c.cell_type == 'code']; "
    "n.write(nb, p)\"`."
)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _norm(source: str) -> str:
    """Ignore trailing whitespace and surrounding blank lines only."""
    return "\n".join(line.rstrip() for line in source.strip("\n").splitlines())


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, _norm(c.source)) for c in nb.cells]


def _ids(paths):
    return [p.name for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {_rel(NB_DIR)}/"


def test_every_py_twin_has_an_ipynb():
    orphans = [
        p for p in sorted(NB_DIR.glob("*.py"))
        if not p.with_suffix(".ipynb").exists() and not p.name.startswith("_")
    ]
    assert not orphans, (
        f"{[_rel(p) for p in orphans]} have no .ipynb twin. Create it with "
        "`make sync-notebooks` (or `.venv/bin/jupytext --to ipynb notebooks/NAME.py`)."
    )


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_py_twin_exists_and_is_in_sync(ipynb: Path):
    py = ipynb.with_suffix(".py")
    fix = SYNC_FIX.format(py=_rel(py), ipynb=_rel(ipynb))
    assert py.exists(), (
        f"{_rel(ipynb)} has no py:percent twin {_rel(py)}. Pair it: "
        f"`.venv/bin/jupytext --set-formats ipynb,py:percent {_rel(ipynb)}`."
    )
    nb_cells = _cells(nbformat.read(ipynb, as_version=4))
    py_cells = _cells(jupytext.read(py, fmt=TWIN_FMT))
    if nb_cells == py_cells:
        return
    if len(nb_cells) != len(py_cells):
        detail = f"{len(nb_cells)} cells in the .ipynb vs {len(py_cells)} in the .py"
    else:
        i = next(k for k, (a, b) in enumerate(zip(nb_cells, py_cells)) if a != b)
        (ta, sa), (tb, sb) = nb_cells[i], py_cells[i]
        diff = "\n".join(difflib.unified_diff(
            sa.splitlines(), sb.splitlines(), "ipynb", "py", lineterm="", n=1))
        detail = f"cell {i} differs ({ta} vs {tb}):\n{diff[:1500]}"
    pytest.fail(f"{_rel(ipynb)} and {_rel(py)} are out of sync: {detail}\n{fix}")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs(ipynb: Path):
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{_rel(ipynb)} carries outputs or execution counts in cells {dirty}. "
        + CLEAR_FIX.format(ipynb=_rel(ipynb))
    )


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_last_code_cell_calls_footer(ipynb: Path):
    code = [c for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code"]
    assert code, f"{_rel(ipynb)} has no code cells"
    assert "footer(" in code[-1].source, (
        f"The last code cell of {_rel(ipynb)} must call the reproducibility footer, e.g. "
        "`tflib.utils.footer(seed=SEED)` (edit the .py twin, then `make sync-notebooks`). "
        f"It is:\n{code[-1].source[:300]}"
    )


_TAKEAWAYS = re.compile(r"^\s*(#{1,6}\s|`{3,}\s*\{|:{3,}\s*\{|\*\*).*takeaway", re.I | re.M)


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_objectives_on_top_and_takeaways_section(ipynb: Path):
    cells = nbformat.read(ipynb, as_version=4).cells
    markdown = [c for c in cells if c.cell_type == "markdown"]
    assert markdown, f"{_rel(ipynb)} has no markdown cells"
    # the markdown block before the first code cell, or the first markdown cell if the
    # notebook starts with code (e.g. a guarded install cell)
    leading = []
    for c in cells:
        if c.cell_type == "code":
            break
        if c.cell_type == "markdown":
            leading.append(c.source)
    top = "\n".join(leading) or markdown[0].source
    assert re.search(r"objectives", top, re.I), (
        f"{_rel(ipynb)} must open with its learning objectives: a first markdown cell with an "
        "'Objectives' / 'Learning objectives' list (edit the .py twin, then `make sync-notebooks`)."
    )
    assert any(_TAKEAWAYS.search(c.source) for c in markdown), (
        f"{_rel(ipynb)} needs a 'Key takeaways' section near the end (a markdown heading such "
        "as `## Key takeaways`), then `make sync-notebooks`."
    )


def _toc_files() -> set[str]:
    return {re.sub(r"\.(ipynb|md)$", "", f) for f in toc_files()}


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_listed_in_toc(ipynb: Path):
    name = _rel(ipynb.with_suffix(""))
    assert name in _toc_files(), (
        f"{_rel(ipynb)} is not in _toc.yml, so the book skips it (only_build_toc_files). "
        f"Add `- file: {_rel(ipynb)}` to the right part (or uncomment its planned line)."
    )
