"""In-silico perturbation of a Transcriptformer, scored four ways on one table (chapter 11).

:func:`perturb` deletes or overexpresses genes in every cell's token sequence
(:mod:`tflib.tl.perturb_tokens`), runs the perturbed cells through the model in batches and
returns one row per (cell, gene) with

- ``embedding_shift_l2`` and ``embedding_shift_cosine``: how far the pooled embedding moved
  (Euclidean distance, and ``1 - cosine`` between the unperturbed and perturbed vectors);
- ``goal_cosine_shift`` (Geneformer's score): the change in cosine similarity to the centroid of
  the unperturbed cells of a goal state (any ``obs`` label, e.g. a fate); positive = towards;
- ``fate_shift_<fate>`` (with a fate model, chapter 10's
  :class:`~tflib.tl.TrajectoryAwareTranscriptformer`): perturbed minus unperturbed probability;
- ``flow_score`` (CellOracle's idea): the embedding displacement projected on the cell's
  embedding velocity (``obsm[velocity_key]`` from :func:`tflib.tl.embedding_velocity`),
  divided by that velocity's length; positive = along the developmental flow.

:func:`perturb_summary` aggregates the table to one row per gene. What these scores mean, and
what they cannot tell (an in-silico deletion is not a knockout: no other gene responds), is the
subject of chapter 11.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch

from tflib.utils import get_device

from ._tokens import check_layer_index, check_model_tokenizer, encode_cells
from .perturb_tokens import KINDS, gene_positions, pad_cells, perturbed_batch, perturbed_units

__all__ = ["perturb", "perturb_summary"]


def _resolve_genes(adata, tokenizer, genes, encode_kwargs):
    """``(names, unit_ids (G, k))``: one row per perturbation unit, ``-1`` padding for shorter units.

    A unit is one gene or a tuple of genes perturbed together (named ``"A+B"``). Names are
    ``var_names`` (or ``gene_key`` values).
    """
    map_kwargs = {k: encode_kwargs[k] for k in ("gene_key", "id_type", "species") if k in encode_kwargs}
    if genes is None or not isinstance(genes, (str, tuple)) and not hasattr(genes, "__iter__"):
        raise TypeError(f"genes={genes!r}; pass a gene name, a list of names (tuples for combinations), "
                        "or genes='all'.")
    colmap, report = tokenizer.gene_columns(adata, check_coverage=False, **map_kwargs)
    gene_key = encode_kwargs.get("gene_key")
    names = np.asarray(adata.var_names if gene_key is None else adata.var[gene_key].astype(str), dtype=object)
    if isinstance(genes, str) and genes == "all":
        keep = colmap >= 0
        return list(names[keep]), colmap[keep].astype(np.int64)[:, None]
    asked = [genes] if isinstance(genes, (str, tuple)) else list(genes)
    if not asked:
        raise ValueError("genes is empty; pass a gene name, a list of them, or genes='all'.")
    units = [tuple(u) if isinstance(u, (tuple, list)) else (u,) for u in asked]
    odd = [u for u in units if not u or not all(isinstance(g, str) for g in u)]
    if odd:
        raise TypeError(f"each entry of genes must be a gene name or a non-empty tuple of names; got {odd[:3]}.")
    twice = sorted("+".join(u) for u, n in Counter(units).items() if n > 1)
    if twice:
        raise ValueError(f"genes lists {twice[:5]} more than once; list each gene (or combination) once, "
                         "e.g. genes=list(dict.fromkeys(genes)).")
    lookup = {str(n): int(c) for n, c in zip(names, colmap)}
    for g in {g for u in units for g in u if g not in lookup and g in tokenizer.vocab}:
        lookup[g] = int(tokenizer.vocab.token_to_id(g))                 # a vocabulary gene the assay did not measure
    rest = sorted({g for u in units for g in u if g not in lookup})
    if rest:                                                            # unmeasured genes named as adata names them
        mapped = tokenizer.vocab.map_genes(rest, id_type=report.get("id_type", "auto"),
                                           species=report.get("species", "auto"),
                                           **{k: encode_kwargs[k] for k in ("gene_table", "ortholog_table")
                                              if k in encode_kwargs})
        lookup.update({g: int(i) for g, i in zip(rest, mapped.ids) if i >= 0})
    unknown = sorted({g for u in units for g in u if g not in lookup})
    if unknown:
        known = {str(n).lower(): str(n) for n in names}
        known.update({str(t).lower(): str(t) for t in tokenizer.vocab.tokens if str(t).lower() not in known})
        close = {g: known[g.lower()] for g in unknown if g.lower() in known}
        hint = f" Did you mean {close}? Gene names are case-sensitive." if close else ""
        where = "adata.var_names" if gene_key is None else f"adata.var[{gene_key!r}]"
        raise KeyError(f"{len(unknown)} of the genes are neither in adata nor in the tokenizer's vocabulary "
                       f"({unknown[:5]}); genes are matched against {where}, the vocabulary, and "
                       f"{report.get('species', 'the detected')} {report.get('id_type', '')} names mapped the "
                       f"way adata's genes are.{hint}")
    repeated = [u for u in units if len(set(u)) < len(u)]
    if repeated:
        raise ValueError(f"a combination names a gene twice ({repeated[:3]}); list each gene once per tuple.")
    outside = [u for u in units if any(lookup[g] < 0 for g in u)]
    kept = [u for u in units if all(lookup[g] >= 0 for g in u)]
    if not kept:
        raise ValueError(f"none of the genes {['+'.join(u) for u in outside[:5]]} is in the tokenizer's "
                         "vocabulary, so none can be perturbed; choose genes the tokenizer knows "
                         "(tokenizer.gene_columns(adata)[0] >= 0 marks them). adata's genes were read as "
                         f"{report.get('species')} {report.get('id_type')} names; if that is wrong, set "
                         "encode_kwargs={'species': ..., 'id_type': ...}.")
    if outside:
        import warnings

        label = ["+".join(u) for u in outside]
        warnings.warn(f"{len(outside)} gene(s) that the tokenizer cannot read were dropped: {label[:10]} "
                      "(not in its vocabulary once identifiers are mapped, e.g. a mouse symbol without a "
                      "human ortholog in the mapping table, or without a gene median).", stacklevel=3)
    k = max(len(u) for u in kept)
    ids = np.full((len(kept), k), -1, dtype=np.int64)
    for i, u in enumerate(kept):
        ids[i, : len(u)] = [lookup[g] for g in u]
    return ["+".join(u) for u in kept], ids


def _pool(model, ids, mask, *, pooling, layer, special):
    """Pooled ``(B, D)`` float32 embeddings of a batch, in eval mode."""
    h = model.encode(ids, mask, layer=layer, first_only=pooling == "cls", dedupe=True)   # (B, L|1, D)
    if pooling == "cls":
        return h[:, 0].float()                                                           # (B, D)
    keep = (mask & ~torch.isin(ids, special)).float()                                    # (B, L) gene tokens
    return ((h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)).float()  # (B, D)


def _fate_proba(fate_model, ids, mask):
    """``(B, K)`` fate probabilities from a fitted TrajectoryAwareTranscriptformer's network."""
    res = fate_model._fitted()
    net = res.net
    ctx = min(res.max_len, ids.shape[1])
    ids, mask = ids[:, :ctx], mask[:, :ctx]                                              # (B, l) its context
    z = net.head(net.upper(net.lower(ids, mask, dedupe=True), ids, mask)) / res.temperature  # (B, K)
    return torch.softmax(z.double(), dim=1)


