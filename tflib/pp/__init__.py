"""tflib.pp -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    # module "tokens", not "tokenize": a submodule named like the function would shadow it
    "tokenize": "tokens", "check_tokenizer": "tokens",
    "counts_from_lognorm": "counts",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
