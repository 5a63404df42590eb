"""Fixes that make basicsr 1.4.2 work with current PyTorch, torchvision, SciPy and on CPU.

Nothing in site-packages is edited: :func:`import_basicsr` imports basicsr through the finder of
``_ibsd_autoload`` (torchvision shim, SciPy warning) and :func:`patch_basicsr` replaces a few
basicsr functions at run time. Each fix is covered by ``tests/test_compat.py``.

Fixes:
- ``torchvision.transforms.functional_tensor`` is gone in torchvision >= 0.17 (``import
  basicsr`` fails on it);
- ``import basicsr`` raises a SciPy ``DeprecationWarning`` (``scipy.ndimage.filters``);
- ``basicsr.train.load_resume_state`` unpickles anything (``weights_only=False``), calls
  ``torch.cuda.current_device()`` (fails on CPU) and looks for ``--auto_resume`` states relative
  to the working directory instead of the experiment's ``training_states`` folder;
- ``--launcher pytorch`` always initialises NCCL and calls ``torch.cuda.set_device``, and
  ``BaseModel.model_to_device`` passes ``torch.cuda.current_device()`` to DDP (all fail on CPU):
  gloo and CPU DDP are used when CUDA is not available;
- ``BaseModel.load_network`` fails with ``KeyError: 'params'`` on plain state dicts such as the
  official IMDN/RFDN checkpoints and gives no file name on a mismatch: it now accepts every
  format :func:`ibsd.archs.checkpoint.extract_state_dict` knows and names the file on errors;
- a state saved mid-epoch resumes at the start of its epoch, with augmentations drawn from
  hidden streams: training samples are now a function of ``(manual_seed, epoch, position)`` and
  a resumed epoch continues where the state was saved (:mod:`ibsd.data.resumable_sampling`);
- the number of iterations per epoch, which BasicSR only logs, is stored as
  ``opt['iters_per_epoch']`` for models that act per epoch (IBSD's snapshot teacher);
- ``BaseModel.save_network`` writes NaN weights of a diverged run, writes in place and goes on
  when writing fails: it now refuses non-finite weights (naming the tensor), writes atomically,
  tries a failed write again and then raises; ``save_training_state`` likewise, and it records
  the sampling (seed, loader layout) so that a state saved mid-epoch resumes exactly;
- data problems show only when a bad sample is drawn, without the file's name: every data set is
  checked before it is built (paths, pairs, sizes; see :mod:`ibsd.data.checks`) and read errors
  name the pair;
- ``SRModel.nondist_validation`` reads ``val: suffix`` without a default (``KeyError`` with
  ``save_img: true`` in a YAML that omits it): parsed options get ``suffix: ~``.
"""
from __future__ import annotations

import os
import sys
from os import path as osp
from typing import Any

from ibsd.errors import IBSDError

_PATCHED_FLAG = '_ibsd_patched'
ORIGINALS: dict[str, Any] = {}
"""basicsr's own versions of what :func:`patch_basicsr` replaced, by name."""


def import_basicsr():
    """Import basicsr with the import-time fixes in place and return the module."""
    import _ibsd_autoload
    if 'basicsr' not in sys.modules:
        _ibsd_autoload.install()
    import basicsr
    return basicsr


def _state_device() -> 'Any':
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
    resume_state = load_training_state(state_path, _state_device())
    check_resume(opt, resume_state['iter'])
    sampling = resume_state.get('sampling')
    opt['resume_from'] = {'epoch': int(resume_state['epoch']), 'iter': int(resume_state['iter']),
                          'sampling': sampling, 'seed_was': opt.get('manual_seed')}
    if sampling:  # without manual_seed, basicsr draws a new seed at each launch: the run keeps its own
        opt['manual_seed'] = int(sampling['seed'])
    return resume_state


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


def sampling_layout(opt: dict) -> dict:
    """What the place of a training sample in an epoch depends on (recorded by the data loader set-up)."""
    return {key: opt.get(key) for key in ('iters_per_epoch', 'batch_size_per_gpu', 'world_size', 'samples_per_rank')}


def sampling_record(opt: dict) -> dict:
    """Saved in every training state (``'sampling'``): the samples' seed, the loader's layout and the
    anchor ``[epoch, iteration]`` at which an epoch of this layout began."""
    return {'seed': int(opt.get('manual_seed') or 0), **sampling_layout(opt),
            'anchor': list(opt.get('sampling_anchor') or (0, 0))}


def state_epoch(opt: dict, epoch: int, current_iter: int) -> int:
    """The epoch a state saved after ``current_iter`` resumes in: the next one when the iteration ended
    its epoch (BasicSR would replay the finished epoch)."""
    per_epoch = opt.get('iters_per_epoch')
    if not per_epoch:
        return epoch
    anchor_epoch, anchor_iter = opt.get('sampling_anchor') or (0, 0)
    done = current_iter - anchor_iter - (epoch - anchor_epoch) * per_epoch
    return epoch + 1 if done >= per_epoch else epoch


