"""A study file: a base training YAML, variants that differ from it by listed edits, seeds and test sets.

Example (``options/study/*.yml`` hold complete ones)::

    name: city100_imdn_x2_finetune
    base: ../train/IBSD/train_ibsd_imdn_x2_city100.yml   # relative to the study file
    set:                                                 # edits of every run (colon paths, as --force_yml)
      train:total_iter: 1000
      path:pretrain_network_g: ../shared/data/weights/IMDN_x2.pth
    variants:
      L1: {plain: true}                                  # plain TiledSRModel: every IBSD key removed
      IBSD: {}
      MI: {remove: [train:wavelet_opt], seeds: [0]}
      lambda_MI=1e-2: {set: {train:mi_opt:loss_weight: 1.0e-2}}
    baseline: L1
    seeds: [0, 1, 2]
    eval_iters: [500]                                     # the final iteration is always evaluated
    test_sets:
      City100 081-100: {dataroot_gt: datasets/City100/x2/val_HR, dataroot_lq: datasets/City100/x2/val_LR}
    parallel: 2                                           # runs at once (threads split between them)
    eval_weights: auto                                    # or params / params_ema (auto: EMA when kept)
    early_stopping: psnr                                  # also evaluate each run's best-validated checkpoint
    contrasts: [[MI, lambda_MI=1e-2]]                     # also report MI - lambda_MI=1e-2, paired by seed

Relative data and weight paths (``dataroot_*``, ``meta_info_file``, ``pretrain_network_*``) are
taken from the directory ``ibsd-study`` runs in, as ``ibsd-train`` would.

This module is longer than most because a study file is one format: its keys, their checks and the
BasicSR options each run and evaluation gets from them are read together (running the runs is
:mod:`ibsd.study.runner`'s, reading their results :mod:`ibsd.study.results`').
"""
from __future__ import annotations

import math
import re
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ibsd.data.memory_backend import BACKEND as MEMORY_BACKEND, EXACT_DATASET_TYPES
from ibsd.errors import OptionError
from ibsd.options.run_file import read_option_file
from ibsd.options.train_sections import IBSD_TRAIN_KEYS
from ibsd.options.values import as_number, reject_unknown

STUDY_KEYS = {'name', 'base', 'set', 'variants', 'baseline', 'seeds', 'eval_iters', 'test_sets', 'parallel',
              'threads', 'prepare', 'crop_size', 'eval_weights', 'early_stopping', 'contrasts'}
