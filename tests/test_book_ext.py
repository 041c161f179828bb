"""The book's small build extension (book/_ext/course_build.py) and the book configuration."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course_build = _load("course_build")


@pytest.mark.parametrize("value", ["Agg", "agg", "pdf"])
def test_non_inline_backend_is_removed(value):
    env = {"MPLBACKEND": value, "OTHER": "1"}
    assert course_build.strip_mplbackend(env) == value
    assert env == {"OTHER": "1"}


@pytest.mark.parametrize("env", [{}, {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}])
def test_inline_or_missing_backend_is_kept(env):
    before = dict(env)
    assert course_build.strip_mplbackend(env) is None
    assert env == before


def test_launch_group_is_removed_only_on_listed_pages():
    class App:
        class config:
            course_no_launch_pages = ["book/intro"]

    launch = {"type": "group", "icon": "fas fa-rocket", "buttons": []}
    other = {"type": "group", "icon": "fas fa-download", "buttons": []}
    ctx = {"header_buttons": [launch, other]}
    course_build._on_html_page_context(App, "book/intro", "page.html", ctx, None)
    assert ctx["header_buttons"] == [other]
    ctx = {"header_buttons": [launch, other]}
    course_build._on_html_page_context(App, "notebooks/01_corpus", "page.html", ctx, None)
    assert ctx["header_buttons"] == [launch, other]


def test_config_registers_the_local_extensions_and_bibliography():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "cache"
    assert cfg["execute"]["allow_errors"] is False
    assert set(cfg["sphinx"]["local_extensions"]) >= {"tflib_cache", "course_build"}
    for ext, folder in cfg["sphinx"]["local_extensions"].items():
        assert (ROOT / folder / f"{ext}.py").is_file()
    assert cfg["bibtex_bibfiles"] == ["references.bib"]


REQUIRED_KEYS = {
    "wolf2018scanpy", "hao2021seurat", "regev2017hca", "lopez2018scvi", "gayoso2022scvitools",
    "theodoris2023geneformer", "cui2024scgpt", "bergen2020scvelo", "lange2022cellrank",
    "lotfollahi2019scgen", "lotfollahi2022scarches", "weiler2024cellrank2",
    "kedzierska2025zeroshot", "ahlmanneltze2025linear", "wang2024regvelo",
    "kang2018multiplexed", "bastidasponce2019pancreas", "lamanno2018velocity",
    "norman2019combinatorial", "vaswani2017attention", "devlin2019bert",
}


def test_references_bib_has_the_course_keys():
    pybtex = pytest.importorskip("pybtex.database")
    bib = pybtex.parse_file(str(ROOT / "references.bib"))
    missing = REQUIRED_KEYS - set(bib.entries)
    assert not missing, f"references.bib lacks {sorted(missing)}"
