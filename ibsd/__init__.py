"""IBSD: Information-Bottleneck-based Self-Distillation for lightweight real-world SR, on BasicSR.

``import ibsd`` makes basicsr 1.4.2 work with current PyTorch (:mod:`ibsd.compat`), installs what
every ``ibsd-train`` run gets beyond BasicSR (:mod:`ibsd.training.pipeline`: checked options, exact
resume, safe checkpoints) and registers IBSD's archs, losses, models and metrics in BasicSR's
registries. The package's layers, bottom up, are described in ``docs/layout.md``.
"""
from ibsd.compat import patch_basicsr as _patch_basicsr
from ibsd.training.pipeline import install as _install_training_features

_patch_basicsr()
_install_training_features()

from ibsd import archs, losses, metrics, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
