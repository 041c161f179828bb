"""The book builds offline with warnings as errors and contains executed outputs (checklist 1, 2).

Marked ``book``: it runs ``jupyter-book build . -n -W --keep-going`` exactly as ``make book``
does, which executes every notebook that is not cached yet (minutes on 2 cores). Skip it with
``pytest -m "not book"`` (``make unit``).

Each chapter page must show the reproducibility footer that its last cell prints
(:func:`tflib.utils.footer`). The check reads the footer's own table from the page: a block of
executed *output* (``class="output ..."``, not the code that calls ``footer``) holding the line
:data:`tflib.utils.FOOTER_TITLE` followed by one row per package, ``python``, ``seed`` (a
number) and ``runtime (s)``. The word "seed" alone is not enough: the code cells contain it
whether or not the footer ran. The footer must appear once, as that table, and not a second
time as a displayed dict. :func:`footer_tables` is tested on myst-nb-shaped HTML without a build
(``test_footer_tables_reads_only_a_printed_table``).
"""
from __future__ import annotations

import html as html_lib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _toc import toc_files

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
BUILD_TIMEOUT_S = 40 * 60

pytestmark = pytest.mark.book

from tflib.utils import FOOTER_PACKAGES, FOOTER_TITLE  # noqa: E402 - light: no heavy imports

#: Rows every footer table has, whatever the machine.
FOOTER_ROWS = (*FOOTER_PACKAGES, "python", "platform", "cpu cores", "seed", "runtime (s)")
#: A highlighted output block as Sphinx/myst-nb write it: the output's classes, then its <pre>.
_BLOCK = re.compile(r'<div class="([^"]*)"[^>]*>\s*<div class="highlight"><pre>(.*?)</pre>', re.S)
_ROW = re.compile(r"^\s+(\S.*?)\s{2,}(\S.*?)\s*$")


def footer_tables(page: str) -> list[dict[str, str]]:
    """Every footer table printed in an executed output of ``page`` (HTML), as ``{row: value}``."""
    tables = []
    for block in _BLOCK.finditer(page):
        if "output" not in block.group(1).split():                      # code cells are "highlight-ipython3"
            continue
        lines = html_lib.unescape(re.sub(r"<[^>]+>", "", block.group(2))).splitlines()
        for i, line in enumerate(lines):
            if line.strip() != FOOTER_TITLE:
                continue
            rows = {}
            for row in lines[i + 1:]:
                m = _ROW.match(row)
                if not m:
                    break
                rows[m.group(1)] = m.group(2)
            tables.append(rows)
    return tables


def footer_problems(page: str) -> list[str]:
    """What is wrong with the footer of a built chapter page (empty when it is right)."""
    tables = footer_tables(page)
    if len(tables) != 1:
        return [f"{len(tables)} footer tables in executed output (expected 1: the last cell's footer())"]
    rows = tables[0]
    problems = [f"row {r!r} missing" for r in FOOTER_ROWS if r not in rows]
    if not re.fullmatch(r"-?\d+", rows.get("seed", "")):
        problems.append(f"seed is {rows.get('seed')!r}, not a number (call footer(seed=SEED))")
    if re.search(r"['\"]runtime \(s\)['\"]\s*:", html_lib.unescape(re.sub(r"<[^>]+>", "", page))):
        problems.append("the footer is also displayed as a dict (footer() must return None; an execution "
                        "cache from before that change still holds it: `jupyter-book clean . --all`)")
    return problems


def _rendered_output(text: str, classes: str) -> str:
    """HTML of one cell output the way myst-nb renders it (Pygments with its ANSI lexer)."""
    from myst_nb.core.lexers import AnsiColorLexer
    from pygments import highlight
    from pygments.formatters import HtmlFormatter

    return (f'<div class="cell_output docutils container"><div class="{classes} notranslate">'
            f"{highlight(text, AnsiColorLexer(), HtmlFormatter())}</div></div>")


def test_footer_tables_reads_only_a_printed_table(capsys):
    import tflib.utils

    tflib.utils.footer(seed=7)
    printed = capsys.readouterr().out
    code = ('<div class="cell_input docutils container"><div class="highlight-ipython3 notranslate">'
            '<div class="highlight"><pre><span></span>tflib.utils.footer(seed=SEED)  # Reproducibility footer, seed\n'
            "</pre></div></div></div>")
    good = code + _rendered_output(printed, "output stream highlight-myst-ansi")
    assert footer_problems(good) == []
    assert footer_tables(good)[0]["seed"] == "7"
    # the code alone mentions "seed" and the title, but no footer ran: the check must fail
    assert footer_problems(code) == ["0 footer tables in executed output (expected 1: the last cell's footer())"]
    # a footer that also returns its dict shows it twice
    shown_twice = good + _rendered_output(repr({"seed": 7, "runtime (s)": 1.0}), "output text_plain highlight-myst-ansi")
    assert len(footer_problems(shown_twice)) == 1
    assert footer_problems(shown_twice)[0].startswith("the footer is also displayed as a dict")
    assert tflib.utils.footer(seed=7) is None


def _toc_notebooks() -> list[str]:
    return [f[: -len(".ipynb")] for f in toc_files() if f.endswith(".ipynb")]


@pytest.fixture(scope="module")
def build() -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(ROOT), "-n", "-W", "--keep-going"]
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # let the kernels use the inline backend (figures in pages)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)


def test_book_builds_without_warnings(build):
    if build.returncode != 0:
        log = build.stdout + build.stderr
        warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        pytest.fail(
            f"jupyter-book build -n -W --keep-going exited {build.returncode}.\n"
            + "\n".join(warnings[:40]) + "\n--- end of the build log ---\n" + log[-6000:]
            + "\nReproduce with `make book`; a failing notebook's traceback is in the log above "
            "and in _build/html/reports/."
        )
    assert (HTML / "index.html").is_file()


def test_welcome_page_shows_the_workflow_figure(build):
    assert build.returncode == 0, "the book build failed: see test_book_builds_without_warnings"
    page = (HTML / "book" / "intro.html").read_text(encoding="utf-8")
    img = re.search(r'<img[^>]*src="[^"]*_images/[^"]+\.png"[^>]*>', page)
    assert img, "the welcome page lost its workflow figure (tflib.pl.workflow_figure)"
    assert 'alt="Four panels' in img.group(0), "the workflow figure has no alt text"


@pytest.mark.parametrize("name", _toc_notebooks())
def test_notebook_page_has_executed_output(build, name):
    assert build.returncode == 0, "the book build failed: see test_book_builds_without_warnings"
    page = HTML / f"{name}.html"
    assert page.is_file(), f"{name}.ipynb is in _toc.yml but {page.relative_to(ROOT)} was not written"
    html = page.read_text(encoding="utf-8")
    assert 'class="cell_output' in html, (
        f"{page.relative_to(ROOT)} has no executed output: was the notebook executed? "
        "(execute_notebooks: cache in _config.yml)"
    )
    # the reproducibility footer's own table, printed by the last cell of every notebook
    problems = footer_problems(html)
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)
