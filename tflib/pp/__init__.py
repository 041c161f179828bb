"""tflib.pp -- preprocessing verbs: tokens into an AnnData, raw counts rebuilt from log-normalised values (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    # module "tokens", not "tokenize": a submodule named like the function would shadow it
    "tokenize": "tokens", "check_tokenizer": "tokens",
    "counts_from_lognorm": "counts",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
