"""Load weights from BasicSR checkpoints and from the official IMDN / RFDN releases.

Accepted formats: a plain state dict; a dict that wraps one under ``params_ema``, ``params``,
``state_dict``, ``model`` or ``net`` (BasicSR, PyTorch Lightning, CDC-style); keys with a
``module.`` prefix (``nn.DataParallel``).

Files are read with ``torch.load(..., weights_only=True)``: nothing in them can run code. What
cannot be loaded that way is explained in one line that names the file: a BasicSR training
state (``*.state``: optimizers and schedulers, which hold numpy arrays), an empty, truncated or
non-PyTorch file, a Git LFS pointer, or weights of a different network. Every error is a
:class:`CheckpointError` (a ``ValueError``), except a missing file (``FileNotFoundError``).
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from typing import IO, Mapping

import torch
from torch import nn

from ibsd.errors import IBSDError

WRAPPER_KEYS = ('params_ema', 'params', 'state_dict', 'model', 'net')
DATA_PARALLEL_PREFIX = 'module.'
TRAINING_STATE_KEYS = ('optimizers', 'schedulers')
"""Top-level keys of a BasicSR training state (``experiments/<name>/training_states/<iter>.state``)."""
LEGACY_PICKLES = 4
"""Pickles at the start of a pre-zip ``torch.save`` file: magic number, protocol, system info, object."""


class CheckpointError(IBSDError, ValueError):
    """A checkpoint file that cannot be used as network weights; the message is one line naming it."""


def training_state_message(source: str) -> str:
    return (f'{source} is a training state (optimizers, schedulers), not network weights: pass the matching '
            f'models/net_g_<iter>.pth instead (a .state file resumes training, via path: resume_state)')


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
        raise CheckpointError(f'{source} holds a {type(checkpoint).__name__}, not network weights '
                              f'(a state dict or a dict of state dicts)')
    candidates = ([param_key] if param_key else []) + [k for k in WRAPPER_KEYS if k != param_key]
    used_key = None
    for key in candidates:
        if _is_state_dict(checkpoint.get(key)):
            state_dict, used_key = checkpoint[key], key
            break
    else:
        if all(key in checkpoint for key in TRAINING_STATE_KEYS):
            raise CheckpointError(training_state_message(source))
        if not _is_state_dict(checkpoint):
            raise CheckpointError(f'{source}: no state dict found; top-level keys are '
                                  f'{sorted(map(str, checkpoint))[:10]}, expected tensors or one of {WRAPPER_KEYS}')
        state_dict = checkpoint
    stripped = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(DATA_PARALLEL_PREFIX):
            key = key[len(DATA_PARALLEL_PREFIX):]
        stripped[key] = value
    return stripped, used_key


STRING_OPCODES = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'STRING', 'BINSTRING',
                  'SHORT_BINSTRING'}
SAFE_MODULES = ('torch', 'collections', '_codecs', 'builtins')
"""Modules of the globals ``weights_only`` loading accepts (tensors, ordered dicts); others are reported."""


def _pickle_contents(stream: IO[bytes], count: int) -> tuple[set[str], set[str]]:
    """Strings and globals (``module.name``) named in the first ``count`` pickles of ``stream``.

    The opcodes are only read, never executed; a ``STACK_GLOBAL``'s names are the last two
    strings pushed (directly or from the memo).
    """
    strings, globals_ = set(), set()
    for _ in range(count):
        recent, memo = [], {}
        try:
            for opcode, argument, _ in pickletools.genops(stream):
                name = opcode.name
                if name in STRING_OPCODES:
                    strings.add(argument)
                    recent.append(argument)
                elif name == 'GLOBAL':
                    globals_.add(argument.replace(' ', '.'))
                    recent.append(None)
                elif name == 'STACK_GLOBAL':
                    if len(recent) >= 2 and all(isinstance(part, str) for part in recent[-2:]):
                        globals_.add('.'.join(recent[-2:]))
                    recent.append(None)
                elif name == 'MEMOIZE':
                    memo[len(memo)] = recent[-1] if recent else None
                elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
                    memo[argument] = recent[-1] if recent else None
                elif name in ('GET', 'BINGET', 'LONG_BINGET'):
                    recent.append(memo.get(argument))
                else:
                    recent.append(None)
        except ValueError:  # no further pickle (a zip member holds one)
            break
    return strings, globals_


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def explain_load_failure(path: str, error: BaseException) -> CheckpointError:
    """One-line explanation of why ``torch.load(path, weights_only=True)`` raised ``error``."""
    if os.path.getsize(path) == 0:
        return CheckpointError(f'cannot read {path}: the file is empty')
    with open(path, 'rb') as handle:
        head = handle.read(64)
    if head.startswith(b'version https://git-lfs'):
        return CheckpointError(f'{path} is a Git LFS pointer, not the weights: fetch them with git lfs pull')
    try:
        if head.startswith(b'PK\x03\x04'):  # torch.save's zip format
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.endswith('data.pkl')]
                if not members:
                    return CheckpointError(f'cannot read {path}: a zip archive, but not a PyTorch file')
                strings, globals_ = _pickle_contents(io.BytesIO(archive.read(members[0])), 1)
        elif head[:1] == b'\x80':  # a pickle: the legacy torch.save format
            with open(path, 'rb') as handle:
                strings, globals_ = _pickle_contents(handle, LEGACY_PICKLES)
        else:
            start = head[:16].decode('ascii', 'replace')
            return CheckpointError(f'cannot read {path}: not a PyTorch file (it starts with {start!r})')
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as inner:
        return CheckpointError(f'cannot read {path}: truncated or not a PyTorch file ({_first_line(inner)})')
    if all(key in strings for key in TRAINING_STATE_KEYS):
        return CheckpointError(training_state_message(path))
    if isinstance(error, pickle.UnpicklingError) and 'weights only' in str(error).lower():
        blocked = sorted(g for g in globals_ if not g.startswith(SAFE_MODULES))
        named = f' ({", ".join(blocked[:3])}{", ..." if len(blocked) > 3 else ""})' if blocked else ''
        return CheckpointError(f'{path} holds Python objects other than tensors{named}, which are not unpickled '
                               f'since that could run code: save only the network\'s state_dict()')
    return CheckpointError(f'cannot read {path}: truncated or not a PyTorch file ({_first_line(error)})')


def load_state_dict_file(path: str, param_key: str | None = None) -> tuple[OrderedDict, str | None]:
    """Read a checkpoint file safely and return its state dict (see :func:`extract_state_dict`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: It is not a file of network weights (see the module docstring).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f'{path} is a folder, not a checkpoint file')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise explain_load_failure(path, error) from error
    return extract_state_dict(checkpoint, param_key, source=path)


