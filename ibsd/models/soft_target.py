"""The progressive soft target of IBSD's wavelet loss (after PS-KD, Kim et al., ICCV 2021).

    T_t = (1 - alpha_t) * HR + alpha_t * teacher(LR),
    alpha_t = alpha_max * clip((t - start_iters) / ramp_iters, 0, 1)

``start_iters`` (default 0, as in PS-KD) delays the teacher until the student is worth copying.

The teacher prediction is never differentiated. Sources (``soft_target: source``):

- ``snapshot`` (default): a frozen copy of the student, refreshed every ``refresh_iters``
  iterations (default: every epoch), re-run on the current LR batch ("the model of the previous
  epoch"). Before the first refresh there is no teacher and the target is HR.
- ``ema``: BasicSR's EMA network (``train: ema_decay > 0``).

There is no "current output" source: with an L1 loss on a linear transform W, the gradient of
|W(SR) - (1 - a) W(HR) - a W(SR).detach()| has the sign of W(SR) - W(HR), so that target would
train exactly as alpha = 0. With a snapshot or EMA teacher T, the L1 gradient keeps its size and
changes sign only where a |W(SR) - W(T)| > (1 - a) |W(SR) - W(HR)|: where the teacher lies on
the other side of the output, further than the (shrunk) HR target does.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from basicsr.utils import get_root_logger

from ibsd.errors import OptionError
from ibsd.options.schema import SOFT_TARGET

OPTION = SOFT_TARGET.where

SHORT_SNAPSHOT_PERIOD = 10


def warn_if_short_epoch(iters_per_epoch: int | None, source: str) -> None:
    """A snapshot teacher refreshed every epoch is nearly the student itself when an epoch is a few
    iterations (a small training set): say so, with the key that sets another period."""
    if source == 'snapshot' and iters_per_epoch is not None and iters_per_epoch < SHORT_SNAPSHOT_PERIOD:
        get_root_logger().warning(
            f'train:soft_target: the snapshot teacher is refreshed every epoch, which is {iters_per_epoch} '
            f'iteration(s) here: a teacher that recent is nearly the student itself. Set '
            f'train:soft_target:refresh_iters for a longer period (or dataset_enlarge_ratio for longer epochs).')


class ProgressiveSoftTarget:
    """Builds T_t and owns the snapshot teacher.

    Args:
        source: ``'snapshot'`` or ``'ema'``.
        alpha_max: alpha_T, the final mixing weight (0.8 in PS-KD).
        ramp_iters: Iterations over which alpha rises linearly from 0 to ``alpha_max``.
        refresh_iters: Snapshot period in iterations (``snapshot`` only).
        build_student: Makes a fresh student network (for the snapshot).
        start_iters: Iterations with alpha = 0 (target HR) before the ramp begins.
    """

    def __init__(self, source: str, alpha_max: float, ramp_iters: int, refresh_iters: int | None,
                 build_student: Callable[[], nn.Module], start_iters: int = 0):
        source = SOFT_TARGET.value('source', source)
        alpha_max = SOFT_TARGET.value('alpha_max', alpha_max)
        ramp_iters = SOFT_TARGET.value('ramp_iters', ramp_iters)
        start_iters = SOFT_TARGET.value('start_iters', start_iters)
        if source == 'snapshot' and refresh_iters is None:
            raise OptionError(f'{OPTION}: set refresh_iters for the snapshot teacher (its default, one epoch, is '
                             'only known when training through ibsd-train / ibsd.train)')
        if source == 'snapshot':
            refresh_iters = SOFT_TARGET.value('refresh_iters', refresh_iters)
        self.source = source
        self.alpha_max = float(alpha_max)
        self.ramp_iters = int(ramp_iters)
        self.start_iters = int(start_iters)
        self.refresh_iters = refresh_iters
        self.build_student = build_student
        self.snapshot: nn.Module | None = None
        self.snapshot_iter = 0

    def alpha(self, current_iter: int) -> float:
        return self.alpha_max * min(1.0, max(0.0, (current_iter - self.start_iters) / self.ramp_iters))

    def refresh_if_due(self, current_iter: int, student: nn.Module) -> None:
        """Take a snapshot of ``student`` when ``current_iter - 1`` iterations end a period."""
        done = current_iter - 1
        if self.source != 'snapshot' or done < 1 or done % self.refresh_iters or done == self.snapshot_iter:
            return
        self.set_snapshot(student.state_dict(), done)

    def set_snapshot(self, state_dict: dict, taken_at: int) -> None:
        if self.snapshot is None:
            self.snapshot = self.build_student().to(next(iter(state_dict.values())).device)
            self.snapshot.eval().requires_grad_(False)
        self.snapshot.load_state_dict(state_dict)
        self.snapshot_iter = taken_at

    @torch.no_grad()
    def teacher_output(self, lq: torch.Tensor, ema: nn.Module | None) -> torch.Tensor | None:
        """The teacher's prediction for ``lq`` (``None`` before the first snapshot), never differentiated."""
        if self.source == 'ema':
            if ema is None:
                raise OptionError(f'{OPTION}: source ema needs train: ema_decay > 0')
            return ema(lq)
        return None if self.snapshot is None else self.snapshot(lq)

    def target(self, current_iter: int, lq: torch.Tensor, hr: torch.Tensor,
               ema: nn.Module | None = None) -> tuple[torch.Tensor, float]:
        """T_t for this batch (float32) and the alpha actually used (0 while there is no teacher).

        The teacher runs only when alpha > 0 and a teacher exists.
        """
        alpha = self.alpha(current_iter)
        if alpha == 0:
            return hr, 0.0
        teacher = self.teacher_output(lq, ema)
        if teacher is None:
            return hr, 0.0
        return (1 - alpha) * hr + alpha * teacher.detach().to(hr.dtype), alpha

    def state_dict(self) -> dict:
        return {'snapshot': None if self.snapshot is None else self.snapshot.state_dict(),
                'snapshot_iter': self.snapshot_iter}

    def load_state_dict(self, state: dict) -> None:
        if state.get('snapshot') is not None:
            self.set_snapshot(state['snapshot'], state['snapshot_iter'])
