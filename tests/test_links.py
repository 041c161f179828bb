"""External links and the book's deployment settings, checked offline (issue 14, item 4; rows 18, 19).

- Every http(s) link in the book's sources (prose pages, dataset cards, every notebook cell, the
  bibliography, ``_config.yml``) must be a well-formed URL. Nothing is fetched: whether a link is
  *alive* is ``make linkcheck``'s job, which needs the network and which CI does not run.
  Internal references are checked by the build itself (``-n -W``) and, in a browser, by
  tests/test_browser.py.
- The deployment settings (``repository.url``, ``repository.branch``,
  ``launch_buttons.jupyterhub_url`` in ``_config.yml``) are real URLs, not placeholders, and the
  notebooks' install cell names the same repository (``make set-repository`` keeps them together).
- In the built book, every notebook page's Colab, Binder and (when set) JupyterHub buttons open
  that page's own paired ``notebooks/NN_*.ipynb`` in the configured repository and branch.
"""
from __future__ import annotations

import html as html_lib
import importlib.util
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest
from _toc import toc_files

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
FULL = os.environ.get("COURSE_FULL_TEST") == "1"

_FIND = re.compile(r"https?://[^\s<>\"'`\]\\]+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}\.)+[a-z]{{2,63}}")
_BAD_CHARS = set(" <>\"{}|\\^`")
PLACEHOLDER_HOSTS = re.compile(r"(^|\.)(example\.(org|com|net)|localhost)$")


