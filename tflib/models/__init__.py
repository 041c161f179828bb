"""tflib.models -- the Transcriptformer (pure torch), its checkpoints and the shipped course checkpoint (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "TranscriptformerConfig": "blocks",
    "Transcriptformer": "transformer",
    "TranscriptformerOutput": "transformer",
    "ClassificationHead": "heads",
    "load_pretrained": "transformer",
    "CheckpointError": "checkpoint",
    "from_hf_dir": "transformer",
    "course_checkpoint": "course",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
