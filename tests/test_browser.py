"""Every built page, opened in a real browser (issue 14, item 5; checklist row 19).

Headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it when it is missing) driven by
Playwright's Python client, which talks to the system browser and downloads nothing. The pages
are served from ``_build/html`` on a loopback port, the way a static host would serve them.

A page fails when it shows
- a broken image (an ``<img>`` of the book that the browser cannot decode: a missing file, an
  empty or corrupt figure, a widget's static fallback that did not render);
- a broken internal link (an ``href`` into the book whose file is missing, or whose
  ``#fragment`` names no element of the target page);
- a JavaScript error (an uncaught exception, or a ``console.error`` of the page's own scripts).

What is expected and not an error: CI has no network, so every request that leaves the book
(MathJax and the widget manager from their CDNs, fonts, analytics-free launch links) is aborted
by the test itself before it reaches the network, with or without a network, so the result is the
same everywhere. The console lines Chromium writes for those aborted requests ("Failed to load
resource") are dropped; an aborted request to the book's own host is still an error.

Each page's first screen (1280 x 800) is saved to ``_build/screenshots/<page>.png`` so that a
reviewer can look at the book without opening a browser.

The test needs a built book. ``make test`` (the README's test command) builds it first
(``tests/test_book.py`` runs before this file) and sets ``COURSE_FULL_TEST=1``, under which a
missing book or a missing Chromium is a failure. Run by hand without a build, the test skips and
says why. ``test_checker_finds_each_kind_of_problem`` proves the checker can fail, on a tiny
site written by the test.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest
from _toc import toc_files

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
FULL = os.environ.get("COURSE_FULL_TEST") == "1"
VIEWPORT = {"width": 1280, "height": 800}
#: Page loads are local; a page that takes longer than this is itself a problem.
LOAD_TIMEOUT_MS = 60_000
#: Folders of the build that hold no pages of their own.
NOT_PAGES = ("_static", "_sources", "_images", "jupyter_execute", "reports")



def _chromium() -> str | None:
    for name in (os.environ.get("COURSE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _need(condition: bool, reason: str) -> None:
    """Skip outside the full test command, fail inside it."""
    if condition:
        return
    if FULL:
        pytest.fail(reason + " (COURSE_FULL_TEST=1: `make test` must provide it)")
    pytest.skip(reason + "; run `make test`, or `make book` first")


def built_pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html")
                  if not any(part in NOT_PAGES for part in p.relative_to(html).parts))


#: Console/JavaScript errors that every page of this theme stack shows and that break nothing,
#: each with the reason it is tolerated. Anything else fails the test.
KNOWN_ERRORS = {
    # sphinx-thebe's inline config script is written twice into every page (Jupyter Book 1
    # registers the extension twice); the second copy re-declares a `const` and throws. Thebe is
    # off in this book (launch_buttons.thebe: false), so nothing depends on that script. To fix at
    # the source: drop the duplicate from `script_files` in book/_ext/course_build.py.
    r"Identifier 'THEBE_JS_URL' has already been declared":
        "duplicate sphinx-thebe config script (thebe is off)",
    # pydata-sphinx-theme logs this on a visitor's first page, before any light/dark choice is
    # stored in the browser; it then uses "auto", which is what the book wants.
    r"Got invalid theme mode: \. Resetting to auto":
        "pydata-sphinx-theme on a first visit (no stored light/dark choice)",
}


def known_error(text: str) -> str | None:
    """The reason ``text`` is a tolerated console/JavaScript error, or None."""
    return next((why for pattern, why in KNOWN_ERRORS.items() if re.search(pattern, text)), None)


def redirect_target(page: Path) -> str | None:
    """The URL of a ``<meta http-equiv="Refresh">`` page (Jupyter Book's root index.html)."""
    m = re.search(r'http-equiv="Refresh"\s+content="\d+;\s*url=([^"]+)"',
                  page.read_text(encoding="utf-8", errors="replace"), re.I)
    return m.group(1) if m else None


@functools.lru_cache(maxsize=None)
def _ids(page: Path) -> frozenset[str]:
    text = page.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r'\b(?:id|name)="([^"]+)"', text))


