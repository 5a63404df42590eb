"""Strict checking of the options IBSD reads, before anything is built.

A misspelt key must not train something else without a word (``mi_otp:`` would silently train
plain L1), and a number PyYAML read as a string (``1e-3``: YAML 1.1 wants ``1.0e-3``) must be a
number, not a ``TypeError`` at the first iteration. :func:`check_ibsd_options` rejects unknown
keys in every section IBSD reads, naming the closest valid keys, and converts numbers written as
strings in place. BasicSR's own keys are left to BasicSR.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Iterable, Mapping

from ibsd.errors import OptionError
from ibsd.models.gradient_share import DEFAULT_SMOOTHING, SHARE_KEYS, GradientShare
from ibsd.models.position_sampling import check_fraction

IBSD_TRAIN_KEYS = frozenset({'mi_opt', 'est_opt', 'wavelet_opt', 'optim_est', 'scheduler_est', 'ibsd', 'soft_target',
                             'amp'})
BASICSR_TRAIN_KEYS = frozenset({
    'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt', 'gan_opt',
    'ldl_opt', 'feature_matching_opt', 'ema_decay', 'net_d_iters', 'net_d_init_iters', 'fix_flow', 'flow_lr_mul',
    'lr_flow', 'dcn_lr_mul', 'tsa_iter', 'r1_reg_weight', 'path_reg_weight', 'net_g_reg_every', 'net_d_reg_every',
    'mixing_prob', 'path_batch_shrink', 'gan_gp_weight'})
LOOP_KEYS = {'nodes': 'nodes', 'estimator_steps': 'int', 'grad_clip_norm': 'float?', 'max_bad_steps': 'int',
             'log_pairs': 'bool', 'positions': 'float', 'log_grad_ratios': 'bool'}
SOFT_TARGET_KEYS = {'source': 'str', 'alpha_max': 'float', 'ramp_iters': 'int?', 'refresh_iters': 'int?',
                    'start_iters': 'int?'}
SCHEDULER_KEYS = {'type': 'str', 'milestones': 'ints', 'gamma': 'float', 'restart_weights': 'floats',
                  'restarts': 'ints', 'periods': 'ints', 'eta_min': 'float', 'last_epoch': 'int'}
OPTIMIZER_NUMBERS = frozenset({'lr', 'weight_decay', 'eps', 'momentum', 'alpha', 'dampening', 'lr_decay',
                               'initial_accumulator_value', 'rho', 'betas', 'lambd', 't0', 'max_iter'})
ITERATION_KEYS = ('total_iter', 'warmup_iter')
IBSD_PATH_KEYS = ('pretrain_network_est', 'strict_load_est', 'param_key_est')
BASICSR_TOP_KEYS = frozenset({
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path', 'train',
    'val', 'logger', 'dist_params', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path',
    'find_unused_parameters', 'iters_per_epoch'})
BASICSR_PATH_KEYS = frozenset({
    'pretrain_network_g', 'pretrain_network_d', 'strict_load_g', 'strict_load_d', 'param_key_g', 'param_key_d',
    'resume_state', 'experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root',
    'ignore_resume_networks', 'root'})
LOSS_SECTIONS = ('mi_opt', 'est_opt', 'wavelet_opt')
SHARED_LOSSES = ('mi_opt', 'wavelet_opt')
NEAR_MISS_CUTOFF = 0.8


def _suggest(key: str, valid: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(n) for n in near)}?" if near else f'valid keys: {sorted(valid)}'


def reject_unknown(section: Mapping, valid: Iterable[str], where: str) -> None:
    """Raise :class:`OptionError` naming the first key of ``section`` that is not in ``valid``."""
    valid = set(valid)
    for key in section:
        if key not in valid:
            raise OptionError(f"{where}: unknown key '{key}': {_suggest(key, valid)}")


def as_number(value: Any, where: str, kind: type = float) -> int | float:
    """``value`` as ``kind`` (float or int); strings such as ``'1e-3'`` are read as numbers."""
    if isinstance(value, bool):
        raise OptionError(f'{where}: expected a number, got {value!r}')
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionError(f'{where}: expected a number, got {value!r}') from None
    if not isinstance(value, (int, float)):
        raise OptionError(f'{where}: expected a number, got {value!r}')
    if not math.isfinite(value):
        raise OptionError(f'{where}: expected a finite number, got {value!r}')
    if kind is int:
        if float(value) != int(value):
            raise OptionError(f'{where}: expected a whole number, got {value!r}')
        return int(value)
    return float(value)


def _convert(value: Any, kind: str, where: str) -> Any:
    optional = kind.endswith('?')
    kind = kind.rstrip('?')
    if value is None and (optional or kind in ('nodes', 'ints', 'floats')):
        return None
    if kind == 'float':
        return as_number(value, where)
    if kind == 'int':
        return as_number(value, where, int)
    if kind in ('ints', 'floats'):
        if not isinstance(value, (list, tuple)):
            raise OptionError(f'{where}: expected a list of numbers, got {value!r}')
        item_kind = int if kind == 'ints' else float
        return [as_number(v, f'{where}[{i}]', item_kind) for i, v in enumerate(value)]
    if kind == 'nodes':
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise OptionError(f'{where}: expected a list of module names, got {value!r}')
        return list(value)
    if kind == 'bool' and not isinstance(value, bool):
        raise OptionError(f'{where}: expected true or false, got {value!r}')
    if kind == 'str' and not isinstance(value, str):
        raise OptionError(f'{where}: expected a name, got {value!r}')
    return value


def check_section(section: Any, schema: Mapping[str, str], where: str) -> dict:
    """``section`` (a mapping or ``None``) checked against ``schema`` (key -> kind), numbers converted."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise OptionError(f'{where}: expected a mapping of keys, got {section!r}')
    reject_unknown(section, schema, where)
    return {key: _convert(value, schema[key], f'{where}:{key}') for key, value in section.items()}


