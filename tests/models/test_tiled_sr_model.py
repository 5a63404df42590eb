"""TiledSRModel tests tile by tile when asked, and its tables record whole images or the tile size."""
from __future__ import annotations

import pytest
import torch
from basicsr.models import build_model


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
