"""The shared shape of every explorer: a pure ``draw`` plus optional ipywidgets controls.

An explorer turns one *value* (a cell, a ``(layer, head)`` pair, a gene) into a matplotlib
figure with :meth:`Explorer.draw`. That method is a plain function of the value, so tests and
the built book call it without any widget. :meth:`Explorer.widget` builds the ipywidgets
controls and wires them to ``draw``; each change redraws the figure into an ``Image`` widget
(PNG bytes), which works in JupyterLab, classic Jupyter and Colab alike. ipywidgets is imported
only there, so ``import tflib.widgets`` stays light.

Static fallback: :meth:`Explorer.static` draws a few values side by side as an ordinary
figure, which is what a non-interactive page (the built book) shows.
"""
from __future__ import annotations

import io

__all__ = ["Explorer"]


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what the ``Image`` widget shows)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class Explorer:
    """Base class: subclasses set ``default`` and implement ``_draw`` and ``_controls``.

    Attributes
    ----------
    figure
        The last figure drawn by the widget callback (``None`` before the first draw).
    value
        The value it was drawn for.
    """

    default = None
    panel_size = (5.0, 4.0)

    def __init__(self):
        self.figure = None
        self.value = None
        self._controls_made = None
        self._image = None

    # -- drawing (pure) ------------------------------------------------------------------------
    def check(self, value):
        """Return ``value`` in canonical form, or raise a clear error naming the fix."""
        return value

    def _draw(self, value, ax):  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, value=None, *, ax=None):
        """Draw the figure for ``value`` (default: the explorer's default value).

        Pass ``ax`` to draw into existing axes; otherwise a new figure is made. Returns the
        :class:`matplotlib.figure.Figure`.
        """
        import matplotlib.pyplot as plt

        value = self.check(self.default if value is None else value)
        if ax is None:
            fig, ax = plt.subplots(figsize=self.panel_size)
        self._draw(value, ax)
        return ax.figure

    def static(self, values=None, *, ncols: int | None = None):
        """The non-interactive view: one panel per value, side by side, in one figure.

        This is the static fallback that a built (non-interactive) page shows. ``values``
        defaults to ``[default]``.
        """
        import matplotlib.pyplot as plt

        values = [self.default] if values is None else list(values)
        if not values:
            raise ValueError("values is empty: pass at least one value to draw, e.g. values=[0].")
        checked = [self.check(v) for v in values]            # fail before drawing anything
        ncols = min(len(checked), ncols or 3)
        nrows = -(-len(checked) // ncols)
        w, h = self.panel_size
        fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
        for ax, v in zip(axes.ravel(), checked):
            self._draw(v, ax)
        for ax in axes.ravel()[len(checked):]:
            ax.set_visible(False)
        fig.tight_layout()
        return fig

    # -- interactive ---------------------------------------------------------------------------
    def _controls(self, widgets) -> dict:  # pragma: no cover - abstract
        """``{name: control}``; :meth:`_value_from` turns their values into a draw value."""
        raise NotImplementedError

    def _value_from(self, controls: dict):
        (control,) = controls.values()
        return control.value

    @property
    def controls(self) -> dict:
        """The ipywidgets controls by name (built on first use)."""
        if self._controls_made is None:
            self.widget()
        return self._controls_made

    def redraw(self, change=None):
        """Widget callback: read the controls, draw, and show the new figure."""
        import matplotlib.pyplot as plt

        value = self._value_from(self._controls_made)
        fig = self.draw(value)
        self.figure, self.value = fig, self.check(value)
        self._image.value = png_bytes(fig)
        plt.close(fig)                                       # shown through the Image widget only
        return fig

    def widget(self):
        """The controls and the figure as one ipywidgets ``VBox`` (needs ipywidgets)."""
        try:
            import ipywidgets as widgets
        except ImportError as err:  # pragma: no cover - ipywidgets is a dependency
            raise ImportError("The interactive explorers need ipywidgets. Fix: `pip install ipywidgets`, "
                              "or call .static() for a plain figure.") from err
        if self._controls_made is None:
            self._controls_made = self._controls(widgets)
            self._image = widgets.Image(format="png")
            for control in self._controls_made.values():
                control.observe(self.redraw, names="value")
            self.redraw()
            self._box = widgets.VBox([widgets.HBox(list(self._controls_made.values())), self._image])
        return self._box

    def show(self):
        """Display the interactive explorer (Jupyter, JupyterLab, Colab)."""
        from IPython.display import display

        display(self.widget())

    def _ipython_display_(self):
        self.show()
