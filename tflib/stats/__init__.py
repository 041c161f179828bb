"""tflib.stats -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

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
    "pseudobulk": "pseudobulk",
    "pseudobulk_test": "pseudobulk",
    "cell_level_test": "pseudobulk",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
