"""IBSDModel: BasicSR's SRModel trained with IBSD's information-bottleneck self-distillation.

Student objective (every term optional, configured under ``train:``)::

    L = pixel_opt(SR, HR) + mi_opt: lambda_MI * sum_k CLUB_k(f_k -> f_{k-1})
                          + wavelet_opt: lambda_wav * L_wav(SR, T_t)

Each iteration first updates the estimators (``network_est``) on detached nodes by minimising
their Laplace NLL (``est_opt``), then updates the student with the estimators frozen. Only the
student is ever saved as ``net_g_*.pth``; estimators, the snapshot teacher, the sampled-CLUB
random stream and the global random states live in the training state, so a resumed run
continues as the uninterrupted one would.

The class holds the hooks BasicSR calls (set-up, ``optimize_parameters``, logging), which is why
this file is longer than most; the gradient budget (:mod:`ibsd.models.gradient_budget`) and the
training state (:mod:`ibsd.models.ibsd_state`) are mixins of their own.
"""
from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from copy import deepcopy
from typing import Iterator, Mapping

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import lr_scheduler
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ibsd.errors import OptionError
from ibsd.models.component_outputs import ComponentOutputs
from ibsd.models.divergence_guard import DivergenceGuard
from ibsd.models.feature_nodes import NodeRecorder, default_nodes
from ibsd.models.gradient_budget import GradientBudgetMixin
from ibsd.models.gradient_share import GradientShare
from ibsd.models.ibsd_state import IBSDStateMixin
from ibsd.models.position_sampling import PositionSampler, select_positions, stream_seed
from ibsd.models.soft_target import ProgressiveSoftTarget, warn_if_short_epoch
from ibsd.models.tiled_sr_model import TiledSRModel
from ibsd.options.schema import DERIVED, IBSD_LOOP, SOFT_TARGET
from ibsd.options.train_sections import check_ibsd_options, describe_terms, gradient_share_options, ramp_iters

SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
              'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
PROBE_SIZE = 48
STUDENT_TERMS = ('l_pix', 'l_mi', 'l_wav', 'l_percep', 'l_style')
AMP_DTYPES = {'bf16': torch.bfloat16}
DDP_ADVICE = ('Train on several GPUs with DDP: torchrun --nproc_per_node=N -m ibsd.train -opt X.yml '
              '--launcher pytorch (or set num_gpu: 1)')
DATAPARALLEL_MESSAGE = (
    'IBSDModel does not train under DataParallel (num_gpu > 1 without a launcher): its replicas share the '
    f"student's forward hooks, so the recorded nodes would mix replicas. {DDP_ADVICE}")


def build_scheduler(optimizer: torch.optim.Optimizer, options: dict, key: str):
    options = dict(options)
    kind = options.pop('type', None)
    if kind not in SCHEDULERS:
        raise OptionError(f"train:{key}: type must be one of {sorted(SCHEDULERS)}, got '{kind}'")
    return SCHEDULERS[kind](optimizer, **options)


def bound_exploited(l_mi: float, l_pix: float) -> bool:
    """True when the weighted CLUB bound is negative and larger than the pixel loss.

    A regulariser of a few percent of the pixel loss cannot legitimately reach that: the student is
    moving its features where the estimator predicts badly (measured: lambda_MI 1e-2 fine-tuning
    IMDN x2 collapsed to 12 dB with every number finite, the bound at -394 within 100 iterations).
    """
    return l_mi < 0 and -l_mi > l_pix