def save_training_state(self, epoch, current_iter) -> None:
    """Replacement for ``BaseModel.save_training_state``: rank 0 writes atomically (raising on failure) and
    records the sampling (:func:`sampling_record`), so that a state saved mid-epoch resumes exactly."""
    from basicsr.utils.dist_util import get_dist_info
    if current_iter == -1 or get_dist_info()[0] != 0:
        return
    state = {'epoch': state_epoch(self.opt, epoch, current_iter), 'iter': current_iter,
             'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers],
             'sampling': sampling_record(self.opt)}
    write_atomically(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'), 'training state')


def share_drawn_seed(opt: dict) -> None:
    """Under DDP every rank takes rank 0's ``manual_seed``: basicsr draws one per rank when the YAML sets
    none, and a training state records rank 0's (each rank's streams are then seeded ``seed + rank``)."""
    import torch.distributed as dist
    if not (opt.get('dist') and dist.is_available() and dist.is_initialized()):
        return
    seed = [opt.get('manual_seed')]
    dist.broadcast_object_list(seed, src=0)
    if seed[0] != opt.get('manual_seed'):
        from basicsr.utils import set_random_seed
        opt['manual_seed'] = seed[0]
        set_random_seed(seed[0] + opt['rank'])


def with_option_defaults(parse_options):
    """Wrap basicsr's ``parse_options``: the ``-opt`` file is read with errors in one line, optional keys basicsr
    indexes directly exist, iteration counts are numbers, and every run's options (an IBSD run's in full) are
    checked before any folder, data set or network is made (:mod:`ibsd.run_checks`)."""

    def parse_options_with_defaults(root_path: str, is_train: bool = True):
        from ibsd.models.ibsd_options import check_ibsd_options, convert_iteration_counts
        from ibsd.run_checks import check_option_file, check_run_options
        from ibsd.threads import apply_run_threads
        check_option_file(sys.argv)
        opt, args = parse_options(root_path, is_train)
        if isinstance(opt.get('val'), dict):
            opt['val'].setdefault('suffix', None)
        share_drawn_seed(opt)
        if is_train and isinstance(opt.get('train'), dict):
            convert_iteration_counts(opt['train'])
        check_run_options(opt, is_train)
        if is_train and opt.get('model_type') == 'IBSDModel':
            check_ibsd_options(opt)
        threads, source = apply_run_threads(opt)
        if opt.get('rank', 0) == 0:
            print(f'CPU threads: {threads} ({source})', flush=True)
        return opt, args

    parse_options_with_defaults.__wrapped__ = parse_options
    return parse_options_with_defaults


def position_seeded_train_sets(build_dataset):
    """Wrap ``basicsr.train.build_dataset``: training sets draw each sample from streams seeded by its place."""

    def build(dataset_opt: dict):
        from ibsd.data.resumable_sampling import PositionSeededDataset
        dataset = build_dataset(dataset_opt)
        return PositionSeededDataset(dataset) if dataset_opt.get('phase') == 'train' else dataset

    build.__wrapped__ = build_dataset
    return build


def resume_part_way(opt: dict, sampler, logger) -> None:
    """Make the training loader continue a resumed run at the saved iteration's place in its epoch.

    The place is counted from the anchor recorded in the state; when the loader's layout changed
    (batch size, GPUs, data), the epoch restarts from its first batch, and that becomes the anchor.
    """
    opt['sampling_anchor'] = [0, 0]
    position = opt.get('resume_from')
    if not position or not hasattr(sampler, 'start_part_way'):
        return
    epoch, iteration = position['epoch'], position['iter']
    recorded, layout = position.get('sampling'), sampling_layout(opt)
    if recorded is None:
        logger.warning('The training state records no sampling layout (written by an older version): the epoch '
                       'is assumed to have begun at iteration epoch x iterations per epoch')
        anchor = [0, 0]
    else:
        changed = [f'{key} {recorded.get(key)} -> {value}' for key, value in layout.items()
                   if recorded.get(key) != value]
        if changed:
            logger.warning(f"The data loader changed since the training state was saved ({', '.join(changed)}): "
                           f'epoch {epoch} restarts from its first batch at iteration {iteration}')
            opt['sampling_anchor'] = [epoch, iteration]
            return
        anchor = list(recorded['anchor'])
        if position.get('seed_was') != recorded['seed']:
            logger.warning(f"The training samples keep the run's seed {recorded['seed']} (manual_seed is now "
                           f"{position.get('seed_was')}; BasicSR draws a new one at each launch when the YAML "
                           'sets none): start a new experiment to train with another seed')
    per_epoch = layout['iters_per_epoch']
    done = iteration - anchor[1] - (epoch - anchor[0]) * per_epoch
    if recorded is None and done == per_epoch:  # older states did not move on to the next epoch
        sampler.start_part_way(epoch, done * layout['batch_size_per_gpu'])
        opt['sampling_anchor'] = anchor
        logger.info(f'Epoch {epoch} was complete: resuming with the next one')
        return
    if not 0 <= done < per_epoch:
        logger.warning(f'The training state (epoch {epoch}, iteration {iteration}) does not fall in an epoch of '
                       f'{per_epoch} iterations: epoch {epoch} restarts from its first batch')
        opt['sampling_anchor'] = [epoch, iteration]
        return
    opt['sampling_anchor'] = anchor
    sampler.start_part_way(epoch, done * layout['batch_size_per_gpu'])
    logger.info(f'Resuming epoch {epoch} after its first {done} of {per_epoch} iterations')


def warn_about_threaded_sampling(opt: dict, logger) -> None:
    """``prefetch_mode: cpu`` without workers draws training samples on a thread that seeds the global random
    streams while the training step runs: whatever the step draws from them could then differ."""
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if train_set.get('prefetch_mode') == 'cpu' and not int(train_set.get('num_worker_per_gpu') or 0):
        logger.warning('datasets:train: prefetch_mode cpu with num_worker_per_gpu 0 draws the samples on a '
                       'background thread that shares the global random streams with the training step: a network '
                       'that draws from them (dropout) may not resume exactly; set num_worker_per_gpu >= 1')


def epochs_needed(opt: dict, total_epochs: int, total_iters: int, logger) -> int:
    """Enough epochs for ``total_iters``: basicsr counts ``ceil(samples / batch)`` iterations per epoch although
    its loader drops the last partial batch, and a resumed run whose epochs changed length counts from the
    anchor (:func:`resume_part_way`). Too few epochs would end training early with exit status 0."""
    import math
    anchor_epoch, anchor_iter = opt.get('sampling_anchor') or (0, 0)
    per_epoch = max(1, int(opt['iters_per_epoch']))
    needed = anchor_epoch + math.ceil(max(0, total_iters - anchor_iter) / per_epoch)
    if needed > total_epochs:
        logger.info(f'Total epochs: {needed} (not {total_epochs}: {per_epoch} full batches per epoch)')
    return max(total_epochs, needed)


def recording_iters_per_epoch(create_train_val_dataloader):
    """Wrap ``basicsr.train.create_train_val_dataloader``: refuse a training set without one full batch, store
    ``opt['iters_per_epoch']``, seed the training samples from ``manual_seed`` and resume part-way into an epoch."""

    def create_and_record(opt, logger):
        import torch
        from ibsd.data.checks import check_full_batches
        result = create_train_val_dataloader(opt, logger)
        loader, sampler = result[0], result[1]
        if loader is not None:
            check_full_batches(opt, loader, sampler)
            opt.update(iters_per_epoch=len(loader), batch_size_per_gpu=loader.batch_size,
                       world_size=int(opt.get('world_size') or 1),
                       samples_per_rank=getattr(sampler, 'num_samples', len(loader.dataset)))
            seed = int(opt.get('manual_seed') or 0)
            if hasattr(loader.dataset, 'seed'):
                loader.dataset.seed = seed
            loader.generator = torch.Generator().manual_seed(seed)  # worker seeds never draw from torch's stream
            warn_about_threaded_sampling(opt, logger)
            resume_part_way(opt, sampler, logger)
            result = (*result[:3], epochs_needed(opt, result[3], result[4], logger), *result[4:])
        return result

    create_and_record.__wrapped__ = create_train_val_dataloader
    return create_and_record


def patch_basicsr() -> None:
    """Apply the run-time fixes to the imported basicsr (idempotent)."""
    basicsr = import_basicsr()
    if getattr(basicsr, _PATCHED_FLAG, False):
        return
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import dist_util

    from ibsd.data.checks import checked_build_dataset
    from ibsd.data.resumable_sampling import ResumableSampler
    ORIGINALS.update(load_resume_state=basicsr.train.load_resume_state,
                     _init_dist_pytorch=dist_util._init_dist_pytorch, load_network=BaseModel.load_network,
                     model_to_device=BaseModel.model_to_device, save_network=BaseModel.save_network,
                     save_training_state=BaseModel.save_training_state)
    basicsr.train.load_resume_state = load_resume_state
    for pipeline_module in (basicsr.train, basicsr.test):
        pipeline_module.build_dataset = checked_build_dataset(pipeline_module.build_dataset)
    basicsr.train.build_dataset = position_seeded_train_sets(basicsr.train.build_dataset)
    basicsr.train.EnlargedSampler = ResumableSampler
    basicsr.train.create_train_val_dataloader = recording_iters_per_epoch(basicsr.train.create_train_val_dataloader)
    for pipeline_module in (basicsr.train, basicsr.test):
        pipeline_module.parse_options = with_option_defaults(pipeline_module.parse_options)
    dist_util._init_dist_pytorch = _init_dist_pytorch
    BaseModel.load_network = load_network
    BaseModel.model_to_device = model_to_device
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    setattr(basicsr, _PATCHED_FLAG, True)
