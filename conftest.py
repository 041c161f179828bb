"""Shared pytest setup (unit tests and the nbval notebook runs).

The real datasets come from the offline mirror. ``make`` exports ``TFLIB_DATA_MIRROR`` (the
``../shared/data`` folder beside the checkout); running ``pytest`` directly gets the same
default here, so no test ever reaches for the network.
"""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests never open windows (notebooks keep their inline backend)

_DEFAULT_MIRROR = Path(__file__).resolve().parent.parent / "shared" / "data"
if not os.environ.get("TFLIB_DATA_MIRROR") and _DEFAULT_MIRROR.is_dir():
    os.environ["TFLIB_DATA_MIRROR"] = str(_DEFAULT_MIRROR)
