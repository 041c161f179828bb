"""tflib.stats -- tests, FDR, bootstrap intervals, pseudobulk and power for the hypotheses of chapters 12 and 13 (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "bootstrap_ci": "bootstrap",
    "BootstrapResult": "bootstrap",
    "fdr": "multiple_testing",
    "row_pearson": "correlation",
    "rank_test": "hypothesis",
    "permutation_test": "hypothesis",
    "depletion_score": "hypothesis",
    "test_hypotheses": "hypothesis",
    "validation_table": "scoring",
    "with_intervals": "scoring",
    "power": "sizing",  # not power.py: the module would shadow the function
    "sample_size": "sizing",
    # module "replicates", not "pseudobulk": a submodule named like the function would shadow it
    "pseudobulk": "replicates",
    "pseudobulk_test": "replicates",
    "cell_level_test": "replicates",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
