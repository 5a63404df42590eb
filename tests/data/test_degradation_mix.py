"""The default set's degradations: smaller images, different between the splits; the motion blur kernel."""
from __future__ import annotations

import numpy as np
import pytest

from ibsd.data.default_set import load_photo
from ibsd.data.degradation_mix import degrade_train, degrade_val, motion_kernel


def test_degradations_reduce_size_and_differ_between_splits():
    np.random.seed(0)
    hr = load_photo('astronaut')[:128, :128].astype(np.float32) / 255.
    train, val = degrade_train(hr, 4), degrade_val(hr, 4)
    assert train.shape == val.shape == (32, 32, 3)
    assert 0 <= train.min() and train.max() <= 1 and not np.allclose(train, val, atol=0.02)


def test_motion_kernel_is_a_normalised_line():
    kernel = motion_kernel(7, 0.)
    assert kernel.sum() == pytest.approx(1.)
    assert np.count_nonzero(kernel[3]) == 7 and np.count_nonzero(kernel) == 7