def perturb(adata, model, tokenizer, genes, *, kind: str = "delete", fate_model=None,
            goal_key: str | None = None, goal: str | None = None, velocity_key: str | None = None, cells=None,
            pooling: str = "cls", layer: int = -1, batch_size: int = 64, device=None, tokens=None,
            check_coverage: bool = True, progress: bool | None = None,
            encode_kwargs: dict | None = None) -> pd.DataFrame:
    """Delete or overexpress genes in every cell, in silico, and score the shifts (chapter 11).

    Parameters
    ----------
    adata
        The cells (counts as the tokenizer expects them). Not modified.
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and the tokenizer it was trained with.
    genes
        A gene name, a list of names (``adata.var_names``, or ``encode_kwargs["gene_key"]``
        values, or vocabulary genes that ``adata`` does not measure, named as the vocabulary names
        them or as ``adata`` names its genes, e.g. mouse symbols through the same ortholog mapping:
        those count as unexpressed, so a deletion changes nothing and an overexpression inserts
        them), or ``"all"``: every
        vocabulary gene, in the cells that express it. A tuple in
        the list, e.g. ``[("GATA1", "SPI1")]``, perturbs its genes together (row ``"GATA1+SPI1"``;
        ``expressed`` means at least one of them is; ``rank`` is the first gene's).
    kind
        ``"delete"`` (remove the token; cells not expressing the gene are left unchanged and
        marked ``expressed=False``) or ``"overexpress"`` (move the token to the front; a gene the
        cell does not express is inserted there).
    fate_model
        Optional fitted :class:`~tflib.tl.TrajectoryAwareTranscriptformer` (chapter 10) made with
        the same tokenizer: adds one ``fate_shift_<fate>`` column per fate.
    goal_key, goal
        ``obs`` column and label of the goal state: adds ``goal_cosine_shift``. The goal centroid
        is the mean unperturbed embedding of *all* cells with that label.
    cells
        Which cells to perturb: a boolean mask over ``adata.obs`` or a list of ``obs_names``
        (default: all). The others still define the goal centroid; Geneformer, for example,
        perturbs only the start state and scores it against the goal state's centroid.
    velocity_key
        ``obsm`` key of an embedding velocity in the model's embedding space (same pooling and
        layer): adds ``flow_score``.
    pooling, layer, batch_size, device
        As in :func:`tflib.tl.embed`; ``batch_size`` perturbed cells go through one forward pass
        (64 by default, the fastest on 2 CPU cores in ``benchmarks/perturb.py``: the variants of
        one cell share most (token, position) pairs, which the model computes once per batch, see
        ``Transcriptformer.encode(dedupe=True)``; on a GPU use hundreds).
        The device comes from :func:`tflib.utils.get_device` when ``None``.
    tokens, encode_kwargs
        Pre-computed ``tokenizer.encode(adata)`` output (refused if it was made from other cells
        or with another tokenizer), or arguments for it (e.g. ``{"layer": "counts"}``).
    check_coverage
        As in :func:`tflib.tl.embed`: refuse input whose counts fall mostly outside the
        tokenizer's genes; ``False`` tokenizes the covered genes anyway.
    progress
        Show a progress bar (default: for more than 20,000 perturbations).

    Returns
    -------
    pandas.DataFrame
        One row per (cell, gene): ``cell``, ``gene``, ``kind``, ``expressed``, ``rank`` (the
        gene's position among the cell's tokens, ``-1`` if absent), ``embedding_shift_l2``,
        ``embedding_shift_cosine`` and the optional score columns above. ``expressed`` means
        that the gene has a token in the cell's sequence: it has counts *and* ranks within the
        tokenizer's ``max_len`` (the course tokenizer keeps a cell's top 126 genes), so a gene
        whose counts rank below that cut counts as absent (a deletion leaves the cell as it
        was, an overexpression inserts it). Writes nothing into ``adata``. Deterministic: the
        model runs in eval mode.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a perturbation; use kind='delete' or kind='overexpress'.")
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'.")
    layer = check_layer_index(layer)
    encode_kwargs = dict(encode_kwargs or {})
    _check_models(model, tokenizer, fate_model)
    names, gene_ids = _resolve_genes(adata, tokenizer, genes, encode_kwargs)
    centroid_goal = _goal_check(adata, goal_key, goal)
    chosen = _chosen_cells(adata, cells)
    if velocity_key is not None and velocity_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {velocity_key!r}; compute it with tflib.tl.embedding_velocity "
                       "(chapter 10) or leave velocity_key=None.")
    device = device if isinstance(device, torch.device) else get_device(device)
    vocab = tokenizer.vocab
    pad_id = vocab.pad_id if vocab.pad_id is not None else model.config.pad_token_id
    cells, rows = encode_cells(adata, tokenizer, tokens=tokens, encode_kwargs=encode_kwargs,
                               check_coverage=check_coverage)
    ids, lengths = pad_cells(cells, pad_id)                                              # (N, L), (N,)
    front = 1 if vocab.cls_id is not None and len(cells) and int(ids[0, 0]) == vocab.cls_id else 0
    if pooling == "cls" and front == 0:
        raise ValueError("pooling='cls' needs tokens that start with <cls> (a V2 tokenizer); use pooling='mean'.")
    special = torch.tensor([vocab.token_to_id(t) for t in vocab.special_tokens], dtype=torch.long)
    gids = torch.from_numpy(gene_ids)                                                    # (G, k) units, -1 padded
    flat = gene_positions(ids, lengths, gids.clamp(min=0).reshape(-1), n_tokens=len(vocab))  # (N, G*k)
    pos = flat.reshape(len(ids), *gids.shape)                                            # (N, G, k)
    pos = torch.where(gids[None] >= 0, pos, torch.full_like(pos, -1))                    # padding: absent
    if isinstance(genes, str) and genes == "all":
        cell_v, gene_v = torch.nonzero(pos[:, :, 0] >= 0, as_tuple=True)                 # expressed pairs only
    else:
        cell_v = torch.arange(len(rows)).repeat_interleave(len(gids))                    # (V,)
        gene_v = torch.arange(len(gids)).repeat(len(rows))                               # (V,)
    if chosen is not None:
        keep = torch.from_numpy(chosen[rows])[cell_v]                                    # (V,) only the chosen cells
        cell_v, gene_v = cell_v[keep], gene_v[keep]
    pos_v = pos[cell_v, gene_v]                                                          # (V, k)
    max_len = model.config.max_len
    if fate_model is not None:
        max_len = max(max_len, fate_model._fitted().max_len)

    was = model.training
    model.eval().to(device)
    if fate_model is not None:
        fate_model._fitted().net.eval()                                                  # dropout off
    try:
        with torch.no_grad():
            base_emb, base_fate = _forward_all(model, fate_model, ids, lengths, pooling, layer, special,
                                               batch_size, device, max_len, pad_id, vocab.eos_id)
            emb1, fate1, ran = _forward_variants(model, fate_model, ids, lengths, cell_v, gids[gene_v], pos_v,
                                            kind, front, max_len, pad_id, vocab.eos_id, pooling, layer,
                                            special, batch_size, device, progress)
    finally:
        model.train(was)
    e0 = base_emb[cell_v]                                                                 # (V, D)
    emb1[~ran] = e0[~ran]                                                                 # unseen: unchanged
    if fate_model is not None:
        fate1[~ran] = base_fate[cell_v][~ran]
    table = pd.DataFrame({
        "cell": np.asarray(adata.obs_names)[rows[cell_v.numpy()]],
        "gene": np.asarray(names, dtype=object)[gene_v.numpy()],
        "kind": kind,
        "expressed": (pos_v >= 0).any(1).numpy(),
        "rank": (pos_v[:, 0] - front * (pos_v[:, 0] >= 0).long()).numpy(),
        "embedding_shift_l2": (emb1 - e0).norm(dim=1).numpy(),
        "embedding_shift_cosine": (1.0 - torch.nn.functional.cosine_similarity(emb1, e0, dim=1)).numpy(),
    })
    if centroid_goal is not None:
        members = np.flatnonzero(centroid_goal[rows])
        if members.size == 0:
            raise ValueError(f"no tokenized cell has {goal_key}={goal!r}; the goal centroid needs at least one.")
        c = base_emb[torch.from_numpy(members)].mean(0, keepdim=True)                    # (1, D)
        cos = torch.nn.functional.cosine_similarity
        table["goal_cosine_shift"] = (cos(emb1, c, dim=1) - cos(e0, c, dim=1)).numpy()
    if velocity_key is not None:
        v = torch.as_tensor(np.asarray(adata.obsm[velocity_key], dtype=np.float32))[torch.from_numpy(rows)]  # (N, D)
        v = v[cell_v]                                                                    # (V, D)
        norm = v.norm(dim=1).clamp(min=1e-12)
        table["flow_score"] = ((emb1 - e0) * v).sum(1).div(norm).numpy()
    if fate_model is not None:
        d = (fate1 - base_fate[cell_v]).numpy()                                          # (V, K)
        for j, f in enumerate(fate_model.fates):
            table[f"fate_shift_{f}"] = d[:, j]
    return table


def _check_models(model, tokenizer, fate_model):
    check_model_tokenizer(model, tokenizer)
    if fate_model is not None:
        if not hasattr(fate_model, "predict_fates"):
            raise TypeError("fate_model must be a fitted tflib.tl.TrajectoryAwareTranscriptformer (chapter 10).")
        theirs = fate_model.tokenizer
        if theirs.vocab.fingerprint != tokenizer.vocab.fingerprint:
            raise ValueError("fate_model was trained with a tokenizer whose vocabulary differs from this one; "
                             "pass the tokenizer the fate model was built with (fate_model.tokenizer).")


def _chosen_cells(adata, cells):
    """``cells`` as a boolean mask over ``adata.obs`` (``None``: no selection)."""
    if cells is None:
        return None
    arr = np.asarray(cells)
    if arr.dtype == bool:
        if arr.shape != (adata.n_obs,):
            raise ValueError(f"cells is a boolean mask of length {arr.size}, but adata has {adata.n_obs} cells.")
        mask = arr
    else:
        index = pd.Index(adata.obs_names)
        pos = index.get_indexer(arr.astype(str))
        if (pos < 0).any():
            raise KeyError(f"{int((pos < 0).sum())} of cells are not in adata.obs_names "
                           f"({list(arr[pos < 0][:5])}); pass obs_names or a boolean mask.")
        mask = np.zeros(adata.n_obs, bool)
        mask[pos] = True
    if not mask.any():
        raise ValueError("cells selects no cell; nothing would be perturbed.")
    return mask


def _goal_check(adata, goal_key, goal):
    if goal_key is None and goal is None:
        return None
    if goal_key is None or goal is None:
        raise ValueError("goal_key and goal go together: e.g. goal_key='fate', goal='Beta'.")
    if goal_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {goal_key!r}; available: {list(adata.obs.columns)}.")
    labels = adata.obs[goal_key].astype(str).to_numpy()
    if str(goal) not in set(labels):
        raise ValueError(f"goal {goal!r} does not occur in adata.obs[{goal_key!r}] "
                         f"(labels: {sorted(set(labels))[:10]}).")
    return labels == str(goal)


def _forward_all(model, fate_model, ids, lengths, pooling, layer, special, batch_size, device, max_len, pad_id,
                 eos_id):
    """Unperturbed embeddings ``(N, D)`` and fate probabilities ``(N, K)`` (or ``None``).

    The cells are cut to the context exactly as the perturbed ones are (a deletion of an absent
    gene is the identity), so a perturbation the model cannot see scores exactly zero.
    """
    embs, fates = [], []
    for s in range(0, ids.shape[0], batch_size):
        cell = torch.arange(s, min(s + batch_size, ids.shape[0]))                        # (B,)
        none = torch.full_like(cell, -1)
        b_ids, mask = perturbed_batch(ids, lengths, cell, none, none, kind="delete", front=0,
                                      max_len=max_len, pad_id=pad_id, eos_id=eos_id)     # (B, l) unchanged
        embs.append(_embed(model, b_ids, mask, pooling, layer, special, device))
        if fate_model is not None:
            fates.append(_fate_proba(fate_model, b_ids.to(device), mask.to(device)).cpu())
    emb = torch.cat(embs) if embs else torch.zeros(0, model.config.n_embd)
    return emb, (torch.cat(fates) if fates else None)


def _embed(model, ids, mask, pooling, layer, special, device):
    ctx = model.config.max_len
    ids, mask = ids[:, :ctx].to(device), mask[:, :ctx].to(device)                        # (B, l) model context
    return _pool(model, ids, mask, pooling=pooling, layer=layer, special=special.to(device)).cpu()


def _forward_variants(model, fate_model, ids, lengths, cell_v, gene_tok, pos_v, kind, front, max_len, pad_id,
                      eos_id, pooling, layer, special, batch_size, device, progress):
    """Embeddings ``(V, D)`` and fate probabilities ``(V, K)`` of every perturbed variant."""
    from tqdm.auto import tqdm

    V = int(cell_v.numel())
    emb = torch.zeros(V, model.config.n_embd)
    fate = torch.zeros(V, len(fate_model.fates), dtype=torch.float64) if fate_model is not None else None
    run = torch.ones(V, dtype=torch.bool)
    if kind == "delete":
        # A deletion behind the context changes nothing the model reads: skip its forward pass
        # (the caller copies the unperturbed result, so its shift is exactly zero).
        n = lengths[cell_v]
        has_eos = torch.zeros_like(run) if eos_id is None else ids[cell_v, (n - 1).clamp(min=0)] == eos_id
        limit = torch.where(n > max_len, max_len - has_eos.long(), torch.full_like(n, 1 << 30))  # (V,)
        run = ((pos_v >= 0) & (pos_v < limit[:, None])).any(1)                          # (V,) any gene seen
    todo = torch.nonzero(run).ravel()
    n_batches = -(-int(todo.numel()) // batch_size)
    show = progress if progress is not None else int(todo.numel()) > 20_000
    # sort by length so that each batch pads little (the result is put back in order)
    order = todo[torch.argsort(lengths[cell_v[todo]], descending=True, stable=True)]
    for s in tqdm(range(0, int(order.numel()), batch_size), total=n_batches, disable=not show,
                  desc=f"perturb ({kind})"):
        idx = order[s:s + batch_size]
        new, mask = perturbed_units(ids, lengths, cell_v[idx], gene_tok[idx], pos_v[idx], kind=kind,
                                    front=front, max_len=max_len, pad_id=pad_id, eos_id=eos_id)  # (B, l)
        emb[idx] = _embed(model, new, mask, pooling, layer, special, device)
        if fate_model is not None:
            fate[idx] = _fate_proba(fate_model, new.to(device), mask.to(device)).cpu()
    return emb, fate, run


def perturb_summary(table: pd.DataFrame, *, min_cells: int = 1) -> pd.DataFrame:
    """One row per gene from :func:`perturb`'s table (chapter 11).

    Parameters
    ----------
    table
        The per-(cell, gene) table of :func:`perturb`.
    min_cells
        Drop genes whose means rest on fewer cells than this: the cells that express the gene
        for a deletion, every perturbed cell for an overexpression (so a gene that no cell
        expresses keeps its row when it was overexpressed, with ``n_expressed`` 0).

    Returns
    -------
    pandas.DataFrame
        Indexed by gene: ``n_cells`` (rows), ``n_expressed`` (cells expressing the gene), the mean
        of every score column (``mean_<score>``, over the cells where the perturbation changed the
        input: expressing cells for a deletion, all cells for overexpression), and for each fate
        ``frac_towards_<fate>``, the fraction of those cells whose probability of it rose.
    """
    need = {"gene", "expressed", "kind"}
    if not need <= set(table.columns):
        raise KeyError(f"table lacks {sorted(need - set(table.columns))}; pass the output of tflib.tl.perturb.")
    scores = [c for c in table.columns if c.startswith(("embedding_shift", "goal_cosine", "fate_shift_", "flow_"))]
    acted = table[table["expressed"] | (table["kind"] == "overexpress")]
    g = acted.groupby("gene", sort=False)
    out = g[scores].mean().add_prefix("mean_")
    for c in scores:
        if c.startswith("fate_shift_"):
            out[f"frac_towards_{c[len('fate_shift_'):]}"] = g[c].apply(lambda x: float((x > 0).mean()))
    out.insert(0, "n_expressed", table[table["expressed"]].groupby("gene").size().reindex(out.index).fillna(0)
               .astype(int))
    out.insert(0, "n_cells", table.groupby("gene").size().reindex(out.index).astype(int))
    return out[g.size().reindex(out.index).to_numpy() >= min_cells]                 # cells behind each mean
