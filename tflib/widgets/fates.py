"""Pick a gene, see the fate probabilities before and after its knockout as donuts (chapter 11)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._base import Explorer

__all__ = ["FateShiftExplorer", "fate_shift_explorer"]

_ROWS = ("predicted before", "predicted after", "true before", "true after")


def _fates_of(table: pd.DataFrame) -> tuple[list[str], str]:
    for prefix in ("fate_shift_", "mean_fate_shift_"):
        fates = [c[len(prefix):] for c in table.columns if c.startswith(prefix)]
        if fates:
            return fates, prefix
    raise KeyError("The table has no fate_shift_<fate> (tl.perturb) or mean_fate_shift_<fate> "
                   "(tl.perturb_summary) columns. Fix: run tflib.tl.perturb(..., fate_model=...) so it "
                   "scores fate shifts, and pass its table or its perturb_summary.")


def _as_probs(x, fates, what: str, cells=None) -> np.ndarray:
    """Mean probabilities over ``cells`` (all when None) of a cells x fates frame, or a vector."""
    if isinstance(x, pd.DataFrame):
        missing = [f for f in fates if f not in x.columns]
        if missing:
            raise KeyError(f"{what} lacks the fates {missing} (its columns: {list(x.columns)}). Fix: pass "
                           "cells x fates probabilities with the table's fate names as columns.")
        if cells is not None:
            absent = pd.Index(cells).difference(x.index)
            if len(absent):
                raise KeyError(f"{what} has no row for {len(absent)} perturbed cells (e.g. {absent[0]!r}). "
                               "Fix: pass the probabilities of every cell that was perturbed.")
            x = x.loc[list(cells)]
        return x[fates].to_numpy(dtype=float).mean(axis=0)
    s = pd.Series(x, dtype=float)
    missing = [f for f in fates if f not in s.index]
    if missing:
        raise KeyError(f"{what} lacks the fates {missing}. Fix: give one probability per fate {fates}.")
    return s[fates].to_numpy()


class FateShiftExplorer(Explorer):
    """Mean fate probabilities before and after one gene's perturbation. See :func:`fate_shift_explorer`."""

    panel_size = (7.5, 2.6)

    def __init__(self, table, truth=None, *, before, true_before=None, genes=None, colors=None):
        from tflib.pl.fates import fate_colors

        super().__init__()
        self.fates, prefix = _fates_of(table)
        self.per_cell = {"cell", "gene", "expressed", "kind"} <= set(table.columns)
        self.table, self.truth, self.before = table, truth, before
        self.true_before = before if true_before is None else true_before
        self._prefix = prefix
        known = pd.unique(table["gene"]) if self.per_cell else table.index
        self.genes = [str(g) for g in (known if genes is None else genes)]
        for g in self.genes:
            if g not in set(map(str, known)):
                raise KeyError(f"gene {g!r} is not in the table. Fix: pick from its genes {list(known)[:10]}.")
        if not self.genes:
            raise ValueError("The table has no genes. Fix: pass the output of tl.perturb or tl.perturb_summary.")
        self.colors = fate_colors(self.fates) if colors is None else dict(colors)
        self.default = self.genes[0]

    def check(self, value):
        gene = str(value)
        if gene not in self.genes:
            shown = ", ".join(self.genes[:10]) + (" ..." if len(self.genes) > 10 else "")
            raise KeyError(f"gene {gene!r} is not in the table ({len(self.genes)} genes: {shown}). Fix: pick "
                           "one of them, or run tl.perturb with that gene in `genes`.")
        return gene

    def data(self, gene) -> pd.DataFrame:
        """Rows ``predicted before/after`` (and ``true before/after`` with a truth), fate columns.

        Predicted: the mean of ``before`` over the cells the perturbation acted on (all given
        cells for a per-gene summary table) and that plus the gene's mean ``fate_shift``. True:
        the same with ``true_before`` and the truth's mean shift for the gene.
        """
        gene = self.check(gene)
        if self.per_cell:
            t = self.table[self.table["gene"].astype(str) == gene]
            t = t[t["expressed"] | (t["kind"] == "overexpress")]
            if t.empty:
                raise ValueError(f"No cell expresses {gene!r}, so deleting it changed nothing. Fix: pick another gene.")
            cells = t["cell"].tolist() if isinstance(self.before, pd.DataFrame) else None
            shift = t[[self._prefix + f for f in self.fates]].to_numpy(dtype=float).mean(axis=0)
        else:
            cells = None
            shift = self.table.loc[gene, [self._prefix + f for f in self.fates]].to_numpy(dtype=float)
        pred0 = _as_probs(self.before, self.fates, "before", cells)
        rows = {"predicted before": pred0, "predicted after": pred0 + shift}
        if self.truth is not None:
            rows.update(zip(_ROWS[2:], self._true(gene)))
        return pd.DataFrame(rows, index=self.fates).T

    def _true(self, gene):
        truth = self.truth
        if isinstance(truth, dict):
            if gene not in truth:
                raise KeyError(f"truth has no entry for {gene!r}. Fix: add its true shift (e.g. "
                               f"tflib.datasets.knockout(sim, {gene!r})) or pass truth=None.")
            shift = truth[gene]
            cells = shift.index if isinstance(shift, pd.DataFrame) else None
            shift = _as_probs(shift, self.fates, f"truth[{gene!r}]")
        else:
            if gene not in truth.index:
                raise KeyError(f"truth has no row for {gene!r}. Fix: add it, or pass truth=None.")
            cells, shift = None, _as_probs(truth.loc[gene], self.fates, "truth")
        base = _as_probs(self.true_before, self.fates, "true_before",
                         cells if isinstance(self.true_before, pd.DataFrame) else None)
        return base, base + shift

    def _draw(self, value, ax):
        from matplotlib.patches import Patch, Wedge

        d = self.data(value)
        for i, (name, row) in enumerate(d.iterrows()):
            p = np.clip(row.to_numpy(dtype=float), 0, None)
            p = p / p.sum() if p.sum() > 0 else p
            start = 90.0
            for fate, share in zip(self.fates, p):
                ax.add_patch(Wedge((i * 2.4, 0), 1.0, start, start + 360 * share, width=0.45,
                                   facecolor=self.colors[fate], edgecolor="white", linewidth=0.8))
                start += 360 * share
            ax.text(i * 2.4, -1.35, name, ha="center", va="top", fontsize=8)
        ax.set_xlim(-1.3, 2.4 * (len(d) - 1) + 1.3)
        ax.set_ylim(-1.9, 1.2)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"{value}: mean fate probabilities before and after", fontsize=9)
        ax.legend(handles=[Patch(color=self.colors[f], label=f) for f in self.fates], frameon=False,
                  fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))

    def _controls(self, widgets) -> dict:
        return {"gene": widgets.Dropdown(options=self.genes, value=self.default, description="gene")}


