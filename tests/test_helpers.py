"""The shared helpers that judge a run: the scores read from BasicSR's log lines, and the bicubic floor."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from basicsr.metrics import calculate_psnr

from tests.helpers import PLAIN_FLOOR_DB, bicubic_psnr, checked_scores, logged_metrics, make_pairs

LOG = ('2026 INFO: Validation val\n\t # psnr: 23.4567\tBest: 23.4567 @ 2 iter\n\t # ssim: 0.7000\tBest: 0.7 @ 2 iter\n'
       '2026 INFO: Validation val\n\t # psnr: 24.0000\tBest: 24.0000 @ 4 iter\n')


def test_every_logged_value_is_read_in_order():
    assert logged_metrics(LOG) == {'psnr': [23.4567, 24.0], 'ssim': [0.7]}
    assert checked_scores(LOG, floor=PLAIN_FLOOR_DB) == [23.4567, 24.0]


@pytest.mark.parametrize('output, message', [
    (LOG.replace('24.0000', 'nan'), 'non-finite psnr'),
    (LOG.replace('23.4567\t', 'inf\t'), 'non-finite psnr'),
    ('2026 INFO: Validation val\n', 'no "# psnr:" line'),
    (LOG, 'not above 23.5000'),
])
def test_a_missing_non_finite_or_low_score_fails(output, message):
    floor = 23.5 if message.startswith('not above') else PLAIN_FLOOR_DB
    with pytest.raises(AssertionError, match=message):
        checked_scores(output, floor=floor)


def test_the_bicubic_floor_is_basicsrs_psnr_of_cubic_upsampling(tmp_path):
    make_pairs(tmp_path, 2, scale=2, size=40, seed=3)
    expected = []
    for name in ('000.png', '001.png'):
        gt, lq = cv2.imread(str(tmp_path / 'hr' / name)), cv2.imread(str(tmp_path / 'lr' / name))
        expected.append(calculate_psnr(cv2.resize(lq, (40, 40), interpolation=cv2.INTER_CUBIC), gt, 2,
                                       test_y_channel=True))
    floor = bicubic_psnr(tmp_path / 'hr', tmp_path / 'lr', 2, crop_border=2, test_y_channel=True)
    assert math.isfinite(floor) and floor == pytest.approx(np.mean(expected))
    assert floor > PLAIN_FLOOR_DB
