"""tflib.datasets -- the offline datasets registry, the simulator with known answers, its knockouts and screens (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "available": "registry", "info": "registry", "get_entry": "registry", "REGISTRY": "registry",
    "UnknownDatasetError": "registry",
    "fetch": "retrieval", "cache_dir": "retrieval", "ChecksumMismatchError": "retrieval",
    "DatasetUnavailableError": "retrieval",
    "load": "readers",
    # The module is "simulator", not "simulate": a submodule named like the function would
    # replace the function on this package as soon as it is imported.
    "simulate": "simulator", "knockout": "simulator", "overexpress": "simulator",
    "true_regulators": "_perturb",
    "tf_symbols": "_names",  # the human TF list the simulator draws regulator names from
    "screen": "screening",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
