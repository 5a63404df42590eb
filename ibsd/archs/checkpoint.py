"""Load weights from BasicSR checkpoints and from the official IMDN / RFDN releases.

Accepted formats: a plain state dict; a dict that wraps one under ``params_ema``, ``params``,
``state_dict``, ``model`` or ``net`` (BasicSR, PyTorch Lightning, CDC-style); keys with a
``module.`` prefix (``nn.DataParallel``). Every error names the file.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn

WRAPPER_KEYS = ('params_ema', 'params', 'state_dict', 'model', 'net')
DATA_PARALLEL_PREFIX = 'module.'


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(checkpoint: object, param_key: str | None = None,
                       source: str = '<checkpoint>') -> tuple[OrderedDict, str | None]:
    """Find the state dict inside a loaded checkpoint and strip the ``module.`` prefix.

    Args:
        checkpoint: What ``torch.load`` returned.
        param_key: Preferred wrapper key (BasicSR's ``param_key_g``). When it is absent, the
            other known wrapper keys are tried, then the checkpoint itself.
        source: Name used in error messages (usually the file path).

    Returns:
        The state dict and the wrapper key it was found under (``None`` for a plain one).
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{source}: expected a state dict or a dict of state dicts, '
                         f'got {type(checkpoint).__name__}')
    candidates = ([param_key] if param_key else []) + [k for k in WRAPPER_KEYS if k != param_key]
    used_key = None
    for key in candidates:
        if _is_state_dict(checkpoint.get(key)):
            state_dict, used_key = checkpoint[key], key
            break
    else:
        if not _is_state_dict(checkpoint):
            raise ValueError(f'{source}: no state dict found; top-level keys are '
                             f'{sorted(map(str, checkpoint))[:10]}, expected tensors or one of {WRAPPER_KEYS}')
        state_dict = checkpoint
    stripped = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(DATA_PARALLEL_PREFIX):
            key = key[len(DATA_PARALLEL_PREFIX):]
        stripped[key] = value
    return stripped, used_key


def load_state_dict_file(path: str, param_key: str | None = None) -> tuple[OrderedDict, str | None]:
    """Read a checkpoint file and return its state dict (see :func:`extract_state_dict`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint '{path}' cannot be read: {error}") from error
    return extract_state_dict(checkpoint, param_key, source=path)


def describe_mismatch(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between ``net``'s parameters and ``state_dict``."""
    own = net.state_dict()
    problems = []
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        problems.append(f'{len(missing)} missing keys, e.g. {missing[:5]}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}')
    for key in own.keys() & state_dict.keys():
        if own[key].shape != state_dict[key].shape:
            problems.append(f'shape of {key}: model {tuple(own[key].shape)} vs checkpoint '
                            f'{tuple(state_dict[key].shape)}')
    return problems


def load_into(net: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
              source: str = '<checkpoint>') -> None:
    """``net.load_state_dict`` with an error that lists what does not match and names the file."""
    try:
        net.load_state_dict(state_dict, strict=strict)
    except RuntimeError as error:
        problems = describe_mismatch(net, state_dict) or [str(error)]
        raise ValueError(f'{source} does not fit {net.__class__.__name__} (check the network_g options, '
                         f'e.g. upscale, num_feat, num_block): ' + '; '.join(problems)) from error


def load_pretrained(net: nn.Module, path: str, param_key: str | None = None, strict: bool = True) -> nn.Module:
    """Load a checkpoint file of any supported format into ``net`` and return ``net``."""
    state_dict, _ = load_state_dict_file(path, param_key)
    load_into(net, state_dict, strict=strict, source=path)
    return net
