"""Deprecated: tiled inference moved to :mod:`ibsd.inference.tiling` (kept so that old imports keep working)."""
import warnings

from ibsd.inference.tiling import tiled_forward  # noqa: F401

warnings.warn('ibsd.models.tiling moved to ibsd.inference.tiling', DeprecationWarning, stacklevel=2)
