"""Shapes, options and errors of the IMDN / RFDN students."""
from __future__ import annotations

import pytest
import torch
from basicsr.archs import build_network

from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.archs.rfdn_arch import RFDN
from tests.helpers import n_params

IBSD_RFDN = dict(num_feat=48, num_block=6, attention='cca')


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('opt', [
    dict(type='IMDN', num_feat=16, num_block=2),
    dict(type='RFDN', num_feat=8, num_block=2),
    dict(type='RFDN', num_feat=16, num_block=6, attention='cca'),
    dict(type='RFDN', num_feat=16, num_block=6, attention='cca', share_block4=True),
])
def test_students_upscale_by_scale(opt, scale):
    net = build_network({**opt, 'upscale': scale})
    out = net(torch.rand(2, 3, 15, 17))
    assert out.shape == (2, 3, 15 * scale, 17 * scale)


@pytest.mark.parametrize('size', [(16, 16), (15, 18), (13, 21)])
def test_imdn_as_keeps_the_input_size(size):
    net = IMDN_AS(num_feat=16, num_block=2)
    assert net(torch.rand(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize('net, expected', [
    (IMDN(upscale=2), 694_404), (IMDN(upscale=3), 703_059), (IMDN(upscale=4), 715_176), (IMDN_AS(), 752_104),
    (RFDN(), 433_448), (RFDN(**IBSD_RFDN), 544_386),
])
def test_parameter_counts_match_the_official_networks(net, expected):
    assert n_params(net) == expected


def test_rfdn_share_block4_reproduces_the_reused_block():
    torch.manual_seed(0)
    correct = RFDN(num_feat=16, num_block=6, attention='cca')
    buggy = RFDN(num_feat=16, num_block=6, attention='cca', share_block4=True)
    buggy.load_state_dict(correct.state_dict())
    x = torch.rand(1, 3, 16, 16)
    buggy(x).mean().backward()
    assert all(p.grad is None for name in ('B5', 'B6') for p in getattr(buggy, name).parameters())
    assert all(p.grad is not None for p in buggy.B4.parameters())
    assert not torch.allclose(buggy(x), correct(x))
    assert [id(b) for b in buggy.block_sequence()][3:] == [id(buggy.B4)] * 3


def test_rfdn_img_range_scales_input_and_output():
    torch.manual_seed(0)
    unit = RFDN(num_feat=8, num_block=1, attention='cca')
    scaled = RFDN(num_feat=8, num_block=1, attention='cca', img_range=255.)
    scaled.load_state_dict(unit.state_dict())
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(scaled(x), unit(x * 255.) / 255., atol=1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='se'), 'attention'),
    (dict(num_block=0), 'num_block'),
    (dict(num_block=4, share_block4=True), 'share_block4'),
])
def test_rfdn_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RFDN(**kwargs)


def test_esa_names_its_minimum_input_size():
    with pytest.raises(ValueError, match='at least 15x15'):
        RFDN(num_feat=8, num_block=1)(torch.rand(1, 3, 12, 12))


def test_imdn_rejects_zero_blocks():
    with pytest.raises(ValueError, match='num_block'):
        IMDN(num_block=0)
