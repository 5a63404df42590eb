"""Shared fixtures (helpers and repository paths are in tests/helpers.py)."""
from __future__ import annotations

import pytest

import ibsd  # noqa: F401  (applies the basicsr fixes before any test module imports basicsr)


@pytest.fixture
def one_thread():
    """Tiny networks (HGSR-MHR's hundreds of small convolutions, OmniSR, SwinIR) run fastest on one thread:
    on a loaded machine, thread hand-offs cost more than the arithmetic."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def local_net():
    """An MSRResNet x4 whose receptive field radius is below 8 LR pixels: tiles with enough context give
    the whole image's output."""
    import torch
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    return MSRResNet(num_feat=8, num_block=2, upscale=4).eval()