def link_problem(html: Path, page: Path, href: str, origin: str) -> str | None:
    """Why ``href`` on ``page`` is a broken internal link, or None when it is fine or external."""
    url = urllib.parse.urlsplit(urllib.parse.urljoin(origin + "/" + page.relative_to(html).as_posix(), href))
    if url.scheme not in ("http", "https") or f"{url.scheme}://{url.netloc}" != origin:
        return None                                            # mailto:, javascript:, other hosts
    path = urllib.parse.unquote(url.path).lstrip("/")
    target = html / path
    if path == "" or target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"broken link {href!r}: {target.relative_to(html)} does not exist"
    fragment = urllib.parse.unquote(url.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids(target):
        return f"broken link {href!r}: no element with id {fragment!r} in {target.relative_to(html)}"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


class Site:
    """``html`` served on a loopback port to a headless Chromium that can reach nothing else."""

    def __init__(self, html: Path, browser):
        handler = functools.partial(_QuietHandler, directory=str(html))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.html = html
        self.tolerated: dict[str, int] = {}                    # KNOWN_ERRORS reason -> count
        self.browser = browser

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check(self, page_path: Path, screenshot: Path | None = None) -> list[str]:
        """Open one page; return its problems (empty when it is fine)."""
        problems: list[str] = []
        if (target := redirect_target(page_path)) is not None:      # nothing to render
            why = link_problem(self.html, page_path, target, self.origin)
            return [why] if why else []
        external_failed: set[str] = set()
        context = self.browser.new_context(viewport=VIEWPORT)

        def route(r):
            if r.request.url.startswith(self.origin) or r.request.url.startswith("data:"):
                r.continue_()
            else:                                              # offline by design: see the docstring
                external_failed.add(r.request.url)
                r.abort("internetdisconnected")

        context.route("**/*", route)
        page = context.new_page()
        def error(text):
            if (why := known_error(text)) is not None:
                self.tolerated[why] = self.tolerated.get(why, 0) + 1
            else:
                problems.append(text)

        page.on("pageerror", lambda exc: error(f"JavaScript error: {exc}"))

        def console(msg):
            if msg.type != "error":
                return
            where = (msg.location or {}).get("url", "")
            if msg.text.startswith("Failed to load resource") and (where in external_failed
                                                                    or not where.startswith(self.origin)):
                return                                         # an aborted CDN request: expected
            error(f"console error: {msg.text} ({where})")

        page.on("console", console)
        page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}")
                if req.url.startswith(self.origin) else None)
        page.on("response", lambda resp: problems.append(f"HTTP {resp.status}: {resp.url}")
                if resp.url.startswith(self.origin) and resp.status >= 400 else None)
        url = f"{self.origin}/{page_path.relative_to(self.html).as_posix()}"
        from playwright.sync_api import Error as PlaywrightError

        try:
            try:
                page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
            except PlaywrightError as exc:                     # a timeout or a crash of this page
                return problems + [f"did not load: {str(exc).splitlines()[0]}"]
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
            # Every image of the book, lazy ones included, must decode.
            broken = page.evaluate(
                """async (origin) => {
                    const imgs = Array.from(document.images).filter(
                        i => i.src.startsWith(origin) || i.src.startsWith('data:'));
                    const ok = await Promise.all(imgs.map(i => {
                        i.loading = 'eager';
                        return i.decode().then(() => i.naturalWidth > 0, () => false);
                    }));
                    return imgs.filter((_, k) => !ok[k]).map(i => i.getAttribute('src').slice(0, 120));
                }""", self.origin)
            problems += [f"broken image: {src}" for src in broken]
            hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
        finally:
            context.close()
        for href in dict.fromkeys(hrefs):
            if (why := link_problem(self.html, page_path, href, self.origin)):
                problems.append(why)
        return problems


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    _need(chromium is not None, "no Chromium found (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(browser):
    _need((HTML / "index.html").is_file(), "no built book in _build/html")
    s = Site(HTML, browser)
    yield s
    s.close()


def _shot_name(page: Path) -> str:
    return page.relative_to(HTML).with_suffix("").as_posix().replace("/", "__") + ".png"


@pytest.mark.book
def test_every_built_page_renders_without_errors(site):
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    pages = built_pages(HTML)
    report = {}
    for page in pages:
        problems = site.check(page, SHOTS / _shot_name(page))
        if problems:
            report[page.relative_to(HTML).as_posix()] = problems
    print(f"\n{len(pages)} pages opened in headless Chromium; screenshots in {SHOTS.relative_to(ROOT)}/")
    for why, n in site.tolerated.items():
        print(f"  tolerated on {n} page(s): {why}")
    assert not report, "\n".join(f"{p}:\n  " + "\n  ".join(v[:15]) for p, v in report.items())


@pytest.mark.book
def test_every_chapter_was_built_and_photographed(site):
    missing = []
    for entry in toc_files():
        stem = entry[: -len(".ipynb")] if entry.endswith(".ipynb") else entry.removesuffix(".md")
        page = HTML / f"{stem}.html"
        if not page.is_file():
            missing.append(f"{entry}: {page.relative_to(ROOT)} was not built")
        elif not (SHOTS / _shot_name(page)).is_file():
            missing.append(f"{entry}: no screenshot")
    assert not missing, "\n".join(missing)


BAD_SITE = {
    "index.html": """<html><head><script>window.addEventListener('load', () => { undefinedCall(); });</script>
        <script async src="https://cdn.example.invalid/mathjax.js"></script></head><body>
        <h1 id="top">t</h1>
        <img src="missing.png" alt="a figure that is not there">
        <img src="good.png" alt="a figure that is there">
        <img src="https://cdn.example.invalid/remote.png" alt="remote: expected to fail offline">
        <a href="other.html">missing page</a> <a href="#top">fine</a> <a href="#nowhere">no anchor</a>
        <a href="https://example.org/">external: not checked offline</a>
        <script>console.error('a real script problem');</script></body></html>""",
}


def test_checker_finds_each_kind_of_problem(browser, tmp_path):
    for name, text in BAD_SITE.items():
        (tmp_path / name).write_text(text)
    import base64
    (tmp_path / "good.png").write_bytes(base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
    s = Site(tmp_path, browser)
    try:
        problems = s.check(tmp_path / "index.html", tmp_path / "shot.png")
    finally:
        s.close()
    text = "\n".join(problems)
    assert "JavaScript error" in text and "undefinedCall" in text, text
    assert "console error: a real script problem" in text, text
    assert "broken image: missing.png" in text, text
    assert "HTTP 404" in text, text
    assert "broken link 'other.html'" in text, text
    assert "no element with id 'nowhere'" in text, text
    # what is expected offline is not reported
    assert "remote.png" not in text and "mathjax" not in text.lower() and "example.org" not in text, text
    assert "good.png" not in text and "'#top'" not in text, text
    assert (tmp_path / "shot.png").stat().st_size > 1000
    # a redirect page (like the book's root index.html) is checked for its target only
    (tmp_path / "go.html").write_text('<meta http-equiv="Refresh" content="0; url=gone/intro.html" />')
    s = Site(tmp_path, browser)
    try:
        assert "gone/intro.html does not exist" in s.check(tmp_path / "go.html")[0]
    finally:
        s.close()


def test_link_problem_classifies_hrefs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "p.html").write_text('<h2 id="sec">x</h2>')
    (tmp_path / "index.html").write_text("")
    page, origin = tmp_path / "a" / "p.html", "http://127.0.0.1:1"
    assert link_problem(tmp_path, page, "p.html#sec", origin) is None
    assert link_problem(tmp_path, page, "../index.html", origin) is None
    assert link_problem(tmp_path, page, "../", origin) is None
    assert link_problem(tmp_path, page, "mailto:x@y.z", origin) is None
    assert link_problem(tmp_path, page, "https://example.org/x", origin) is None
    assert "does not exist" in link_problem(tmp_path, page, "q.html", origin)
    assert "no element with id 'other'" in link_problem(tmp_path, page, "#other", origin)
