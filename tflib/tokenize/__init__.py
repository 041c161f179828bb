"""tflib.tokenize -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "GeneVocab": "vocab",
    "SPECIAL_TOKENS": "vocab",
    "VocabularyCoverageError": "vocab",
    "special_token_ids": "vocab",
    "load_gencode_table": "genes",
    "load_ortholog_table": "genes",
    "mouse_to_human": "genes",
    "GeneMedians": "medians",
    "gene_medians": "medians",
    "RankValueTokenizer": "rank",
    "PRESETS": "rank",
    "BinningTokenizer": "binning",
    "TokenizedCells": "_core",
    "TokenizerInputError": "_core",
    "EmptyCellsWarning": "_core",
    "TokenizerMismatchError": "base",
    "load_tokenizer": "registry",
    "check_configs": "base",
    "validate_token_sequences": "base",
    "TokenStore": "store",
    "TokenStoreWriter": "store",
    "PickleNotAllowedError": "geneformer",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
