"""Each chapter's execution time, read from the book build's own report (issue 14, item 6; row 1).

This is a check of the build report, not a timing of a test: the numbers are the ones the build
recorded when it executed each notebook. Jupyter Book (myst-nb) executes through jupyter-cache,
which stores, for every executed notebook, ``{"execution_seconds": ...}`` in
``_build/.jupyter_cache``. The record used is the one that matches the notebook's *current* code
(``get_cached_project_nb``), so an older record of an edited chapter is never read. A chapter
whose cache record is missing (for instance a build made with execution off) falls back to the
``runtime (s)`` row of its reproducibility footer in the built HTML (time since the notebook first
imported tflib, so slightly less than the whole execution).

Budgets (COURSE.md checklist row 1): at most ``CHAPTER_BUDGET_S`` per chapter on 2 cores, and at
most ``BOOK_BUDGET_S`` for the whole book. The table and the sum are printed (through pytest's
capture) and written to ``_build/execution_times.md`` for the closing note.

Needs a built book: ``make test`` builds it first (tests/test_book.py runs before this file) and
sets ``COURSE_FULL_TEST=1``, under which a missing report fails; by hand without a build it skips.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from _toc import toc_files

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
CACHE = BUILD / ".jupyter_cache"
HTML = BUILD / "html"
CHAPTER_BUDGET_S = 240.0
BOOK_BUDGET_S = 20 * 60.0
FULL = os.environ.get("COURSE_FULL_TEST") == "1"


def executed_sources(root: Path = ROOT) -> list[Path]:
    """The book's executed sources, in toc order: every notebook of ``_toc.yml`` (and the root page
    when it is executed too, as the welcome page is for its workflow figure)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = []
    for entry in [toc["root"], *toc_files()]:
        path = root / entry
        if path.suffix == ".ipynb":
            out.append(path)
        elif path.with_suffix(".md").is_file() and "{code-cell}" in path.with_suffix(".md").read_text():
            out.append(path.with_suffix(".md"))
    return out


def cache_times(cache_dir: Path, sources: list[Path]) -> dict[Path, float]:
    """Seconds that jupyter-cache recorded for the current version of each source (when it has one)."""
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    wanted = {p.resolve(): p for p in sources}
    times = {}
    for record in cache.list_project_records():
        path = Path(record.uri).resolve()
        if path not in wanted:
            continue
        match = cache.get_cached_project_nb(record.pk)
        if match is not None and "execution_seconds" in (match.data or {}):
            times[wanted[path]] = float(match.data["execution_seconds"])
    return times


def footer_time(html_page: Path) -> float | None:
    """The ``runtime (s)`` row of the page's reproducibility footer, if the page has one."""
    from test_book import footer_tables

    if not html_page.is_file():
        return None
    tables = footer_tables(html_page.read_text(encoding="utf-8"))
    try:
        return float(tables[0]["runtime (s)"]) if tables else None
    except (KeyError, ValueError):
        return None


def report(root: Path = ROOT, cache_dir: Path = CACHE, html: Path = HTML) -> list[tuple[str, float | None, str]]:
    """``(source, seconds, where the number comes from)`` for every executed source."""
    sources = executed_sources(root)
    cached = cache_times(cache_dir, sources) if (cache_dir / "global.db").is_file() else {}
    rows = []
    for src in sources:
        name = src.relative_to(root).as_posix()
        if src in cached:
            rows.append((name, cached[src], "jupyter-cache"))
        elif (t := footer_time(html / src.relative_to(root).with_suffix(".html"))) is not None:
            rows.append((name, t, "footer"))
        else:
            rows.append((name, None, "no record"))
    return rows


def budget_problems(rows, chapter_s: float = CHAPTER_BUDGET_S, book_s: float = BOOK_BUDGET_S) -> list[str]:
    problems = [f"{name}: no execution time in the build report (was it executed?)"
                for name, t, _ in rows if t is None]
    problems += [f"{name}: {t:.0f} s, over the {chapter_s:.0f} s budget per chapter"
                 for name, t, _ in rows if t is not None and t > chapter_s]
    total = sum(t for _, t, _ in rows if t is not None)
    if total > book_s:
        problems.append(f"the whole book: {total:.0f} s, over the {book_s:.0f} s budget")
    return problems


def table(rows) -> str:
    width = max(len(name) for name, _, _ in rows)
    lines = [f"| {'chapter':<{width}} | seconds | source        |",
             f"|{'-' * (width + 2)}|--------:|---------------|"]
    lines += [f"| {name:<{width}} | {'-' if t is None else f'{t:.1f}':>7} | {src:<13} |" for name, t, src in rows]
    total = sum(t for _, t, _ in rows if t is not None)
    lines.append(f"| {'total':<{width}} | {total:>7.1f} |               |")
    return "\n".join(lines)


@pytest.mark.book
def test_every_chapter_runs_within_its_time_budget(capsys):
    have_build = (CACHE / "global.db").is_file() or (HTML / "index.html").is_file()
    if not have_build:
        if FULL:
            pytest.fail("no build report in _build (COURSE_FULL_TEST=1: `make test` builds the book first)")
        pytest.skip("no built book in _build; run `make test`, or `make book` first")
    rows = report()
    text = (f"Execution time per chapter (budget {CHAPTER_BUDGET_S:.0f} s each, "
            f"{BOOK_BUDGET_S:.0f} s in all):\n" + table(rows))
    (BUILD / "execution_times.md").write_text(text + "\n")
    with capsys.disabled():
        print("\n" + text)
    problems = budget_problems(rows)
    assert not problems, "\n".join(problems)


def test_report_reads_the_current_cache_record_and_flags_overruns(tmp_path):
    """A real jupyter-cache with one notebook cached at 300 s: read back, and over budget."""
    import nbformat
    from jupyter_cache import get_cache

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: nb.ipynb\n")
    (tmp_path / "intro.md").write_text("# prose only\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("1 + 1", execution_count=1)]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    cache = get_cache(str(tmp_path / "cache"))
    cache.add_nb_to_project(str(tmp_path / "nb.ipynb"))
    cache.cache_notebook_file(str(tmp_path / "nb.ipynb"), data={"execution_seconds": 300.0})

    import _toc
    old = _toc.ROOT
    _toc.ROOT = tmp_path
    try:
        rows = report(tmp_path, tmp_path / "cache", tmp_path / "html")
        assert rows == [("nb.ipynb", 300.0, "jupyter-cache")]
        assert budget_problems(rows) == ["nb.ipynb: 300 s, over the 240 s budget per chapter"]
        assert "| total    |   300.0 |" in table(rows)
        # once the code changes, the old record no longer counts
        nb.cells[0].source = "2 + 2"
        nbformat.write(nb, tmp_path / "nb.ipynb")
        rows = report(tmp_path, tmp_path / "cache", tmp_path / "html")
        assert rows == [("nb.ipynb", None, "no record")]
        assert budget_problems(rows) == ["nb.ipynb: no execution time in the build report (was it executed?)"]
    finally:
        _toc.ROOT = old


def test_whole_book_budget():
    rows = [(f"nb{i}.ipynb", 200.0, "jupyter-cache") for i in range(7)]
    assert budget_problems(rows) == ["the whole book: 1400 s, over the 1200 s budget"]
