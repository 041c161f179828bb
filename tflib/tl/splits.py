"""Explicit train/test splits and the checks that keep them honest.

Chapters 02 and 07 evaluate every classifier and every atlas mapping on a split that is
*named* in the code (which batch, which donor, which cells), written into ``adata.obs`` and
checked for leaks before any model sees it. Two kinds of leak are caught:

* the same cell (``obs_names`` entry) in both parts;
* the same *group* (batch, donor, sample) in both parts, when the split claims to be by group.

A split by group is the honest default for single-cell data: cells from one donor or one batch
share technical and biological signal, so a random cell-level split overstates accuracy.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tflib._compat import renamed_kwargs

__all__ = ["Split", "SplitLeakError", "make_split", "check_split", "check_class_sizes", "subsample_split",
           "downsample_class"]


class SplitLeakError(ValueError):
    """Raised when train and test share cells or (for a group split) groups."""


@dataclass(frozen=True)
class Split:
    """A named train/test partition of an AnnData's cells.

    Attributes
    ----------
    train, test
        ``obs_names`` of the two parts (disjoint; see :func:`check_split`).
    by
        The ``obs`` column the split respects (no value of it in both parts), or ``None`` for a
        cell-level random split.
    test_groups
        The values of ``by`` that form the test part (empty for a cell-level split).
    seed
        The seed used (``None`` when nothing was random).
    """

    train: pd.Index
    test: pd.Index
    by: str | None = None
    test_groups: tuple = ()
    seed: int | None = None

    def masks(self, adata) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (train, test) over ``adata.obs_names``."""
        return adata.obs_names.isin(self.train), adata.obs_names.isin(self.test)

    def describe(self) -> str:
        """One line for a notebook: sizes and what the split is by."""
        how = f"by {self.by!r}, test = {list(self.test_groups)}" if self.by else "cell-level random"
        return f"Split ({how}): {len(self.train)} train cells, {len(self.test)} test cells"


def _check_unique_names(adata) -> None:
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()[:5].tolist()
        raise SplitLeakError(
            f"obs_names are not unique (e.g. {dup}), so a split by name could put one cell in "
            "both parts. Fix: call adata.obs_names_make_unique() before splitting."
        )


@renamed_kwargs(key="key_added")
def make_split(
    adata,
    *,
    by: str | None = None,
    test=None,
    test_size: float = 0.25,
    seed: int = 0,
    stratify: str | None = None,
    key_added: str | None = "split",
    overwrite: bool = False,
) -> Split:
    """Split cells into train and test, explicitly, and record it in ``adata.obs[key_added]``.

    Used in chapters 02 (reference vs query for atlas mapping) and 07 (annotation).

    There is no ``copy`` option: the verb's purpose is the returned :class:`Split`; the only
    thing it writes into ``adata`` is ``obs[key_added]`` (pass ``key_added=None`` to write
    nothing). A failed call writes nothing.

    Parameters
    ----------
    adata
        The cells to split.
    by
        An ``obs`` column (batch, donor, condition). Whole groups go to one side only.
    test
        With ``by``: the group value (or list of values) that forms the test part, e.g.
        ``by="stim", test="STIM"``. If ``None``, a random ``test_size`` fraction of the groups
        (at least one) is drawn with ``seed``.
    test_size
        Fraction for random splits: of groups with ``by``, of cells without it.
    seed
        Seed for the random draws.
    stratify
        Without ``by`` only: an ``obs`` column whose proportions the two parts keep
        (e.g. ``"cell_type"``).
    key_added
        ``obs`` column that receives ``"train"``/``"test"`` (categorical); ``None`` writes
        nothing. (Called ``key`` before; the old name works for one release with a warning.)
    overwrite
        Replace an existing ``obs[key_added]`` column. By default an existing column (e.g. a
        split made earlier, or copied along with ``obs``) is refused, with the fix in the message.

    Returns
    -------
    Split
        The partition; it has already passed :func:`check_split`. Writes
        ``adata.obs[key_added]`` (categories ``["train", "test"]``).
    """
    if key_added is not None and key_added in adata.obs.columns and not overwrite:
        raise ValueError(
            f"adata.obs already has a column {key_added!r}; make_split does not replace it silently. "
            f"Pass overwrite=True to replace it, or key_added='another_name' (key_added=None writes nothing)."
        )
    _check_unique_names(adata)
    names = adata.obs_names
    if by is not None:
        if by not in adata.obs:
            raise KeyError(
                f"adata.obs has no column {by!r} to split by. Available: {list(adata.obs.columns)}."
            )
        groups = adata.obs[by].astype(str).to_numpy()
        levels = np.unique(groups)
        if len(levels) < 2:
            raise ValueError(
                f"obs[{by!r}] has a single value ({levels[0]!r}); a split by it would leave one part "
                "empty. Split by another column or use by=None for a cell-level split."
            )
        if test is None:
            rng = np.random.default_rng(seed)
            n_test = max(1, int(round(test_size * len(levels))))
            n_test = min(n_test, len(levels) - 1)
            test_groups = tuple(sorted(rng.choice(levels, size=n_test, replace=False).tolist()))
        else:
            wanted = [test] if np.isscalar(test) else list(test)
            test_groups = tuple(str(t) for t in wanted)
            unknown = sorted(set(test_groups) - set(levels))
            if unknown:
                raise ValueError(
                    f"Test group(s) {unknown} do not occur in obs[{by!r}], whose values are "
                    f"{levels.tolist()}. Pick test= from those values."
                )
            if set(test_groups) == set(levels):
                raise ValueError(
                    f"test={list(test_groups)} covers every value of obs[{by!r}], leaving no "
                    "training cells. Leave at least one group for training."
                )
        is_test = np.isin(groups, test_groups)
        split = Split(names[~is_test], names[is_test], by=by, test_groups=test_groups,
                      seed=seed if test is None else None)
    else:
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must lie strictly between 0 and 1, got {test_size}.")
        from sklearn.model_selection import train_test_split

        strat = None
        if stratify is not None:
            if stratify not in adata.obs:
                raise KeyError(f"adata.obs has no column {stratify!r} to stratify by.")
            strat = adata.obs[stratify].astype(str).to_numpy()
        idx = np.arange(adata.n_obs)
        try:
            tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strat)
        except ValueError as err:
            if strat is None:
                raise
            sizes = pd.Series(strat).value_counts()
            rare = sizes[sizes < 2]
            detail = (f"{len(rare)} class(es) of obs[{stratify!r}] have a single cell: {list(rare.index[:5])}"
                      if len(rare) else f"obs[{stratify!r}] has {len(sizes)} classes")
            raise ValueError(
                f"cannot stratify the split by obs[{stratify!r}]: {detail}, and a stratified split needs "
                f"every class in both parts ({err}). Fix: drop or merge the rare classes first "
                f"(e.g. adata[adata.obs[{stratify!r}].map(adata.obs[{stratify!r}].value_counts()) >= 2]), "
                "choose a test_size that leaves room for every class, or pass stratify=None.") from err
        split = Split(names[np.sort(tr)], names[np.sort(te)], by=None, seed=seed)

    check_split(adata, split=split)
    if key_added is not None:
        adata.obs[key_added] = pd.Categorical(
            np.where(names.isin(split.test), "test", "train"), categories=["train", "test"]
        )
    return split


