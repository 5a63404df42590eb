"""Each basicsr 1.4.2 fix in ibsd.compat / _ibsd_autoload, shown to matter."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import basicsr.train
from basicsr.models.sr_model import SRModel

from ibsd.archs.checkpoint import CheckpointError
from ibsd import compat
from tests.conftest import REPO

FRESH_ENV = {**os.environ, 'PYTHONPATH': str(REPO)}


def run_python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          env=env or FRESH_ENV, cwd=REPO, timeout=300)


def test_plain_import_basicsr_fails_without_the_torchvision_shim():
    """The bug the shim fixes is real on this torchvision (control experiment)."""
    result = run_python('''
        import sys, _ibsd_autoload
        sys.meta_path.remove(_ibsd_autoload.BasicsrFinder)
        import basicsr
    ''')
    assert result.returncode != 0 and 'functional_tensor' in result.stderr


def test_torchvision_shim_provides_functional_tensor():
    result = run_python('''
        import sys, _ibsd_autoload
        sys.meta_path.remove(_ibsd_autoload.BasicsrFinder)
        _ibsd_autoload.install_torchvision_shim()
        from torchvision.transforms.functional_tensor import rgb_to_grayscale
        print(rgb_to_grayscale.__module__)
    ''')
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('first', ['import basicsr', 'import ibsd'])
def test_import_basicsr_is_silent_and_registers_ibsd(first):
    """Either import order works, without any DeprecationWarning, and IBSD's types are registered."""
    result = run_python(f'''
        {first}
        import basicsr, ibsd
        from basicsr.utils.registry import ARCH_REGISTRY
        assert 'IMDN' in ARCH_REGISTRY and 'RFDN' in ARCH_REGISTRY
        print('ok')
    ''', '-W', 'error::DeprecationWarning')
    assert result.returncode == 0 and 'ok' in result.stdout, result.stderr


def test_autoload_can_be_switched_off():
    result = run_python('''
        import sys, basicsr
        from basicsr.utils.registry import ARCH_REGISTRY
        print('IMDN' in ARCH_REGISTRY, 'ibsd' in sys.modules)
    ''', env={**FRESH_ENV, 'IBSD_NO_AUTOLOAD': '1'})
    assert result.returncode == 0 and result.stdout.split() == ['False', 'False'], result.stderr


def test_autoload_finder_ignores_other_imports():
    import _ibsd_autoload
    assert _ibsd_autoload.BasicsrFinder.find_spec('json') is None
    assert _ibsd_autoload.BasicsrFinder.find_spec('basicsr.archs') is None


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


def test_launcher_pytorch_uses_gloo_on_cpu():
    if torch.cuda.is_available():
        pytest.skip('CPU-only behaviour')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = {**FRESH_ENV, 'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'MASTER_ADDR': '127.0.0.1',
           'MASTER_PORT': str(port)}
    result = run_python('''
        import ibsd, torch.distributed as dist
        from basicsr.utils.dist_util import init_dist, get_dist_info
        init_dist('pytorch')
        print(dist.get_backend(), *get_dist_info())
        dist.destroy_process_group()
    ''', env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['gloo', '0', '1']


def test_load_network_accepts_official_plain_state_dicts(tmp_path):
    from ibsd.archs.imdn_arch import IMDN
    torch.manual_seed(0)
    source = IMDN(num_feat=16, num_block=1, upscale=2)
    path = tmp_path / 'official.pth'
    torch.save({f'module.{k}': v for k, v in source.state_dict().items()}, path)
    target = IMDN(num_feat=16, num_block=1, upscale=2)
    model = SRModel.__new__(SRModel)
    model.opt = {'dist': False}
    model.load_network(target, str(path), strict=True, param_key='params')
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    with pytest.raises(ValueError, match='official.pth'):
        model.load_network(IMDN(num_feat=16, num_block=1, upscale=4), str(path), strict=True)


def test_validation_suffix_gets_a_default(tmp_path, monkeypatch):
    opt_file = tmp_path / 'test.yml'
    opt_file.write_text('name: t\nmodel_type: SRModel\nscale: 2\nnum_gpu: 0\ndatasets: {}\n'
                        'network_g: {type: IMDN}\npath: {allow_untrained: true}\nval: {save_img: true}\n')
    monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(opt_file)])
    opt, _ = basicsr.test.parse_options(str(tmp_path), is_train=False)
    assert opt['val']['suffix'] is None
    with pytest.raises(KeyError):
        monkeypatch.setattr(sys, 'argv', ['test.py', '-opt', str(opt_file)])
        basicsr.test.parse_options.__wrapped__(str(tmp_path), is_train=False)[0]['val']['suffix']


def test_training_states_load_without_unpickling_code(tmp_path):
    from basicsr.models import build_model

    from ibsd.archs.checkpoint import CheckpointError
    from ibsd.training.checkpoints import load_training_state
    from tests.test_ibsd_model import make_opt
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


def test_enough_epochs_for_the_iterations_with_dropped_batches_and_after_an_anchor():
    import logging

    from ibsd.training.resume import epochs_needed
    logger = logging.getLogger('test')
    # 9 pairs, batch 4: basicsr counts ceil(9 / 4) = 3 iterations per epoch, the loader gives 2
    assert epochs_needed({'iters_per_epoch': 2}, 4, 12, logger) == 6
    # resumed at iteration 6 of epoch 6 with 8 iterations per epoch now: 8 more iterations, epochs 6 and 7
    assert epochs_needed({'iters_per_epoch': 8, 'sampling_anchor': [6, 6]}, 2, 14, logger) == 7
    assert epochs_needed({'iters_per_epoch': 2}, 10, 12, logger) == 10  # never fewer than basicsr's
