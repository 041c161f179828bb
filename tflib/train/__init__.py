"""tflib.train -- pretraining and fine-tuning loops, training checkpoints, multi-process (DDP) runs (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "MaskingCollator": "data",
    "SyntheticCorpus": "data",
    "length_grouped_batches": "data",
    "padding_fraction": "data",
    "pad_batch": "data",
    "PretrainConfig": "pretrain",
    "PretrainResult": "pretrain",
    "run_pretraining": "pretrain",
    "FinetuneConfig": "finetuning",
    "FinetunedModel": "finetuned",
    "CellModel": "finetuning",
    "finetune": "finetuning",  # not finetune.py: the module would shadow the function
    "train_course_checkpoint": "corpus",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
