"""Fixes that make basicsr 1.4.2 work with current PyTorch, torchvision, SciPy and on CPU.

Nothing in site-packages is edited: :func:`import_basicsr` imports basicsr through the finder of
``_ibsd_autoload`` (torchvision shim, SciPy warning) and :func:`patch_basicsr` replaces a few
basicsr functions at run time. Each fix is covered by ``tests/test_compat.py``. What IBSD adds to
every training run (checked options, exact resume, safe checkpoints) is installed separately, by
:mod:`ibsd.training.pipeline`.

Fixes:
- ``torchvision.transforms.functional_tensor`` is gone in torchvision >= 0.17 (``import
  basicsr`` fails on it);
- ``import basicsr`` raises a SciPy ``DeprecationWarning`` (``scipy.ndimage.filters``);
- ``--launcher pytorch`` always initialises NCCL and calls ``torch.cuda.set_device``, and
  ``BaseModel.model_to_device`` passes ``torch.cuda.current_device()`` to DDP (all fail on CPU):
  gloo and CPU DDP are used when CUDA is not available;
- ``BaseModel.load_network`` fails with ``KeyError: 'params'`` on plain state dicts such as the
  official IMDN/RFDN checkpoints and gives no file name on a mismatch: it now accepts every
  format :func:`ibsd.archs.checkpoint.extract_state_dict` knows and names the file on errors.

Fixed with the training features (:mod:`ibsd.training`), because the fix and the feature are one
function: ``basicsr.train.load_resume_state`` (unpickles anything, calls
``torch.cuda.current_device()`` on CPU, looks for ``--auto_resume`` states in the working directory),
``BaseModel.save_network`` / ``save_training_state`` (write in place, write NaN weights, carry on
after a failed write) and ``SRModel.nondist_validation``'s ``val: suffix`` read without a default.
"""
from __future__ import annotations

import os
import sys
from typing import Any

_PATCHED_FLAG = '_ibsd_patched'
ORIGINALS: dict[str, Any] = {}
"""basicsr's own versions of what :func:`patch_basicsr` and :func:`ibsd.training.pipeline.install` replaced, by name."""


def import_basicsr():
    """Import basicsr with the import-time fixes in place and return the module."""
    import _ibsd_autoload
    if 'basicsr' not in sys.modules:
        _ibsd_autoload.install()
    import basicsr
    return basicsr


def _init_dist_pytorch(backend: str, **kwargs: Any) -> None:
    """``--launcher pytorch`` for torchrun: NCCL on GPUs, gloo on CPU-only machines."""
    import torch
    import torch.distributed as dist
    rank = int(os.environ['RANK'])
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
    elif backend == 'nccl':
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def model_to_device(self, net):
    """Replacement for ``BaseModel.model_to_device``: DDP without ``device_ids`` on CPU."""
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        return DistributedDataParallel(net, device_ids=device_ids,
                                       find_unused_parameters=self.opt.get('find_unused_parameters', False))
    if self.opt['num_gpu'] > 1:
        return DataParallel(net)
    return net


def load_network(self, net, load_path: str, strict: bool = True, param_key: str | None = 'params') -> None:
    """Replacement for ``BaseModel.load_network`` accepting official checkpoint formats."""
    from basicsr.utils import get_root_logger

    from ibsd.archs.checkpoint import load_state_dict_file, load_into
    net = self.get_bare_model(net)
    state_dict, used_key = load_state_dict_file(load_path, param_key)
    get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, '
                           f'with param key: [{used_key}].')
    self._print_different_keys_loading(net, state_dict, strict)  # may rename size mismatches to *.ignore
    load_into(net, state_dict, strict=strict, source=load_path)


def patch_basicsr() -> None:
    """Apply the run-time fixes to the imported basicsr (idempotent)."""
    basicsr = import_basicsr()
    if getattr(basicsr, _PATCHED_FLAG, False):
        return
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util
    ORIGINALS.update(_init_dist_pytorch=dist_util._init_dist_pytorch, load_network=BaseModel.load_network,
                     model_to_device=BaseModel.model_to_device)
    dist_util._init_dist_pytorch = _init_dist_pytorch
    BaseModel.load_network = load_network
    BaseModel.model_to_device = model_to_device
    setattr(basicsr, _PATCHED_FLAG, True)


MOVED = {'CheckpointWriteError': 'ibsd.training.checkpoints', 'NonFiniteWeightsError': 'ibsd.training.checkpoints',
         'write_atomically': 'ibsd.training.checkpoints', 'load_training_state': 'ibsd.training.checkpoints',
         'latest_training_state': 'ibsd.training.checkpoints', 'sampling_record': 'ibsd.training.resume',
         'state_epoch': 'ibsd.training.resume'}
"""Names that lived here before the training features moved to :mod:`ibsd.training`."""


def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module 'ibsd.compat' has no attribute '{name}'")
    import importlib
    import warnings
    warnings.warn(f'ibsd.compat.{name} moved to {MOVED[name]}.{name}', DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(MOVED[name]), name)
