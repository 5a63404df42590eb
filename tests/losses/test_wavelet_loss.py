"""The Haar DWT against closed forms and ptwt, and the wavelet high-frequency loss."""
from __future__ import annotations

import pytest
import torch

from ibsd.losses.haar_dwt import haar_dwt, haar_dwt_level
from ibsd.losses.wavelet_loss import WaveletHFLoss


def pattern(height: int, width: int, rows: bool, cols: bool) -> torch.Tensor:
    i = torch.arange(height).view(-1, 1) if rows else torch.zeros(height, 1, dtype=torch.long)
    j = torch.arange(width).view(1, -1) if cols else torch.zeros(1, width, dtype=torch.long)
    return ((-1.) ** (i + j)).expand(height, width)[None, None].clone()


@pytest.mark.parametrize('rows, cols, band', [(True, True, 2), (False, True, 1), (True, False, 0)])
def test_alternating_patterns_land_in_one_band(rows, cols, band):
    low, details = haar_dwt_level(pattern(8, 8, rows, cols))
    assert torch.allclose(low, torch.zeros_like(low))
    expected = torch.zeros_like(details)
    expected[:, :, band] = 2.
    assert torch.allclose(details, expected)


def test_constant_image_has_no_details_and_scaled_low_pass():
    low, details = haar_dwt(torch.full((1, 3, 16, 16), 0.5), levels=4)
    assert torch.allclose(low, torch.full((1, 3, 1, 1), 0.5 * 2 ** 4))
    assert all(torch.count_nonzero(d) == 0 for d in details)
    assert [tuple(d.shape) for d in details] == [(1, 3, 3, 8, 8), (1, 3, 3, 4, 4), (1, 3, 3, 2, 2), (1, 3, 3, 1, 1)]


def test_one_level_is_orthonormal():
    x = torch.randn(2, 3, 10, 14, dtype=torch.float64)
    low, details = haar_dwt_level(x)
    assert torch.allclose(low.pow(2).sum() + details.pow(2).sum(), x.pow(2).sum())


def test_odd_sides_are_zero_padded_at_the_end():
    x = torch.randn(1, 1, 5, 7)
    low, details = haar_dwt_level(x)
    assert low.shape[-2:] == (3, 4)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1))
    assert torch.allclose(low, haar_dwt_level(padded)[0])


def test_matches_ptwt_exactly_including_signs():
    ptwt = pytest.importorskip('ptwt', reason='ptwt (pip install ptwt) gives an independent Haar DWT')
    import pywt
    x = torch.randn(2, 3, 20, 18, dtype=torch.float64)
    reference = ptwt.wavedec2(x, pywt.Wavelet('haar'), level=3, mode='zero')
    low, details = haar_dwt(x, levels=3)
    assert torch.allclose(low, reference[0])
    for level, bands in enumerate(details):
        for band, expected in enumerate(reference[3 - level]):
            assert torch.allclose(bands[:, :, band], expected)


def test_loss_ignores_the_low_pass_band():
    x = torch.rand(2, 3, 32, 32)
    loss = WaveletHFLoss()
    assert loss(x, x + 0.3).item() == pytest.approx(0, abs=1e-6)
    assert loss(x, torch.rand(2, 3, 32, 32)).item() > 0.05


def test_loss_equals_the_weighted_sum_of_band_l1_means():
    pred, target = torch.rand(1, 3, 16, 16, requires_grad=True), torch.rand(1, 3, 16, 16)
    weights = [1., 0.5, 0., 2.]
    _, pd = haar_dwt(pred, 4)
    _, td = haar_dwt(target, 4)
    expected = sum(w * (p - t).abs().mean() for w, p, t in zip(weights, pd, td))
    value = WaveletHFLoss(loss_weight=3., level_weights=weights)(pred, target)
    assert torch.allclose(value, 3 * expected)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs, message', [
    (dict(levels=0), 'levels'), (dict(levels=2, level_weights=[1.]), 'level_weights'), (dict(mode='sym'), 'mode')])
def test_loss_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WaveletHFLoss(**kwargs)


@pytest.mark.parametrize('mode', ['zero', 'reflect', 'periodization'])
def test_one_transform_of_the_difference_equals_two_transforms_for_every_padding(mode):
    pred, target = torch.rand(2, 3, 21, 19, dtype=torch.float64, requires_grad=True), torch.rand(2, 3, 21, 19)
    _, pred_bands = haar_dwt(pred, 3, mode)
    _, target_bands = haar_dwt(target.double(), 3, mode)
    expected = sum((p - t).abs().mean() for p, t in zip(pred_bands, target_bands))
    value = WaveletHFLoss(levels=3, mode=mode)(pred, target.double())
    assert torch.allclose(value, expected, rtol=1e-12)
    assert torch.allclose(*(torch.autograd.grad(v, pred, retain_graph=True)[0] for v in (value, expected)))


def test_soft_target_from_the_detached_current_output_leaves_the_l1_gradient_unchanged():
    """Why there is no 'current' soft-target source: its gradient is the alpha = 0 gradient."""
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    loss = WaveletHFLoss()
    reference = torch.autograd.grad(loss(sr, hr), sr)[0]
    for alpha in (0.1, 0.5, 0.8):
        mixed = torch.autograd.grad(loss(sr, (1 - alpha) * hr + alpha * sr.detach()), sr)[0]
        assert torch.equal(mixed, reference)
