"""In-silico perturbation as index arithmetic on token arrays (chapter 11).

A rank-value cell is a sequence ``[<cls>] g1 g2 ... gn [<eos>]`` of gene tokens sorted by
normalised expression. Following Geneformer's definitions:

- **deletion** (an in-silico knockout) removes the gene's token; the genes behind it move up
  one place. A gene the cell does not express cannot be deleted: the sequence is unchanged.
- **overexpression** moves the gene's token to the front (right after ``<cls>`` when there is
  one); a gene the cell does not express is inserted there, and the sequence grows by one
  (the last gene token drops out when that would exceed the context, ``<eos>`` is kept).

Here every variant is a row of a *source-index* matrix: ``new[v, k] = old[cell[v], src[v, k]]``,
one ``gather`` for a whole batch of (cell, gene) variants, so no Python loop runs per
perturbation. Shapes: ``N`` cells, ``V`` variants, ``L`` padded length.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["KINDS", "pad_cells", "gene_positions", "perturbed_batch", "perturbed_units"]

#: The two perturbations of chapter 11.
KINDS = ("delete", "overexpress")


def pad_cells(cells, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids (N, L) long, lengths (N,) long)`` from ragged token sequences."""
    seqs = [np.asarray(cells[i], dtype=np.int64) for i in range(len(cells))]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)            # (N,)
    L = int(lengths.max()) if len(seqs) else 0
    ids = torch.full((len(seqs), max(L, 1)), pad_id, dtype=torch.long)         # (N, L)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.from_numpy(s)
    return ids, lengths


def gene_positions(ids: torch.Tensor, lengths: torch.Tensor, gene_ids: torch.Tensor,
                   n_tokens: int | None = None) -> torch.Tensor:
    """Position of each gene token in each cell, ``-1`` where absent: ``(N, G)`` long.

    Token ids are unique within a cell (one token per gene). One scatter fills an
    ``(N, n_tokens)`` table of positions (memory ``N * n_tokens`` integers, independent of how
    many genes are asked for), and the genes' columns are read from it.
    """
    N, L = ids.shape
    n_tokens = int(max(int(ids.max()) if ids.numel() else 0, int(gene_ids.max()) if gene_ids.numel() else 0) + 1
                   if n_tokens is None else n_tokens)
    valid = torch.arange(L)[None, :] < lengths[:, None]                         # (N, L)
    table = torch.full((N, n_tokens), -1, dtype=torch.long)                     # (N, V)
    rows = torch.arange(N)[:, None].expand(N, L)                                # (N, L)
    table[rows[valid], ids[valid]] = torch.arange(L)[None, :].expand(N, L)[valid]  # (N, V) position of each token
    return table[:, gene_ids]                                                   # (N, G)