def fate_shift_explorer(table, truth=None, *, before, true_before=None, genes=None, colors=None
                        ) -> FateShiftExplorer:
    """Pick a gene and see the fate probabilities before and after its perturbation (chapter 11).

    Parameters
    ----------
    table
        :func:`tflib.tl.perturb` output made with a ``fate_model`` (``fate_shift_<fate>``
        columns, one row per cell and gene) or its :func:`tflib.tl.perturb_summary`.
    truth
        Optional true shifts: ``{gene: cells x fates DataFrame}`` (e.g. from
        :func:`tflib.datasets.knockout`) or a genes x fates DataFrame of mean shifts.
    before
        The predicted fate probabilities without perturbation: a cells x fates DataFrame
        (indexed by the table's ``cell`` names; averaged over the cells each gene's perturbation
        acted on) or one probability per fate.
    true_before
        The true probabilities without perturbation, in the same forms (default: ``before``).
    genes
        The genes offered (default: every gene of the table).
    colors
        Colour per fate (default :func:`tflib.pl.fate_colors`).

    Returns
    -------
    FateShiftExplorer
        ``.draw(gene)`` gives the donuts, ``.data(gene)`` their numbers, ``.static([genes])``
        the book's fallback, ``.show()`` a gene dropdown in Jupyter or Colab.
    """
    return FateShiftExplorer(table, truth, before=before, true_before=true_before, genes=genes, colors=colors)
