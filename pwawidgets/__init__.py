"""pwawidgets: the exact piece-wise affine decomposition of ReLU networks, with a course and widgets."""

from . import data, metrics, zoo
from .audit import AuditReport, audit
from .bias import bias_sources
from .core import Decomposition, decompose
from .exactness import region_radius, verify
from .images import ImageLoadError, ImageWarning, display_image, load_image
from .layers import layer_presets
from .models import WeightsUnavailableError, imagenet_categories, load_model
from .precision import ExactnessWarning, exact_math
from .preprocessing import IMAGENET_NORMALIZATION, Preprocessing, PreprocessingWarning, preprocessing_of
from .regions import enumerate_regions, train_toy

__all__ = [
    "IMAGENET_NORMALIZATION",
    "AuditReport",
    "Decomposition",
    "ExactnessWarning",
    "ImageLoadError",
    "ImageWarning",
    "Preprocessing",
    "PreprocessingWarning",
    "WeightsUnavailableError",
    "audit",
    "bias_sources",
    "decompose",
    "data",
    "display_image",
    "enumerate_regions",
    "exact_math",
    "imagenet_categories",
    "layer_presets",
    "load_image",
    "load_model",
    "metrics",
    "preprocessing_of",
    "region_radius",
    "train_toy",
    "verify",
    "zoo",
]
__version__ = "0.1.0"
