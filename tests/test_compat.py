"""Each basicsr 1.4.2 fix in ibsd.compat / _ibsd_autoload, shown to matter."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from basicsr.models.sr_model import SRModel

from tests.helpers import REPO

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


@pytest.mark.parametrize('module, name, new', [
    ('ibsd.models.ibsd_options', 'check_ibsd_options', 'ibsd.options.train_sections'),
    ('ibsd.run_checks', 'check_run_options', 'ibsd.options.run_file'),
    ('ibsd.models.tiling', 'tiled_forward', 'ibsd.inference.tiling'),
    ('ibsd.compat', 'write_atomically', 'ibsd.training.checkpoints'),
    ('ibsd.compat', 'CheckpointWriteError', 'ibsd.training.checkpoints'),
])
def test_names_that_moved_still_import_with_a_deprecation_warning(module, name, new):
    import importlib
    import sys
    if module != 'ibsd.compat':  # a module warns when it is first imported
        sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=new.replace('.', r'\.')):
        found = getattr(importlib.import_module(module), name)
    assert found is getattr(importlib.import_module(new), name)