def _load_set_repository():
    spec = importlib.util.spec_from_file_location("set_repository", ROOT / ".ci" / "set_repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


set_repository = _load_set_repository()


def find_urls(text: str) -> list[str]:
    """http(s) URLs in prose or code, without the punctuation that ends a sentence or a link."""
    urls = []
    for m in _FIND.finditer(text):
        url = m.group(0).rstrip(".,;:!?*_")
        while url.endswith(")") and url.count("(") < url.count(")"):   # [text](url) or (see url)
            url = url[:-1].rstrip(".,;:!?*_")
        urls.append(url)
    return urls


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a well-formed http(s) URL, or None."""
    if bad := sorted(set(url) & _BAD_CHARS):
        return f"illegal character(s) {bad}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r}"
    host = parts.hostname or ""
    if not _HOST.fullmatch(host):
        return f"host {host!r} is not a domain name"
    try:
        parts.port
    except ValueError:
        return "bad port"
    if re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return "bad percent-encoding"
    if url.count("(") != url.count(")"):
        return "unbalanced parentheses"
    return None


def book_sources() -> dict[str, str]:
    """``{path: text}`` of every source the book is built from (notebook cells joined)."""
    out = {}
    for path in [*sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "data").glob("*.md")),
                 ROOT / "references.bib", ROOT / "_config.yml", ROOT / "_toc.yml"]:
        if path.is_file():
            out[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        out[nb.relative_to(ROOT).as_posix()] = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    return out


def test_every_external_link_is_well_formed():
    problems, n = [], 0
    for name, text in book_sources().items():
        for url in find_urls(text):
            n += 1
            if why := url_problem(url):
                problems.append(f"{name}: {url} ({why})")
    assert n > 10, "the link scan found almost nothing: is find_urls broken?"
    assert not problems, "malformed links:\n" + "\n".join(problems)


def test_url_checks_can_fail():
    text = ("See [the docs](https://docs.example.org/a_(b)/c). Also https://x.org/p?q=1, and "
            "(https://y.org/z) and <https://z.org/>.")
    assert find_urls(text) == ["https://docs.example.org/a_(b)/c", "https://x.org/p?q=1",
                               "https://y.org/z", "https://z.org/"]
    assert url_problem("https://github.com/o/n/blob/main/notebooks/01.ipynb") is None
    assert url_problem("https://github.com/transcriptformers/course@main") is None
    assert url_problem("https://exa mple.org") == "illegal character(s) [' ']"
    assert url_problem("https://localhost/x") == "host 'localhost' is not a domain name"
    assert url_problem("https://github..com/x") == "host 'github..com' is not a domain name"
    assert url_problem("https://a.org:99999/") == "bad port"
    assert url_problem("https://a.org/%zz") == "bad percent-encoding"
    assert url_problem("https://a.org/(x") == "unbalanced parentheses"


def _settings() -> tuple[str, str, str]:
    config = (ROOT / "_config.yml").read_text()
    return tuple(set_repository.read_setting(config, k) for k in ("url", "branch", "jupyterhub_url"))


def test_deployment_settings_are_real_urls():
    url, branch, hub = _settings()
    for name, value in (("repository.url", url), ("launch_buttons.jupyterhub_url", hub)):
        if name.endswith("jupyterhub_url") and value == "":
            continue                                            # no hub: no hub button
        assert url_problem(value) is None, f"{name}: {value} ({url_problem(value)})"
        host = urllib.parse.urlsplit(value).hostname
        assert not PLACEHOLDER_HOSTS.search(host), f"{name} is a placeholder: {value}"
    assert re.fullmatch(r"[A-Za-z0-9._/-]+", branch), f"repository.branch {branch!r}"
    assert "PLACEHOLDER" not in (ROOT / "_config.yml").read_text()


def test_notebook_install_cells_name_the_configured_repository():
    url, branch, _ = _settings()
    spec = set_repository.install_spec(url, branch)
    wrong = []
    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        for other in re.findall(r"git\+https?://[^\s\"']+", nb.read_text(encoding="utf-8")):
            if other != spec:
                wrong.append(f"{nb.name}: {other}")
    assert not wrong, (f"_config.yml's repository is {spec}, but notebooks install from elsewhere "
                       "(`make set-repository` rewrites both):\n" + "\n".join(wrong))


def test_set_repository_rewrites_config_and_notebooks(tmp_path):
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "notebooks").mkdir()
    url, branch, _ = _settings()
    cell = f'# %pip install -q "tflib @ {set_repository.install_spec(url, branch)}"\n'
    (tmp_path / "notebooks" / "01_x.py").write_text(cell)
    (tmp_path / "notebooks" / "01_x.ipynb").write_text(json.dumps({"cells": [{"source": [cell]}]}))
    changed = set_repository.configure(tmp_path, "https://gitlab.com/me/fork.git", "dev", "https://hub.uni.edu/")
    assert changed == ["_config.yml", "notebooks/01_x.ipynb", "notebooks/01_x.py"]
    config = (tmp_path / "_config.yml").read_text()
    assert [set_repository.read_setting(config, k) for k in ("url", "branch", "jupyterhub_url")] == [
        "https://gitlab.com/me/fork", "dev", "https://hub.uni.edu"]
    assert "git+https://gitlab.com/me/fork@dev" in (tmp_path / "notebooks" / "01_x.py").read_text()
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load(config)                                 # still valid YAML, comments kept
    assert cfg["repository"]["url"] == "https://gitlab.com/me/fork"
    assert (ROOT / "_config.yml").read_text().count("#") == config.count("#")
    assert set_repository.configure(tmp_path, "https://gitlab.com/me/fork", "dev", None) == []
    set_repository.configure(tmp_path, "https://gitlab.com/me/fork", None, "")
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["launch_buttons"]["jupyterhub_url"] == ""
    with pytest.raises(SystemExit, match="not a well-formed"):
        set_repository.configure(tmp_path, "github.com/no-scheme", None, None)


def _launch_links(page: str) -> list[str]:
    hrefs = [html_lib.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]
    return [h for h in hrefs if "colab.research.google.com/" in h or "/v2/gh/" in h or "git-pull?" in h]


@pytest.mark.book
def test_launch_buttons_open_the_paired_notebook():
    if not (HTML / "index.html").is_file():
        if FULL:
            pytest.fail("no built book in _build/html (COURSE_FULL_TEST=1: `make test` builds it first)")
        pytest.skip("no built book in _build; run `make test`, or `make book` first")
    url, branch, hub = _settings()
    owner_name = urllib.parse.urlsplit(url).path.strip("/")
    problems = []
    for entry in toc_files():
        if not entry.endswith(".ipynb"):
            continue
        page = HTML / entry.replace(".ipynb", ".html")
        if not page.is_file():
            problems.append(f"{entry}: not built")
            continue
        links = _launch_links(page.read_text(encoding="utf-8"))
        expected = {
            "Colab": f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/{entry}",
            "Binder": f"/v2/gh/{owner_name}/{branch}?urlpath=lab/tree/{entry}",
        }
        if hub:
            expected["JupyterHub"] = f"{hub}/hub/user-redirect/git-pull?repo={urllib.parse.quote(url, safe='/')}"
        for button, want in expected.items():
            if not any(want in link for link in links):
                problems.append(f"{entry}: no {button} button opening {want} (links: {links})")
        if hub and not any(link.endswith(f"{entry}&branch={branch}") or f"{entry}&" in link
                           for link in links if "git-pull?" in link):
            problems.append(f"{entry}: the JupyterHub button does not open {entry}")
        if not hub and any("git-pull?" in link for link in links):
            problems.append(f"{entry}: a JupyterHub button although jupyterhub_url is empty")
        assert (ROOT / entry).is_file()
    assert not problems, ("launch buttons do not match _config.yml (rebuild after changing it):\n"
                          + "\n".join(problems))


def _readme_command(label: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"\*\*{re.escape(label)}\*\*[^|]*\|\s*`([^`]+)`", readme)
    assert m, f"the README's command table has no row {label!r}"
    return m.group(1)


def test_ci_and_the_hosted_workflow_run_the_readme_commands():
    build, test = _readme_command("Build the executed book"), _readme_command("Run every test")
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert commands == [test], f".ci/run must run exactly the README's test command {test!r}: {commands}"
    workflow = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    for command in (build, test):
        assert re.search(rf"run: {re.escape(command)}(\s|$)", workflow), f"book.yml does not run {command!r}"
    assert re.search(r"upload-pages-artifact@\S+\s+with:\s+path: _build/html", workflow)
    assert "python-version: \"3.11\"" in workflow
