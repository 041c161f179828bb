"""Before/after comparison of an AnnData, for the rule "a failed call leaves the input as it was"."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _array(M):
    return np.asarray(M.toarray() if sp.issparse(M) else M)


def snapshot(adata) -> dict:
    """A deep copy of everything a verb could change: X, layers, obs, var, uns/obsm/obsp keys."""
    return {
        "shape": adata.shape,
        "X": None if adata.X is None else _array(adata.X).copy(),
        "layers": {k: _array(v).copy() for k, v in adata.layers.items()},
        "obs": adata.obs.copy(deep=True),
        "var": adata.var.copy(deep=True),
        "uns": sorted(adata.uns.keys()),
        "obsm": sorted(adata.obsm.keys()),
        "obsp": sorted(adata.obsp.keys()),
        "varm": sorted(adata.varm.keys()),
    }


def assert_unchanged(adata, before: dict) -> None:
    """Fail with the first difference between ``adata`` and its :func:`snapshot`."""
    after = snapshot(adata)
    assert after["shape"] == before["shape"]
    if before["X"] is None:
        assert after["X"] is None
    else:
        np.testing.assert_array_equal(after["X"], before["X"])
        assert after["X"].dtype == before["X"].dtype
    assert sorted(after["layers"]) == sorted(before["layers"])
    for k, v in before["layers"].items():
        np.testing.assert_array_equal(after["layers"][k], v, err_msg=f"layers[{k!r}] changed")
        assert after["layers"][k].dtype == v.dtype, f"layers[{k!r}] changed dtype"
    pd.testing.assert_frame_equal(after["obs"], before["obs"])
    pd.testing.assert_frame_equal(after["var"], before["var"])
    for key in ("uns", "obsm", "obsp", "varm"):
        assert after[key] == before[key], f"{key} keys changed: {before[key]} -> {after[key]}"