def perturbed_batch(ids: torch.Tensor, lengths: torch.Tensor, cell: torch.Tensor, gene: torch.Tensor,
                    pos: torch.Tensor, *, kind: str, front: int, max_len: int, pad_id: int,
                    eos_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of a batch of perturbed cells.

    Parameters
    ----------
    ids, lengths
        All cells, padded (``pad_cells``): ``(N, L)`` and ``(N,)``.
    cell, gene, pos
        One entry per variant ``(V,)``: the cell's row in ``ids``, the gene's token id and its
        position in that cell (``-1`` when the cell does not express it).
    kind
        ``"delete"`` or ``"overexpress"``.
    front
        Where an overexpressed gene goes: ``1`` after ``<cls>``, ``0`` without one.
    max_len
        Context of the model that reads the result; longer sequences are cut (``<eos>`` kept).
    pad_id, eos_id
        Special token ids (``eos_id=None``: the tokenizer adds no ``<eos>``).

    Returns
    -------
    ``(new_ids (V, L'), mask (V, L'))`` with ``L' <= max_len``. Used by
    :func:`tflib.tl.perturb` (chapter 11).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; use one of {KINDS}.")
    V = int(cell.numel())
    base = ids[cell]                                                            # (V, L)
    n = lengths[cell]                                                           # (V,)
    if kind == "delete":
        present = pos >= 0                                                      # (V,)
        width = base.shape[1]
        k = torch.arange(width)[None, :].expand(V, width)                       # (V, L)
        shift = (present[:, None] & (k >= pos[:, None])).long()                 # (V, L) 1 behind the gene
        src = (k + shift).clamp(max=width - 1)                                  # (V, L)
        new = base.gather(1, src)                                               # (V, L)
        new_len = n - present.long()                                            # (V,)
    else:
        width = base.shape[1] + 1
        padded = torch.cat([base, torch.full((V, 1), pad_id, dtype=base.dtype)], 1)  # (V, L+1)
        k = torch.arange(width)[None, :].expand(V, width)                       # (V, L+1)
        # positions front+1 .. p take their left neighbour (p = end of sequence when inserting)
        last = torch.where(pos >= 0, pos, torch.full_like(pos, width))          # (V,)
        shift = ((k > front) & (k <= last[:, None])).long()                     # (V, L+1)
        new = padded.gather(1, k - shift)                                       # (V, L+1)
        new[:, front] = gene                                                    # (V, L+1) gene at the front
        new_len = n + (pos < 0).long()                                          # (V,)
    cut = new_len > max_len                                                     # (V,) longer than the context
    new_len = new_len.clamp(max=max_len)
    new = new[:, : max(1, min(int(new_len.max()) if V else 1, max_len))]        # (V, L')
    if eos_id is not None and bool(cut.any()):
        had_eos = base.gather(1, (n - 1).clamp(min=0)[:, None])[:, 0] == eos_id  # (V,)
        fix = cut & had_eos
        new[fix, new_len[fix] - 1] = eos_id                                     # keep <eos> last
    mask = torch.arange(new.shape[1])[None, :] < new_len[:, None]               # (V, L')
    new = torch.where(mask, new, torch.full_like(new, pad_id))                  # (V, L') pads beyond
    return new, mask


def perturbed_units(ids: torch.Tensor, lengths: torch.Tensor, cell: torch.Tensor, genes: torch.Tensor,
                    pos: torch.Tensor, *, kind: str, front: int, max_len: int, pad_id: int,
                    eos_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`perturbed_batch` for combinations: ``genes`` and ``pos`` are ``(V, k)``.

    Entries of ``genes`` equal to ``-1`` are padding (a unit with fewer than ``k`` genes). The
    genes of a unit are applied one after the other, on the full sequence, and the result is cut
    to the context once at the end; for overexpression the unit's last gene ends up first. Used
    by :func:`tflib.tl.perturb` for ``genes=[("A", "B")]`` (chapter 11).
    """
    if genes.dim() == 1 or genes.shape[1] == 1:
        g, p = genes.reshape(-1), pos.reshape(-1)
        return perturbed_batch(ids, lengths, cell, g, p, kind=kind, front=front, max_len=max_len,
                               pad_id=pad_id, eos_id=eos_id)
    V, k = genes.shape
    big = int(lengths.max()) + k + 1                                            # no cut in between
    cur, cur_len = ids[cell], lengths[cell].clone()                             # (V, L), (V,)
    rows = torch.arange(V)
    for j in range(k):
        act = genes[:, j] >= 0                                                  # (V,) units with a j-th gene
        if not bool(act.any()):
            continue
        where = gene_positions(cur, cur_len, genes[act, j].clamp(min=0))        # (V, a) position in the current sequence
        p = where[torch.nonzero(act).ravel(), torch.arange(int(act.sum()))]     # (a,)
        new, mask = perturbed_batch(cur, cur_len, rows[act], genes[act, j], p, kind=kind, front=front,
                                    max_len=big, pad_id=pad_id, eos_id=None)    # (a, L')
        width = max(cur.shape[1], new.shape[1])
        grown = torch.full((V, width), pad_id, dtype=cur.dtype)                 # (V, L')
        grown[:, : cur.shape[1]] = cur
        grown[act] = torch.nn.functional.pad(new, (0, width - new.shape[1]), value=pad_id)
        cur = grown
        cur_len = cur_len.clone()
        cur_len[act] = mask.sum(1)
    none = torch.full((V,), -1, dtype=torch.long)
    return perturbed_batch(cur, cur_len, rows, none, none, kind="delete", front=front, max_len=max_len,
                           pad_id=pad_id, eos_id=eos_id)                         # cut once, <eos> kept
