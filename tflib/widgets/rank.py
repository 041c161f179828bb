"""Pick a cell, see its rank-value token sequence as a bar chart (chapter 04)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tflib._compat import dense, layer_matrix

from ._base import Explorer
from ._cells import cell_position, encode_one, token_labels

__all__ = ["RankExplorer", "rank_explorer"]


class RankExplorer(Explorer):
    """A cell's first ``n_show`` gene tokens, with the value that ranked them.

    The value of a gene is Geneformer's ``count / n_counts * target_sum / median``, where
    ``n_counts`` is the cell's total count; the tokenizer sorts by it (chapter 04). Made by
    :func:`rank_explorer`.
    """

    def __init__(self, adata, tokenizer, *, gene_key=None, n_show: int = 20, layer=None,
                 label_key: str | None = None, cell=0, id_type: str = "auto", species: str = "auto"):
        super().__init__()
        if not hasattr(tokenizer, "gene_medians"):
            raise TypeError(f"rank_explorer needs a rank-value tokenizer, got {type(tokenizer).__name__}. Fix: "
                            "pass a tflib.tokenize.RankValueTokenizer (binning tokenizers have no ranks).")
        if int(n_show) < 1:
            raise ValueError(f"n_show={n_show} shows no gene. Fix: pass n_show=20 (any positive number).")
        if label_key is not None and label_key not in adata.obs:
            raise KeyError(f"label_key={label_key!r} is not an adata.obs column. Fix: pass one of "
                           f"{list(adata.obs.columns)[:8]}, or label_key=None.")
        self.adata, self.tokenizer, self.n_show = adata, tokenizer, int(n_show)
        self.gene_key, self.layer, self.label_key = gene_key, layer, label_key
        self._map_kw = {"id_type": id_type, "species": species}
        self._labels = token_labels(tokenizer, adata, gene_key=gene_key, **self._map_kw)
        colmap, _ = tokenizer.gene_columns(adata, gene_key=gene_key, check_coverage=False, **self._map_kw)
        self._colmap = colmap
        self._median = tokenizer.gene_medians.for_vocab(tokenizer.vocab)
        self.default = cell_position(adata, cell)

    def check(self, value):
        return cell_position(self.adata, value)

    def data(self, cell) -> pd.DataFrame:
        """The table behind the bars: one row per shown token, in sequence order.

        Columns: ``position`` (0 = first gene token), ``token`` (id), ``gene``, ``count``,
        ``median`` and ``value`` (``count / n_counts * target_sum / median``).
        """
        pos = self.check(cell)
        tokens = encode_one(self.tokenizer, self.adata, pos, gene_key=self.gene_key, layer=self.layer,
                            **self._map_kw)
        vocab = self.tokenizer.vocab
        special = {vocab.token_to_id(t) for t in vocab.special_tokens}
        genes = np.array([t for t in tokens.tolist() if t not in special], dtype=np.int64)
        row = dense(layer_matrix(self.adata, self.layer)[pos]).ravel()
        ok = self._colmap >= 0
        per_token = np.bincount(self._colmap[ok], weights=row[ok], minlength=len(vocab))  # duplicates summed
        n_counts = float(row.sum())
        shown = genes[:self.n_show]
        counts = per_token[shown]
        median = self._median[shown]
        return pd.DataFrame({"position": np.arange(len(shown)), "token": shown,
                             "gene": [self._labels.get(int(t), vocab.id_to_token(int(t))) for t in shown],
                             "count": counts, "median": median,
                             "value": counts / n_counts * self.tokenizer.target_sum / median,
                             }).assign(n_gene_tokens=len(genes))

    def title(self, cell) -> str:
        pos = self.check(cell)
        name = str(self.adata.obs_names[pos])
        if self.label_key is not None:
            name += f" ({self.adata.obs[self.label_key].iloc[pos]})"
        return f"cell {pos}: {name}"

    def _draw(self, value, ax):
        d = self.data(value)
        y = np.arange(len(d))
        ax.barh(y, d["value"], color="#0072B2", edgecolor="k", linewidth=0.4)
        ax.set_yticks(y, d["gene"], fontsize=8)
        ax.invert_yaxis()                                     # first token at the top
        ax.set_xlabel("count / n_counts × 10⁴ / gene median")
        n_all = int(d["n_gene_tokens"].iloc[0]) if len(d) else 0
        ax.set_title(f"{self.title(value)}\nfirst {len(d)} of {n_all} gene tokens", fontsize=9)

    def _controls(self, widgets) -> dict:
        n = self.adata.n_obs
        return {"cell": widgets.IntSlider(value=self.default, min=0, max=n - 1, description="cell",
                                          continuous_update=False)}


def rank_explorer(adata, tokenizer, *, gene_key=None, n_show: int = 20, layer=None, label_key=None, cell=0,
                  id_type: str = "auto", species: str = "auto") -> RankExplorer:
    """Pick a cell and see its rank-value token sequence (chapter 04).

    Parameters
    ----------
    adata
        Cells with raw counts (in ``X`` or ``layer``). Not modified.
    tokenizer
        A :class:`~tflib.tokenize.RankValueTokenizer`.
    gene_key, layer, id_type, species
        How to read the genes and counts, as in ``tokenizer.encode``.
    n_show
        Gene tokens drawn per cell (the first ones).
    label_key
        Optional ``obs`` column shown in the title (e.g. ``"cell_type"``).
    cell
        The cell drawn first (position or obs name).

    Returns
    -------
    RankExplorer
        ``.draw(cell)`` gives the figure, ``.data(cell)`` its table, ``.static([cells])`` the
        book's fallback, ``.show()`` (or displaying it) the slider in Jupyter or Colab.
    """
    return RankExplorer(adata, tokenizer, gene_key=gene_key, n_show=n_show, layer=layer, label_key=label_key,
                        cell=cell, id_type=id_type, species=species)
