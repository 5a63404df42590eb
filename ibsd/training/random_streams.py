"""Every process's random streams (Python, NumPy, torch, its CUDA device) saved in and restored from a
training state, so that a resumed run draws the numbers the uninterrupted one would (under DDP each
rank keeps its own streams)."""
from __future__ import annotations

import random
from typing import Mapping

import numpy as np
import torch
import torch.distributed as dist
from basicsr.utils import get_root_logger


def random_states() -> dict:
    """This process's random states (its own CUDA device only: under DDP each rank has one)."""
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state()
    return states


def set_random_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'].cpu())
    cuda = states.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # states written before per-rank saving: one per device
            device = torch.cuda.current_device()
            if device < len(cuda):
                torch.cuda.set_rng_state(cuda[device].cpu())
        else:
            torch.cuda.set_rng_state(cuda.cpu())


def gather_random_states(opt: Mapping, own: Mapping | None = None) -> list[dict]:
    """Every rank's random states, in rank order (on every rank; one collective under DDP).

    ``own``: this rank's further streams (e.g. the position sampler's), gathered with the others.
    """
    states = {**random_states(), **(own or {})}
    if not (opt.get('dist') and dist.is_available() and dist.is_initialized()):
        return [states]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, states)
    return gathered


def pick_random_states(saved, rank: int) -> dict | None:
    """This rank's states from a training state (a per-rank list, or one dict from older states).

    ``None`` for a rank the state has no streams for: it keeps the streams BasicSR seeded
    (``manual_seed + rank``) instead of drawing the same numbers as another rank.
    """
    if isinstance(saved, dict):
        saved = [saved]
    if rank >= len(saved):
        get_root_logger().warning(f'The training state holds random states for {len(saved)} process(es); '
                                  f'rank {rank} keeps its freshly seeded random streams')
        return None
    return saved[rank]
