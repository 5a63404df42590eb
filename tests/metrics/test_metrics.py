"""LPIPS plumbing (offline), per-image tables, NIQE on photos without ground truth."""
from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.utils.registry import METRIC_REGISTRY

from ibsd.metrics import lpips_metric
from ibsd.metrics.summary_table import write_summary
from tests.helpers import REPO, shared_path


@pytest.fixture(scope='module')
def random_backbone(tmp_path_factory) -> Path:
    from torchvision.models import alexnet
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('hub') / lpips_metric.BACKBONE_FILE
    torch.save(alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope='module')
def random_linear(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('lin') / 'alex.pth'
    torch.save({f'lin{i}.model.1.weight': torch.rand(1, c, 1, 1) for i, c in enumerate(lpips_metric.CHANNELS)}, path)
    return path


def images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 40, 3), dtype=np.uint8), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)


def test_lpips_is_registered_zero_on_identity_and_symmetric(random_backbone, random_linear):
    lpips = METRIC_REGISTRY.get('calculate_lpips')
    x, y = images()
    paths = dict(backbone_path=str(random_backbone), linear_path=str(random_linear))
    assert lpips(x, x, **paths) == 0
    assert lpips(x, y, **paths) > 0
    assert lpips(x, y, **paths) == pytest.approx(lpips(y, x, **paths))
    assert lpips(x, y, crop_border=4, **paths) != lpips(x, y, **paths)


def test_lpips_matches_the_reference_package_with_the_same_backbone(random_backbone):
    reference_package = pytest.importorskip('lpips', reason='pip install lpips gives the reference implementation')
    import warnings
    with warnings.catch_warnings():  # the reference package uses torchvision's deprecated 'pretrained'
        warnings.simplefilter('ignore', UserWarning)
        reference = reference_package.LPIPS(net='alex', pnet_rand=True, verbose=False)
    features = {k[len('features.'):]: v for k, v in torch.load(random_backbone, weights_only=True).items()
                if k.startswith('features.')}
    for index in range(5):
        block = getattr(reference.net, f'slice{index + 1}')
        block.load_state_dict({k: features[k] for k in block.state_dict()})
    x, y = images(1)
    ours = lpips_metric.calculate_lpips(x, y, backbone_path=str(random_backbone))
    with torch.no_grad():
        expected = reference(lpips_metric.to_lpips_input(x, 0), lpips_metric.to_lpips_input(y, 0)).item()
    assert ours == pytest.approx(expected, rel=1e-5)


def test_missing_lpips_weights_say_where_to_put_them(tmp_path, random_linear, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    lpips_metric.build_lpips.cache_clear()
    x, y = images()
    expected = r'AlexNet backbone.*checkpoints/alexnet-owt-7be5be79.pth.*backbone_path'
    with pytest.raises(FileNotFoundError, match=expected):
        lpips_metric.calculate_lpips(x, y, linear_path=str(random_linear))


def test_backbone_is_found_in_the_hub_cache(tmp_path, random_backbone, random_linear, monkeypatch):
    (tmp_path / 'checkpoints').mkdir()
    shutil.copy(random_backbone, tmp_path / 'checkpoints' / lpips_metric.BACKBONE_FILE)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    lpips_metric.build_lpips.cache_clear()
    x, y = images()
    assert lpips_metric.calculate_lpips(x, y, linear_path=str(random_linear)) > 0


def test_summary_tables_have_one_row_per_image_the_mean_and_the_tile_setting(tmp_path):
    rows = [('a', [30., 0.9]), ('b', [32., 0.7])]
    csv_path, md_path = write_summary(tmp_path, 'set', ['psnr', 'ssim'], rows, tiling=None)
    assert csv_path.read_text().splitlines() == ['image,psnr,ssim,tile', 'a,30.000000,0.900000,whole',
                                                 'b,32.000000,0.700000,whole', 'mean,31.000000,0.800000,whole']
    assert '| **mean** | 31.0000 | 0.8000 |' in md_path.read_text()
    assert 'Inference: whole images.' in md_path.read_text()
    csv_path, md_path = write_summary(tmp_path, 'set', ['psnr', 'ssim'], rows, tiling=(256, 16))
    assert [line.split(',')[-1] for line in csv_path.read_text().splitlines()] == ['tile'] + ['256 pad 16'] * 3
    assert 'tiles of 256 LR pixels with 16 pixels of context' in md_path.read_text()


@pytest.mark.slow
def test_niqe_scores_photos_without_ground_truth(tmp_path):
    photos = tmp_path / 'datasets' / 'photos'
    photos.mkdir(parents=True)
    for source in sorted(shared_path('real', 'RealSRSet').iterdir())[:2]:
        shutil.copy(source, photos)
    weights = shared_path('weights', 'IMDN_x4.pth')
    result = subprocess.run([str(Path(sysconfig.get_path('scripts')) / 'ibsd-test'), '-opt',
                             str(REPO / 'options' / 'test' / 'IBSD' / 'test_imdn_x4_photos_niqe.yml'),
                             '--force_yml', f'path:pretrain_network_g={weights}'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    niqe = float(re.search(r'# niqe: ([\d.]+)', result.stdout + result.stderr).group(1))
    assert 0 < niqe < 30
    table = (tmp_path / 'results' / 'IMDN_x4_photos_NIQE' / 'photos_metrics.csv').read_text().splitlines()
    assert table[0] == 'image,niqe,tile' and len(table) == 4 and table[-1].endswith(',whole')
