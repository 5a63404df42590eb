"""Loading helpers accept the official checkpoint formats and explain mismatches."""
from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest
import torch

from ibsd.archs.checkpoint import (CheckpointError, describe_weights, extract_state_dict, load_pretrained,
                                   load_state_dict_file)
from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.archs.rfdn_arch import RFDN


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


def basicsr_training_state(with_numpy: bool) -> dict:
    """What BasicSR's ``save_training_state`` writes, optionally with numpy random states as IBSD adds."""
    net = torch.nn.Conv2d(3, 3, 3)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 3, 5, 5)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[10, 20])
    state = {'epoch': 1, 'iter': 5, 'optimizers': [optimizer.state_dict()], 'schedulers': [scheduler.state_dict()]}
    if with_numpy:
        state['ibsd'] = {'random': {'python': random.getstate(), 'numpy': np.random.get_state()}}
    return state


@pytest.mark.parametrize('with_numpy', [True, False])
def test_training_state_is_named_as_such(tmp_path, with_numpy):
    path = tmp_path / '400.state'
    torch.save(basicsr_training_state(with_numpy), path)
    with pytest.raises(CheckpointError) as error:
        load_state_dict_file(str(path))
    assert str(error.value) == (
        f'{path} is a training state (optimizers, schedulers), not network weights: pass the matching '
        'models/net_g_<iter>.pth instead (a .state file resumes training, via path: resume_state)')


@pytest.mark.parametrize('legacy', [False, True])
def test_truncated_file_is_one_line(tmp_path, small_imdn, legacy):
    path = tmp_path / 'net_g_5000.pth'
    torch.save({'params': small_imdn.state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[:-200])
    pattern = rf'^cannot read {re.escape(str(path))}: truncated or not a PyTorch file \(.+\)$'
    with pytest.raises(CheckpointError, match=pattern) as error:
        load_pretrained(IMDN(num_feat=8, num_block=1, upscale=2), str(path))
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('content, message', [
    (b'', 'the file is empty'),
    (b'<!DOCTYPE html><html>', "not a PyTorch file (it starts with '<!DOCTYPE html><')"),
    (b'version https://git-lfs.github.com/spec/v1\noid sha256:0\n', 'is a Git LFS pointer, not the weights'),
])
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    path = tmp_path / 'weights.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_state_dict_file(str(path))
    with pytest.raises(CheckpointError, match='is a folder'):
        load_state_dict_file(str(tmp_path))


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickled_code_is_not_run(tmp_path):
    payload = _Payload()
    payload.target = str(tmp_path / 'created_by_unpickling')
    path = tmp_path / 'evil.pth'
    torch.save({'params': {'w': torch.zeros(1)}, 'extra': payload}, path)
    with pytest.raises(CheckpointError, match=r'evil\.pth holds Python objects other than tensors \(posix\.mkdir\)'):
        load_state_dict_file(str(path))
    assert not os.path.exists(payload.target)


def test_other_scale_and_other_arch_say_what_the_file_holds(tmp_path, small_imdn):
    path = tmp_path / 'x2.pth'
    torch.save(small_imdn.state_dict(), path)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(IMDN(num_feat=8, num_block=1, upscale=4), str(path))
    assert str(error.value) == (
        f'{path} holds weights for a different network than this IMDN (IMDN weights: num_feat=8, num_block=1, '
        'upscale=2 (3,427 parameters)): upsampler.0.weight shape (48, 8, 3, 3) in the network vs (12, 8, 3, 3) in '
        'the file; upsampler.0.bias shape (48,) in the network vs (12,) in the file (check network_g or --arch-opt: '
        'upscale, num_feat, num_block)')
    rfdn = tmp_path / 'rfdn.pth'
    torch.save(RFDN(num_feat=8, num_block=2, upscale=3, attention='cca').state_dict(), rfdn)
    with pytest.raises(CheckpointError, match=r'rfdn\.pth holds weights for a different network than this IMDN '
                       r'\(RFDN weights: num_feat=8, num_block=2, attention=cca, upscale=3 .*\): \d+ missing keys'):
        load_pretrained(IMDN(num_feat=8, num_block=1, upscale=2), str(rfdn))
    same_size = IMDN_AS(num_feat=8, num_block=1).state_dict()
    assert describe_weights(same_size).startswith('IMDN_AS weights: num_feat=8, num_block=1 (')
