"""Sphinx extension: two small fixes to how the course book is executed and rendered.

1. **Figures in executed notebooks.** A user or CI job that exports ``MPLBACKEND=Agg`` (handy
   for scripts that must never open windows) would pass it to the kernels started by the
   book build, and ipykernel then keeps Agg instead of its inline backend: every
   ``plt.show()`` would draw nothing and the pages would have no figures. On
   ``config-inited`` this extension removes a non-inline ``MPLBACKEND`` from the build
   process's environment (which the kernels inherit). Set ``course_keep_mplbackend: true``
   in ``sphinx: config:`` to switch this off.
2. **No launch buttons on prose pages.** The welcome page is a MyST text notebook (so that it
   can draw the workflow figure), which makes sphinx-book-theme add Colab/Binder/JupyterHub
   buttons pointing at a ``.md`` file that Colab cannot open. Pages listed in
   ``course_no_launch_pages`` (default: ``["book/intro"]``) lose those buttons.
"""
from __future__ import annotations

import os

_INLINE_BACKENDS = ("module://matplotlib_inline.backend_inline", "inline")


def strip_mplbackend(environ: dict) -> str | None:
    """Remove a non-inline ``MPLBACKEND`` from ``environ``; return the removed value (or None)."""
    value = environ.get("MPLBACKEND")
    if value and value not in _INLINE_BACKENDS:
        del environ["MPLBACKEND"]
        return value
    return None


def _on_config_inited(app, config) -> None:
    from sphinx.util import logging

    if config.course_keep_mplbackend:
        return
    removed = strip_mplbackend(os.environ)
    if removed:
        logging.getLogger(__name__).info(
            "course_build: unset MPLBACKEND=%s so executed notebooks use the inline backend", removed
        )


def _is_launch_group(button) -> bool:
    return isinstance(button, dict) and "rocket" in str(button.get("icon", ""))


def _on_html_page_context(app, pagename, templatename, context, doctree) -> None:
    if pagename not in app.config.course_no_launch_pages:
        return
    buttons = context.get("header_buttons")
    if isinstance(buttons, list):
        context["header_buttons"] = [b for b in buttons if not _is_launch_group(b)]


def setup(app):
    app.add_config_value("course_keep_mplbackend", False, "env", [bool])
    app.add_config_value("course_no_launch_pages", ["book/intro"], "html", [list])
    app.connect("config-inited", _on_config_inited)
    # after sphinx-book-theme's own handler (priority 500) has added the launch buttons
    app.connect("html-page-context", _on_html_page_context, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
