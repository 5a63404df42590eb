"""Which network to build: a YAML's ``network_g``, or an arch name with keyword arguments and a scale."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import yaml

import ibsd.archs  # noqa: F401  (registers the archs in ARCH_REGISTRY)
from basicsr.utils.registry import ARCH_REGISTRY

from ibsd.inference.errors import InferenceError

SCALE_KEYWORDS = ('upscale', 'scale', 'upscale_factor', 'upsampling')
"""Constructor keywords through which archs take their scale (IMDN/RFDN: ``upscale``; RRDBNet: ``scale``)."""
DEFAULT_SCALE = 4
"""The scale an arch named without one is built for (the paper's students are x4)."""


@dataclass
class NetworkSpec:
    """Keyword arguments of the network, which of them the user gave, and the scale asked for."""

    options: dict
    """``network_g``: the arch's ``type`` and its keyword arguments."""
    explicit: set
    """Keywords the user set (``img_range`` among them: the pixel range is then not changed, only warned of)."""
    scale: int | None
    """The output scale asked for; ``None``: the network's own."""


def scale_keyword(arch: type) -> str | None:
    """Name of the constructor argument that sets ``arch``'s scale; ``None`` for a fixed-scale arch."""
    parameters = inspect.signature(arch.__init__).parameters
    return next((name for name in SCALE_KEYWORDS if name in parameters), None)


def arch_class(name: str) -> type:
    """The registered arch ``name``.

    Raises:
        InferenceError: No arch of that name is registered (the message lists those that are).
    """
    if name not in ARCH_REGISTRY:
        known = sorted(ARCH_REGISTRY.keys())
        raise InferenceError(f"unknown arch '{name}'; registered archs: {', '.join(known)}")
    return ARCH_REGISTRY.get(name)


def network_spec(network_g: Mapping | None = None, *, arch: str | None = None, arch_kwargs: Mapping | None = None,
                 scale: int | None = None) -> NetworkSpec:
    """The network from a ``network_g`` mapping (every key explicit), or from an arch name.

    Args:
        network_g: A BasicSR ``network_g`` (``type`` and keyword arguments); excludes ``arch``.
        arch: A registered arch name, built with ``arch_kwargs``; an arch with a scale keyword
            (:data:`SCALE_KEYWORDS`) not in ``arch_kwargs`` gets ``scale`` (or :data:`DEFAULT_SCALE`).
        arch_kwargs: Keyword arguments for ``arch``, all explicit.
        scale: The output scale asked for (``None``: the network's own). A same-size network asked
            for a scale gets a bicubic upscale first (see :func:`ibsd.inference.load_network`).

    Raises:
        InferenceError: ``arch`` is not registered.
        ValueError: Neither or both of ``network_g`` and ``arch`` are given.
    """
    if (network_g is None) == (arch is None):
        raise ValueError('give network_g or arch, not both')
    if network_g is not None:
        network = dict(network_g)
        return NetworkSpec(network, set(network) - {'type'}, scale)
    network = {'type': arch, **(arch_kwargs or {})}
    explicit = set(arch_kwargs or {})
    keyword = scale_keyword(arch_class(arch))
    if keyword and keyword not in network:
        network[keyword] = scale or DEFAULT_SCALE
    return NetworkSpec(network, explicit, scale)


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    """The network ``spec`` describes, with freshly initialised weights.

    Raises:
        InferenceError: ``network_g`` has no type, the type is unknown, or the arch refuses the arguments.
    """
    options = dict(spec.options)
    name = options.pop('type', None)
    if not name:
        raise InferenceError('network_g has no type')
    try:
        return arch_class(name)(**options)
    except (TypeError, ValueError) as error:
        raise InferenceError(f'cannot build {name} with {options}: {error}') from error


def read_network_g(path: str | Path) -> dict:
    """The ``network_g`` of the BasicSR YAML ``path`` (the ``--opt`` of ``ibsd-infer`` and ``ibsd-export``).

    Raises:
        InferenceError: The file cannot be read, is no YAML mapping, or has no ``network_g``.
    """
    try:
        with open(path) as handle:
            options = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InferenceError(f'cannot read --opt {path}: {error}') from error
    if not isinstance(options, dict) or not isinstance(options.get('network_g'), dict):
        raise InferenceError(f'{path} has no network_g')
    return dict(options['network_g'])


def parse_arch_options(items: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings (``--arch-opt``) as keyword arguments, each value read as YAML (``num_feat=48``: 48).

    Raises:
        InferenceError: An item has no ``=`` or an empty key.
    """
    kwargs = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise InferenceError(f"--arch-opt expects KEY=VALUE, got '{item}'")
        kwargs[key.strip()] = yaml.safe_load(value)
    return kwargs


def add_network_arguments(parser) -> None:
    """The arguments that name a network and its weights, shared by ``ibsd-infer`` and ``ibsd-export``
    (read back with :func:`network_from_command_line`)."""
    parser.add_argument('--model-path', required=True, help='checkpoint: BasicSR net_g_*.pth or official weights')
    parser.add_argument('--param-key', default='params_ema', help='checkpoint key to prefer (default: params_ema)')
    parser.add_argument('-opt', '--opt', help='BasicSR YAML whose network_g describes the network')
    parser.add_argument('--arch', help='arch type, e.g. IMDN (when --opt is not given)')
    parser.add_argument('--scale', type=int,
                        help="output scale (default: 4 for --arch, the network's own for --opt or a fixed-scale "
                        'arch); a same-size network such as IMDN_AS gets a bicubic upscale by it first')
    parser.add_argument('--arch-opt', action='append', default=[], metavar='KEY=VALUE',
                        help='extra arch keyword, repeatable (e.g. num_feat=48)')


def network_from_command_line(opt: str | Path | None, arch: str | None, arch_opts: Sequence[str] = (),
                              scale: int | None = None) -> NetworkSpec:
    """The network as ``ibsd-infer`` and ``ibsd-export`` name it: the ``network_g`` of the YAML ``opt``
    (``--opt``), else ``arch`` (``--arch``) with ``arch_opts`` (``--arch-opt KEY=VALUE``); ``scale``: ``--scale``.

    Raises:
        InferenceError: The YAML cannot be read or has no ``network_g``, an ``arch_opts`` item is no
            ``KEY=VALUE``, or the arch is unknown.
    """
    if opt:
        return network_spec(read_network_g(opt), scale=scale)
    return network_spec(arch=arch, arch_kwargs=parse_arch_options(arch_opts), scale=scale)