def _numeric_default(parameter: inspect.Parameter) -> type | None:
    default = parameter.default
    if isinstance(default, bool):
        return None
    if isinstance(default, (int, float)):
        return type(default)
    annotation = str(parameter.annotation)
    return {'float': float, 'int': int}.get(annotation.replace('typing.', '').split(' ')[0])


def check_constructor_options(options: Mapping, cls: type, where: str, strict: bool = True) -> dict:
    """Options for ``cls(**options)`` (``type`` excluded): unknown keyword arguments rejected
    (unless ``cls`` takes ``**kwargs`` or ``strict`` is off), numeric ones converted to numbers."""
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop('self', None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if strict and not takes_any:
        reject_unknown([k for k in options if k != 'type'], parameters, where)
    checked = dict(options)
    for key, value in options.items():
        kind = _numeric_default(parameters[key]) if key in parameters else None
        if kind is not None and value is not None:
            checked[key] = as_number(value, f'{where}:{key}', kind)
        elif kind is None and key in parameters and isinstance(value, (list, tuple)):
            checked[key] = [_maybe_number(v) for v in value]
    return checked


def _maybe_number(value: Any) -> Any:
    """A string that reads as a number becomes that number; anything else is left as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_registered(options: Any, registry, where: str, strict: bool = True) -> dict:
    """A ``{type: X, ...}`` section whose ``type`` is in a BasicSR ``registry``, checked against X."""
    if not isinstance(options, Mapping) or 'type' not in options:
        raise OptionError(f"{where}: expected a mapping with a 'type', got {options!r}")
    kind = options['type']
    if kind not in registry:
        names = [name for name, _ in registry]
        raise OptionError(f"{where}:type: '{kind}' is not registered: {_suggest(str(kind), names)}")
    return check_constructor_options(options, registry.get(kind), where, strict)


def check_optimizer(options: Any, where: str) -> dict:
    """An optimizer section: numbers written as strings (``lr: 1e-3``) become numbers; the numeric
    arguments of torch's optimizers (``lr``, ``betas``, ...) must be finite numbers, not ``true``."""
    if not isinstance(options, Mapping) or 'type' not in options:
        raise OptionError(f"{where}: expected a mapping with a 'type', got {options!r}")
    checked = dict(options)
    for key, value in options.items():
        if key == 'type':
            continue
        if key in OPTIMIZER_NUMBERS:
            checked[key] = _convert(value, 'floats' if isinstance(value, (list, tuple)) else 'float', f'{where}:{key}')
        elif isinstance(value, (list, tuple)):
            checked[key] = [_maybe_number(v) for v in value]
        else:
            checked[key] = _maybe_number(value)
    return checked


def convert_iteration_counts(train: dict) -> None:
    """``total_iter`` and ``warmup_iter`` as whole numbers (``1e5`` reads as a string): basicsr uses them
    before any model exists."""
    for key in ITERATION_KEYS:
        if train.get(key) is not None:
            train[key] = as_number(train[key], f'train:{key}', int)


def check_gradient_share(share: Any, where: str) -> dict:
    """A ``loss_weight: {grad_ratio: r, smoothing: s}`` mapping, checked and converted."""
    share = check_section(share, SHARE_KEYS, where)
    if 'grad_ratio' not in share:
        raise OptionError(f'{where}: a weight given as a mapping needs grad_ratio (the target share of the pixel '
                          "term's gradient norm), e.g. {grad_ratio: 0.2}")
    try:
        GradientShare(**share)
    except ValueError as error:
        raise OptionError(f'{where}: {error}') from None
    return share


def check_loss_section(options: Any, key: str, registry) -> dict:
    """``train:<key>`` of an IBSD loss; ``mi_opt`` and ``wavelet_opt`` may give ``loss_weight`` as a
    gradient share (see :mod:`ibsd.models.gradient_share`)."""
    where = f'train:{key}'
    weight = options.get('loss_weight') if isinstance(options, Mapping) else None
    if not isinstance(weight, Mapping):
        return check_registered(options, registry, where)
    if key not in SHARED_LOSSES:
        raise OptionError(f'{where}:loss_weight: a gradient share is for the student\'s terms '
                          f'({", ".join("train:" + k for k in SHARED_LOSSES)}); give a number')
    share = check_gradient_share(weight, f'{where}:loss_weight')
    checked = check_registered({**options, 'loss_weight': 1.0}, registry, where)
    checked['loss_weight'] = share
    return checked


def check_pixel_term_for_ratios(train: Mapping) -> None:
    """Gradient ratios and shares divide by the pixel term's gradient: they need ``train:pixel_opt``."""
    if train.get('pixel_opt'):
        return
    if (train.get('ibsd') or {}).get('log_grad_ratios'):
        raise OptionError("train:ibsd:log_grad_ratios divides each term's gradient by the pixel term's: it needs "
                          'train:pixel_opt')
    for key in SHARED_LOSSES:
        if gradient_share_options(train.get(key)) is not None:
            raise OptionError(f"train:{key}:loss_weight: a gradient share is a share of the pixel term's gradient: "
                              'it needs train:pixel_opt')


def gradient_share_options(options: Mapping | None) -> dict | None:
    """The share mapping of a checked loss section, or ``None`` when its weight is a number."""
    weight = (options or {}).get('loss_weight')
    return dict(weight) if isinstance(weight, Mapping) else None


def reject_misplaced_ibsd_keys(opt: Mapping) -> None:
    """IBSD's training sections written at the top level would be ignored: they belong under ``train:``."""
    for key in sorted(IBSD_TRAIN_KEYS):
        if key in opt:
            raise OptionError(f"{key}: belongs under train: (as train:{key}); at the top level it would be ignored")


def _reject_near_misses(section: Mapping, ibsd_keys: Iterable[str], known: Iterable[str], where: str) -> None:
    """Keys of a section IBSD shares with BasicSR (which ignores unknown keys there) that look like a
    misspelt IBSD key."""
    known = set(known) | set(ibsd_keys)
    for key in section:
        if key in known:
            continue
        near = difflib.get_close_matches(key, list(ibsd_keys), n=1, cutoff=NEAR_MISS_CUTOFF)
        if near:
            raise OptionError(f"{where}: unknown key '{key}': did you mean '{near[0]}'?")


def check_ibsd_options(opt: dict) -> dict:
    """Check (and convert in place) every option IBSD reads in a parsed BasicSR ``opt``; returns ``opt``.

    Raises:
        OptionError: naming the first unknown key (with the nearest valid ones) or bad value.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
    train = opt.get('train')
    if not isinstance(train, dict):
        raise OptionError('train: the section is missing')
    reject_unknown(train, IBSD_TRAIN_KEYS | BASICSR_TRAIN_KEYS, 'train')
    reject_misplaced_ibsd_keys(opt)
    _reject_near_misses(opt, ['network_est'], BASICSR_TOP_KEYS, 'options')
    if 'ibsd' in train:
        train['ibsd'] = check_section(train['ibsd'], LOOP_KEYS, 'train:ibsd')
        if 'positions' in train['ibsd']:
            try:
                check_fraction(train['ibsd']['positions'])
            except ValueError as error:
                raise OptionError(str(error)) from None
    if 'soft_target' in train:
        train['soft_target'] = check_section(train['soft_target'], SOFT_TARGET_KEYS, 'train:soft_target')
    for key in LOSS_SECTIONS:
        if train.get(key):
            train[key] = check_loss_section(train[key], key, LOSS_REGISTRY)
    for key in ('pixel_opt', 'perceptual_opt'):  # BasicSR's keys: numbers converted, other keys left to BasicSR
        if train.get(key):
            train[key] = check_registered(train[key], LOSS_REGISTRY, f'train:{key}', strict=False)
    for key in ('optim_g', 'optim_est'):
        if train.get(key):
            train[key] = check_optimizer(train[key], f'train:{key}')
    for key in ('scheduler', 'scheduler_est'):
        if train.get(key):
            train[key] = check_section(train[key], SCHEDULER_KEYS, f'train:{key}')
    if opt.get('network_est'):
        opt['network_est'] = check_registered(opt['network_est'], ARCH_REGISTRY, 'network_est')
    check_pixel_term_for_ratios(train)
    convert_iteration_counts(train)
    if train.get('ema_decay') is not None:
        train['ema_decay'] = as_number(train['ema_decay'], 'train:ema_decay')
    return opt


def describe_terms(opt: Mapping, nodes: list[str] | None) -> str:
    """One line saying which IBSD terms are on, with their weights, nodes and teacher."""
    train = opt['train']

    def term(key: str, label: str) -> str:
        options = train.get(key)
        if not options:
            return f'{label} off'
        extras = {k: v for k, v in options.items() if k not in ('type', 'loss_weight')}
        details = ', '.join(f'{k} {v}' for k, v in extras.items())
        weight = options.get('loss_weight', 1.0)
        if isinstance(weight, Mapping):
            smoothing = weight.get('smoothing', DEFAULT_SMOOTHING)
            weight = f"at {weight['grad_ratio']:g} of the pixel gradient (smoothing {smoothing:g})"
        else:
            weight = f'x{weight:g}'
        return f"{label} {options['type']} {weight}" + (f' ({details})' if details else '')

    parts = [term('pixel_opt', 'pixel'), term('mi_opt', 'MI')]
    if train.get('mi_opt'):
        est = opt.get('network_est') or {'type': 'IBEstimator'}
        lr = (train.get('optim_est') or train.get('optim_g') or {}).get('lr')
        parts[-1] += f" over nodes {nodes}, estimator {est['type']} lr {lr}"
        positions = float((train.get('ibsd') or {}).get('positions', 1.0))
        if positions < 1:
            parts[-1] += f', on a random {positions:g} of the positions per step'
    parts.append(term('wavelet_opt', 'wavelet'))
    if train.get('wavelet_opt'):
        soft = train.get('soft_target') or {}
        start = int(soft.get('start_iters') or 0)
        ramp = soft.get('ramp_iters') or max(1, int(train.get('total_iter') or 1) - start)
        parts[-1] += (f" vs soft target (teacher {soft.get('source') or 'snapshot'}, alpha_max "
                      f"{soft.get('alpha_max', 0.8)}, ramp {ramp} iters" + (f' from {start}' if start else '') + ')')
    return 'IBSD terms: ' + '; '.join(parts)
