"""Tiled inference equals whole-image inference for local networks; TiledSRModel uses it, padded to the size rule."""
from __future__ import annotations

import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.models import build_model

from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.inference import tiled_forward


@pytest.fixture(scope='module')
def local_net() -> MSRResNet:
    torch.manual_seed(0)
    return MSRResNet(num_feat=8, num_block=2, upscale=4).eval()  # receptive field radius < 8 LR px


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


def test_tiled_sr_model_tests_tile_by_tile(tmp_path, local_net):
    opt = {'name': 't', 'model_type': 'TiledSRModel', 'scale': 4, 'num_gpu': 0, 'is_train': False, 'dist': False,
           'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
           'path': {'pretrain_network_g': None}, 'tile': {'tile_size': 20, 'tile_pad': 16}}
    model = build_model(opt)
    model.net_g.load_state_dict(local_net.state_dict())
    x = torch.rand(1, 3, 50, 45)
    model.feed_data({'lq': x})
    calls = []
    model.net_g.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    model.test()
    with torch.no_grad():
        assert (model.output - local_net(x)).abs().max() < 1e-5
    assert len(calls) == 9 and max(c[2] for c in calls) < 50
    model.opt['tile'] = {'tile_pad': 3}
    with pytest.raises(ValueError, match='tile_size'):
        model.test()


def test_tiled_sr_model_tables_record_whole_images_or_the_tile_size(tmp_path, local_net):
    import cv2
    import numpy as np
    from torch.utils.data import DataLoader
    from basicsr.data import build_dataset
    rng = np.random.default_rng(0)
    for name in ('a', 'b'):
        for folder, size in (('hr', 96), ('lr', 24)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / f'{name}.png'), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    dataset = build_dataset({'name': 'tiny', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 4,
                             'dataroot_gt': str(tmp_path / 'hr'), 'dataroot_lq': str(tmp_path / 'lr'),
                             'io_backend': {'type': 'disk'}})
    tables = {}
    for tile_size in (None, 12):
        results = tmp_path / f'results_{tile_size}'
        opt = {'name': 't', 'model_type': 'TiledSRModel', 'scale': 4, 'num_gpu': 0, 'is_train': False, 'dist': False,
               'rank': 0, 'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
               'path': {'pretrain_network_g': None, 'results_root': str(results)},
               'tile': {'tile_size': tile_size, 'tile_pad': 8},
               'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}
        model = build_model(opt)
        model.net_g.load_state_dict(local_net.state_dict())
        calls = []
        model.net_g.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[2:])))
        model.validation(DataLoader(dataset, batch_size=1), 0, None, save_img=False)
        assert calls == ([(24, 24)] * 2 if tile_size is None else [(20, 20)] * 8)  # whole LR, or 2x2 tiles + pad
        tables[tile_size] = ((results / 'tiny_metrics.csv').read_text().splitlines(),
                             (results / 'tiny_metrics.md').read_text())
    (whole, whole_md), (tiled, tiled_md) = tables[None], tables[12]
    assert whole[0] == tiled[0] == 'image,psnr,tile' and len(whole) == 4
    assert [row.split(',')[-1] for row in whole[1:]] == ['whole'] * 3 and 'Inference: whole images.' in whole_md
    assert [row.split(',')[-1] for row in tiled[1:]] == ['12 pad 8'] * 3 and 'tiles of 12 LR pixels' in tiled_md


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
