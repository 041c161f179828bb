"""tflib.tokenize -- tokenizers (rank-value, binned), vocabularies, gene medians and token stores (full list below)."""
from tflib._lazy import lazy_exports, package_doc

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
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