EVAL_WEIGHTS = ('auto', 'params', 'params_ema')
EARLY_STOPPING_METRICS = ('psnr', 'ssim')
VARIANT_KEYS = {'plain', 'set', 'remove', 'seeds'}
TEST_SET_KEYS = {'dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'meta_info_file', 'io_backend'}
PATH_KEYS = re.compile(r'^(dataroot_\w+|meta_info_file|pretrain_network_\w+)$')
SAFE_NAME = re.compile(r'[^A-Za-z0-9_.+-]+')
PLAIN_MODEL = 'TiledSRModel'
"""Model type of plain variants: the IBSD model's own base, so both arms validate and test through one path."""
TRAINS_AS_PLAIN = {'SRModel', PLAIN_MODEL}
"""Model types that train identically (TiledSRModel changes only ``test()``): plain runs written with
``SRModel`` by earlier versions continue, and keep their fingerprints, under :data:`PLAIN_MODEL`."""


@dataclass
class Variant:
    """One arm of the study: edits of the base options."""
    name: str
    plain: bool = False
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


@dataclass
class Run:
    """One training run: a variant with a seed."""
    variant: str
    seed: int
    name: str


@dataclass
class Study:
    name: str
    path: Path
    base: Path
    edits: dict[str, Any]
    variants: dict[str, Variant]
    baseline: str
    seeds: list[int]
    eval_iters: list[int]
    test_sets: dict[str, dict]
    parallel: int
    threads: int | None
    prepare: list[list[str]]
    crop_size: int
    eval_weights: str = 'auto'
    early_stopping: str | None = None
    contrasts: list[tuple[str, str]] = field(default_factory=list)
    """Pairs ``(variant, reference)`` of non-baseline comparisons the report adds, paired by seed."""

    @property
    def runs(self) -> list[Run]:
        return [Run(v.name, seed, run_name(self.name, v.name, seed))
                for v in self.variants.values() for seed in (v.seeds or self.seeds)]


def run_name(study: str, variant: str, seed: int) -> str:
    """A BasicSR experiment name (a folder name): unsafe characters become ``_``."""
    return SAFE_NAME.sub('_', f'{study}_{variant}_s{seed}')


def _ints(value: Any, where: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise OptionError(f'{where}: expected a non-empty list of whole numbers, got {value!r}')
    return [as_number(v, f'{where}[{i}]', int) for i, v in enumerate(value)]


def _edits(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise OptionError(f"{where}: expected a mapping of colon paths to values (e.g. 'train:total_iter: 1000')")
    return dict(value)


def _contrasts(value: Any, variants: dict[str, Variant], baseline: str, where: str) -> list[tuple[str, str]]:
    """``contrasts: [[A, B], ...]``: pairs of two different variants other than the baseline, reported as
    ``A - B`` paired by seed."""
    if value is None:
        return []
    at = f'{where}: contrasts'
    if not isinstance(value, list):
        raise OptionError(f'{at}: expected a list of [variant, reference] pairs, got {value!r}')
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise OptionError(f'{at}[{i}]: expected a pair [variant, reference], got {pair!r}')
        variant, reference = (str(name) for name in pair)
        for name in (variant, reference):
            if name not in variants:
                raise OptionError(f"{at}[{i}]: '{name}' is not one of the variants {list(variants)}")
        if variant == reference:
            raise OptionError(f"{at}[{i}]: '{variant}' against itself")
        if baseline in (variant, reference):
            raise OptionError(f"{at}[{i}]: every variant is compared with the baseline '{baseline}' in the main "
                              'table already; contrasts pair two other variants')
        pairs.append((variant, reference))
    return pairs


def load_study(path: str | Path) -> Study:
    """Read and check a study file.

    Raises:
        OptionError: naming the study file and the key that is wrong.
    """
    path = Path(path)
    if path.is_dir():
        raise OptionError(f'{path} is a folder: give the study file (options/study/*.yml)')
    if not path.is_file():
        raise OptionError(f'{path}: no such study file')
    raw = read_option_file(path)
    where = str(path)
    if not isinstance(raw, dict):
        raise OptionError(f'{where}: a study file is a mapping of keys (name, base, variants, ...)')
    reject_unknown(raw, STUDY_KEYS, where)
    for key in ('name', 'base', 'variants', 'test_sets'):
        if not raw.get(key):
            raise OptionError(f'{where}: {key} is missing')
    base = (path.parent / str(raw['base'])).resolve()
    if base.is_dir():
        raise OptionError(f"{where}: base: {raw['base']} ({base}) is a folder, not a training YAML")
    if not base.is_file():
        raise OptionError(f"{where}: base: {raw['base']} ({base}) does not exist")
    variants = {}
    if not isinstance(raw['variants'], dict):
        raise OptionError(f'{where}: variants: expected a mapping of names to edits')
    for name, spec in raw['variants'].items():
        spec = spec or {}
        at = f'{where}: variants:{name}'
        if not isinstance(spec, dict):
            raise OptionError(f'{at}: expected a mapping with plain, set, remove or seeds')
        reject_unknown(spec, VARIANT_KEYS, at)
        remove = spec.get('remove') or []
        if not isinstance(remove, list) or not all(isinstance(r, str) for r in remove):
            raise OptionError(f'{at}:remove: expected a list of colon paths')
        seeds = _ints(spec['seeds'], f'{at}:seeds') if spec.get('seeds') is not None else []
        variants[str(name)] = Variant(str(name), bool(spec.get('plain', False)), _edits(spec.get('set'), f'{at}:set'),
                                      remove, seeds)
    baseline = str(raw.get('baseline') or next(iter(variants)))
    if baseline not in variants:
        raise OptionError(f"{where}: baseline: '{baseline}' is not one of the variants {list(variants)}")
    test_sets = raw['test_sets']
    if not isinstance(test_sets, dict):
        raise OptionError(f'{where}: test_sets: expected a mapping of names to dataroot_gt/dataroot_lq')
    for name, spec in test_sets.items():
        at = f'{where}: test_sets:{name}'
        if not isinstance(spec, dict):
            raise OptionError(f'{at}: expected a mapping with dataroot_gt and dataroot_lq')
        reject_unknown(spec, TEST_SET_KEYS, at)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if not spec.get(key):
                raise OptionError(f'{at}: {key} is missing')
    prepare = raw.get('prepare') or []
    if not isinstance(prepare, list) or not all(isinstance(c, list) and c for c in prepare):
        raise OptionError(f'{where}: prepare: expected a list of commands, each a list of words')
    threads = raw.get('threads')
    eval_weights = str(raw.get('eval_weights', 'auto'))
    if eval_weights not in EVAL_WEIGHTS:
        raise OptionError(f"{where}: eval_weights: must be one of {EVAL_WEIGHTS}, got '{eval_weights}'")
    early_stopping = raw.get('early_stopping')
    if early_stopping is not None and early_stopping not in EARLY_STOPPING_METRICS:
        raise OptionError(f"{where}: early_stopping: the validation metric to select on, one of "
                          f"{EARLY_STOPPING_METRICS}, got {early_stopping!r}")
    return Study(
        name=SAFE_NAME.sub('_', str(raw['name'])), path=path.resolve(), base=base,
        edits=_edits(raw.get('set'), f'{where}: set'), variants=variants, baseline=baseline,
        seeds=_ints(raw.get('seeds', [0]), f'{where}: seeds'),
        eval_iters=_ints(raw['eval_iters'], f'{where}: eval_iters') if raw.get('eval_iters') else [],
        test_sets={str(k): dict(v) for k, v in test_sets.items()},
        parallel=as_number(raw.get('parallel', 1), f'{where}: parallel', int),
        threads=None if threads is None else as_number(threads, f'{where}: threads', int),
        prepare=[[str(word) for word in command] for command in prepare],
        crop_size=as_number(raw.get('crop_size', 96), f'{where}: crop_size', int), eval_weights=eval_weights,
        early_stopping=early_stopping, contrasts=_contrasts(raw.get('contrasts'), variants, baseline, where))


# --------------------------------------------------------------------------- editing options
def _split(path: str) -> list[str]:
    return [part for part in path.split(':') if part]


def set_path(opt: dict, path: str, value: Any, where: str) -> None:
    """``opt['a']['b'] = value`` for ``path`` ``'a:b'``; missing sections are created."""
    keys = _split(path)
    node = opt
    for key in keys[:-1]:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise OptionError(f"{where}: '{path}': '{key}' is not a section")
    node[keys[-1]] = deepcopy(value)


def remove_path(opt: dict, path: str, where: str) -> None:
    """Delete ``path``; a path that is not there is an error (a misspelt removal must not pass silently)."""
    keys = _split(path)
    node = opt
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or keys[-1] not in node:
        raise OptionError(f"{where}: remove: '{path}' is not in the options")
    del node[keys[-1]]


def make_plain(opt: dict) -> None:
    """The plain baseline: :data:`PLAIN_MODEL` (BasicSR's SRModel with the tiled test IBSDModel also has) with every
    key IBSD adds removed."""
    opt['model_type'] = PLAIN_MODEL
    opt.pop('network_est', None)
    for key in IBSD_TRAIN_KEYS:
        opt['train'].pop(key, None)
    for key in ('pretrain_network_est', 'strict_load_est', 'param_key_est'):
        (opt.get('path') or {}).pop(key, None)


def absolute_paths(node: Any, root: Path) -> Any:
    """Data and weight paths relative to ``root`` made absolute (runs execute in the study folder)."""
    if isinstance(node, dict):
        return {k: (str((root / v).resolve()) if PATH_KEYS.match(str(k)) and isinstance(v, str) and v
                    and not Path(v).is_absolute() else absolute_paths(v, root)) for k, v in node.items()}
    if isinstance(node, list):
        return [absolute_paths(v, root) for v in node]
    return node


def save_every(study: Study, total_iter: int, val_freq: int | None = None) -> int:
    """A checkpoint interval that lands on every evaluated iteration and on the last one, and saves at least
    about four times per run (a killed run resumes from its last state). With ``early_stopping`` it also lands
    on every validation (``val_freq``): any validated checkpoint may be the one selected."""
    interval = 0
    for iteration in [*study.eval_iters, total_iter, *([val_freq] if val_freq else [])]:
        interval = math.gcd(interval, iteration)
    for divisor in (2, 3, 5):
        while interval > total_iter // 4 and interval % divisor == 0:
            interval //= divisor
    return interval


def validation_interval(study: Study, opt: dict) -> int | None:
    """``val:val_freq`` of a run when the study selects checkpoints on validation, else None.

    Raises:
        OptionError: ``early_stopping`` without a validation set, or with no whole-number ``val_freq``.
    """
    if study.early_stopping is None:
        return None
    where = f'{study.path}: early_stopping'
    if not (opt.get('datasets') or {}).get('val') or not opt.get('val'):
        raise OptionError(f'{where}: the runs have no datasets:val and val: sections to select checkpoints on')
    val_freq = as_number(opt['val'].get('val_freq'), 'val:val_freq', float)
    if val_freq < 1 or val_freq != int(val_freq):
        raise OptionError(f'{where}: val:val_freq must be a whole number of iterations, got {val_freq!r}')
    print_freq = as_number((opt.get('logger') or {}).get('print_freq', 100), 'logger:print_freq', int)
    if val_freq % print_freq:
        raise OptionError(f'{where}: logger:print_freq ({print_freq}) must divide val:val_freq ({val_freq:g}): '
                          'the log dates each validation by the iteration line before it')
    return int(val_freq)


def run_options(study: Study, run: Run, root: Path) -> dict:
    """The BasicSR training options of ``run``: base, study edits, variant edits, seed and name, with data
    and weight paths made absolute from ``root``."""
    return absolute_paths(relative_run_options(study, run), root)


def options_fingerprint(study: Study, run: Run) -> str:
    """SHA-256 of ``run``'s options as the study file writes them (paths as given, so the same on every
    machine): a finished run's evaluations count only while its options have this fingerprint."""
    return _fingerprint(as_trained(relative_run_options(study, run)))


def accepted_fingerprints(study: Study, run: Run) -> set[str]:
    """:func:`options_fingerprint` and the one versions before the memory backend wrote for the same
    options (which kept ``persistent_workers`` in the hash)."""
    options = relative_run_options(study, run)
    return {options_fingerprint(study, run), _fingerprint(as_trained(options, data=False))}


def _fingerprint(options: dict) -> str:
    import hashlib

    import yaml
    text = yaml.safe_dump(options, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def as_trained(opt: dict, data: bool = True) -> dict:
    """``opt`` written as the earliest options that train the same: a plain model type as ``SRModel``
    (:data:`TRAINS_AS_PLAIN`), and (``data``) data sets read from ``memory`` as read from ``disk``,
    without ``persistent_workers`` (the same samples: ``tests/data/test_memory_backend.py``), for the
    data set types that decode with ``imfrombytes``. A run can switch to the faster loading and keep its
    fingerprint."""
    if opt.get('model_type') in TRAINS_AS_PLAIN:
        opt = {**opt, 'model_type': 'SRModel'}
    datasets = opt.get('datasets')
    if data and isinstance(datasets, dict):
        opt = {**opt, 'datasets': {phase: as_read_from_disk(dataset) for phase, dataset in datasets.items()}}
    return opt


def as_read_from_disk(dataset: object) -> object:
    if not isinstance(dataset, dict) or dataset.get('type') not in EXACT_DATASET_TYPES:
        return dataset
    dataset = {key: value for key, value in dataset.items() if key != 'persistent_workers'}
    backend = dataset.get('io_backend')
    if isinstance(backend, dict) and backend.get('type') == MEMORY_BACKEND:
        dataset['io_backend'] = {**backend, 'type': 'disk'}
    return dataset


def relative_run_options(study: Study, run: Run) -> dict:
    """:func:`run_options` with the paths as the files give them."""
    opt = read_option_file(study.base)
    if not isinstance(opt, dict) or not isinstance(opt.get('train'), dict):
        raise OptionError(f'{study.path}: base: {study.base} is not a training YAML (no train: section)')
    where = f'{study.path}'
    for path, value in study.edits.items():
        set_path(opt, path, value, f'{where}: set')
    variant = study.variants[run.variant]
    if variant.plain:
        make_plain(opt)
    for path in variant.remove:
        remove_path(opt, path, f'{where}: variants:{variant.name}')
    for path, value in variant.set.items():
        set_path(opt, path, value, f'{where}: variants:{variant.name}:set')
    opt['name'] = run.name
    opt['manual_seed'] = run.seed
    total = as_number(opt['train']['total_iter'], 'train:total_iter', int)
    late = [i for i in study.eval_iters if i > total]
    if late:
        raise OptionError(f'{where}: eval_iters {late} are beyond train:total_iter {total}')
    opt['train']['total_iter'] = total
    opt.setdefault('logger', {})['save_checkpoint_freq'] = save_every(study, total, validation_interval(study, opt))
    check_run(opt, f'{where}: run {run.name} (variant {run.variant})')
    return opt


def check_run(opt: dict, where: str) -> None:
    """Check a generated run's options before any run of the study trains: a ``set:`` typo would otherwise
    train, evaluate and be reported with the edit unused (BasicSR ignores keys it does not read), and an
    IBSD option would fail only when its run starts, after others trained.

    Raises:
        OptionError: naming the run, its variant and the key.
    """
    from basicsr.utils.registry import ARCH_REGISTRY

    from ibsd.options.train_sections import check_ibsd_options
    from ibsd.options.values import check_registered
    from ibsd.options.run_file import check_crop_sizes, check_iteration_count, check_known_keys
    try:
        check_known_keys(opt)
        check_iteration_count(opt.get('train'))
        check_crop_sizes(opt)
        check_registered(opt.get('network_g'), ARCH_REGISTRY, 'network_g')
        if opt.get('model_type') == 'IBSDModel':
            check_ibsd_options(deepcopy(opt))
    except OptionError as error:
        raise OptionError(f'{where}: {error}') from None


def evaluated_weights(study: Study, train_opt: dict) -> str:
    """The checkpoint key evaluated: ``eval_weights``, where ``auto`` is BasicSR's choice (the EMA student
    when the run keeps one). Set ``params`` to compare variants with and without EMA on equal terms."""
    if study.eval_weights != 'auto':
        return study.eval_weights
    return 'params_ema' if float(train_opt['train'].get('ema_decay') or 0) > 0 else 'params'


def evaluation_options(study: Study, run: Run, train_opt: dict, checkpoint: Path, iteration: int, root: Path) -> dict:
    """BasicSR test options evaluating ``checkpoint`` of ``run`` on every test set, on whole images."""
    scale = int(train_opt['scale'])
    datasets = {}
    for index, (name, spec) in enumerate(study.test_sets.items(), 1):
        datasets[f'test_{index}'] = {'name': SAFE_NAME.sub('_', name), 'type': 'PairedImageDataset', 'phase': 'test',
                                     'io_backend': {'type': 'disk'}, **absolute_paths(spec, root)}
    metrics = {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True},
               'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}
    return {
        'name': f'{run.name}_i{iteration}', 'model_type': 'TiledSRModel', 'scale': scale, 'num_gpu': 'auto',
        'manual_seed': run.seed, 'datasets': datasets, 'network_g': deepcopy(train_opt['network_g']),
        'tile': {'tile_size': None},
        'path': {'pretrain_network_g': str(checkpoint), 'strict_load_g': True,
                 'param_key_g': evaluated_weights(study, train_opt)},
        'val': {'save_img': False, 'suffix': None, 'metrics': metrics},
    }