def _block_indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> set[int]:
    return {int(match.group(1)) for key in state_dict if (match := re.match(pattern, key))}


def describe_weights(state_dict: Mapping[str, torch.Tensor]) -> str:
    """What a state dict looks like, e.g. ``IMDN weights: num_feat=64, num_block=6, upscale=4``."""
    parameters = sum(v.numel() for v in state_dict.values() if v.is_floating_point())
    imdn, rfdn = _block_indices(state_dict, r'IMDB(\d+)\.'), _block_indices(state_dict, r'B(\d+)\.c1_d\.')
    feat = state_dict.get('fea_conv.weight', state_dict.get('fea_conv.0.weight'))
    upsampler = state_dict.get('upsampler.0.weight')
    if (imdn or rfdn) and feat is not None and upsampler is not None:
        details = [f'num_feat={feat.shape[0]}', f'num_block={len(imdn or rfdn)}']
        if imdn:
            name = 'IMDN_AS' if 'fea_conv.0.weight' in state_dict else 'IMDN'
        else:
            name = 'RFDN'
            details.append('attention=' + ('esa' if any('.esa.conv1.' in key for key in state_dict) else 'cca'))
        scale = math.isqrt(upsampler.shape[0] // 3)
        if name != 'IMDN_AS' and scale * scale * 3 == upsampler.shape[0]:
            details.append(f'upscale={scale}')
        return f'{name} weights: {", ".join(details)} ({parameters:,} parameters)'
    return f'{len(state_dict)} tensors ({parameters:,} parameters), first keys {list(state_dict)[:3]}'


def describe_mismatch(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between ``net``'s parameters and ``state_dict``."""
    own = net.state_dict()
    problems = []
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        problems.append(f'{len(missing)} missing keys, e.g. {missing[:3]}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}')
    shapes = [key for key in own if key in state_dict and own[key].shape != state_dict[key].shape]
    shown = 0 if problems else 3  # with other keys it is another arch: the shapes say little more
    for key in shapes[:shown]:
        problems.append(f'{key} shape {tuple(own[key].shape)} in the network vs {tuple(state_dict[key].shape)} '
                        f'in the file')
    if len(shapes) > shown:
        problems.append(f'{len(shapes) - shown} {"more " if shown else ""}tensors of another shape')
    return problems


def load_into(net: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
              source: str = '<checkpoint>') -> None:
    """``net.load_state_dict`` with a one-line error naming the file, what it holds and what differs."""
    try:
        net.load_state_dict(state_dict, strict=strict)
    except RuntimeError as error:
        problems = describe_mismatch(net, state_dict) or [_first_line(error)]
        raise CheckpointError(
            f'{source} holds weights for a different network than this {net.__class__.__name__} '
            f'({describe_weights(state_dict)}): ' + '; '.join(problems)
            + ' (check network_g or --arch-opt: upscale, num_feat, num_block)') from error


def load_pretrained(net: nn.Module, path: str, param_key: str | None = None, strict: bool = True) -> nn.Module:
    """Load a checkpoint file of any supported format into ``net`` and return ``net``."""
    state_dict, _ = load_state_dict_file(path, param_key)
    load_into(net, state_dict, strict=strict, source=path)
    return net
