"""Training states and checkpoints (ibsd.training.checkpoints): resume states found and loaded on CPU without
unpickling code, and writes that are atomic, retried, refused for non-finite weights and named when they fail."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import basicsr.train
from basicsr.models import build_model

from ibsd import compat
from ibsd.archs.checkpoint import CheckpointError
from ibsd.training import checkpoints
from ibsd.training.checkpoints import CheckpointWriteError, load_training_state
from tests.helpers import REPO, make_opt


def resume_opt(tmp_path, auto_resume: bool) -> dict:
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    for it in (4, 12, 8):
        torch.save({'iter': it, 'epoch': 1, 'optimizers': [], 'schedulers': [], 'w': torch.ones(2)},
                   states / f'{it}.state')
    paths = {'training_states': str(states), 'models': str(states.parent / 'models'), 'resume_state': None}
    return {'auto_resume': auto_resume, 'name': 'run', 'path': paths,
            'network_g': {'type': 'IMDN'}}


def test_auto_resume_finds_latest_state_outside_cwd_on_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the experiment lives elsewhere: basicsr would look in ./experiments
    opt = resume_opt(tmp_path, auto_resume=True)
    state = basicsr.train.load_resume_state(opt)
    assert state['iter'] == 12 and state['w'].device.type == 'cpu'
    assert opt['path']['resume_state'].endswith('12.state')


def test_basicsr_resume_misses_the_state_and_calls_cuda(tmp_path, monkeypatch):
    """Control: basicsr's own function looks in ./experiments, and needs CUDA to load a state."""
    monkeypatch.chdir(REPO)
    original = compat.ORIGINALS['load_resume_state']
    assert original(resume_opt(tmp_path / 'auto', auto_resume=True)) is None
    if torch.cuda.is_available():
        return
    opt = resume_opt(tmp_path / 'explicit', auto_resume=False)
    opt['path']['resume_state'] = opt['path']['training_states'] + '/8.state'
    with pytest.raises((RuntimeError, AssertionError)):
        original(opt)


def test_explicit_resume_state_must_exist(tmp_path):
    opt = resume_opt(tmp_path, auto_resume=False)
    opt['path']['resume_state'] = str(tmp_path / 'missing.state')
    with pytest.raises(CheckpointError, match='path:resume_state: .*missing.state'):  # one line in ibsd-train
        basicsr.train.load_resume_state(opt)


def test_training_states_load_without_unpickling_code(tmp_path):
    model = build_model(make_opt(tmp_path))
    (tmp_path / 'states').mkdir()
    model.save_training_state(0, 3)
    state = load_training_state(str(tmp_path / 'states' / '3.state'), 'cpu')
    assert state['iter'] == 3 and state['ibsd']['random'][0]['numpy'][0] == 'MT19937'

    truncated = tmp_path / 'truncated.state'
    truncated.write_bytes((tmp_path / 'states' / '3.state').read_bytes()[:2000])
    with pytest.raises(CheckpointError, match='cannot read .*truncated.state: truncated or not a PyTorch file'):
        load_training_state(str(truncated), 'cpu')
    weights = tmp_path / 'net_g.pth'
    torch.save({'params': model.net_g.state_dict()}, weights)
    with pytest.raises(CheckpointError, match=r'net_g.pth is not a training state'):
        load_training_state(str(weights), 'cpu')

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / 'ran'),))
    hostile = tmp_path / 'hostile.state'
    torch.save({'iter': 1, 'optimizers': [], 'payload': Payload()}, hostile)
    with pytest.raises(CheckpointError, match='not unpickled since that could run code'):
        load_training_state(str(hostile), 'cpu')
    assert not (tmp_path / 'ran').exists()


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, 'WRITE_RETRY_PAUSE_S', 0)
    real_save = torch.save

    def save(obj, target, *args, **kwargs):
        if isinstance(target, str):
            raise RuntimeError('[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 4032')
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', save)
    monkeypatch.setattr(shutil, 'disk_usage', lambda folder: shutil._ntuple_diskusage(10 << 30, 10 << 30, 100))
    with pytest.raises(checkpoints.CheckpointWriteError,
                       match=r'no space left on device: it takes .* MiB and .* has 0.0 MiB free'):
        checkpoints.write_atomically({'w': torch.zeros(1000)}, str(tmp_path / 'net.pth'))
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_network_is_never_saved(tmp_path):
    model = build_model(make_opt(tmp_path))
    for folder in ('models', 'training_states'):
        Path(model.opt['path'][folder]).mkdir(parents=True)
    model.save(0, 4)
    with torch.no_grad():
        next(model.net_g.parameters())[0] = float('nan')
    with pytest.raises(RuntimeError, match=r'refusing to save .*net_g_8.pth: .* NaN or Inf'):
        model.save(0, 8)
    assert sorted(p.name for p in Path(model.opt['path']['models']).iterdir()) == ['net_g_4.pth']


def test_a_failed_checkpoint_write_raises_instead_of_being_counted(tmp_path):
    model = build_model(make_opt(tmp_path))
    Path(model.opt['path']['models']).write_text('a file where the models folder should be')
    with pytest.raises(CheckpointWriteError, match=r'could not write the checkpoint .*net_g_4.pth \(3 tries\)'):
        model.save_network(model.net_g, 'net_g', 4)


@pytest.mark.parametrize('failures', [1, 3])
def test_a_failed_write_is_tried_again_and_leaves_no_temporary_file(tmp_path, monkeypatch, failures):
    model = build_model(make_opt(tmp_path))
    for folder in ('models', 'training_states'):
        Path(model.opt['path'][folder]).mkdir(parents=True)
    real_save, calls = torch.save, []

    def flaky_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= failures:
            Path(path).write_bytes(b'half a file')
            raise OSError('disk hiccup')
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, 'WRITE_RETRY_PAUSE_S', 0)
    monkeypatch.setattr(torch, 'save', flaky_save)
    states = Path(model.opt['path']['training_states'])
    if failures < checkpoints.WRITE_TRIES:
        model.save_training_state(0, 4)
        assert len(calls) == failures + 1 and torch.load(states / '4.state', weights_only=False)['iter'] == 4
        assert sorted(p.name for p in states.iterdir()) == ['4.state']
    else:
        with pytest.raises(CheckpointWriteError, match=r'training state .*4.state \(3 tries\): disk hiccup'):
            model.save_training_state(0, 4)
        assert list(states.iterdir()) == []
