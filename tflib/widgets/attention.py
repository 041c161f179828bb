"""Pick a layer and a head, see one cell's attention matrix (chapter 05)."""
from __future__ import annotations

import numpy as np

from ._base import Explorer
from ._cells import cell_position, encode_one, token_labels

__all__ = ["AttentionExplorer", "attention_explorer"]


class AttentionExplorer(Explorer):
    """One cell's attention weights over its first ``n_tokens`` tokens, per layer and head.

    The weights are computed once, at construction, with
    ``model(ids, mask, output_attentions=True).attentions`` in eval mode; ``weights`` holds them
    as an array ``(n_layer, n_head, L, L)``. Made by :func:`attention_explorer`.
    """

    panel_size = (4.6, 4.0)

    def __init__(self, model, tokenizer, adata, *, cell=0, n_tokens: int = 16, gene_key=None, layer=None,
                 shared_scale: bool = True, id_type: str = "auto", species: str = "auto"):
        import torch

        super().__init__()
        if int(n_tokens) < 1:
            raise ValueError(f"n_tokens={n_tokens} shows nothing. Fix: pass n_tokens=16 (any positive number).")
        self.pos = cell_position(adata, cell)
        self.cell_name = str(adata.obs_names[self.pos])
        map_kw = {"id_type": id_type, "species": species}
        tokens = encode_one(tokenizer, adata, self.pos, gene_key=gene_key, layer=layer, **map_kw)
        self.tokens = tokens
        labels = token_labels(tokenizer, adata, gene_key=gene_key, **map_kw)
        ids = torch.as_tensor(tokens[None], dtype=torch.long)              # (1, L)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(ids.to(device), torch.ones_like(ids, dtype=torch.bool).to(device),
                            output_attentions=True, logits=None)
        finally:
            model.train(was_training)
        self.weights = np.stack([a[0].float().cpu().numpy() for a in out.attentions])  # (n_layer, H, L, L)
        self.n_layer, self.n_head = self.weights.shape[:2]
        self.n_tokens = min(int(n_tokens), len(tokens))
        self.labels = [labels.get(int(t), tokenizer.vocab.id_to_token(int(t))) for t in tokens[:self.n_tokens]]
        n = self.n_tokens
        self.vmax = float(self.weights[:, :, :n, :n].max()) if shared_scale else None
        self.default = (0, 0)

    def check(self, value):
        try:
            layer, head = (int(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"value={value!r} is not a (layer, head) pair. Fix: pass e.g. (0, 1).") from None
        for name, v, n in (("layer", layer, self.n_layer), ("head", head, self.n_head)):
            if not -n <= v < n:
                raise IndexError(f"{name}={v} is out of range: the model has {n} {name}s. Fix: pick a {name} "
                                 f"from 0 to {n - 1} (or -1 for the last).")
        return layer % self.n_layer, head % self.n_head

    def matrix(self, value) -> np.ndarray:
        """The ``(n_tokens, n_tokens)`` weights drawn for ``(layer, head)`` (rows: queries)."""
        layer, head = self.check(value)
        return self.weights[layer, head, :self.n_tokens, :self.n_tokens]

    def _draw(self, value, ax):
        layer, head = self.check(value)
        n = self.n_tokens
        im = ax.imshow(self.matrix(value), cmap="viridis", vmin=0, vmax=self.vmax)
        ax.set_xticks(range(n), self.labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), self.labels, fontsize=7)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query (attending)", fontsize=8)
        ax.set_title(f"cell {self.cell_name}: layer {layer}, head {head}", fontsize=9)
        ax.figure.colorbar(im, ax=ax, shrink=0.8, label="attention weight")

    def _controls(self, widgets) -> dict:
        return {"layer": widgets.Dropdown(options=list(range(self.n_layer)), value=0, description="layer"),
                "head": widgets.Dropdown(options=list(range(self.n_head)), value=0, description="head")}

    def _value_from(self, controls: dict):
        return controls["layer"].value, controls["head"].value


def attention_explorer(model, tokenizer, adata, *, cell=0, n_tokens: int = 16, gene_key=None, layer=None,
                       shared_scale: bool = True, id_type: str = "auto", species: str = "auto"
                       ) -> AttentionExplorer:
    """Pick a layer and a head and see one cell's attention matrix (chapter 05).

    Parameters
    ----------
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and the tokenizer it was trained with.
    adata
        The cells (counts as the tokenizer expects them). Not modified.
    cell
        The cell (position or obs name).
    n_tokens
        How many of its first tokens (``<cls>`` included) to draw.
    gene_key, layer, id_type, species
        How to read genes and counts, as in ``tokenizer.encode``.
    shared_scale
        One colour scale for every layer and head (default), so panels compare directly.

    Returns
    -------
    AttentionExplorer
        ``.draw((layer, head))`` gives the figure, ``.matrix((layer, head))`` its numbers,
        ``.static([(0, 0), (1, 2)])`` the book's fallback, ``.show()`` the dropdowns in Jupyter.
    """
    return AttentionExplorer(model, tokenizer, adata, cell=cell, n_tokens=n_tokens, gene_key=gene_key,
                             layer=layer, shared_scale=shared_scale, id_type=id_type, species=species)
