"""accelerate-fp8: ``Accelerator(mixed_precision="fp8")`` with torchao, TransformerEngine or MS-AMP.

Importing this package imports none of those libraries; the one selected by the recipe is
imported when the ``Accelerator`` is created.
"""

__version__ = "0.1.0"

from .errors import FP8BackendNotInstalledError, FP8HardwareError, FP8NoLayersConvertedWarning
from .layers import FP8ConversionReport, conversion_report, converted_layer_count
from .recipe import FP8Recipe

__all__ = [
    "FP8BackendNotInstalledError",
    "FP8ConversionReport",
    "FP8HardwareError",
    "FP8NoLayersConvertedWarning",
    "FP8Recipe",
    "__version__",
    "conversion_report",
    "converted_layer_count",
]
