"""Writing and reading checkpoints and training states, for every training run started with ``ibsd-train``.

BasicSR writes in place (a kill mid-write leaves a truncated file), writes the NaN weights of a
diverged run, and carries on as if the file were saved when writing fails three times. Here
non-finite weights are refused (naming the tensor), files are written atomically, a failed write
is tried again and then raises; training states are read with ``weights_only=True``.
"""
from __future__ import annotations

import os
from os import path as osp
from typing import Any

from ibsd.errors import IBSDError
from ibsd.training.resume import sampling_record, state_epoch


def state_device() -> 'Any':
    import torch
    if torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def latest_training_state(state_dir: str) -> str | None:
    """Path of the ``<iter>.state`` file with the highest iteration in ``state_dir``, if any."""
    if not osp.isdir(state_dir):
        return None
    iters = []
    for name in os.listdir(state_dir):
        stem, ext = osp.splitext(name)
        if ext == '.state' and stem.isdigit():
            iters.append(int(stem))
    if not iters:
        return None
    return osp.join(state_dir, f'{max(iters)}.state')


def load_training_state(path: str, device) -> dict:
    """A ``.state`` file read with ``weights_only=True`` (NumPy's random state allowed, nothing that runs code).

    Raises:
        CheckpointError: one line naming the file when it is truncated, not a PyTorch file or not a
            training state.
    """
    import pickle

    import numpy as np
    import torch

    from ibsd.archs.checkpoint import CheckpointError, explain_load_failure
    numpy_core = getattr(np, '_core', None) or np.core
    allowed = [numpy_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        if 'weights only' not in str(error).lower():
            raise explain_load_failure(path, error) from error
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(f'{path} holds Python objects a training state does not ({reason}); it is not '
                              'unpickled since that could run code') from error
    except Exception as error:
        raise explain_load_failure(path, error) from error
    if not isinstance(state, dict) or 'iter' not in state or 'optimizers' not in state:
        raise CheckpointError(f'{path} is not a training state (no iter and optimizers): path:resume_state takes '
                              'a training_states/<iter>.state file')
    return state


def load_resume_state(opt: dict) -> dict | None:
    """Replacement for ``basicsr.train.load_resume_state`` that works on CPU.

    With ``--auto_resume`` the newest state is taken from ``opt['path']['training_states']``
    (the experiment folder under the run's root), not from ``./experiments``.
    """
    from basicsr.utils import check_resume
    if opt['auto_resume']:
        state_path = latest_training_state(opt['path']['training_states'])
        if state_path is not None:
            opt['path']['resume_state'] = state_path
    else:
        state_path = opt['path'].get('resume_state')
    if not state_path:
        return None
    if not osp.isfile(state_path):
        from ibsd.archs.checkpoint import CheckpointError
        raise CheckpointError(f"path:resume_state: training state '{state_path}' does not exist")
    resume_state = load_training_state(state_path, state_device())
    check_resume(opt, resume_state['iter'])
    sampling = resume_state.get('sampling')
    opt['resume_from'] = {'epoch': int(resume_state['epoch']), 'iter': int(resume_state['iter']),
                          'sampling': sampling, 'seed_was': opt.get('manual_seed')}
    if sampling:  # without manual_seed, basicsr draws a new seed at each launch: the run keeps its own
        opt['manual_seed'] = int(sampling['seed'])
    return resume_state


class CheckpointWriteError(IBSDError, OSError):
    """A checkpoint or training state that could not be written (after retries)."""


class NonFiniteWeightsError(IBSDError, RuntimeError):
    """Weights holding NaN or Inf values, which are never written to a checkpoint."""


WRITE_TRIES = 3
WRITE_RETRY_PAUSE_S = 0.5


def write_failure_reason(error: Exception, obj: Any, folder: str) -> str:
    """Why a ``torch.save`` failed, in words: a full disk shows as torch's ``unexpected pos 1234 vs 5678``."""
    import errno
    import shutil
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f'no space left on device ({error})'
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return str(error)
    size = tensor_bytes(obj)
    if size > free:
        return f'no space left on device: it takes {size / 2**20:.1f} MiB and {folder} has {free / 2**20:.1f} MiB free'
    return str(error)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint: about what ``torch.save`` writes."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def write_atomically(obj: Any, path: str, what: str = 'checkpoint') -> None:
    """``torch.save`` to ``path`` through a temporary file: a killed write never leaves a truncated file,
    a failed one is tried again and then raises :class:`CheckpointWriteError` (no temporary file left)."""
    import time

    import torch
    from basicsr.utils import get_root_logger
    temporary = path + '.tmp'
    for attempt in range(1, WRITE_TRIES + 1):
        try:
            torch.save(obj, temporary)
            os.replace(temporary, path)
            return
        except (OSError, RuntimeError) as error:  # torch.save raises RuntimeError for a missing folder
            if osp.exists(temporary):
                try:
                    os.remove(temporary)
                except OSError:
                    pass
            reason = write_failure_reason(error, obj, osp.dirname(path) or '.')
            if attempt == WRITE_TRIES:
                raise CheckpointWriteError(f'could not write the {what} {path} ({WRITE_TRIES} tries): {reason}') \
                    from error
            get_root_logger().warning(f'writing the {what} {path} failed ({reason}): trying again')
            time.sleep(WRITE_RETRY_PAUSE_S)


def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
    """Replacement for ``BaseModel.save_network``: refuses non-finite weights, writes atomically, raises on failure.

    basicsr writes in place (a kill mid-write leaves a truncated file) and, when writing fails
    three times, logs a warning and carries on as if the file were saved. As basicsr's, only
    rank 0 writes.
    """
    import torch
    from basicsr.utils.dist_util import get_dist_info
    networks = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(networks) != len(keys):
        raise ValueError(f'save_network: {len(networks)} networks but {len(keys)} param keys')
    label = 'latest' if current_iter == -1 else current_iter
    path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
    save_dict = {}
    for network, key in zip(networks, keys):  # every rank checks (same weights): all stop with one line
        state = {}
        for name, tensor in self.get_bare_model(network).state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteWeightsError(f"refusing to save {path}: '{name}' holds NaN or Inf values (training "
                                            'diverged); the checkpoints already saved are untouched')
            state[name[7:] if name.startswith('module.') else name] = tensor
        save_dict[key] = state
    if get_dist_info()[0] != 0:
        return
    write_atomically({key: {n: t.cpu() for n, t in state.items()} for key, state in save_dict.items()}, path)


def training_state(model, epoch: int, current_iter: int, extras: dict | None = None) -> dict:
    """The training state of ``model`` after ``current_iter``: BasicSR's keys (epoch, iter, optimizers,
    schedulers), the sampling record that makes a mid-epoch resume exact, and ``extras`` (e.g. IBSD's ``'ibsd'``)."""
    return {'epoch': state_epoch(model.opt, epoch, current_iter), 'iter': current_iter,
            'optimizers': [o.state_dict() for o in model.optimizers],
            'schedulers': [s.state_dict() for s in model.schedulers],
            'sampling': sampling_record(model.opt), **(extras or {})}


def write_training_state(model, epoch: int, current_iter: int, extras: dict | None = None) -> None:
    """Write :func:`training_state` to ``training_states/<iter>.state`` atomically (raises on failure)."""
    path = osp.join(model.opt['path']['training_states'], f'{current_iter}.state')
    write_atomically(training_state(model, epoch, current_iter, extras), path, 'training state')


def save_training_state(self, epoch, current_iter) -> None:
    """Replacement for ``BaseModel.save_training_state``: rank 0 writes atomically (raising on failure) and
    records the sampling (:func:`ibsd.training.resume.sampling_record`), so that a state saved mid-epoch
    resumes exactly."""
    from basicsr.utils.dist_util import get_dist_info
    if current_iter == -1 or get_dist_info()[0] != 0:
        return
    write_training_state(self, epoch, current_iter)
