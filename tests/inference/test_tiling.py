"""Tiled inference equals whole-image inference for local networks; inputs padded to the size rule."""
from __future__ import annotations

import pytest
import torch

from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.inference import tiled_forward


@pytest.mark.parametrize('tile_size, tile_pad', [(16, 16), (23, 16), (40, 20), (500, 16)])
def test_tiles_equal_the_whole_image_for_a_local_network(local_net, tile_size, tile_pad):
    x = torch.rand(2, 3, 70, 53)
    with torch.no_grad():
        whole = local_net(x)
    assert (tiled_forward(local_net, x, tile_size, tile_pad) - whole).abs().max() < 1e-5


def test_without_enough_context_tiles_differ(local_net):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        whole = local_net(x)
    assert (tiled_forward(local_net, x, 16, 0) - whole).abs().max() > 1e-3


def test_global_attention_students_are_close_and_same_size_nets_work():
    torch.manual_seed(0)
    imdn, same_size = IMDN(num_feat=16, num_block=2, upscale=2).eval(), IMDN_AS(num_feat=16, num_block=1).eval()
    x = torch.rand(1, 3, 64, 48)
    with torch.no_grad():
        assert (tiled_forward(imdn, x, 24, 16) - imdn(x)).abs().max() < 1e-3
        assert tiled_forward(same_size, x, 32, 16).shape == x.shape


def test_bad_tile_sizes_are_named():
    with pytest.raises(ValueError, match='tile_size'):
        tiled_forward(lambda t: t, torch.rand(1, 3, 8, 8), 0, 4)


def test_swinir_is_evaluated_on_inputs_padded_to_its_window():
    from basicsr.archs.swinir_arch import SwinIR

    from ibsd.inference import padded_to_multiple, size_multiple

    def strict_net(x):
        assert x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0, tuple(x.shape)
        return torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest')

    lq = torch.rand(1, 3, 23, 30)
    out = padded_to_multiple(strict_net, 8)(lq)
    assert torch.equal(out, torch.nn.functional.interpolate(lq, scale_factor=2, mode='nearest'))
    assert padded_to_multiple(strict_net, 8)(torch.rand(1, 3, 5, 3)).shape[2:] == (10, 6)  # too small to reflect
    swinir = SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[1], num_heads=[2],
                    mlp_ratio=1, upsampler='pixelshuffledirect')
    assert size_multiple(swinir) == 4 and size_multiple(torch.nn.Conv2d(3, 3, 1)) == 1
    assert size_multiple(IMDN(num_feat=8, num_block=1)) == 1  # pads inside its forward
    with torch.no_grad():
        assert padded_to_multiple(swinir, 4)(torch.rand(1, 3, 13, 10)).shape[2:] == (26, 20)