def _split_by_position_deprecated(func):
    """Accept the old ``check_split(adata, split)`` for one release, with a ``FutureWarning``."""

    @functools.wraps(func)
    def wrapper(adata, *args, **kwargs):
        if args:
            if len(args) > 1 or "split" in kwargs:
                raise TypeError("check_split takes adata positionally and everything else by keyword: "
                                "check_split(adata, split=split) or check_split(adata, train=..., test=...).")
            warnings.warn("check_split(adata, split) is deprecated and will be removed in the next release; "
                          "write check_split(adata, split=split).", FutureWarning, stacklevel=2)
            kwargs["split"] = args[0]
        return func(adata, **kwargs)

    return wrapper


@_split_by_position_deprecated
def check_split(adata, *, split: Split | None = None, train=None, test=None, by: str | None = None):
    """Raise :class:`SplitLeakError` if train and test share cells or groups.

    Used before every evaluation in chapters 02 and 07. Pass either ``split=`` (a
    :class:`Split`) or the ``train=``/``test=`` cell names (or boolean masks over ``adata``).
    Reads ``adata.obs_names`` (and ``adata.obs[by]``); writes nothing.

    Parameters
    ----------
    adata
        The AnnData the names refer to.
    split
        A :class:`Split`; its ``by`` is checked unless ``by`` is given.
    train, test
        Alternatively, ``obs_names`` (or boolean masks) of the two parts.
    by
        An ``obs`` column whose values must not occur on both sides.

    Returns
    -------
    None
        Silent when the split is clean.
    """
    _check_unique_names(adata)
    if split is not None:
        train, test = split.train, split.test
        by = by if by is not None else split.by
    if train is None or test is None:
        raise TypeError("Pass split=<a Split>, or both train= and test=.")

    def _names(part, what):
        arr = np.asarray(part)
        if arr.dtype == bool:
            if arr.shape[0] != adata.n_obs:
                raise ValueError(f"The {what} mask has {arr.shape[0]} entries, adata has {adata.n_obs} cells.")
            return adata.obs_names[arr]
        idx = pd.Index(arr.astype(str))
        if not idx.is_unique:
            dup = idx[idx.duplicated()].unique()[:5].tolist()
            raise SplitLeakError(f"The {what} part lists cells more than once (e.g. {dup}). Deduplicate it.")
        missing = idx.difference(adata.obs_names)
        if len(missing):
            raise ValueError(
                f"{len(missing)} {what} cell(s) are not in adata (e.g. {missing[:3].tolist()}). "
                "Build the split from this AnnData's obs_names."
            )
        return idx

    tr, te = _names(train, "train"), _names(test, "test")
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"Empty split part: {len(tr)} train and {len(te)} test cells.")
    shared = tr.intersection(te)
    if len(shared):
        raise SplitLeakError(
            f"{len(shared)} cell(s) are in both train and test (e.g. {shared[:3].tolist()}): the "
            "test score would be inflated. Fix: build the split with tflib.tl.make_split, or drop "
            "these cells from one side."
        )
    if by is not None:
        if by not in adata.obs:
            raise KeyError(f"adata.obs has no column {by!r}.")
        col = adata.obs[by].astype(str)
        both = sorted(set(col.loc[tr]) & set(col.loc[te]))
        if both:
            raise SplitLeakError(
                f"The split is meant to be by {by!r}, but group(s) {both[:5]} occur in both train "
                f"and test. Fix: assign whole {by!r} groups to one side (make_split(by={by!r}, ...))."
            )


