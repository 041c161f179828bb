"""tflib.utils: the notebook setup helper."""
import numpy as np


def test_notebook_setup_seeds_and_quiets():
    import logging

    import matplotlib.pyplot as plt
    import scanpy as sc

    import tflib

    rng = tflib.utils.notebook_setup(5, dpi=77)
    assert rng.integers(1000) == np.random.default_rng(5).integers(1000)
    assert sc.settings.verbosity == 0 and plt.rcParams["figure.dpi"] == 77
    assert logging.getLogger("scvi").level == logging.ERROR