def stack_log_values(values, device: torch.device) -> torch.Tensor:
    """Log values (tensors on any device, or numbers) as one float32 vector on ``device``.

    BasicSR stacks the loss dict for the DDP reduction, which fails when one value lives on
    another device; moving each value here makes the reduction safe by construction.
    """
    def on_device(value) -> torch.Tensor:
        if isinstance(value, (int, float)):  # a fill on the device: no blocking host-to-device copy
            return torch.full((), float(value), device=device, dtype=torch.float32)
        return value.detach().to(device=device, dtype=torch.float32).mean()
    return torch.stack([on_device(v) for v in values])


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with no parameter requiring gradients; each parameter's own flag comes back after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@MODEL_REGISTRY.register()
class IBSDModel(IBSDStateMixin, GradientBudgetMixin, TiledSRModel):
    """SRModel + IBSD (see the module docstring and docs/training.md for every YAML key); tiling as TiledSRModel."""

    reads_ibsd_sections = True  # ibsd.options.run_file.READS_IBSD_SECTIONS: a model type that trains mi_opt...

    def __init__(self, opt):
        if opt.get('is_train') and not opt.get('dist') and int(opt.get('num_gpu') or 0) > 1:
            # num_gpu: auto on a multi-GPU machine without a launcher would mean DataParallel
            get_root_logger().warning(f"IBSDModel trains on one GPU without a launcher (num_gpu was "
                                      f"{opt['num_gpu']}). {DDP_ADVICE}")
            opt['num_gpu'] = 1
        super().__init__(opt)

    def init_training_settings(self):
        if isinstance(self.net_g, torch.nn.DataParallel):
            raise OptionError(DATAPARALLEL_MESSAGE)
        train_opt = check_ibsd_options(self.opt)['train']
        self.amp_dtype = self._amp_dtype(train_opt.get('amp'))
        self._log_names: list[str] = []
        self._log_values: torch.Tensor | None = None
        ibsd_opt = IBSD_LOOP.resolved(train_opt.get('ibsd'))
        self.estimator_steps = ibsd_opt['estimator_steps']
        self.log_pairs = ibsd_opt['log_pairs']
        self.log_grad_ratios = ibsd_opt['log_grad_ratios']
        self.print_freq = int((self.opt.get('logger') or {}).get('print_freq') or 1)
        self.gradient_shares: dict[str, GradientShare] = {}
        self._pair_terms: dict[str, torch.Tensor] = {}
        self._exploit_warned = False
        self._iteration = 0
        self.grad_clip_norm = ibsd_opt['grad_clip_norm']
        self.net_est = None
        if train_opt.get('mi_opt'):
            bare = self.get_bare_model(self.net_g)
            nodes = ibsd_opt['nodes']
            self.node_recorder = NodeRecorder(bare, default_nodes(bare) if nodes is DERIVED else nodes)
            self._build_estimator(self._probe_node_channels())
            self.cri_mi = build_loss(self._weighted_loss_options(train_opt, 'mi_opt', 'l_mi')).to(self.device)
            self.cri_mi.generator = torch.Generator().manual_seed(int(self.opt.get('manual_seed') or 0))
            est_opt = deepcopy(train_opt.get('est_opt') or {'type': 'LaplaceNLLLoss',
                                                            'reduction': getattr(self.cri_mi, 'reduction', 'mean')})
            self.cri_est = build_loss(est_opt).to(self.device)
            self.position_sampler = self._build_position_sampler(ibsd_opt['positions'])
        elif ibsd_opt['positions'] < 1:
            get_root_logger().warning('train:ibsd:positions has no effect without train:mi_opt (it samples the '
                                      'positions of the IB terms only)')
        self.cri_wav = build_loss(self._weighted_loss_options(train_opt, 'wavelet_opt', 'l_wav')).to(self.device) \
            if train_opt.get('wavelet_opt') else None
        self.soft_target = self._build_soft_target(train_opt.get('soft_target')) if self.cri_wav else None
        self.guard = DivergenceGuard(ibsd_opt['max_bad_steps'], bool(self.opt['dist']))
        super().init_training_settings()
        # CDC-style pixel losses also get the student's component images (read with forward hooks)
        self.components = ComponentOutputs.for_loss(self.get_bare_model(self.net_g), self.cri_pix)
        get_root_logger().info(describe_terms(self.opt, self.node_recorder.nodes if self.net_est is not None else None))

    # ----------------------------------------------------------------------------- set-up
    def _amp_dtype(self, amp) -> torch.dtype | None:
        """``train: amp``: ``~`` (off) or ``bf16`` (autocast on CUDA; the IB terms stay float32)."""
        if amp in (None, False, 'none', 'off'):
            return None
        if amp not in AMP_DTYPES:
            raise OptionError(f"train:amp: must be ~ (off) or one of {sorted(AMP_DTYPES)}, got '{amp}' (fp16 would "
                             'need a gradient scaler for both optimizers; bf16 does not)')
        if self.device.type != 'cuda':
            raise OptionError(f"train:amp: {amp} autocast is for CUDA training; this run is on {self.device.type}: "
                             'remove train:amp')
        return AMP_DTYPES[amp]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward passes when ``train: amp`` is on, else a no-op."""
        if getattr(self, 'amp_dtype', None) is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _probe_node_channels(self) -> list[int]:
        """Channels of each node, from one forward pass of a small zero input."""
        bare = self.get_bare_model(self.net_g)
        train_set = self.opt.get('datasets', {}).get('train', {})
        size = max(16, int(train_set.get('gt_size', PROBE_SIZE * self.opt['scale'])) // self.opt['scale'])
        channels_in = int(self.opt['network_g'].get('num_in_ch', 3))
        was_training = bare.training
        bare.eval()
        with torch.no_grad(), self.node_recorder.record():
            bare(torch.zeros(1, channels_in, size, size, device=self.device))
            nodes = self.node_recorder.collect()
        bare.train(was_training)
        return [node.shape[1] for node in nodes]

    def _build_estimator(self, channels: list[int]) -> None:
        est_opt = deepcopy(self.opt.get('network_est') or {'type': 'IBEstimator'})
        if est_opt.get('channels') is not None and list(est_opt['channels']) != channels:
            raise OptionError(f"network_est:channels {est_opt['channels']} does not match the nodes "
                             f'{self.node_recorder.nodes} with channels {channels}')
        est_opt['channels'] = channels
        self.net_est = self.model_to_device(build_network(est_opt))
        load_path = self.opt['path'].get('pretrain_network_est')
        if load_path and not self.opt['path'].get('resume_state'):
            self.load_network(self.net_est, load_path, self.opt['path'].get('strict_load_est', True),
                              self.opt['path'].get('param_key_est', 'params'))
        self.net_est.train()
        get_root_logger().info(f'IBSD nodes {self.node_recorder.nodes} with channels {channels}')

    def _weighted_loss_options(self, train_opt: Mapping, key: str, term: str) -> dict:
        """``train:<key>`` for ``build_loss``; a ``loss_weight: {grad_ratio: r}`` becomes a unit-weight loss
        whose weight a :class:`GradientShare` keeps (see :mod:`ibsd.models.gradient_share`)."""
        options = deepcopy(dict(train_opt[key]))
        share = gradient_share_options(options)
        if share is None:
            return options
        self.gradient_shares[term] = GradientShare(**share)
        options['loss_weight'] = 1.0
        return options

    def _build_position_sampler(self, fraction: float) -> PositionSampler:
        """``train: ibsd: positions``: the IB terms on a random fraction of the positions (1: all, exact)."""
        sampler = PositionSampler(fraction, stream_seed(self.opt.get('manual_seed'), self.opt.get('rank', 0)))
        if sampler.exact:
            return sampler
        takers = {'network_est': (self.get_bare_model(self.net_est).forward, 'positions'),
                  'train:mi_opt': (self.cri_mi.forward, 'node_shape'),
                  'train:est_opt': (self.cri_est.forward, 'node_shape')}
        for where, (method, argument) in takers.items():
            parameters = inspect.signature(method).parameters
            if argument not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                raise OptionError(f'train:ibsd:positions {fraction:g} needs {where} to take a {argument!r} '
                                  f'argument, which {type(method.__self__).__name__}.forward does not; '
                                  'use the built-in IBEstimator / IBCLUBLoss / LaplaceNLLLoss or positions: 1')
        return sampler

    def _build_soft_target(self, options: Mapping | None) -> ProgressiveSoftTarget:
        """``train:soft_target`` with its defaults (:data:`ibsd.options.schema.SOFT_TARGET`); the snapshot's
        period defaults to the epoch the pipeline recorded (``iters_per_epoch``)."""
        options = SOFT_TARGET.resolved(options)
        refresh = options['refresh_iters']
        if refresh is DERIVED:
            refresh = self.opt.get('iters_per_epoch')
            warn_if_short_epoch(refresh, options['source'])
        return ProgressiveSoftTarget(
            source=options['source'], alpha_max=options['alpha_max'],
            ramp_iters=ramp_iters(options, self.opt['train'].get('total_iter')),
            refresh_iters=None if refresh is None else int(refresh),
            build_student=lambda: build_network(self.opt['network_g']), start_iters=options['start_iters'])

    def setup_optimizers(self):
        optim_g = deepcopy(self.opt['train']['optim_g'])
        super().setup_optimizers()
        if self.net_est is None:
            return
        optim_est = deepcopy(self.opt['train'].get('optim_est') or optim_g)
        params = [p for p in self.net_est.parameters() if p.requires_grad]
        self.optimizer_est = self.get_optimizer(optim_est.pop('type'), params, **optim_est)
        self.optimizers.append(self.optimizer_est)

    def setup_schedulers(self):
        """Student: ``train:scheduler``; estimators: ``train:scheduler_est`` (default: the same)."""
        train_opt = self.opt['train']
        self.schedulers.append(build_scheduler(self.optimizer_g, train_opt['scheduler'], 'scheduler'))
        if self.net_est is not None:
            key = 'scheduler_est' if train_opt.get('scheduler_est') else 'scheduler'
            self.schedulers.append(build_scheduler(self.optimizer_est, train_opt[key], key))

    # ----------------------------------------------------------------------------- training
    def _estimator_terms(self, estimator, loss, nodes: list[torch.Tensor], log_as: str | None = None) -> torch.Tensor:
        """sum_k loss(q(f_{k-1} | f_k), f_{k-1}); with ``train: ibsd: log_pairs`` each pair's term is also
        logged as ``<log_as>_k`` (k = 1 for the first pair), divided by the loss weight."""
        positions = self._draw_positions(nodes)
        if positions is None:
            terms = [loss(mu, scale, y) for (mu, scale), y in zip(estimator(nodes), nodes[:-1])]
        else:  # an unbiased estimate from a sample of each pair's positions
            terms = [loss(mu, scale, select_positions(y, where), node_shape=y.shape)
                     for (mu, scale), y, where in zip(estimator(nodes, positions), nodes[:-1], positions)]
        if log_as is not None and self.log_pairs:
            weight = float(getattr(loss, 'loss_weight', 1.0)) or 1.0
            self._pair_terms.update({f'{log_as}_{k}': term.detach() / weight for k, term in enumerate(terms, 1)})
        return sum(terms)

    def _draw_positions(self, nodes: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """One subset of positions per node pair (``train: ibsd: positions``); ``None`` when exact."""
        if self.position_sampler.exact:
            return None
        for k, (y, x) in enumerate(zip(nodes[:-1], nodes[1:]), 1):
            if y.shape[-2:] != x.shape[-2:]:
                raise ValueError(f'train:ibsd:positions: node pair {k} has maps of sizes {tuple(y.shape[-2:])} and '
                                 f'{tuple(x.shape[-2:])}; position sampling needs one spatial size per pair')
        return [self.position_sampler.draw(x.shape[-2], x.shape[-1], x.device) for x in nodes[1:]]

    def _update_estimators(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        """Maximise log q(f_{k-1} | f_k) on detached nodes (the CLUB protocol)."""
        detached = [node.detach() for node in nodes]
        for _ in range(self.estimator_steps):
            self.optimizer_est.zero_grad()
            with self.autocast():
                l_est = self._estimator_terms(self.net_est, self.cri_est, detached, 'nll')
            l_est.backward()
            if self.guard.allows({'l_est': l_est}, self.net_est.parameters(), 'estimators'):
                self.optimizer_est.step()
        return l_est.detach()

    def _mi_bound(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        """sum_k CLUB bound with frozen estimators: gradients reach the student only.

        The bare estimator is used, so that a DDP wrapper only ever sees the estimator step.
        """
        with frozen(self.get_bare_model(self.net_est)) as estimator:
            return self._estimator_terms(estimator, self.cri_mi, nodes, 'mi')

    def _student_forward(self) -> list[torch.Tensor] | None:
        """Run the student on the batch (``self.output``); its nodes when the MI term is on."""
        with self.autocast(), self.components.record():
            if self.net_est is None:
                self.output = self.net_g(self.lq)
                return None
            with self.node_recorder.record():
                self.output = self.net_g(self.lq)
        return self.node_recorder.collect()

    def _warn_once_if_exploited(self, log: Mapping[str, float]) -> None:
        """Checked on the values read back for the log (print_freq), so it costs no synchronisation."""
        if self._exploit_warned or 'l_pix' not in log or 'l_mi' not in log or \
                not bound_exploited(log['l_mi'], log['l_pix']):
            return
        self._exploit_warned = True
        l_mi, l_pix = log['l_mi'], log['l_pix']
        get_root_logger().warning(
            f'iteration {self._iteration}: the MI bound (l_mi {l_mi:.4g}) is negative and larger than the pixel loss '
            f'({l_pix:.4g}): the student is exploiting the estimators, '
            'not compressing, and usually collapses. Lower train:mi_opt:loss_weight (1e-3 was stable where 1e-2 '
            'collapsed; with a gradient share, its grad_ratio) or raise network_est:scale_eps.')

    def optimize_parameters(self, current_iter):
        if self.soft_target is not None:
            self.soft_target.refresh_if_due(current_iter, self.get_bare_model(self.net_g))
        self.optimizer_g.zero_grad()
        loss_dict = OrderedDict()
        nodes = self._student_forward()
        if nodes is not None:
            loss_dict['l_est'] = self._update_estimators(nodes)
        output = self.output.float()  # every loss in float32, also under bf16 autocast

        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(output, self.gt, **self.components.loss_inputs(output))
        if nodes is not None:
            with self.autocast():
                loss_dict['l_mi'] = self._mi_bound(nodes)
            del nodes  # the graph keeps what backward needs; nothing outlives the step
        if self.cri_wav is not None:
            ema = getattr(self, 'net_g_ema', None)
            with self.autocast():
                target, alpha = self.soft_target.target(current_iter, self.lq, self.gt, ema)
            loss_dict['l_wav'] = self.cri_wav(output, target)
            loss_dict['alpha'] = alpha
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    loss_dict[name] = value
        measured = self._apply_gradient_shares(loss_dict, current_iter) if self.gradient_shares else {}
        terms = {name: value for name, value in loss_dict.items() if name in STUDENT_TERMS}
        l_total = sum(terms.values())
        if self.log_grad_ratios and current_iter % self.print_freq == 0:
            loss_dict.update(self._gradient_ratios(terms, measured))
        l_total.backward()
        if self.grad_clip_norm is not None:
            loss_dict['grad_norm'] = torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), float(self.grad_clip_norm))
        if self.guard.allows(terms, self.net_g.parameters()):
            self.optimizer_g.step()
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        self._iteration = current_iter
        loss_dict.update(self._pair_terms)
        self._pair_terms = {}
        self.reduce_loss_dict(loss_dict)
        self.guard.end_iteration(current_iter)

    # ----------------------------------------------------------------------------- logging
    def reduce_loss_dict(self, loss_dict):
        """BasicSR's reduction (mean over ranks) without a host synchronisation per term.

        The values are stacked on the model's device (see :func:`stack_log_values`) and reduced
        in one collective; they are read back only when the log is asked for.
        """
        self._log_names = list(loss_dict)
        if not self._log_names:
            self._log_values = None
            return
        values = stack_log_values(loss_dict.values(), self.device)
        if self.opt['dist']:
            dist.reduce(values, dst=0)
            if self.opt['rank'] == 0:
                values /= self.opt['world_size']
        self._log_values = values

    @property
    def log_dict(self) -> OrderedDict:
        """BasicSR's attribute, read back from the device when asked for."""
        return self.get_current_log()

    def get_current_log(self):
        if self._log_values is None:
            return OrderedDict()
        log = OrderedDict(zip(self._log_names, self._log_values.tolist()))
        self._warn_once_if_exploited(log)
        return log
