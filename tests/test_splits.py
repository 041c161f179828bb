"""Split hygiene: explicit splits by group, leak detection, and classes too small to learn."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

from tflib.tl import SplitLeakError, check_class_sizes, check_split, make_split


@pytest.fixture
def adata():
    n = 60
    obs = pd.DataFrame(
        {
            "donor": np.repeat(["d1", "d2", "d3", "d4"], 15),
            "cell_type": np.tile(["T", "B", "NK"], 20),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    return ad.AnnData(np.zeros((n, 3), dtype=np.float32), obs=obs)


def test_split_by_named_group(adata):
    split = make_split(adata, by="donor", test="d2")
    assert len(split.test) == 15 and len(split.train) == 45
    assert set(adata.obs.loc[split.test, "donor"]) == {"d2"}
    assert "d2" not in set(adata.obs.loc[split.train, "donor"])
    assert adata.obs["split"].value_counts()["test"] == 15
    assert "by 'donor'" in split.describe()


def test_random_group_split_is_seeded_and_never_shares_a_group(adata):
    a = make_split(adata, by="donor", test_size=0.5, seed=3, key_added=None)
    b = make_split(adata, by="donor", test_size=0.5, seed=3, key_added=None)
    assert a.test_groups == b.test_groups and len(a.test_groups) == 2
    assert not set(adata.obs.loc[a.train, "donor"]) & set(adata.obs.loc[a.test, "donor"])
    assert "split" not in adata.obs


def test_an_existing_split_column_is_kept_unless_overwrite(adata):
    first = make_split(adata, by="donor", test="d2")
    before = adata.obs.copy()
    with pytest.raises(ValueError, match=r"already has a column 'split'.*overwrite=True.*key_added="):
        make_split(adata, by="donor", test="d3")
    pd.testing.assert_frame_equal(adata.obs, before)                  # the failed call wrote nothing
    assert set(adata.obs_names[adata.obs["split"] == "test"]) == set(first.test)
    second = make_split(adata, by="donor", test="d3", overwrite=True)
    assert set(adata.obs_names[adata.obs["split"] == "test"]) == set(second.test)
    make_split(adata, by="donor", test="d1", key_added="split_d1")   # another column is fine
    assert set(adata.obs.loc[adata.obs["split_d1"] == "test", "donor"]) == {"d1"}
    assert set(adata.obs.loc[adata.obs["split"] == "test", "donor"]) == {"d3"}


def test_a_user_column_survives_a_refused_split(adata):
    adata.obs["split"] = "mine"
    with pytest.raises(ValueError, match="overwrite=True"):
        make_split(adata, test_size=0.5)
    assert (adata.obs["split"] == "mine").all()


def test_old_output_key_name_still_works_with_a_warning(adata):
    with pytest.warns(FutureWarning, match="key_added"):
        make_split(adata, by="donor", test="d2", key="holdout")
    assert adata.obs["holdout"].value_counts()["test"] == 15 and "split" not in adata.obs


def test_options_are_keyword_only(adata):
    split = make_split(adata, by="donor", test="d2", key_added=None)
    check_split(adata, split=split)
    with pytest.warns(FutureWarning, match=r"check_split\(adata, split=split\)"):
        check_split(adata, split)                                     # the old call, for one release
    with pytest.raises(TypeError, match="by keyword"):
        check_split(adata, split, split)
    with pytest.raises(TypeError, match="positional"):
        make_split(adata, "donor")


def test_cell_level_split_stratified(adata):
    split = make_split(adata, test_size=0.5, stratify="cell_type", seed=0)
    counts = adata.obs.loc[split.test, "cell_type"].value_counts()
    assert counts.tolist() == [10, 10, 10]
    assert len(split.train.intersection(split.test)) == 0


def test_a_class_too_small_to_stratify_names_it_and_the_fix_works(adata):
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.loc["cell0", "cell_type"] = "Platelet"                  # one cell of its kind
    before = adata.obs.copy()
    with pytest.raises(ValueError, match=r"1 class\(es\) of obs\['cell_type'\] have a single cell: \['Platelet'\]"):
        make_split(adata, test_size=0.5, stratify="cell_type", seed=0)
    pd.testing.assert_frame_equal(adata.obs, before)                  # nothing written
    kept = adata[adata.obs["cell_type"].map(adata.obs["cell_type"].value_counts()) >= 2].copy()  # the fix
    split = make_split(kept, test_size=0.5, stratify="cell_type", seed=0)
    assert len(split.test) + len(split.train) == 59


def test_leaking_cells_raise(adata):
    with pytest.raises(SplitLeakError, match=r"2 cell\(s\) are in both train and test"):
        check_split(adata, train=adata.obs_names[:40], test=adata.obs_names[38:])


def test_leaking_groups_raise(adata):
    # Disjoint cells, but donor d3 sits on both sides of a split that claims to be by donor.
    with pytest.raises(SplitLeakError, match=r"\['d3'\] occur in both"):
        check_split(adata, train=adata.obs_names[:35], test=adata.obs_names[35:], by="donor")


def test_boolean_masks_and_duplicate_names(adata):
    m = np.zeros(adata.n_obs, bool)
    m[:30] = True
    check_split(adata, train=m, test=~m)  # clean
    with pytest.raises(SplitLeakError, match="both"):
        check_split(adata, train=m, test=m | ~m)
    dup = adata.copy()
    dup.obs_names = ["same"] * 2 + list(dup.obs_names[2:])
    with pytest.raises(SplitLeakError, match="obs_names_make_unique"):
        make_split(dup, by="donor", test="d1")


def test_bad_split_requests(adata):
    with pytest.raises(ValueError, match="do not occur"):
        make_split(adata, by="donor", test="d9")
    with pytest.raises(ValueError, match="no training cells"):
        make_split(adata, by="donor", test=["d1", "d2", "d3", "d4"])
    with pytest.raises(KeyError, match="batch"):
        make_split(adata, by="batch", test="x")
    with pytest.raises(ValueError, match="not in adata"):
        check_split(adata, train=["nope"], test=adata.obs_names[:3])


def test_class_with_fewer_than_two_training_cells_raises():
    labels = ["T"] * 5 + ["B"] * 3 + ["Eryth"]
    with pytest.raises(ValueError, match=r"'Eryth' \(1\).*Fix: drop or merge"):
        check_class_sizes(labels)
    assert check_class_sizes(labels[:-1]).to_dict() == {"T": 5, "B": 3}


def test_subsample_split_keeps_groups_and_strata(adata):
    from tflib.tl import subsample_split

    split = make_split(adata, by="donor", test="d2", key_added=None)
    small = subsample_split(adata, split, n_train=30, n_test=9, stratify="cell_type", seed=1)
    assert len(small.train) == 30 and len(small.test) == 9
    assert set(small.train) <= set(split.train) and set(small.test) <= set(split.test)
    assert adata.obs.loc[small.test, "cell_type"].value_counts().tolist() == [3, 3, 3]
    again = subsample_split(adata, split, n_train=30, n_test=9, stratify="cell_type", seed=1)
    assert small.train.equals(again.train)


def test_downsample_class_makes_it_rare_in_training_only(adata):
    from tflib.tl import downsample_class

    split = make_split(adata, by="donor", test="d4", key_added=None)          # 45 train cells, 15 per type
    rare = downsample_class(adata, split, "cell_type", "NK", fraction=0.1, seed=0)
    train_types = adata.obs.loc[rare.train, "cell_type"]
    # 30 other training cells; 10 % of the training set -> round(0.1 * 30 / 0.9) = 3 NK cells
    assert (train_types == "NK").sum() == 3 and (train_types != "NK").sum() == 30
    assert rare.test.equals(split.test)
    tiny = downsample_class(adata, split, "cell_type", "NK", fraction=0.001)
    assert (adata.obs.loc[tiny.train, "cell_type"] == "NK").sum() == 2   # never fewer than 2
    with pytest.raises(ValueError, match="no training cells"):
        downsample_class(adata, split, "cell_type", "Mono")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        downsample_class(adata, split, "cell_type", "NK", fraction=1.5)
