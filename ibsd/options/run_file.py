"""Start-up checks of a run's options where BasicSR would train or test nothing, or the wrong thing, with exit 0.

BasicSR ignores keys it does not read: ``gt_sise: 64`` trains on whole images, ``ema_decy`` trains
without EMA, and every unknown ``path:`` key is made a *folder* (``pretrain_netwrok_g: w.pth``
creates a directory ``w.pth`` and the run trains from scratch). ``total_iter: 0`` trains nothing,
``ibsd-test`` without ``pretrain_network_g`` scores random weights, ``num_gpu: 1`` on a machine
without CUDA ends in a traceback. :func:`check_run_options` turns each into one
:class:`~ibsd.errors.OptionError` naming the key, before anything is built or written.

Known keys are the ones basicsr's and ibsd's own code reads (found in their sources once per
process), so a key is only called a typo when it is unknown *and* close to a known one.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import re
from os import path as osp
from pathlib import Path
from typing import Any, Iterable, Mapping

from ibsd.errors import OptionError
from ibsd.options.train_sections import (BASICSR_PATH_KEYS, BASICSR_TOP_KEYS, BASICSR_TRAIN_KEYS,
                                         IBSD_PATH_KEYS, IBSD_TRAIN_KEYS)
from ibsd.options.values import NEAR_MISS_CUTOFF, as_number

READS_IBSD_SECTIONS = 'reads_ibsd_sections'
"""Class attribute, true on a model type that trains the ``train:`` sections IBSD adds (IBSDModel and subclasses)."""
ALLOW_UNTRAINED_KEY = 'allow_untrained'
"""``path: allow_untrained: true`` lets ``ibsd-test`` evaluate a network without ``pretrain_network_g`` on purpose."""
PATH_KEY_FAMILIES = re.compile(r'^(pretrain_network|strict_load|param_key)_\w+$')
"""``path:`` keys BasicSR reads for any network (``pretrain_network_<net>``...): never made folders."""
READ_KEY = re.compile(r"""(?:\[\s*|\.get\(\s*|\.pop\(\s*|\.setdefault\(\s*)['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
SCANNED_PACKAGES = ('basicsr', 'ibsd')
OUTPUT_FOLDERS = {True: ('experiments_root', 'models', 'training_states', 'visualization'),
                  False: ('results_root', 'visualization')}


@functools.lru_cache(maxsize=1)
def keys_read_by_code() -> frozenset[str]:
    """Every option-like key that basicsr's and ibsd's sources index, ``.get``, ``.pop`` or ``.setdefault``
    (about 330 names, read in ~30 ms): the keys a YAML can set and have an effect."""
    keys: set[str] = set()
    for package in SCANNED_PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for source in Path(folder).rglob('*.py'):
                keys.update(READ_KEY.findall(source.read_text(errors='replace')))
    return frozenset(keys)


def near_miss(key: str, known: Iterable[str]) -> str | None:
    """The known key that ``key`` most likely misspells, if any."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=NEAR_MISS_CUTOFF)
    return close[0] if close else None


def reject_near_misses(section: Any, where: str, extra: Iterable[str] = ()) -> None:
    """Keys of ``section`` that no code reads and that look like a misspelt key that some code reads."""
    if not isinstance(section, Mapping):
        return
    known = keys_read_by_code() | set(extra)
    for key in section:
        if isinstance(key, str) and key not in known:
            near = near_miss(key, known)
            if near:
                raise OptionError(f"{where}: unknown key '{key}': did you mean '{near}'?")


def check_path_keys(path_opt: Any) -> None:
    """``path:`` holds only keys BasicSR reads: it makes a folder of every other one (``pretrain_netwrok_g:
    w.pth`` becomes a directory ``w.pth`` and the run starts from random weights)."""
    if path_opt is None:
        return
    if not isinstance(path_opt, Mapping):
        raise OptionError(f'path: expected a mapping of keys, got {path_opt!r}')
    known = BASICSR_PATH_KEYS | set(IBSD_PATH_KEYS) | {ALLOW_UNTRAINED_KEY}
    for key in path_opt:
        if key in known or PATH_KEY_FAMILIES.match(str(key)):
            continue
        near = near_miss(str(key), known)
        hint = f"did you mean '{near}'?" if near else f'valid keys: {sorted(known - {"root"})}'
        raise OptionError(f"path: unknown key '{key}': {hint} (BasicSR would make a folder named after its value)")


def check_iteration_count(train: Any) -> None:
    """``train:total_iter`` is a whole number >= 1: 0 or less trains nothing and exits 0."""
    if not isinstance(train, Mapping) or train.get('total_iter') is None:
        raise OptionError('train:total_iter is missing: the number of iterations to train')
    total = as_number(train['total_iter'], 'train:total_iter', int)
    if total < 1:
        raise OptionError(f'train:total_iter must be >= 1, got {total}: the run would train nothing')


def check_crop_sizes(opt: Mapping) -> None:
    """A training ``gt_size`` is a multiple of ``scale``: its LR crop is ``gt_size / scale`` pixels."""
    scale = opt.get('scale')
    if scale is None:
        return
    scale = as_number(scale, 'scale', int)
    for phase, dataset in (opt.get('datasets') or {}).items():
        if not isinstance(dataset, Mapping) or str(phase).split('_')[0] != 'train' or dataset.get('gt_size') is None:
            continue
        size = as_number(dataset['gt_size'], f'datasets:{phase}:gt_size', int)
        if size < scale or size % scale:
            lower, upper = max(scale, size // scale * scale), (size // scale + 1) * scale
            choices = f'{lower} or {upper}' if lower != upper else str(upper)
            raise OptionError(f'datasets:{phase}:gt_size {size} is not a multiple of scale {scale}: its LR crop '
                              f'would be {size / scale:g} pixels; use e.g. {choices}')


def check_devices(opt: Mapping) -> None:
    """``num_gpu`` > 0 needs CUDA: without it BasicSR fails on its first ``.cuda()`` with a traceback."""
    import torch
    num_gpu = opt.get('num_gpu')
    if isinstance(num_gpu, (int, float)) and not isinstance(num_gpu, bool) and num_gpu > 0 \
            and not torch.cuda.is_available():
        raise OptionError(f'num_gpu: {num_gpu:g} but CUDA is not available on this machine: set num_gpu: 0 to run '
                          'on the CPU (or auto: the GPUs there are)')


def check_pretrained_files(path_opt: Mapping) -> None:
    """Every ``pretrain_network_*`` that is set names an existing file."""
    for key, value in path_opt.items():
        if not str(key).startswith('pretrain_network_') or value in (None, ''):
            continue
        if not isinstance(value, str):
            raise OptionError(f'path:{key}: expected the path of a weights file, got {value!r}')
        if osp.isdir(value):
            raise OptionError(f'path:{key}: {value} is a folder, not a weights file')
        if not osp.isfile(value):
            raise OptionError(f'path:{key}: {value} does not exist')


def network_has_parameters(network_opt: Any) -> bool:
    """Whether ``network_g`` as configured has trainable weights (an untrained one is not a result)."""
    from basicsr.utils.registry import ARCH_REGISTRY
    if not isinstance(network_opt, Mapping) or network_opt.get('type') not in ARCH_REGISTRY:
        return True
    options = {k: v for k, v in network_opt.items() if k != 'type'}
    try:
        net = ARCH_REGISTRY.get(network_opt['type'])(**options)
    except Exception:  # BasicSR reports a network it cannot build when it builds it
        return True
    return any(True for _ in net.parameters())


def check_tested_weights(opt: dict) -> None:
    """``ibsd-test`` evaluates trained weights: without ``path:pretrain_network_g`` BasicSR scores a randomly
    initialised network (PSNR ~9 dB, exit 0). ``path: allow_untrained: true`` allows it on purpose."""
    path_opt = opt.setdefault('path', {})
    allowed = path_opt.pop(ALLOW_UNTRAINED_KEY, False)  # BasicSR would make a folder of it
    if not isinstance(allowed, bool):
        raise OptionError(f'path:{ALLOW_UNTRAINED_KEY}: expected true or false, got {allowed!r}')
    if path_opt.get('pretrain_network_g') or allowed or not network_has_parameters(opt.get('network_g')):
        return
    network = (opt.get('network_g') or {}).get('type', 'network_g')
    raise OptionError(f'path:pretrain_network_g is not set: the test would evaluate a randomly initialised {network}; '
                      f'set it to the weights to test (or path:{ALLOW_UNTRAINED_KEY}: true to test untrained weights '
                      'on purpose)')


def check_output_folders(opt: Mapping, is_train: bool) -> None:
    """The run's folders (``experiments/<name>/...`` or ``results/<name>/...``) can be made: no file stands
    where BasicSR puts one of them."""
    path_opt = opt.get('path') or {}
    for key in OUTPUT_FOLDERS[is_train]:
        folder = path_opt.get(key)
        if not folder:
            continue
        for candidate in [Path(folder), *Path(folder).parents]:
            if candidate.exists() and not candidate.is_dir():
                raise OptionError(f'{candidate} is a file, where BasicSR makes the folder {folder} '
                                  f'(path:{key}): move the file, or give the run another name')
            if candidate.is_dir():
                break


def check_ibsd_keys_are_read(opt: Mapping) -> None:
    """IBSD's training sections with a ``model_type`` that is not IBSD's: BasicSR's SRModel would train plain L1
    and never say that ``mi_opt`` or ``wavelet_opt`` was ignored."""
    from basicsr.utils.registry import MODEL_REGISTRY
    train = opt.get('train') if isinstance(opt.get('train'), Mapping) else {}
    present = [f'train:{key}' for key in sorted(IBSD_TRAIN_KEYS) if key in train]
    present += ['network_est'] if 'network_est' in opt else []
    model_type = opt.get('model_type')
    if not present or model_type not in MODEL_REGISTRY:
        return
    if getattr(MODEL_REGISTRY.get(model_type), READS_IBSD_SECTIONS, False):
        return
    raise OptionError(f"{', '.join(present)}: read only by IBSDModel, and model_type {model_type} ignores "
                      f'{"them" if len(present) > 1 else "it"}: set model_type: IBSDModel, or remove '
                      f'{"them" if len(present) > 1 else "it"} for a plain run')


def check_known_keys(opt: Mapping) -> None:
    """Misspelt keys in every section BasicSR reads without checking (top level, ``path``, ``train``,
    ``datasets:*``, ``val``, ``logger``)."""
    reject_near_misses(opt, 'options', BASICSR_TOP_KEYS)
    check_path_keys(opt.get('path'))
    reject_near_misses(opt.get('train'), 'train', BASICSR_TRAIN_KEYS | IBSD_TRAIN_KEYS)
    for phase, dataset in (opt.get('datasets') or {}).items():
        reject_near_misses(dataset, f'datasets:{phase}')
    for section in ('val', 'logger'):
        reject_near_misses(opt.get(section), section)
    check_ibsd_keys_are_read(opt)


def check_run_options(opt: dict, is_train: bool) -> None:
    """All start-up checks of a parsed BasicSR ``opt`` (``ibsd-train`` and ``ibsd-test``).

    Raises:
        OptionError: one line naming the key or file.
    """
    check_known_keys(opt)
    check_devices(opt)
    if is_train:
        check_iteration_count(opt.get('train'))
        check_crop_sizes(opt)
        if ALLOW_UNTRAINED_KEY in (opt.get('path') or {}):
            raise OptionError(f'path:{ALLOW_UNTRAINED_KEY}: an ibsd-test option (testing untrained weights on '
                              'purpose); a training run starts from random weights whenever pretrain_network_g '
                              'is not set')
    else:
        check_tested_weights(opt)
    check_pretrained_files(opt.get('path') or {})
    check_output_folders(opt, is_train)


def yaml_problem(path: str | os.PathLike, error: Exception) -> str:
    """``file:line:column: problem`` for a YAML syntax error (PyYAML names ``<unicode string>`` for text)."""
    mark, context_mark = getattr(error, 'problem_mark', None), getattr(error, 'context_mark', None)
    problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
    context = getattr(error, 'context', None)
    where = f'{path}:{mark.line + 1}:{mark.column + 1}' if mark is not None else str(path)
    started = f' ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})' \
        if context and context_mark is not None else ''
    return f'{where}: invalid YAML: {problem}{started}'


def read_option_file(path: str | os.PathLike, loader: Any = None) -> Any:
    """A YAML file read with ``loader`` (default: safe), errors in one line naming the file and line."""
    import yaml
    path = os.fspath(path)
    if osp.isdir(path):
        raise OptionError(f'{path} is a folder, not a YAML file')
    try:
        with open(path) as handle:
            return yaml.load(handle, Loader=loader or yaml.SafeLoader)
    except FileNotFoundError:
        raise OptionError(f'{path}: no such file') from None
    except OSError as error:
        raise OptionError(f'{path}: cannot be read ({error.strerror or error})') from error
    except yaml.YAMLError as error:
        raise OptionError(yaml_problem(path, error)) from error


def option_file_argument(argv: list[str]) -> str | None:
    """The value of ``-opt`` in a BasicSR command line, if given."""
    for index, word in enumerate(argv):
        if word == '-opt' and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith('-opt='):
            return word[len('-opt='):]
    return None


def check_option_file(argv: list[str]) -> None:
    """The ``-opt`` file exists and is a YAML mapping (read as BasicSR reads it)."""
    path = option_file_argument(argv)
    if path is None:
        return  # BasicSR's own argument parser says -opt is required
    from basicsr.utils.options import ordered_yaml
    options = read_option_file(path, ordered_yaml()[0])
    if not isinstance(options, Mapping):
        raise OptionError(f'{path}: expected a mapping of options (name, model_type, datasets, ...), '
                          f'got {type(options).__name__}')
