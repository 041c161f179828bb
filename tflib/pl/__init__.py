"""tflib.pl -- see CONTRIBUTING.md. Exported names are loaded lazily from their topic module."""
from tflib._lazy import lazy_exports

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
__all__ = sorted(_EXPORTS)
