"""The study's crop strip runs each student as its evaluation does: built, loaded and padded by ibsd.inference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from ibsd.inference import PaddedToMultiple
from tests.helpers import SWINIR


@pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')  # basicsr's SwinIR
def test_students_are_run_padded_to_their_window(tmp_path, one_thread):
    from basicsr.archs.swinir_arch import SwinIR

    from ibsd.study.visual import upscale
    torch.manual_seed(0)
    net = SwinIR(**SWINIR).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'net_g_4.pth')
    options = tmp_path / 'run.yml'
    options.write_text(yaml.safe_dump({'network_g': {'type': 'SwinIR', **SWINIR}}))
    lr = np.random.default_rng(1).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    out = upscale(options, tmp_path / 'net_g_4.pth', lr, 'params')
    assert out.shape == (20, 26, 3) and out.dtype == np.uint8
    rgb = torch.from_numpy(np.ascontiguousarray(lr[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    with torch.no_grad():
        expected = PaddedToMultiple(net, 4)(rgb).clamp(0, 1)[0].numpy().transpose(1, 2, 0)[..., ::-1]
    np.testing.assert_array_equal(out, np.round(expected * 255).astype(np.uint8))
