"""IBSD: Information-Bottleneck-based Self-Distillation for lightweight real-world SR, on BasicSR.

``import ibsd`` makes basicsr 1.4.2 work with current PyTorch (see :mod:`ibsd.compat`) and
registers IBSD's archs, losses, models, datasets and metrics in BasicSR's registries.
"""
from ibsd.compat import patch_basicsr as _patch_basicsr

_patch_basicsr()

from ibsd import archs, data, losses, metrics, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
