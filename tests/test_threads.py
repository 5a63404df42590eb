"""CPU thread counts: ``--threads``, the ``num_threads`` option, OMP_NUM_THREADS and ``auto``."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ibsd.errors import OptionError
from ibsd.threads import choose_threads, idle_cores, parse_threads, pop_threads_argument
from tests.helpers import make_pairs, write_yaml


@pytest.mark.parametrize('value, expected', [(None, None), ('auto', 'auto'), (' AUTO ', 'auto'), (2, 2), ('3', 3),
                                             (4.0, 4), ('1.0', 1)])
def test_thread_counts_are_whole_numbers_or_auto(value, expected):
    assert parse_threads(value, 'num_threads') == expected


@pytest.mark.parametrize('value', [0, -1, 1.5, 'two', True, [2], float('nan')])
def test_a_bad_thread_count_names_the_key(value):
    with pytest.raises(OptionError, match=r'^num_threads: expected a whole number of threads >= 1, or auto'):
        parse_threads(value, 'num_threads')


def test_the_argument_is_taken_out_of_the_command_line():
    assert pop_threads_argument(['-opt', 'x.yml', '--threads', '2', '--auto_resume']) == \
        (['-opt', 'x.yml', '--auto_resume'], 2)
    assert pop_threads_argument(['--threads=auto', '-opt', 'x.yml']) == (['-opt', 'x.yml'], 'auto')
    assert pop_threads_argument(['-opt', 'x.yml']) == (['-opt', 'x.yml'], None)
    with pytest.raises(OptionError, match='--threads: expected a number of threads after it'):
        pop_threads_argument(['-opt', 'x.yml', '--threads'])
    with pytest.raises(OptionError, match="--threads: expected a whole number"):
        pop_threads_argument(['--threads', '0'])


def test_a_cgroup_quota_caps_the_cpus(tmp_path):
    from ibsd.threads import cgroup_cpu_limit
    quota = tmp_path / 'cpu.max'
    quota.write_text('150000 100000\n')
    assert cgroup_cpu_limit(str(quota)) == 2
    quota.write_text('max 100000\n')
    assert cgroup_cpu_limit(str(quota)) is None
    assert cgroup_cpu_limit(str(tmp_path / 'absent')) is None


def test_idle_cores_follow_the_load_and_leave_at_least_one():
    assert idle_cores(cpus=8, load=2.6) == 5
    assert idle_cores(cpus=2, load=0.2) == 2
    assert idle_cores(cpus=2, load=5.0) == 1


def test_the_argument_wins_then_the_option_then_the_environment_then_auto_on_the_cpu():
    busy = {'idle': 1}
    assert choose_threads(3, 2, True, 8, {'OMP_NUM_THREADS': '4'}, **busy) == (3, '--threads')
    assert choose_threads(None, 2, True, 8, {'OMP_NUM_THREADS': '4'}, **busy) == (2, 'num_threads')
    assert choose_threads(None, None, True, 4, {'OMP_NUM_THREADS': '4'}, **busy) == (4, 'OMP_NUM_THREADS')
    # an explicit auto is auto, before the environment and (as --threads) before the option
    assert choose_threads(None, 'auto', True, 4, {'OMP_NUM_THREADS': '4'}, **busy) == (1, 'auto: 1 of the cores idle')
    assert choose_threads('auto', 3, True, 4, {}, **busy) == (1, 'auto: 1 of the cores idle')
    assert choose_threads(None, None, True, 8, {}, **busy) == (1, 'auto: 1 of the cores idle')
    assert choose_threads(None, None, True, 2, {}, idle=6) == (2, 'auto: 6 of the cores idle')  # never above torch's
    assert choose_threads(None, None, False, 8, {}, **busy) == (8, "torch's default (a GPU run)")
    with pytest.raises(OptionError, match='num_threads: expected'):
        choose_threads(None, 'many', True, 8, {})


def test_a_misspelt_option_key_is_caught():
    from ibsd.options.run_file import check_known_keys
    with pytest.raises(OptionError, match="unknown key 'num_thread': did you mean 'num_threads'"):
        check_known_keys({'name': 'x', 'num_thread': 2})
    check_known_keys({'name': 'x', 'num_threads': 2})


@pytest.mark.parametrize('arguments, option, expected', [
    (['--threads', '1'], None, 'CPU threads: 1 (--threads)'),
    ([], 1, 'CPU threads: 1 (num_threads)'),
    (['--threads', 'x'], None, "OptionError: --threads: expected a whole number of threads >= 1, or auto; got 'x'"),
    ([], 0, 'OptionError: num_threads: expected a whole number of threads >= 1, or auto; got 0'),
])
def test_ibsd_test_applies_and_reports_its_threads(tmp_path, arguments, option, expected):
    """The whole path: BasicSR's parser never sees --threads, and the test log shows the choice."""
    make_pairs(tmp_path / 'data', 2, scale=2)
    opt = {'name': 'threads', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': 'data/hr',
                                   'dataroot_lq': 'data/lr', 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'IMDN', 'num_feat': 8, 'num_block': 1, 'upscale': 2},
           'path': {'pretrain_network_g': None, 'allow_untrained': True},
           'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}}}
    if option is not None:
        opt['num_threads'] = option
    write_yaml(tmp_path / 'test.yml', opt)
    code = ('import sys, torch; from ibsd.entry import test_main\n'
            'try:\n    test_main(sys.argv[1:])\n'
            'finally:\n    print("torch threads", torch.get_num_threads())\n')
    result = subprocess.run([sys.executable, '-c', code, '-opt', 'test.yml', *arguments], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '2'})
    output = result.stdout + result.stderr
    assert expected in output, output[-3000:]
    if 'OptionError' not in expected:
        assert result.returncode == 0 and 'torch threads 1' in output


def test_ibsd_infer_takes_a_thread_count(capsys):
    from ibsd.infer import parse_args
    base = ['-i', 'in.png', '--model-path', 'w.pth', '--arch', 'IMDN']
    assert parse_args(base).threads is None and parse_args([*base, '--threads', '2']).threads == 2
    with pytest.raises(SystemExit) as exit_status:
        parse_args([*base, '--threads', '0'])
    assert exit_status.value.code == 2 and '--threads: expected a whole number' in capsys.readouterr().err


def test_the_help_of_ibsd_train_names_the_threads_option(tmp_path):
    result = subprocess.run([sys.executable, '-c', 'from ibsd.entry import train_main; train_main()', '--help'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '--force_yml' in result.stdout and '--threads N' in result.stdout.split('--force_yml', 1)[1]
