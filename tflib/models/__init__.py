"""tflib.models -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

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
__all__ = sorted(_EXPORTS)
