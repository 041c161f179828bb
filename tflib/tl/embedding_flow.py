"""Velocity in the Transcriptformer's embedding and a CellRank kernel on it (chapter 10).

Two of the three parts of the trajectory-aware Transcriptformer (the third, fate-aware
fine-tuning, is :mod:`tflib.tl.trajectory`).

1. :func:`embedding_velocity` carries RNA velocity into the model's embedding. The model reads
   a cell a short step ahead along its velocity, ``x+ = max(x + dt * v, 0)``, and a short step
   behind, ``x- = max(x - dt * v, 0)``, where ``x = layers["Ms"]`` is the kNN-smoothed
   expression. The embedding velocity is the central difference ``(E(x+) - E(x-)) / 2``.
   The central difference matters: any change of a cell's tokens moves its embedding partly
   in a direction that depends on the cell but hardly on the change (a curvature term). With
   the one-sided ``E(x+) - E(x)`` on the simulator, the arrows of ``v`` and ``-v`` were nearly
   orthogonal (median cosine 0.03) and the *reversed* velocity still "agreed" with the truth
   at 0.16; the central difference cancels that term, so reversing ``v`` exactly reverses
   the arrow. ``scheme="forward"`` keeps the one-sided version for comparison.
   This *extrapolate-and-re-embed* design was chosen over a neighbourhood projection
   (averaging neighbours' embedding displacements, weighted by the velocity graph, as scVelo
   does for UMAP arrows) because it needs no graph: each cell's arrow comes from its own
   velocity and the model alone, so graph smoothing cannot make a wrong field look coherent,
   and the arrow can be checked against the arrow of the *true* velocity on the simulator.

   The step is set per cell, relative to the cell: ``dt_i = step * ||x_i|| / ||v_i||``, so the
   extrapolated state moves by ``step`` times the cell's own expression norm in the direction
   of its velocity. This makes the result independent of the velocity's units (scVelo's
   velocity and the simulator's true ``ds/dt`` are on different scales). With the default
   ``step=0.1`` (measured on the simulator) about 8 % of the genes in the model's 126-gene
   window are replaced and 90 % of the positions shift, while the state stays close to the
   cell's own. The agreement with the truth was flat between 0.03 and 0.3, but the control
   that pairs each cell with another cell's arrow drifted away from 0 at 0.3.
2. :func:`embedding_kernel` builds a CellRank 2 kernel on that embedding:
   ``VelocityKernel(attr="obsm")`` on ``obsm[xkey]`` / ``obsm[vkey]`` plus a ``ConnectivityKernel``,
   both on a kNN graph computed on the embedding and stored under its own key, so the
   gene-space graph is left alone. :func:`tflib.tl.fates` accepts the kernel (``kernel=``).

Keys written by :func:`embedding_velocity`: ``obsm[key_added]`` (default ``"X_tf"``, the embedding
of ``x``), ``obsm[velocity_key]`` (default ``"velocity_tf"``) and ``uns[velocity_key]`` (the
settings). :func:`embedding_kernel` writes ``obsp[neighbors_key + "_connectivities"|"_distances"]``,
``uns[neighbors_key]`` and ``uns["tflib_embedding_kernel"]``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tflib._compat import dense, renamed_kwargs

from ._tokens import check_model_tokenizer

__all__ = ["embedding_velocity", "embedding_kernel"]


def _check_pair(model, tokenizer) -> None:
    """Fail early, with the fix, when tokenizer and model do not belong together."""
    check_model_tokenizer(model, tokenizer)


def _embed_matrix(M, var, model, tokenizer, *, gene_key, pooling, batch_size, device, species) -> np.ndarray:
    """Embed the rows of a normalised (non-negative, not log) matrix with :func:`tflib.tl.embed`."""
    import anndata as ad

    from .embedding import embed

    tmp = ad.AnnData(X=sp.csr_matrix(M.astype(np.float32)), var=var.copy())
    kwargs = {"input": "normalized", "gene_key": gene_key, "species": species}
    embed(tmp, model, tokenizer, key_added="_tmp", pooling=pooling, batch_size=batch_size, device=device,
          encode_kwargs=kwargs)
    return tmp.obsm["_tmp"]


@renamed_kwargs(key="key_added")
def embedding_velocity(adata, model, tokenizer, *, xkey: str = "Ms", vkey: str = "velocity",
                       genes: str | None = "velocity_genes", step: float = 0.1, key_added: str = "X_tf",
                       velocity_key: str = "velocity_tf", gene_key: str | None = None, species: str = "auto",
                       method: str = "extrapolate", scheme: str = "central", pooling: str = "mean",
                       batch_size: int = 64, device=None, seed: int = 0, copy: bool = False):
    """Velocity in the Transcriptformer embedding: ``(E(x + dt v) - E(x - dt v)) / 2`` (chapter 10).

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.velocity` (``layers[xkey]`` and ``layers[vkey]``).
    model, tokenizer
        The Transcriptformer and its rank-value tokenizer (e.g. ``tflib.models.course_checkpoint()``).
    xkey, vkey
        Layers of the state (smoothed, size-normalised, not log: ``"Ms"``) and of the velocity.
        Any velocity on the same genes works, e.g. the simulator's ``"velocity_true"``.
    genes
        ``var`` boolean column of the genes whose velocity is used (scVelo's ``"velocity_genes"``);
        the other genes are held fixed. ``None`` uses every gene with a finite velocity.
    step
        Size of the extrapolation relative to the cell: ``dt_i = step * ||x_i|| / ||v_i||``
        (see the module docstring for why). Larger steps change more tokens but leave the data.
    method
        ``"extrapolate"`` (default): re-embed the extrapolated states, as above. ``"project"``:
        the neighbourhood projection, scVelo's ``velocity_embedding`` of the gene-space velocity
        graph onto ``obsm[key_added]`` (each cell's arrow is the transition-weighted mean of the unit
        displacements to its gene-space neighbours, minus the uniform mean); cheap and smooth,
        but its direction comes from the gene-space graph, not from the model. ``step`` and
        ``scheme`` are then unused; the graph of ``vkey`` is computed if missing.
    scheme
        ``"central"`` (default) ``(E(x+) - E(x-)) / 2`` or ``"forward"`` ``E(x+) - E(x)``.
    key_added, velocity_key
        ``obsm`` keys for ``E(x)`` (``key_added``, formerly ``key``) and for the embedding velocity.
    gene_key, species
        Passed to ``tokenizer.encode`` (a ``var`` column of vocabulary symbols, e.g. from
        :func:`vocab_labels`; ``species="mouse"`` maps mouse symbols through orthologs).
    pooling, batch_size, device
        As in :func:`tflib.tl.embed` (device from :func:`tflib.utils.get_device` when ``None``).
        ``"mean"`` by default: masked-gene pretraining never trains the ``<cls>`` state, and on
        the simulator its arrows were erratic (median cosine with the truth 0.03--0.42 across
        two worlds, against 0.18--0.22 for mean pooling, whose shuffled control stays below 0).
    seed
        Seeds torch; the model runs in eval mode, so the same input gives the same arrows.
    copy
        ``False``: write into ``adata`` and return ``None``; ``True``: return a new AnnData
        with the keys below and leave ``adata`` alone.

    Returns
    -------
    ``None``, or the new AnnData when ``copy=True``. Keys written: ``obsm[key_added]`` (``E(x)``,
    ``(n_obs, n_embd)``), ``obsm[velocity_key]`` (the embedding velocity, same shape) and
    ``uns[velocity_key]`` (the settings). With ``method="project"`` and no velocity graph of
    ``vkey`` yet, scVelo's ``uns[vkey + "_graph"|"_graph_neg"]`` and ``obs[vkey + "_self_transition"]``
    too. Everything is computed
    before anything is written, so a failed call leaves ``adata`` as it was.
    """
    import torch

    for k in (xkey, vkey):
        if k not in adata.layers:
            raise KeyError(f"adata.layers has no {k!r}. Fix: run `tflib.tl.velocity(adata)` first "
                           f"(it writes 'Ms' and 'velocity'), or pass xkey=/vkey= naming existing layers.")
    if method not in ("extrapolate", "project"):
        raise ValueError(f"method={method!r}; use 'extrapolate' or 'project'.")
    if scheme not in ("central", "forward"):
        raise ValueError(f"scheme={scheme!r}; use 'central' or 'forward'.")
    if step <= 0:
        raise ValueError(f"step must be positive (a fraction of the cell's expression norm), got {step}.")
    _check_pair(model, tokenizer)
    torch.manual_seed(seed)
    X = dense(adata.layers[xkey])                                                # (n, G)
    V = dense(adata.layers[vkey])                                                # (n, G)
    if (X < 0).any():
        raise ValueError(f"layers[{xkey!r}] has negative values: pass a size-normalised, non-log state (e.g. 'Ms').")
    use = np.isfinite(V).all(0)
    if genes is not None:
        if genes not in adata.var:
            raise KeyError(f"adata.var has no column {genes!r}; pass genes=None to use all genes.")
        use &= adata.var[genes].to_numpy(dtype=bool)
    if not use.any():
        raise ValueError("No gene has a usable velocity (check the velocity genes of tflib.tl.velocity).")
    V = np.where(use[None, :], np.nan_to_num(V), 0.0)                           # (n, G) fixed genes: 0
    vnorm = np.linalg.norm(V, axis=1)
    dt = step * np.linalg.norm(X, axis=1) / np.where(vnorm > 0, vnorm, 1.0)     # (n,) per-cell step
    opts = dict(gene_key=gene_key, pooling=pooling, batch_size=batch_size, device=device, species=species)
    E_now = _embed_matrix(X, adata.var, model, tokenizer, **opts)              # (n, D)
    settings = {"xkey": xkey, "vkey": vkey, "genes": genes or "", "n_genes_used": int(use.sum()), "method": method,
                "step": float(step), "scheme": scheme, "pooling": pooling, "key_added": key_added,
                "seed": int(seed),
                "model_n_embd": int(model.config.n_embd)}
    target = adata.copy() if copy else adata
    if method == "project":
        vel = _project(target, E_now, vkey, xkey, use)                           # (n, D)
    else:
        vel = _extrapolate(X, V, dt, E_now, scheme, adata.var, model, tokenizer, opts)
    target.obsm[key_added], target.obsm[velocity_key], target.uns[velocity_key] = E_now, vel, settings
    return target if copy else None


def _extrapolate(X, V, dt, E_now, scheme, var, model, tokenizer, opts) -> np.ndarray:
    """Re-embed the states a step ahead (and behind) along the velocity; the embedding velocity."""
    X_next = np.maximum(X + dt[:, None] * V, 0.0)                                # (n, G) extrapolated state
    E_next = _embed_matrix(X_next, var, model, tokenizer, **opts)              # (n, D)
    if scheme == "forward":
        return (E_next - E_now).astype(np.float32)                               # (n, D)
    X_prev = np.maximum(X - dt[:, None] * V, 0.0)                                # (n, G) one step back
    E_prev = _embed_matrix(X_prev, var, model, tokenizer, **opts)              # (n, D)
    return (0.5 * (E_next - E_prev)).astype(np.float32)                          # (n, D)


def _project(adata, E, vkey, xkey, use) -> np.ndarray:
    """scVelo's neighbourhood projection of the ``vkey`` velocity graph onto the embedding ``E``."""
    import scvelo as scv

    graph = f"{vkey}_graph"
    new_graph = graph not in adata.uns and graph not in adata.obsp
    uns_before, obs_before = set(adata.uns.keys()), set(adata.obs.columns)
    basis = "_tflib_proj"
    try:
        if new_graph:
            scv.tl.velocity_graph(adata, vkey=vkey, xkey=xkey, gene_subset=adata.var_names[use],
                                  show_progress_bar=False)
        adata.obsm[f"X_{basis}"] = E
        scv.tl.velocity_embedding(adata, basis=basis, vkey=vkey, autoscale=False)
        return np.asarray(adata.obsm.pop(f"{vkey}_{basis}"), dtype=np.float32)  # (n, D)
    except BaseException:
        for k in set(adata.uns.keys()) - uns_before:  # a failed call leaves no half-made graph behind
            del adata.uns[k]
        adata.obs.drop(columns=[c for c in adata.obs.columns if c not in obs_before], inplace=True)
        raise
    finally:
        adata.obsm.pop(f"X_{basis}", None)


def embedding_kernel(adata, *, xkey: str = "X_tf", vkey: str = "velocity_tf", velocity_weight: float = 0.8,
                     connectivity_weight: float = 0.2, n_neighbors: int = 30, neighbors_key: str = "tf",
                     similarity: str = "cosine", softmax_scale: float | None = None, seed: int = 0,
                     overwrite: bool = False):
    """A CellRank 2 kernel on the Transcriptformer embedding (chapter 10).

    ``velocity_weight * VelocityKernel(attr="obsm", xkey, vkey) + connectivity_weight *
    ConnectivityKernel``, both on a kNN graph built on ``obsm[xkey]`` with scanpy and stored under
    ``neighbors_key`` (``obsp["tf_connectivities"]`` by default), so the gene-space graph that
    :func:`tflib.tl.velocity` made stays as it was. The velocity kernel scores each embedding
    neighbour by the ``similarity`` of the cell's embedding velocity with the displacement to the
    neighbour (cosine by default: embedding coordinates have no per-dimension offset to remove).

    Parameters
    ----------
    adata
        Has ``obsm[xkey]`` and ``obsm[vkey]`` (from :func:`embedding_velocity`) and the gene-space
        neighbour graph of :func:`tflib.tl.velocity` (CellRank reads it for velocity moments).
    velocity_weight, connectivity_weight
        Non-negative kernel weights (normalised to sum 1).
    n_neighbors, neighbors_key
        kNN graph on the embedding.
    similarity, softmax_scale
        Passed to ``VelocityKernel.compute_transition_matrix`` (deterministic model).
    seed
        Seeds the neighbour search and CellRank.
    overwrite
        A neighbour graph under ``neighbors_key`` that this function did not write (for example
        one the user made with ``sc.pp.neighbors(..., key_added=...)``) is kept and the call is
        refused, unless ``overwrite=True``. A graph it wrote itself is replaced.

    Returns
    -------
    A CellRank kernel whose ``transition_matrix`` is row-stochastic; pass it to
    ``tflib.tl.fates(adata, kernel=...)``. The verb's purpose is this kernel, so it is returned.

    Keys written: ``obsp[neighbors_key + "_connectivities"|"_distances"]`` and
    ``uns[neighbors_key]`` (the embedding's kNN graph; see ``overwrite``) and ``uns["tflib_embedding_kernel"]`` (the settings). If CellRank fails, the new
    graph is removed again and ``adata`` is left as it was.
    """
    for k in (xkey, vkey):
        if k not in adata.obsm:
            raise KeyError(f"adata.obsm has no {k!r}. Fix: run `tflib.tl.embedding_velocity(adata, model, "
                           "tokenizer)` first, or pass xkey=/vkey= naming existing obsm entries.")
    Xe, Ve = np.asarray(adata.obsm[xkey]), np.asarray(adata.obsm[vkey])
    if Xe.shape != Ve.shape:
        raise ValueError(f"obsm[{xkey!r}] {Xe.shape} and obsm[{vkey!r}] {Ve.shape} differ in shape; "
                         "the velocity must live in the same space as the state.")
    if not (np.isfinite(Xe).all() and np.isfinite(Ve).all()):
        raise ValueError("The embedding or its velocity has NaN rows (cells without tokenizable genes). "
                         "Fix: drop those cells (adata = adata[np.isfinite(adata.obsm[xkey]).all(1)].copy()).")
    if "neighbors" not in adata.uns:
        raise ValueError("No gene-space neighbour graph: run `tflib.tl.velocity(adata)` before the embedding kernel.")
    if velocity_weight < 0 or connectivity_weight < 0 or velocity_weight + connectivity_weight <= 0:
        raise ValueError("velocity_weight and connectivity_weight must be >= 0 and not both 0.")
    ours = adata.uns.get("tflib_embedding_kernel", {}).get("neighbors_key") == neighbors_key
    theirs = [k for k in (f"{neighbors_key}_connectivities", f"{neighbors_key}_distances") if k in adata.obsp]
    if (theirs or neighbors_key in adata.uns) and not ours and not overwrite:
        raise FileExistsError(
            f"adata already holds a neighbour graph under {neighbors_key!r} ({theirs or 'uns'}) that "
            "embedding_kernel did not write; pass neighbors_key='another_name' to keep it, or overwrite=True.")
    np.random.seed(seed)
    graph_keys = {"obsp": [f"{neighbors_key}_connectivities", f"{neighbors_key}_distances"], "uns": [neighbors_key]}
    saved = {(where, k): getattr(adata, where)[k] for where, keys in graph_keys.items()
             for k in keys if k in getattr(adata, where)}
    try:
        kernel = _build_kernel(adata, xkey, vkey, velocity_weight, connectivity_weight, n_neighbors, neighbors_key,
                               similarity, softmax_scale, seed)
    except BaseException:
        for where, keys in graph_keys.items():  # put the graph that was there back (or remove the new one)
            for k in keys:
                if (where, k) in saved:
                    getattr(adata, where)[k] = saved[(where, k)]
                else:
                    getattr(adata, where).pop(k, None)
        raise
    adata.uns["tflib_embedding_kernel"] = {
        "xkey": xkey, "vkey": vkey, "velocity_weight": float(velocity_weight),
        "connectivity_weight": float(connectivity_weight), "n_neighbors": int(n_neighbors),
        "neighbors_key": neighbors_key, "similarity": similarity, "seed": int(seed)}
    return kernel


def _build_kernel(adata, xkey, vkey, velocity_weight, connectivity_weight, n_neighbors, neighbors_key, similarity,
                  softmax_scale, seed):
    """The kNN graph on the embedding (written to ``adata``) and the weighted CellRank kernel on it."""
    import cellrank as cr
    import scanpy as sc

    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=xkey, key_added=neighbors_key, random_state=seed)
    conn_key = f"{neighbors_key}_connectivities"
    parts = []
    if velocity_weight > 0:
        vk = cr.kernels.VelocityKernel(adata, attr="obsm", xkey=xkey, vkey=vkey, conn_key=conn_key)
        vk.compute_transition_matrix(model="deterministic", similarity=similarity, softmax_scale=softmax_scale,
                                     seed=seed, show_progress_bar=False)
        parts.append((velocity_weight, vk))
    if connectivity_weight > 0:
        parts.append((connectivity_weight, cr.kernels.ConnectivityKernel(adata, conn_key=conn_key)
                      .compute_transition_matrix()))
    if len(parts) == 1:  # one kernel: use it as it is (a weight alone would not change the chain)
        return parts[0][1]
    return (parts[0][0] * parts[0][1] + parts[1][0] * parts[1][1]).compute_transition_matrix()
