"""Chained chapters: what one chapter saves, and how the next loads it or rebuilds it (chapter 03).

A chapter that computes something a later chapter needs (velocity, fate probabilities, a
simulated world) calls a *recipe*, a function of this module with plain keyword arguments,
and saves the result with :func:`save_artifact`. The later chapter calls
:func:`load_or_build` with the same recipe and arguments: it reads the saved file when the
file records exactly that call, and otherwise runs the recipe itself. Either way the later
chapter gets the same object, and it prints which of the two happened, so a reader who opens
chapter 13 alone gets the same numbers as one who ran 08 to 12 first.

Each saved ``.h5ad`` records its call in ``uns["tflib_artifact"]``: the recipe's dotted name,
its arguments (JSON), the ``tflib`` version that wrote it and a hash of ``tflib``'s source
(so a chapter run with an edited library does not read a file that the old code made). A file with another record is
never overwritten by :func:`load_or_build`; :func:`save_artifact` replaces a file only with
``overwrite=True``.

Recipes (each names the chapter that saves it and those that load it):

- :func:`pancreas_velocity`: chapter 08 saves, 09 and 10 load;
- :func:`pancreas_fates`: chapter 09 saves, 13 loads;
- :func:`world_velocity`: chapter 08 saves, 09 loads;
- :func:`course_world`: chapter 11 saves it, 12 and 13 load it;
- :func:`cellrank_world`: chapter 12 saves, 13 loads.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

__all__ = ["ARTIFACT_KEY", "save_artifact", "load_or_build", "describe_call",
           "pancreas_velocity", "pancreas_fates", "course_world", "world_velocity",
           "cellrank_world"]

#: The ``uns`` key in which a saved artifact records the call that made it.
ARTIFACT_KEY = "tflib_artifact"

_PLAIN = (bool, int, float, str, type(None))


def _record(recipe: Callable, kwargs: dict[str, Any]) -> dict[str, str]:
    for key, value in kwargs.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, _PLAIN) for v in items):
            raise TypeError(
                f"argument {key}={type(value).__name__} cannot be recorded with the artifact; a "
                "recipe takes plain values only (numbers, strings, booleans, None or lists of "
                "them). Give the recipe a seed or a dataset name instead of an object.")
    import tflib

    name = f"{recipe.__module__}.{recipe.__qualname__}"
    if "<" in recipe.__qualname__:        # every lambda is called "<lambda>": two would match
        raise TypeError(f"recipe {name} is a lambda or a local function, so the file could not "
                        "say which call made it; pass a function defined at module level.")
    return {"recipe": name, "kwargs": json.dumps(kwargs, sort_keys=True),
            "tflib_version": tflib.__version__, "source_sha256": _tflib_source_sha256()}


@functools.lru_cache(maxsize=1)
def _tflib_source_sha256() -> str:
    """One hash over every ``.py`` file of the installed ``tflib``: an edited library (a
    recipe, or anything a recipe calls) must not read a file that the old code wrote."""
    import tflib

    root = Path(tflib.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe_call(record: dict | None) -> str:
    """``"tflib.tl.chain.pancreas_velocity(seed=0)"`` from a record; ``"no tflib record"``."""
    if not record or "recipe" not in record:
        return "no tflib record"
    args = ", ".join(f"{k}={v!r}" for k, v in json.loads(str(record["kwargs"])).items())
    return f"{record['recipe']}({args})"


def _same_call(saved: dict | None, wanted: dict) -> bool:
    if not saved:
        return False
    return all(str(saved.get(k)) == wanted[k] for k in wanted)


def _saved_record(path: Path) -> dict | None:
    """The ``uns["tflib_artifact"]`` record of an ``.h5ad`` file, read alone (h5py); ``None``
    when the file has none or is not an HDF5 file (a foreign file, left as it is)."""
    import h5py
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as f:
            node = f.get(f"uns/{ARTIFACT_KEY}")
            return None if node is None else dict(read_elem(node))
    except OSError:
        return None


def save_artifact(adata, path, recipe: Callable, *, overwrite: bool = False, **kwargs) -> Path:
    """Write ``adata`` to ``path`` (``.h5ad``), recording that ``recipe(**kwargs)`` made it.

    Parameters
    ----------
    adata
        The object to save; it is left as it was (the record is written to the file only).
    path
        Target file; its folder is created. An existing file is replaced only with
        ``overwrite=True``, and the new file is written beside it first and then moved into
        place, so a failed write leaves the old file intact.
    recipe, kwargs
        The call that produced ``adata``: a function and its plain keyword arguments.
    overwrite
        Replace an existing file.

    Returns
    -------
    The path written. Used by chapters 08, 09, 11 and 12.
    """
    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"{path} does not end in .h5ad; artifacts are AnnData files, e.g. "
                         f"{path.with_suffix('.h5ad')}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose "
                              "another path.")
    record = _record(recipe, kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    had, before = ARTIFACT_KEY in adata.uns, adata.uns.get(ARTIFACT_KEY)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        adata.uns[ARTIFACT_KEY] = record
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if had:
            adata.uns[ARTIFACT_KEY] = before
        else:
            adata.uns.pop(ARTIFACT_KEY, None)
        if tmp.exists():
            tmp.unlink()
    return path


def load_or_build(path, recipe: Callable, *, save: bool = True, **kwargs):
    """The artifact at ``path`` if it records ``recipe(**kwargs)``; else run the recipe.

    Prints which of the three cases happened:

    - the file records the same call (recipe, arguments, ``tflib`` version and source):
      it is read;
    - there is no file: the recipe runs, and its result is saved there (``save=True``);
    - the file records another call: the recipe runs, and the file is left as it is.

    Returns
    -------
    An AnnData, equal to ``recipe(**kwargs)``. Chapters 09, 10, 12 and 13 load their inputs
    with it.
    """
    import anndata as ad

    path = Path(path)
    wanted = _record(recipe, kwargs)
    call = describe_call(wanted)
    if path.exists():
        found = _saved_record(path)                  # the record alone: a stale file is not read
        if _same_call(found, wanted):
            saved = ad.read_h5ad(path)
            print(f"loaded {path} (saved by {call})")
            return saved
        if found and all(str(found.get(k)) == wanted[k] for k in ("recipe", "kwargs")):
            why = f"was made by {call} with other tflib code"
        else:
            why = f"holds {describe_call(found)}, not {call}"
        print(f"{path} {why}: left as it is, rebuilding with {call}. Rerun the chapter that "
              "saves the file to refresh it.")
        return recipe(**kwargs)
    print(f"{path} not found: rebuilding with {call}")
    adata = recipe(**kwargs)
    if save:
        save_artifact(adata, path, recipe, **kwargs)
    return adata


# ---- recipes -------------------------------------------------------------------------------

def pancreas_velocity(*, seed: int = 0):
    """Chapter 08's stochastic RNA velocity on the pancreas (with UMAP); loaded by 09 and 10.

    ``tflib.datasets.load("pancreas")``, the course's colour-blind-safe palette in
    ``uns["clusters_colors"]`` (CellRank colours terminal states after their clusters), then
    :func:`tflib.tl.velocity` with ``mode="stochastic"``; see that function for the keys
    written.
    """
    from tflib.datasets import load
    from tflib.pl.workflow import OKABE_ITO
    from tflib.tl.rna_velocity import velocity

    adata = load("pancreas")
    adata.uns["clusters_colors"] = list(OKABE_ITO.values())[1:] + [OKABE_ITO["black"]]
    velocity(adata, mode="stochastic", seed=seed)
    return adata


def pancreas_fates(*, seed: int = 0):
    """Chapter 09's CellRank fates on the pancreas; loaded by chapter 13.

    :func:`pancreas_velocity`, then :func:`tflib.tl.fates` with five macrostates, terminal
    states at self-transition probability 0.9 and one initial state.
    """
    from tflib.tl.fate import fates

    adata = pancreas_velocity(seed=seed)
    fates(adata, cluster_key="clusters", n_states=5, stability_threshold=0.9, n_initial=1,
          seed=seed)
    return adata


def course_world(*, world_seed: int = 11, n_cells: int = 600, n_genes: int = 300,
                 n_fates: int = 3):
    """The small simulated world of chapters 08--13: one batch, three times the default depth.

    ``tflib.datasets.simulate(n_cells, n_genes, n_fates, n_batches=1, seed=world_seed,
    library_size=3.0)``. Chapter 11 saves it (``world_seed=11``), chapters 12 and 13 load it;
    :func:`world_velocity` and :func:`cellrank_world` start from it.
    """
    from tflib.datasets import simulate

    return simulate(n_cells=n_cells, n_genes=n_genes, n_fates=n_fates, n_batches=1,
                    seed=world_seed, library_size=3.0)


def world_velocity(*, world_seed: int = 0, seed: int = 0, n_cells: int = 600,
                   n_genes: int = 300, n_fates: int = 3, umap: bool = True):
    """:func:`course_world` with scVelo velocity.

    Chapter 08 saves it (``world_seed=0``) and chapter 09 loads it.
    :func:`tflib.tl.velocity` runs with ``min_shared_counts=10``; the simulator's truth
    (``obsm["fate_probs_true"]``, ``layers["velocity_true"]``, ...) is kept.
    """
    from tflib.tl.rna_velocity import velocity

    world = course_world(world_seed=world_seed, n_cells=n_cells, n_genes=n_genes,
                         n_fates=n_fates)
    return velocity(world, min_shared_counts=10,
                    umap=umap, seed=seed, copy=True)


def cellrank_world(*, world_seed: int = 11, seed: int = 0, n_cells: int = 600,
                   n_genes: int = 300, n_fates: int = 3):
    """CellRank fates and driver genes of a simulated world, named after the true fates.

    What an analyst would compute, with the names a reader can score: velocity
    (:func:`world_velocity`, no UMAP), :func:`tflib.tl.fates` with one initial and
    ``n_fates`` terminal states, :func:`tflib.tl.fate_drivers`; each terminal state is then
    named after the true fate of most of its cells (:func:`tflib.tl.match_terminal_states`).
    Chapter 12 saves it (``world_seed=11``) and chapter 13 loads it.

    Keys written, besides those of the functions above: ``obsm["fate_probs_cellrank"]``
    (DataFrame, cells × true fate names) and ``varm["fate_drivers_cellrank"]`` (CellRank's
    driver table with each state's prefix replaced by its fate's name, e.g. ``"A_corr"``).
    """
    from tflib.tl.drivers import fate_drivers
    from tflib.tl.fate import fate_probs_frame, fates
    from tflib.tl.trajectory_metrics import match_terminal_states

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        adata = world_velocity(world_seed=world_seed, seed=seed, n_cells=n_cells,
                               n_genes=n_genes, n_fates=n_fates, umap=False)
        fates(adata, cluster_key="fate", n_states=n_fates + 1, n_initial=1,
              n_terminal=n_fates, seed=seed)
        fate_drivers(adata, n_top=5)
    name = match_terminal_states(adata)["label"].to_dict()       # terminal state -> true fate
    adata.obsm["fate_probs_cellrank"] = fate_probs_frame(adata).rename(columns=name)
    drivers = adata.varm["terminal_lineage_drivers"]

    def renamed(column: str) -> str:
        for state, fate in name.items():
            if column.startswith(f"{state}_"):
                return f"{fate}{column[len(state):]}"
        return column

    adata.varm["fate_drivers_cellrank"] = drivers.rename(columns=renamed)
    return adata
