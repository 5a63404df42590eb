"""Shared fixtures: paths to the real material in ../shared/data, skipped when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import ibsd  # noqa: F401  (applies the basicsr fixes before any test module imports basicsr)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('IBSD_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test with a message when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent (real test material from ../shared/data); set IBSD_SHARED_DATA to its folder')
    return path


@pytest.fixture
def one_thread():
    """Tiny networks (HGSR-MHR's hundreds of small convolutions, OmniSR, SwinIR) run fastest on one thread:
    on a loaded machine, thread hand-offs cost more than the arithmetic."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(net) -> int:
    """Number of parameters of a network."""
    return sum(p.numel() for p in net.parameters())
