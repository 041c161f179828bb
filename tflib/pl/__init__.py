"""tflib.pl -- the course's plots (scanpy's ``pl``) (full list below)."""
from tflib._lazy import lazy_exports, package_doc

# name -> module inside this package. Add one line per public name.
_EXPORTS: dict[str, str] = {
    "workflow_figure": "workflow",
    "fate_donuts": "fates",
    "fate_colors": "fates",
    "phase_portraits": "velocity",
    "velocity_stream": "velocity",
    "loss_curve": "training",
    "scaling_curves": "training",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__doc__ = package_doc(__file__, __doc__, _EXPORTS)
__all__ = sorted(_EXPORTS)
