"""Position sampling for the information-bottleneck terms (``train: ibsd: positions: p``).

Both IB objectives are sums of per-position terms: the estimators' Laplace NLL and the CLUB bound
(its pairwise part compares samples at one position) over the (c, h, w) positions of each node
pair. Evaluating them at a uniform random subset S of n = ceil(p * H * W) spatial positions
(all channels, the same positions for every sample so that the pairs stay aligned) and scaling
the sum by H * W / n gives an unbiased estimate of the full sum and of its gradients:

    E_S[(HW / n) sum_{s in S} t_s] = sum_s t_s       (S drawn uniformly without replacement)

The estimator's per-sample dynamic term keeps its global pooling over the whole map, which does
not depend on S. Each draw comes from the sampler's own ``torch.Generator``, whose state the
training state keeps (one per rank), so that resuming draws the same subsets.
"""
from __future__ import annotations

import math

import torch

from ibsd.options.schema import IBSD_LOOP


STREAM_SALT = 0x1B5D7  # keeps the stream apart from the global ones BasicSR seeds with manual_seed + rank


def stream_seed(manual_seed: int | None, rank: int = 0) -> int:
    """Seed of one rank's position stream: each rank draws its own subsets."""
    return STREAM_SALT + 100_003 * int(manual_seed or 0) + int(rank)


def sample_size(positions: int, fraction: float) -> int:
    """How many of ``positions`` one draw keeps: ceil(fraction * positions), at least 1."""
    return max(1, min(positions, math.ceil(fraction * positions - 1e-9)))


def select_positions(node: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The columns ``indices`` of the flattened H x W map of ``node`` [B, C, H, W], as [B, C, 1, n]."""
    return node.flatten(2).index_select(2, indices).unsqueeze(2)


class PositionSampler:
    """Draws the position subsets of one run from its own random stream.

    Args:
        fraction: The fraction p of spatial positions each draw keeps (1 keeps all: no draw).
        seed: Seed of the stream (the run's ``manual_seed`` plus the rank under DDP).
    """

    def __init__(self, fraction: float, seed: int):
        self.fraction = float(IBSD_LOOP.value('positions', fraction))
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def exact(self) -> bool:
        """True when every position is used (p = 1): nothing is drawn, the IB terms are exact."""
        return self.fraction >= 1

    def draw(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """Sorted flat indices of a uniform subset of the height x width positions, on ``device``;
        ``None`` when the sampler is exact."""
        if self.exact:
            return None
        total = height * width
        subset = torch.randperm(total, generator=self.generator)[:sample_size(total, self.fraction)]
        return subset.sort().values.to(device, non_blocking=True)

    def state_dict(self) -> dict:
        return {'fraction': self.fraction, 'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved stream (a state loaded onto a GPU is moved back: generators live on the CPU)."""
        self.generator.set_state(state['generator'].cpu())
