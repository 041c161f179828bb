"""The book builds offline with warnings as errors and contains executed outputs (checklist 1, 2).

Marked ``book``: it runs ``jupyter-book build . -n -W --keep-going`` exactly as ``make book``
does, which executes every notebook that is not cached yet (minutes on 2 cores). Skip it with
``pytest -m "not book"`` (``make unit``).
"""
from __future__ import annotations

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
    # the reproducibility footer is printed by the last cell of every notebook
    assert "seed" in html.lower()
