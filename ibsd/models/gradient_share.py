"""Loss weights given as gradient shares: ``loss_weight: {grad_ratio: r}`` (beyond the paper).

A fixed weight means different things for different archs, patch sizes and reductions. A share
fixes what the weight is for: the term's pull on the student relative to the pixel term's,

    w = r * ||d L_pix / d theta|| / ||d L_raw / d theta||        (theta: the student's parameters)

so that ||d (w L_raw) / d theta|| = r ||d L_pix / d theta|| at the iteration it is measured. It is
measured on the first iteration and then on every log line (``logger: print_freq``) and smoothed
geometrically, log w <- (1 - s) log w + s log w_measured, so that one noisy batch does not jerk the
weight. Under DDP the norms are averaged over ranks first, so every rank uses the same weight.
"""
from __future__ import annotations

import math

from ibsd.options.schema import GRADIENT_SHARE

DEFAULT_SMOOTHING = GRADIENT_SHARE.keys['smoothing'].default


class GradientShare:
    """The weight of one term, kept at a share ``grad_ratio`` of the pixel term's gradient norm.

    Args:
        grad_ratio: Target ratio r of the term's gradient norm to the pixel term's (> 0).
        smoothing: Weight s of each new measurement in the geometric average, in (0, 1]; 1 uses the
            latest measurement alone. Default: 0.2.
    """

    def __init__(self, grad_ratio: float, smoothing: float = DEFAULT_SMOOTHING):
        self.grad_ratio = float(GRADIENT_SHARE.keys['grad_ratio'].check(grad_ratio, 'grad_ratio'))
        self.smoothing = float(GRADIENT_SHARE.keys['smoothing'].check(smoothing, 'smoothing'))
        self.weight: float | None = None

    @property
    def current(self) -> float:
        """The weight to apply now (0 until a first measurement succeeded)."""
        return 0.0 if self.weight is None else self.weight

    def due(self, iteration: int, every: int) -> bool:
        """Measure on this iteration: none has succeeded yet, or it is a log line."""
        return self.weight is None or iteration % every == 0

    def update(self, pixel_norm: float, term_norm: float) -> None:
        """Fold in one measurement; a non-finite or zero norm is skipped (the weight stays)."""
        if not (math.isfinite(pixel_norm) and math.isfinite(term_norm) and pixel_norm > 0 and term_norm > 0):
            return
        measured = self.grad_ratio * pixel_norm / term_norm
        if self.weight is None:
            self.weight = measured
        else:
            self.weight = math.exp((1 - self.smoothing) * math.log(self.weight) + self.smoothing * math.log(measured))

    def state_dict(self) -> dict:
        return {'grad_ratio': self.grad_ratio, 'smoothing': self.smoothing, 'weight': self.weight}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state['weight']
