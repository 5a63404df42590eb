"""ibsd-demo: the default set's warm-up, L1 and IBSD runs, named by their settings, and its failures."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO


@pytest.mark.slow
def test_demo_command_warms_up_trains_tests_and_reports(tmp_path):
    workdir = tmp_path / 'demo'
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--workdir', str(workdir), '--warmup-iters', '2',
                             '--iters', '3'], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(result.stdout.splitlines()) < 60 and 'network_g' not in result.stdout  # progress and table only
    for label in ('bicubic upsampling', 'IMDN, L1 warm-up (2 it)', 'IMDN, L1 only (+3 it)', 'IMDN, IBSD (+3 it)',
                  'IBSD - L1: '):
        assert label in result.stdout
    names = ('Warmup_IMDN_x4_default_2it_seed0', 'L1_IMDN_x4_default_after_warmup2_3it_seed0',
             'IBSD_IMDN_x4_default_after_warmup2_3it_seed0')
    for name in names:
        assert (workdir / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
        images = (workdir / 'results' / f'{name}_test' / 'visualization' / 'default_val').glob('*.png')
        assert sorted(p.name for p in images) == [f'coffee_{name}_test.png', f'rocket_{name}_test.png']
    warm = f'experiments/{names[0]}/models/net_g_latest.pth'
    for name in names[1:]:  # both continue from the same warmed-up student
        options = yaml.safe_load((workdir / 'options' / f'train_{name}.yml').read_text())
        assert options['path']['pretrain_network_g'] == warm
        log = next((workdir / 'experiments' / name).glob('train_*.log')).read_text()
        assert f'{names[0]}/models/net_g_latest.pth' in log  # the weights were loaded, not only named
    for name in names:
        console = (workdir / 'logs' / f'{name}_train.log').read_text()
        assert 'CPU threads: 1 (--threads)' in console and 'network_g' in console


@pytest.mark.parametrize('warmup', [0, 5])
def test_demo_runs_are_named_by_their_settings_and_start_from_the_warm_up(tmp_path, monkeypatch, capsys, warmup):
    import ibsd.demo as demo
    calls = []
    monkeypatch.setattr(demo, 'build_default_set', lambda *args, **kwargs: {})
    monkeypatch.setattr(demo, 'bicubic_scores', lambda data: {'psnr': 20.0, 'ssim': 0.5})
    seen = []
    monkeypatch.setattr(demo, 'train_and_test', lambda *args, threads: calls.append(args) or seen.append(threads)
                        or {'psnr': 21.0 + len(calls), 'ssim': 0.6})
    demo.main(['--workdir', str(tmp_path), '--warmup-iters', str(warmup), '--iters', '7', '--seed', '3',
               '--threads', '2'])
    assert seen == [2] * len(calls)
    runs = [(kind, name, iters, start) for kind, name, _, _, iters, _, *start in calls]
    if warmup:
        warm = 'Warmup_IMDN_x4_default_5it_seed3'
        start = [f'experiments/{warm}/models/net_g_latest.pth']
        assert runs == [('Warmup', warm, 5, []), ('L1', 'L1_IMDN_x4_default_after_warmup5_7it_seed3', 7, start),
                        ('IBSD', 'IBSD_IMDN_x4_default_after_warmup5_7it_seed3', 7, start)]
    else:
        assert runs == [('L1', 'L1_IMDN_x4_default_7it_seed3', 7, [None]),
                        ('IBSD', 'IBSD_IMDN_x4_default_7it_seed3', 7, [None])]
    out = capsys.readouterr().out
    assert ('IMDN, IBSD (+7 it)' if warmup else 'IMDN, IBSD (7 it)') in out and 'IBSD - L1: +1.000 dB' in out
    train, _ = demo.demo_options({k: tmp_path / k for k in ('train_gt', 'train_lq', 'val_gt', 'val_lq')}, tmp_path,
                                 7, 3, 'IBSD', 'x')
    assert train['model_type'] == 'IBSDModel' and train['path']['pretrain_network_g'] is None


def test_demo_rejects_bad_iterations():
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--iters', '0'], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and '--iters must be >= 1' in result.stderr
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--warmup-iters', '-1'], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and '--warmup-iters must be >= 0' in result.stderr


def test_a_failed_demo_step_ends_with_the_end_of_its_log(tmp_path, capsys):
    import ibsd.demo as demo
    (tmp_path / 'bad.yml').write_text('name: [unclosed\n')
    log = tmp_path / 'logs' / 'bad_train.log'
    then = demo.pipeline_task('test', 'L1 test', tmp_path / 'bad.yml', tmp_path, tmp_path / 'logs' / 'never.log', 1)
    with pytest.raises(demo.DemoError) as caught:
        demo.run_steps([demo.pipeline_task('train', 'L1 train', tmp_path / 'bad.yml', tmp_path, log, 1), then],
                       tmp_path, 1)
    assert str(caught.value) == f'L1 train failed (exit status 1); the end of its log {log} is above'
    out = capsys.readouterr().out
    assert (f'started L1 train (1 thread(s)): (cd {tmp_path} && python -m ibsd.train -opt bad.yml --threads 1) '
            '>> logs/bad_train.log') in out
    assert 'bad.yml:2:1: invalid YAML' in out and 'Traceback' not in out  # the log's last lines, not a traceback
    assert then.process is None and not (tmp_path / 'logs' / 'never.log').exists()  # the next step never ran
