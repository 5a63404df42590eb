"""The gradient budget of the student's terms (beyond the paper): each term's pull on the student, measured.

``train: ibsd: log_grad_ratios`` logs g_<term> = ||d term / d theta|| / ||d l_pix / d theta|| over the
student's parameters theta; ``loss_weight: {grad_ratio: r}`` keeps a term's weight at the share r of the
pixel term's gradient (:mod:`ibsd.models.gradient_share`). Both measure on log lines only.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.distributed as dist


class GradientBudgetMixin:
    """Methods of :class:`~ibsd.models.ibsd_model.IBSDModel` that measure and apply gradient norms."""

    def _gradient_norms(self, terms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """||d term / d theta|| over the student's parameters theta for each term that has a gradient.

        One backward pass per term; ``.grad`` is left untouched (the graph is kept for the step).
        """
        parameters = [p for p in self.get_bare_model(self.net_g).parameters() if p.requires_grad]
        norms = {}
        for name, value in terms.items():
            if not (torch.is_tensor(value) and value.requires_grad):
                continue
            grads = [g for g in torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
                     if g is not None]
            if grads:  # a term that reaches no parameter has no norm to report
                norms[name] = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        return norms

    def _apply_gradient_shares(self, loss_dict: dict, current_iter: int) -> dict[str, torch.Tensor]:
        """Weight the terms given as gradient shares (in place; their weights logged as w_mi, w_wav).

        On measurement iterations the unit-weight terms' gradient norms and the pixel term's are
        taken (averaged over DDP ranks: every rank keeps the same weights) and folded in. Returns
        this rank's norms of the pixel term and of the weighted terms measured (w ||grad L_raw||), so
        that ``log_grad_ratios`` need not take them again.
        """
        due = [name for name, share in self.gradient_shares.items()
               if name in loss_dict and share.due(current_iter, self.print_freq)]
        norms = {}
        if due:
            norms = self._gradient_norms({'l_pix': loss_dict['l_pix'], **{name: loss_dict[name] for name in due}})
            nan = torch.full((), math.nan, device=self.device)
            values = torch.stack([norms.get(name, nan).to(self.device) for name in ['l_pix', *due]])
            if self.opt.get('dist') and dist.is_available() and dist.is_initialized():
                dist.all_reduce(values)
                values /= dist.get_world_size()
            pixel, *measured = values.tolist()
            for name, norm in zip(due, measured):
                self.gradient_shares[name].update(pixel, norm)
        for name, share in self.gradient_shares.items():
            if name in loss_dict:
                loss_dict[name] = loss_dict[name] * share.current
                loss_dict[f'w_{name[2:]}'] = share.current
                if name in norms:
                    norms[name] = norms[name] * share.current
        return norms

    def _gradient_ratios(self, terms: Mapping[str, torch.Tensor], known: Mapping[str, torch.Tensor] | None = None
                         ) -> dict[str, torch.Tensor]:
        """``train: ibsd: log_grad_ratios``: g_<term> = ||d term / d theta|| / ||d l_pix / d theta|| over the
        student's parameters theta, for each auxiliary term (g_mi, g_wav, g_percep, g_style); ``known``: norms
        already taken this iteration (by the gradient shares).

        On log iterations only; the step is the one it would be without the diagnostic.
        """
        known = dict(known or {})
        taken = self._gradient_norms({n: v for n, v in terms.items() if n not in known})
        norms = {n: known[n] if n in known else taken[n] for n in terms if n in known or n in taken}
        pixel = norms.pop('l_pix', None)
        if pixel is None:
            return {}
        return {f'g_{name[2:]}': norm / pixel for name, norm in norms.items()}
