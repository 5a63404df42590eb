"""Build a network, load its weights and check them, as ``ibsd-infer`` and ``ibsd-export`` load students."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ibsd.archs.checkpoint import CheckpointError, load_pretrained
from ibsd.inference.errors import InferenceError
from ibsd.inference.network import NetworkSpec, build_network
from ibsd.inference.probe import TRAINED_PSNR, fit_pixel_range, probe
from ibsd.inference.sizes import size_multiple

Log = Callable[[str], None]


@dataclass
class LoadedNetwork:
    """A network with its weights, in eval mode on its device, and how to run it."""

    net: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    native_scale: int
    """The network's own scale, measured on the probe pattern (1: a same-size network)."""
    pre_scale: int = 1
    """Bicubic upscale of the input before the network: the scale asked of a same-size network, else 1."""

    @property
    def scale(self) -> int:
        """The output scale: the pre-upscale times the network's own."""
        return self.pre_scale * self.native_scale

    @property
    def multiple(self) -> int:
        """The side multiple the network's input is padded to (:func:`~ibsd.inference.sizes.size_multiple`)."""
        return size_multiple(self.net)


def load_weights(net: torch.nn.Module, path: str | Path, param_key: str | None = 'params_ema') -> torch.nn.Module:
    """Load a BasicSR ``net_g_*.pth`` (``param_key`` preferred) or an official release into ``net``, strictly.

    Raises:
        InferenceError: The file is missing, unreadable, a training state, or holds weights of another
            network (the message says which and how they differ).
    """
    try:
        return load_pretrained(net, str(path), param_key=param_key)
    except (CheckpointError, OSError) as error:
        raise InferenceError(str(error)) from error


def load_network(spec: NetworkSpec, weights: str | Path, *, param_key: str | None = 'params_ema',
                 device: torch.device | str = 'cpu', dtype: torch.dtype = torch.float32,
                 detect_pixel_range: bool = True, log: Log | None = None) -> LoadedNetwork:
    """Build the network of ``spec``, load ``weights``, check its pixel range and scale, decide the pre-upscale.

    Args:
        spec: The network (:func:`~ibsd.inference.network.network_spec`).
        weights: The checkpoint file.
        param_key: The checkpoint key to prefer (BasicSR: ``params_ema``, then ``params``).
        device: Where the network runs.
        dtype: Its precision (``torch.float16`` on CUDA only).
        detect_pixel_range: Try the other ``img_range`` (1 or 255) when the weights look trained on
            it (:func:`~ibsd.inference.probe.fit_pixel_range`); off for networks whose options are
            known to be right (a run's own YAML).
        log: Receives the lines to tell the user (pixel range switched, weights that look untrained,
            the pre-upscale); ``None``: they are dropped.

    Raises:
        InferenceError: The network cannot be built or loaded, fails on the probe pattern, or cannot
            give the scale asked for.
    """
    log = log or (lambda message: None)
    device = torch.device(device)
    net = build_network(spec)
    load_weights(net, weights, param_key)
    net = net.to(device=device, dtype=dtype).eval()
    name = Path(weights).name
    if detect_pixel_range:
        for line in fit_pixel_range(net, 'img_range' in spec.explicit, device, dtype, name):
            log(line)
    native, psnr = probe(net, device, dtype)
    if psnr < TRAINED_PSNR:
        log(f'warning: on a test pattern the output of {name} is {psnr:.1f} dB from bicubic upscaling (a trained '
            f'network: over {TRAINED_PSNR:.0f} dB); check the network options and the checkpoint')
    pre_scale = 1
    if spec.scale is not None and spec.scale != native:
        if native != 1:
            raise InferenceError(f'{net.__class__.__name__} as configured upscales x{native}, not x{spec.scale}: set '
                                 f'its scale in --arch-opt or --opt, or drop --scale')
        pre_scale = spec.scale
        log(f'{net.__class__.__name__} keeps the input size: inputs get a bicubic x{pre_scale} upscale first')
    return LoadedNetwork(net, device, dtype, native, pre_scale)
