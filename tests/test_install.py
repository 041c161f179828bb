"""The environment the course depends on: the install traps of COURSE.md section 4, as tests."""
from importlib import metadata

import pytest
from packaging.version import Version


def test_cellrank_2_was_installed():
    # pip silently falls back to CellRank 1.5.1 beside Jupyter Book 1 (pygpcca's jinja2 pin).
    import cellrank

    assert cellrank.__version__.startswith("2."), (
        f"CellRank {cellrank.__version__} is installed, the course needs CellRank 2: "
        "re-run `make setup` (it installs with an override of pygpcca's jinja2 pin)."
    )


def test_jinja2_is_new_enough_for_sphinx():
    assert Version(metadata.version("jinja2")) >= Version("3.1")


@pytest.mark.parametrize(
    "pkg, lower, upper",
    [
        ("numpy", "1.26", "2.3"),
        ("pynndescent", "0.5", "0.7"),
        ("jupyter-book", "1.0.4", "2"),
        ("scanpy", "1.11.5", None),
        ("scvelo", "0.3.4", None),
        ("scvi-tools", "1.4.2", None),
        ("torch", "2.2", None),
        ("transformers", "5.0", None),
    ],
)
def test_pinned_versions(pkg, lower, upper):
    v = Version(Version(metadata.version(pkg)).base_version)
    assert v >= Version(lower), f"{pkg} {v} < {lower}"
    if upper:
        assert v < Version(upper), f"{pkg} {v} >= {upper}"


def test_import_tflib_is_cheap():
    import subprocess
    import sys

    # Importing the top-level package must not drag in scvi-tools/torch (lazy sub-packages).
    code = "import sys, tflib; print(int(any(m in sys.modules for m in ('scvi', 'torch', 'cellrank'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
