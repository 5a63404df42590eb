"""Loading helpers accept the official checkpoint formats and explain mismatches."""
from __future__ import annotations

import pytest
import torch

from ibsd.archs.checkpoint import extract_state_dict, load_pretrained
from ibsd.archs.imdn_arch import IMDN


@pytest.fixture
def small_imdn() -> IMDN:
    torch.manual_seed(0)
    return IMDN(num_feat=8, num_block=1, upscale=2)


@pytest.mark.parametrize('wrap', [
    lambda sd: sd,
    lambda sd: {f'module.{k}': v for k, v in sd.items()},
    lambda sd: {'params': sd},
    lambda sd: {'params_ema': sd, 'params': {k: v * 0 for k, v in sd.items()}},
    lambda sd: {'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3},
])
def test_every_official_format_loads(tmp_path, small_imdn, wrap):
    path = tmp_path / 'weights.pth'
    torch.save(wrap(small_imdn.state_dict()), path)
    fresh = load_pretrained(IMDN(num_feat=8, num_block=1, upscale=2), str(path))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(fresh(x), small_imdn(x))


def test_requested_param_key_wins(small_imdn):
    other = {k: torch.zeros_like(v) for k, v in small_imdn.state_dict().items()}
    state, key = extract_state_dict({'params_ema': small_imdn.state_dict(), 'params': other}, 'params')
    assert key == 'params' and all((v == 0).all() for v in state.values())


def test_mismatch_error_names_file_and_keys(tmp_path, small_imdn):
    path = tmp_path / 'x2.pth'
    torch.save(small_imdn.state_dict(), path)
    with pytest.raises(ValueError, match=r'x2\.pth.*upsampler\.0\.weight'):
        load_pretrained(IMDN(num_feat=8, num_block=1, upscale=4), str(path))


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_pretrained(IMDN(), str(tmp_path / 'nothere.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_text('not a checkpoint')
    with pytest.raises(ValueError, match='bad.pth'):
        load_pretrained(IMDN(), str(bad))


def test_dict_without_tensors_is_explained():
    with pytest.raises(ValueError, match='no state dict found.*epoch'):
        extract_state_dict({'epoch': 1, 'optimizer': {}}, source='ckpt')
