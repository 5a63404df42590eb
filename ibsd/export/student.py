"""The network to export: loaded as ``ibsd-infer`` loads it, a same-size network behind its bicubic upscale."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ibsd.inference import NetworkSpec, bicubic, load_network, probe_pattern


class PreUpscaled(nn.Module):
    """A same-size network (IMDN_AS) behind a bicubic upscale, as ``ibsd-infer --scale`` runs it."""

    def __init__(self, net: nn.Module, scale: int):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(bicubic(x, self.scale))


@dataclass
class Student:
    """The network to export (eval mode, CPU, float32) and what is known about it."""

    net: nn.Module
    name: str
    scale: int
    parameters: int


def load_student(spec: NetworkSpec, weights: str | Path, param_key: str | None = 'params_ema',
                 log: Callable[[str], None] | None = None) -> Student:
    """Build and load the network with :func:`ibsd.inference.load_network` (pixel range and scale checked),
    on the CPU in float32.

    Raises:
        ibsd.inference.InferenceError: The network cannot be built, loaded or give the scale asked for.
    """
    loaded = load_network(spec, weights, param_key=param_key, device='cpu', dtype=torch.float32, log=log)
    net = loaded.net
    name = net.__class__.__name__
    if loaded.pre_scale != 1:
        net = PreUpscaled(net, loaded.pre_scale)
    net = net.eval().requires_grad_(False)
    with torch.no_grad():
        out = net(probe_pattern(24))
    return Student(net, name, out.shape[-1] // 24, sum(p.numel() for p in net.parameters()))
