"""CDC's component loss: Harris response and masks against OpenCV (CDC's per-sample procedure),
hand-checkable loss values, float32 under autocast and option errors (the component images it takes
are tested in tests/models/test_component_outputs.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.losses import build_loss

from ibsd.losses.cdc_loss import (CDCComponentLoss, classify_response, gradient_weighted_l1, harris_response,
                                  sobel_derivative)
from tests.helpers import CDC_COMPONENTS as COMPONENTS
from tests.helpers import shared_path, smooth_images


pytestmark = pytest.mark.usefixtures('one_thread')


def cdc_masks_opencv(hr: torch.Tensor) -> dict[str, np.ndarray]:
    """CDC's training loop: Y of the [0, 1] RGB HR batch, cv2.cornerHarris(Y, 3, 3, 0.04) per sample,
    thresholds 0.01 max / -0.001 max of each sample. Masks [B, H, W] bool."""
    y = ((0.257 * hr[:, 0] + 0.564 * hr[:, 1] + 0.098 * hr[:, 2] + 16 / 255.0) * 255.0).numpy()
    masks = {name: np.zeros(y.shape, bool) for name in COMPONENTS}
    for i in range(y.shape[0]):
        response = cv2.cornerHarris(y[i], 3, 3, 0.04)
        high, low = 0.01 * response.max(), -0.001 * response.max()
        masks['corner'][i] = response > high
        masks['edge'][i] = response < low
        masks['flat'][i] = (response > low) & (response < high)
    return masks


# ----------------------------------------------------------------------------- Harris vs OpenCV
@pytest.mark.parametrize('ksize', [3, 5, 7])
def test_sobel_derivatives_are_opencvs(ksize):
    image = np.random.default_rng(0).random((12, 17)) * 255
    padded = torch.from_numpy(cv2.copyMakeBorder(image, *[ksize // 2] * 4, cv2.BORDER_REFLECT_101))[None, None]
    for dim, (dx, dy) in ((3, (1, 0)), (2, (0, 1))):
        expected = cv2.Sobel(image, cv2.CV_64F, dx, dy, ksize=ksize, borderType=cv2.BORDER_REFLECT_101)
        assert np.allclose(sobel_derivative(padded, dim, ksize)[0, 0].numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize('block_size, ksize', [(3, 3), (2, 5), (5, 3), (4, 7)])
def test_harris_response_matches_opencv_on_float_images(block_size, ksize):
    gray = np.random.default_rng(1).random((23, 31)).astype(np.float32) * 255
    expected = cv2.cornerHarris(gray, block_size, ksize, 0.04)
    got = harris_response(torch.from_numpy(gray).double()[None, None], block_size, ksize, 0.04)[0, 0].numpy()
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def real_images() -> list[Path]:
    root = shared_path('benchmarks')
    files = sorted((root / 'Set5' / 'HR').glob('*.bmp')) + sorted((root / 'Set14_x4').glob('*_HR.png'))
    if not files:
        pytest.skip(f'no Set5/Set14 HR images under {root}')
    return files


def read_rgb(path: Path) -> torch.Tensor:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None]


def test_masks_match_cdcs_opencv_masks_on_whole_real_images():
    loss = CDCComponentLoss()
    for path in real_images():
        hr = read_rgb(path)
        expected, got = cdc_masks_opencv(hr), loss.masks(hr)
        y = ((0.257 * hr[:, :1] + 0.564 * hr[:, 1:2] + 0.098 * hr[:, 2:] + 16 / 255.0) * 255.0)
        reference = cv2.cornerHarris(y[0, 0].numpy(), 3, 3, 0.04)
        response = harris_response(y.double())[0, 0].numpy()
        assert np.abs(response - reference).max() <= 1e-5 * np.abs(reference).max(), path.name
        for name in COMPONENTS:
            agreement = (got[name][:, 0].numpy() == expected[name]).mean()
            assert agreement > 0.999, (path.name, name, agreement)
        assert expected['corner'].any() and expected['edge'].any() and expected['flat'].any()


def test_batched_masks_of_training_patches_match_cdcs_per_sample_loop():
    """192x192 patches (DRealSR's HR patch size) of real images in one batch: thresholds per sample."""
    patches = []
    for path in real_images():
        image = read_rgb(path)
        height, width = image.shape[2:]
        patches += [image[..., top:top + 192, left:left + 192] for top in range(0, height - 191, 160)
                    for left in range(0, width - 191, 160)]
    hr = torch.cat(patches)
    expected, got = cdc_masks_opencv(hr), CDCComponentLoss().masks(hr)
    for name in COMPONENTS:
        agreement = (got[name][:, 0].numpy() == expected[name]).mean()
        assert agreement > 0.999, (name, agreement)
    assert got['corner'].shape == (hr.shape[0], 1, 192, 192) and got['corner'].dtype == torch.bool


# ----------------------------------------------------------------------------- masks and loss values
def test_thresholds_are_relative_to_each_images_maximum_and_strict():
    response = torch.tensor([100.0, 1.5, 1.0, 0.5, -0.05, -0.1, -0.2]).view(1, 1, 1, 7)
    masks = classify_response(torch.cat([response, 2 * response]))  # the second image: same classes
    for image in range(2):
        assert masks['corner'][image].flatten().tolist() == [True, True, False, False, False, False, False]
        assert masks['flat'][image].flatten().tolist() == [False, False, False, True, True, False, False]
        assert masks['edge'][image].flatten().tolist() == [False, False, False, False, False, False, True]


def test_a_constant_image_has_no_component_pixels_as_in_cdc():
    masks = CDCComponentLoss().masks(torch.full((1, 3, 16, 16), 0.5))
    assert not any(mask.any() for mask in masks.values())


def gw_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """CDC's GW loss written pixel by pixel: 3x3 Sobel of each channel with zero padding."""
    kernel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def sobel(image, kernel):
        padded = np.pad(image, 1)
        return np.array([[(padded[r:r + 3, c:c + 3] * kernel).sum() for c in range(image.shape[1])]
                         for r in range(image.shape[0])])

    total = []
    for p, t in zip(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
        dx = np.abs(sobel(p, kernel_x) - sobel(t, kernel_x))
        dy = np.abs(sobel(p, kernel_x.T) - sobel(t, kernel_x.T))
        total.append((1 + 4 * dx) * (1 + 4 * dy) * np.abs(p - t))
    return float(np.mean(total))


def test_gradient_weighted_l1_by_hand():
    # a single pixel: every Sobel tap but the (zero) centre falls in the padding, the weight is 1
    assert gradient_weighted_l1(torch.tensor([[[[0.5]]]]), torch.tensor([[[[0.2]]]])).item() == pytest.approx(0.3)
    # 3x3, target 0, prediction 0.1 everywhere: mean over the 9 pixels of (1 + 4|Sx|)(1 + 4|Sy|) 0.1, where
    # |Sx| = 0.4 on the left/right columns but 0.3 in their corners, 0 in the middle column (same for |Sy|)
    sx = np.array([[0.3, 0, 0.3], [0.4, 0, 0.4], [0.3, 0, 0.3]])
    expected = ((1 + 4 * sx) * (1 + 4 * sx.T) * 0.1).mean()
    got = gradient_weighted_l1(torch.full((1, 1, 3, 3), 0.1), torch.zeros(1, 1, 3, 3)).item()
    assert got == pytest.approx(expected, rel=1e-6)
    rng = np.random.default_rng(0)
    pred, target = rng.random((2, 3, 7, 9)), rng.random((2, 3, 7, 9))
    assert gradient_weighted_l1(torch.from_numpy(pred), torch.from_numpy(target)).item() == \
        pytest.approx(gw_reference(pred, target), rel=1e-9)


def test_component_terms_are_masked_means_with_cdcs_weights():
    hr = smooth_images(2, 32)
    loss = CDCComponentLoss()
    masks = {name: mask.float() for name, mask in loss.masks(hr).items()}
    fractions = {name: mask.mean().item() for name, mask in masks.items()}
    assert all(0 < f < 1 for f in fractions.values())
    offsets = {'flat': 0.1, 'edge': 0.2, 'corner': 0.3}
    components = {name: hr + offset for name, offset in offsets.items()}
    # pred == HR: the GW term is 0; each component term is weight * offset * (fraction of its pixels)
    expected = 1 * 0.1 * fractions['flat'] + 2 * 0.2 * fractions['edge'] + 5 * 0.3 * fractions['corner']
    assert loss(hr, hr, components=components).item() == pytest.approx(expected, rel=1e-5)
    scaled = CDCComponentLoss(loss_weight=0.5, flat_weight=0, edge_weight=1, corner_weight=0, gw_weight=3)
    pred = hr + 0.05
    value = scaled(pred, hr, components=components).item()
    assert value == pytest.approx(0.5 * (0.2 * fractions['edge'] + 3 * gradient_weighted_l1(pred, hr).item()),
                                  rel=1e-5)


def cdc_loss_reference(pred: torch.Tensor, hr: torch.Tensor, components: dict) -> float:
    """CDC's training step: OpenCV masks per sample, L1 of masked images x (1, 2, 5), GW x 1."""
    masks = cdc_masks_opencv(hr)
    total = gradient_weighted_l1(pred, hr).item()
    for name, weight in zip(COMPONENTS, (1, 2, 5)):
        mask = torch.from_numpy(masks[name]).float()[:, None]
        total += weight * (mask * components[name] - mask * hr).abs().mean().item()
    return total


def test_loss_equals_cdcs_procedure_on_a_batch():
    torch.manual_seed(0)
    hr = smooth_images(4, 48, seed=3)
    pred = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    components = {name: (hr + 0.1 * torch.randn_like(hr)) for name in COMPONENTS}
    got = build_loss({'type': 'CDCComponentLoss'})(pred, hr, components=components).item()
    assert got == pytest.approx(cdc_loss_reference(pred, hr, components), rel=1e-6)


def test_gradients_reach_the_output_and_every_component():
    hr = smooth_images(2, 32)
    pred = (hr + 0.1).requires_grad_()
    components = {name: (hr * 0.9).requires_grad_() for name in COMPONENTS}
    CDCComponentLoss()(pred, hr, components=components).backward()
    assert pred.grad.abs().sum() > 0
    assert all(image.grad.abs().sum() > 0 for image in components.values())


def test_loss_is_float32_under_bf16_autocast():
    hr = smooth_images(2, 32)
    pred = hr + 0.03 * torch.randn_like(hr)
    components = {name: hr + 0.05 * torch.randn_like(hr) for name in COMPONENTS}
    loss = CDCComponentLoss()
    plain = loss(pred, hr, components=components)
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        autocast = loss(pred, hr, components=components)
    assert autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize('kwargs, message', [
    (dict(loss_weight='abc'), 'loss_weight'), (dict(edge_weight=True), 'edge_weight'),
    (dict(corner_weight=-1.0), 'corner_weight'), (dict(gw_weight=float('inf')), 'gw_weight'),
    (dict(ksize=4), 'ksize'), (dict(ksize=1), 'ksize'), (dict(block_size=0), 'block_size'),
    (dict(block_size=2.5), 'block_size'), (dict(luma_weights=[1, 2]), 'luma_weights'),
])
def test_bad_options_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CDCComponentLoss(**kwargs)


def test_without_components_the_error_says_how_to_use_the_loss():
    hr = smooth_images(1, 16)
    with pytest.raises(ValueError, match='IBSDModel'):
        CDCComponentLoss()(hr, hr)
    with pytest.raises(ValueError, match='shape'):
        CDCComponentLoss()(hr, hr, components={name: hr[..., :8, :8] for name in COMPONENTS})
