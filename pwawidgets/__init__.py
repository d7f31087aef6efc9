"""pwawidgets: the exact piece-wise affine decomposition of ReLU networks, with a course and widgets."""

from . import baselines, data, fidelity, metrics, robustness, zoo
from .audit import AuditReport, audit
from .bias import BiasSources, bias_sources
from .core import Decomposition, LayerBiases, decompose, layer_biases
from .exactness import VerifyReport, region_radius, verify
from .images import ImageLoadError, ImageWarning, display_image, load_image
from .layers import layer_presets
from .models import WeightsUnavailableError, imagenet_categories, load_model
from .placement import best_device
from .precision import ExactnessWarning, exact_math
from .preprocessing import IMAGENET_NORMALIZATION, Preprocessing, PreprocessingWarning, preprocessing_of
from .regions import enumerate_regions, train_toy

__all__ = [
    "IMAGENET_NORMALIZATION",
    "AuditReport",
    "BiasSources",
    "Decomposition",
    "ExactnessWarning",
    "ImageLoadError",
    "ImageWarning",
    "LayerBiases",
    "VerifyReport",
    "Preprocessing",
    "PreprocessingWarning",
    "WeightsUnavailableError",
    "audit",
    "baselines",
    "best_device",
    "bias_sources",
    "data",
    "decompose",
    "display_image",
    "enumerate_regions",
    "exact_math",
    "fidelity",
    "imagenet_categories",
    "layer_biases",
    "layer_presets",
    "load_image",
    "load_model",
    "metrics",
    "preprocessing_of",
    "region_radius",
    "robustness",
    "train_toy",
    "verify",
    "zoo",
]
__version__ = "0.1.0"
