"""Thin layers over the engine for users of other explanation libraries.

- :mod:`pwawidgets.integrations.captum`: ``PiecewiseAffine`` and ``LayerPiecewiseAffine``, Captum attribution
  methods whose convergence delta is the exactness error (score - sum of attributions - bias);
- :mod:`pwawidgets.integrations.gradcam`: ``PiecewiseAffineCAM``, a pytorch-grad-cam ``BaseCAM``;
- :mod:`pwawidgets.integrations.quantus`: an ``explain_func`` for Quantus, the completeness with the bias, and
  Quantus 0.6.0's PixelFlipping, ROAD and Selectivity with their pitfalls worked around (needs the optional extra,
  ``pip install pwawidgets[quantus]``).

Nothing is imported here: each submodule imports its library when it is imported itself.
"""