def check_class_sizes(labels, *, min_cells: int = 2, where: str = "training") -> pd.Series:
    """Raise if any class has fewer than ``min_cells`` cells; return the class counts.

    Used by the annotation baselines and label transfer (chapters 02, 07): a class seen once
    (or never) in training cannot be learned, and a classifier would silently never predict it.
    """
    counts = pd.Series(np.asarray(labels).astype(str)).value_counts()
    small = counts[counts < min_cells]
    if len(small):
        listing = ", ".join(f"{k!r} ({v})" for k, v in small.items())
        raise ValueError(
            f"{len(small)} class(es) have fewer than {min_cells} {where} cells: {listing}. "
            "Fix: drop or merge these classes (e.g. adata = adata[~adata.obs[label_key]"
            f".isin({small.index.tolist()})]), or choose a split that puts at least {min_cells} "
            f"cells of each class in {where}."
        )
    return counts


def subsample_split(adata, split: Split, *, n_train: int | None = None, n_test: int | None = None,
                    stratify: str | None = None, seed: int = 0) -> Split:
    """A smaller split with the same groups: at most ``n_train`` / ``n_test`` cells of each part.

    Chapter 07 uses it to fit fine-tuning into its CPU budget. Cells are drawn without
    replacement (stratified by ``obs[stratify]`` when given, so rare classes keep their share);
    nothing moves between the parts, so the split stays as leak-free as the original.

    Parameters
    ----------
    adata
        The AnnData the split refers to (read only: nothing is written into it).
    split
        The :class:`Split` to shrink.
    n_train, n_test
        At most this many cells of each part (``None``: keep the part whole).
    stratify
        An ``obs`` column whose proportions each part keeps (a class too small to stratify
        falls back to a plain random draw).
    seed
        Seed for the draws.

    Returns
    -------
    Split
        The smaller split (a new object; ``adata`` and ``split`` are unchanged).
    """
    from sklearn.model_selection import train_test_split

    def _draw(names, n, offset):
        if n is None or n >= len(names):
            return names
        strat = adata.obs.loc[names, stratify].astype(str).to_numpy() if stratify else None
        try:
            keep, _ = train_test_split(np.asarray(names), train_size=int(n), random_state=seed + offset,
                                       stratify=strat)
        except ValueError:                                              # a class too small to stratify
            keep, _ = train_test_split(np.asarray(names), train_size=int(n), random_state=seed + offset)
        return pd.Index(np.sort(keep))

    check_split(adata, split=split)
    out = Split(_draw(split.train, n_train, 0), _draw(split.test, n_test, 1), by=split.by,
                test_groups=split.test_groups, seed=seed)
    check_split(adata, split=out)
    return out


def downsample_class(adata, split: Split, label_key: str, cls: str, *, fraction: float = 0.015,
                     seed: int = 0) -> Split:
    """Keep only enough training cells of class ``cls`` that they make up ``fraction`` of training.

    The rare-population experiment of chapter 07: the test part is unchanged, so every method's
    recall on ``cls`` is measured on the same, full set of test cells. At least 2 training cells
    of ``cls`` are kept (fewer cannot be learned; see :func:`check_class_sizes`).

    Parameters
    ----------
    adata
        The AnnData the split refers to (read only: nothing is written into it).
    split
        The :class:`Split` whose training part is thinned.
    label_key
        The ``obs`` column holding the classes.
    cls
        The class to make rare.
    fraction
        Its target share of the training cells, strictly between 0 and 1.
    seed
        Seed for choosing which cells of ``cls`` stay.

    Returns
    -------
    Split
        The new split (the rare class is about ``fraction`` of its training cells); ``adata``
        and ``split`` are unchanged.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction} must lie strictly between 0 and 1 (e.g. 0.015 for 1.5 %).")
    check_split(adata, split=split)
    labels = adata.obs.loc[split.train, label_key].astype(str)
    if cls not in set(labels):
        raise ValueError(f"class {cls!r} has no training cells; classes: {sorted(labels.unique())}.")
    others = labels.index[labels != cls]
    target = labels.index[labels == cls]
    n_keep = max(2, int(round(fraction * len(others) / (1.0 - fraction))))
    if n_keep < len(target):
        rng = np.random.default_rng(seed)
        target = pd.Index(np.sort(rng.choice(np.asarray(target), size=n_keep, replace=False)))
    train = split.train[split.train.isin(others.append(target))]
    out = Split(train, split.test, by=split.by, test_groups=split.test_groups, seed=seed)
    check_split(adata, split=out)
    return out
