"""TorchScript files: ``torch.jit.trace`` of the network, saved with ``torch.jit.save``."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ibsd.export.base import Exported, ExportError, Runner, first_line, warning_notes

TORCHSCRIPT_SUFFIX = '.torchscript.pt'


def export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> Exported:
    """``torch.jit.trace`` of ``net`` on ``example``, saved with ``torch.jit.save``.

    Raises:
        ExportError: The network cannot be traced, or the file cannot be written.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            traced = torch.jit.trace(net, example, check_trace=False)
        except Exception as error:
            raise ExportError(f'cannot trace {net.__class__.__name__} with torch.jit.trace: {first_line(error)}') \
                from error
        try:
            torch.jit.save(traced, str(path))
        except (OSError, RuntimeError) as error:
            raise ExportError(f'cannot write {path}: {first_line(error)}') from error
    return Exported(path, 'torch.jit.trace', notes=warning_notes(caught))


def torchscript_runner(path: Path) -> Runner:
    """A function running the TorchScript file ``path`` on the CPU (float32 output, no gradients)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='`torch.jit.load` is deprecated')
        module = torch.jit.load(str(path), map_location='cpu')

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x).float()
    return run
