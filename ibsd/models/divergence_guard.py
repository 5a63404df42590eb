"""Divergence guard: a step with a non-finite loss term or gradient never updates a network.

The student/estimator min-max game can diverge (a too large learning rate, an estimator scale
collapsing). Without a guard one NaN step poisons both networks and every later checkpoint, and
the run still exits 0. Here each optimizer step is checked first (one host synchronisation, one
small all-reduce under DDP so that every rank takes the same decision); a bad step is skipped
and logged with the names of the bad terms, and ``max_bad_steps`` bad iterations in a row stop
the run with :class:`DivergenceError`.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.distributed as dist
from basicsr.utils import get_root_logger

from ibsd.errors import IBSDError
from ibsd.options.schema import IBSD_LOOP

GRADIENT = 'gradient'


class DivergenceError(IBSDError, RuntimeError):
    """Raised after ``train:ibsd:max_bad_steps`` consecutive iterations with non-finite values."""


def finite_flags(terms: Mapping[str, torch.Tensor], parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """One flag per term, then one for all gradients together (1.0: finite), on the terms' device."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flags = [torch.isfinite(t.detach()).all() for t in terms.values()]
    if grads:
        flags.append(torch.isfinite(torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)))
    else:
        flags.append(torch.ones((), dtype=torch.bool, device=flags[0].device if flags else 'cpu'))
    return torch.stack([f.to(flags[0].device) for f in flags]).float()


class DivergenceGuard:
    """Decides whether an optimizer step may go ahead and counts bad iterations.

    Args:
        max_bad_steps: Consecutive bad iterations after which training stops (``>= 1``).
        distributed: Whether the decision is shared across DDP ranks.
    """

    def __init__(self, max_bad_steps: int, distributed: bool = False):
        self.max_bad_steps = IBSD_LOOP.value('max_bad_steps', max_bad_steps)
        self.distributed = distributed
        self.consecutive = 0
        self.skipped = 0
        self._bad_now: list[tuple[str, list[str]]] = []

    def allows(self, terms: Mapping[str, torch.Tensor], parameters: Iterable[torch.nn.Parameter],
               network: str = 'student') -> bool:
        """True when every term and gradient is finite (on every rank); else records what was bad.

        Args:
            terms: The loss terms of this step, by name.
            parameters: The parameters the step would update (their gradients are checked).
            network: Which network the step is for (``'student'`` or ``'estimators'``), for the log.
        """
        flags = finite_flags(terms, parameters)
        if self.distributed and dist.is_available() and dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        if bool(flags.all()):
            return True
        names = [*terms, f'{GRADIENT} of the {network}']
        bad = [name for name, ok in zip(names, flags.tolist()) if not ok]
        self._bad_now.append((network, bad))
        return False

    def end_iteration(self, current_iter: int) -> None:
        """Count the iteration as good or bad; raise :class:`DivergenceError` after too many bad ones."""
        bad, self._bad_now = self._bad_now, []
        if not bad:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.skipped += 1
        parts = dict.fromkeys(f"{network} step skipped (non-finite {', '.join(names)})" for network, names in bad)
        skipped = '; '.join(parts)
        get_root_logger().warning(
            f'iteration {current_iter}: {skipped}: a skipped step changes no weight '
            f'({self.consecutive} bad iterations in a row; the run stops at {self.max_bad_steps})')
        if self.consecutive >= self.max_bad_steps:
            raise DivergenceError(
                f'training diverged: {self.consecutive} iterations in a row up to {current_iter} had a skipped '
                f'step; last: {skipped}. Skipped steps updated nothing and no checkpoint holds a non-finite '
                'value: resume from the last saved state with a lower learning rate (train:optim_g:lr, '
                'train:optim_est:lr), a smaller train:mi_opt:loss_weight (or its grad_ratio) or '
                'train:ibsd:grad_clip_norm')
