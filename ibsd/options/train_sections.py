"""Strict checking of the ``train:`` sections and top-level keys IBSD reads, before anything is built.

A misspelt key must not train something else without a word (``mi_otp:`` would silently train
plain L1), and a number PyYAML read as a string (``1e-3``: YAML 1.1 wants ``1.0e-3``) must be a
number, not a ``TypeError`` at the first iteration. :func:`check_ibsd_options` rejects unknown
keys in every section IBSD reads, naming the closest valid keys, checks each value against its
declaration in :mod:`ibsd.options.schema` and converts numbers written as strings in place.
BasicSR's own keys are left to BasicSR.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping

from ibsd.errors import OptionError
from ibsd.options.schema import DERIVED, GRADIENT_SHARE, IBSD_LOOP, SCHEDULER_KEYS, SOFT_TARGET
from ibsd.options.values import (NEAR_MISS_CUTOFF, as_number, check_optimizer, check_registered, check_section,
                                 convert_iteration_counts, reject_unknown)

IBSD_TRAIN_KEYS = frozenset({'mi_opt', 'est_opt', 'wavelet_opt', 'optim_est', 'scheduler_est', 'ibsd', 'soft_target',
                             'amp'})
BASICSR_TRAIN_KEYS = frozenset({
    'optim_g', 'optim_d', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt', 'gan_opt',
    'ldl_opt', 'feature_matching_opt', 'ema_decay', 'net_d_iters', 'net_d_init_iters', 'fix_flow', 'flow_lr_mul',
    'lr_flow', 'dcn_lr_mul', 'tsa_iter', 'r1_reg_weight', 'path_reg_weight', 'net_g_reg_every', 'net_d_reg_every',
    'mixing_prob', 'path_batch_shrink', 'gan_gp_weight'})
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


def check_gradient_share(share: Any, where: str) -> dict:
    """A ``loss_weight: {grad_ratio: r, smoothing: s}`` mapping, checked and converted."""
    share = GRADIENT_SHARE.check(share, where)
    if share.get('grad_ratio') is None:
        raise OptionError(f'{where}: a weight given as a mapping needs grad_ratio (the target share of the pixel '
                          "term's gradient norm), e.g. {grad_ratio: 0.2}")
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
        train['ibsd'] = IBSD_LOOP.check(train['ibsd'])
    if 'soft_target' in train:
        train['soft_target'] = SOFT_TARGET.check(train['soft_target'])
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
            smoothing = weight.get('smoothing', GRADIENT_SHARE.keys['smoothing'].default)
            weight = f"at {weight['grad_ratio']:g} of the pixel gradient (smoothing {smoothing:g})"
        else:
            weight = f'x{weight:g}'
        return f"{label} {options['type']} {weight}" + (f' ({details})' if details else '')

    parts = [term('pixel_opt', 'pixel'), term('mi_opt', 'MI')]
    if train.get('mi_opt'):
        est = opt.get('network_est') or {'type': 'IBEstimator'}
        lr = (train.get('optim_est') or train.get('optim_g') or {}).get('lr')
        parts[-1] += f" over nodes {nodes}, estimator {est['type']} lr {lr}"
        positions = IBSD_LOOP.resolved(train.get('ibsd'))['positions']
        if positions < 1:
            parts[-1] += f', on a random {positions:g} of the positions per step'
    parts.append(term('wavelet_opt', 'wavelet'))
    if train.get('wavelet_opt'):
        soft = SOFT_TARGET.resolved(train.get('soft_target'))
        start = soft['start_iters']
        ramp = ramp_iters(soft, train.get('total_iter'))
        parts[-1] += (f" vs soft target (teacher {soft['source']}, alpha_max {soft['alpha_max']}, ramp {ramp} "
                      'iters' + (f' from {start}' if start else '') + ')')
    return 'IBSD terms: ' + '; '.join(parts)


def ramp_iters(soft_target: Mapping, total_iter: Any) -> int:
    """``train:soft_target:ramp_iters`` of resolved soft-target options; by default the iterations left after
    ``start_iters`` (at least 1)."""
    if soft_target['ramp_iters'] is not DERIVED:
        return int(soft_target['ramp_iters'])
    return max(1, int(total_iter or 1) - int(soft_target['start_iters']))
