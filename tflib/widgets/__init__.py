"""tflib.widgets -- interactive explorers with static fallbacks (chapters 04, 05, 11).

Each explorer draws a matplotlib figure for one value with a pure ``draw(value)`` (tested
headless), shows ipywidgets controls wired to it with ``show()`` in Jupyter or Colab, and gives
the built book a plain figure with ``static(values)``. ipywidgets is imported only by ``show()``.

In a chapter, put ``explorer.show()`` in a cell tagged ``skip-execution`` (the book shows the
code, Jupyter runs it) and the ``static(...)`` figure in an ordinary cell; never leave an
explorer as a cell's last expression in an executed cell: that displays the widget, whose state
a static page cannot render.
"""
from tflib._lazy import lazy_exports

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "Explorer": "_base",
    "rank_explorer": "rank",
    "RankExplorer": "rank",
    "attention_explorer": "attention",
    "AttentionExplorer": "attention",
    "fate_shift_explorer": "fates",
    "FateShiftExplorer": "fates",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
