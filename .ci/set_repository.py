"""Point the book at the repository it is published from (``make set-repository``).

The repository URL, its branch and an optional JupyterHub are the book's only deployment
settings. They live in one block of ``_config.yml`` (``repository:`` and
``launch_buttons.jupyterhub_url``), from which Jupyter Book derives the repository button and
the Colab, Binder and JupyterHub launch buttons of every notebook page. The notebooks' first
cell names the same repository (``%pip install "tflib @ git+URL@BRANCH"``, for Colab), so this
script rewrites both together; ``tests/test_links.py`` fails when they disagree.

    python .ci/set_repository.py --url https://github.com/OWNER/NAME [--branch main] [--hub URL]

``--hub ""`` removes the JupyterHub button. Standard library only, so that a hosted CI job can
run it before installing anything. Prints what it changed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+\.[A-Za-z]{2,}(:\d+)?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$")


def read_setting(config: str, key: str) -> str:
    """The value of ``key:`` (``url``, ``branch``, ``jupyterhub_url``) in ``_config.yml``'s text."""
    m = re.search(rf"^  {key}:[ \t]*(\S*)", config, re.M)
    if not m:
        raise SystemExit(f"_config.yml has no `{key}:` setting")
    return m.group(1).strip("\"'")


def set_setting(config: str, key: str, value: str) -> str:
    """Replace the value of ``key:`` in ``_config.yml``'s text, keeping its comment."""
    pattern = re.compile(rf"^(  {key}:[ \t]*)(\S*)", re.M)
    if not pattern.search(config):
        raise SystemExit(f"_config.yml has no `{key}:` setting")
    return pattern.sub(lambda m: m.group(1) + (value if value else '""'), config, count=1)


def install_spec(url: str, branch: str) -> str:
    return f"git+{url}@{branch}"


def configure(root: Path, url: str, branch: str | None = None, hub: str | None = None) -> list[str]:
    for value in (url, hub):
        if value and not _URL.match(value):
            raise SystemExit(f"not a well-formed http(s) URL: {value!r}")
    url = url.rstrip("/").removesuffix(".git")
    config_path = root / "_config.yml"
    config = config_path.read_text()
    old_url, old_branch = read_setting(config, "url"), read_setting(config, "branch")
    branch = branch or old_branch
    new = set_setting(set_setting(config, "url", url), "branch", branch)
    if hub is not None:
        new = set_setting(new, "jupyterhub_url", hub.rstrip("/"))
    changed = []
    if new != config:
        config_path.write_text(new)
        changed.append("_config.yml")
    old_spec, new_spec = install_spec(old_url, old_branch), install_spec(url, branch)
    if old_spec != new_spec:
        for nb in sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "notebooks").glob("*.py")):
            text = nb.read_text(encoding="utf-8")
            if old_spec in text:
                nb.write_text(text.replace(old_spec, new_spec), encoding="utf-8")
                changed.append(nb.relative_to(root).as_posix())
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="https://github.com/OWNER/NAME")
    parser.add_argument("--branch", default=None, help="branch the launch buttons open (default: unchanged)")
    parser.add_argument("--hub", default=None, help='JupyterHub URL; "" removes the hub button (default: unchanged)')
    args = parser.parse_args(argv)
    changed = configure(ROOT, args.url, args.branch, args.hub)
    print("changed: " + (", ".join(changed) if changed else "nothing (already set)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
