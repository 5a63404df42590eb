"""End-to-end runs of BasicSR's pipelines through ibsd-train / ibsd-test on CPU."""
from __future__ import annotations

import os
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

from ibsd.archs.imdn_arch import IMDN
from tests.helpers import (IBSD_RUN_NETWORK, PLAIN_FLOOR_DB, REPO, SCRIPTS, checked_scores, ibsd_options, make_pairs,
                           paired, run, train_options, write_yaml)

SDIST_CACHE = Path(os.environ.get('IBSD_BASICSR_SDIST', REPO / '.cache' / 'basicsr-1.4.2.tar.gz'))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_pairs(tmp_path / 'data' / 'train', 4, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    return tmp_path


@pytest.mark.slow
def test_stock_basicsr_msrresnet_trains_through_console_script(workdir):
    network = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    opt = write_yaml(workdir / 'msrresnet.yml', train_options('msr', network, workdir / 'data', 2, 4))
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(opt)], cwd=workdir)
    assert 'Validation val' in output
    assert (workdir / 'experiments' / 'msr' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.slow
def test_imdn_train_resume_and_test_pipelines(workdir):
    network = {'type': 'IMDN', 'num_feat': 16, 'num_block': 2, 'upscale': 2}
    opt = write_yaml(workdir / 'imdn.yml', train_options('imdn', network, workdir / 'data', 2, 4))
    run([sys.executable, str(REPO / 'ibsd' / 'train.py'), '-opt', str(opt)], cwd=workdir)
    experiment = workdir / 'experiments' / 'imdn'
    assert sorted(p.name for p in (experiment / 'training_states').iterdir()) == ['2.state', '4.state']
    assert (experiment / 'models' / 'net_g_4.pth').is_file()

    output = run([sys.executable, '-m', 'ibsd.train', '-opt', str(opt), '--auto_resume',
                  '--force_yml', 'train:total_iter=6'], cwd=workdir, env={'PYTHONPATH': str(REPO)})
    assert 'Resuming training from epoch: 2, iter: 4.' in output
    assert 'iter:       5' in output and 'iter:       1,' not in output
    assert (experiment / 'training_states' / '6.state').is_file()

    saved = torch.load(experiment / 'models' / 'net_g_latest.pth', weights_only=True)
    IMDN(num_feat=16, num_block=2, upscale=2).load_state_dict(saved['params'], strict=True)

    test_opt = {
        'name': 'imdn_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
        'datasets': {'test_1': paired('val', workdir / 'data' / 'val')},
        'network_g': network,
        'path': {'pretrain_network_g': str(experiment / 'models' / 'net_g_latest.pth'), 'strict_load_g': True,
                 'param_key_g': 'params_ema'},
        'val': {'save_img': True, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2,
                                                       'test_y_channel': True}}},
    }
    output = run([str(SCRIPTS / 'ibsd-test'), '-opt', str(write_yaml(workdir / 'test.yml', test_opt))], cwd=workdir)
    # 6 iterations from random weights train nothing yet: a finite PSNR above a plain floor is what holds
    checked_scores(output, floor=PLAIN_FLOOR_DB)
    images = sorted((workdir / 'results' / 'imdn_test' / 'visualization' / 'val').glob('*.png'))
    assert [p.name for p in images] == ['000_imdn_test.png', '001_imdn_test.png']


@pytest.mark.slow
def test_exported_student_runs_in_the_plain_test_pipeline(tmp_path):
    """IBSDModel's saved student is the plain arch: BasicSR's SRModel tests it through ibsd-test."""
    make_pairs(tmp_path / 'data' / 'train', 8, scale=2)  # 4 iterations per epoch
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    options = write_yaml(tmp_path / 'ibsd.yml', ibsd_options('export', tmp_path / 'data', 4))
    run([str(SCRIPTS / 'ibsd-train'), '-opt', str(options)], cwd=tmp_path)
    models = tmp_path / 'experiments' / 'export' / 'models'
    saved = torch.load(models / 'net_g_latest.pth', weights_only=True)
    IMDN(num_feat=16, num_block=6, upscale=2).load_state_dict(saved['params_ema'], strict=True)
    test_opt = {'name': 'export_test', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
                'datasets': {'test_1': paired('val', tmp_path / 'data' / 'val')}, 'network_g': IBSD_RUN_NETWORK,
                'path': {'pretrain_network_g': str(models / 'net_g_latest.pth'),
                         'param_key_g': 'params_ema', 'strict_load_g': True},
                'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}}}
    output = run([str(SCRIPTS / 'ibsd-test'), '-opt', str(write_yaml(tmp_path / 'test.yml', test_opt))], cwd=tmp_path)
    # 4 iterations from random weights train nothing yet: a finite PSNR above a plain floor is what holds
    checked_scores(output, floor=PLAIN_FLOOR_DB)


def test_script_mode_imports_each_module_under_one_name(tmp_path):
    """``python ibsd/train.py`` must not make ibsd's subpackages importable as top-level names."""
    code = textwrap.dedent(f'''
        import runpy, sys
        sys.path[0] = {str(REPO / 'ibsd')!r}   # what `python ibsd/train.py` does
        sys.argv = ['ibsd/train.py', '-h']
        try:
            runpy.run_path({str(REPO / 'ibsd' / 'train.py')!r}, run_name='__main__')
        except SystemExit:
            pass
        clashes = [m for m in ('archs', 'data', 'losses', 'metrics', 'models', 'entry', 'compat', 'train', 'test')
                   if m in sys.modules]
        print('CLASHES', clashes)
    ''')
    output = run([sys.executable, '-c', code], cwd=tmp_path)
    assert 'CLASHES []' in output
    assert '-opt' in output and '--auto_resume' in output and '--force_yml' in output


@pytest.mark.slow
def test_basicsr_source_tree_gets_ibsd_types(workdir):
    """`python basicsr/train.py -opt <yml with IBSD types>` in an unpacked basicsr 1.4.2 source tree."""
    if not SDIST_CACHE.is_file():
        pytest.skip(f'{SDIST_CACHE} is absent: `pip download --no-deps --no-binary :all: basicsr==1.4.2 -d .cache` '
                    'fetches it (scripts/setup_env.sh --test does)')
    with tarfile.open(SDIST_CACHE) as archive:
        archive.extractall(workdir / 'src', filter='data')
    tree = next((workdir / 'src').glob('basicsr-*'))
    network = {'type': 'RFDN', 'num_feat': 16, 'num_block': 2, 'attention': 'cca', 'upscale': 2}
    opt = write_yaml(workdir / 'rfdn.yml', train_options('rfdn_tree', network, workdir / 'data', 2, 2))
    code = 'import basicsr, sys; print("BASICSR_FROM", basicsr.__file__)'
    env = {'PYTHONPATH': str(tree)}
    assert f'BASICSR_FROM {tree}' in run([sys.executable, '-c', code], cwd=tree, env=env)
    output = run([sys.executable, 'basicsr/train.py', '-opt', str(opt)], cwd=tree, env=env)
    assert 'Network [RFDN] is created.' in output
    assert (tree / 'experiments' / 'rfdn_tree' / 'models' / 'net_g_latest.pth').is_file()
