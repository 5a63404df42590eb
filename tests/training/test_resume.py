"""Exact resume: IBSDModel runs through ibsd-train on CPU, resumed or killed and resumed, equal the uninterrupted
ones (one process, 2-process DDP, data loader workers); the epochs a resumed run needs."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ibsd.archs.imdn_arch import IMDN
from tests.helpers import REPO, SCRIPTS, ibsd_options, make_pairs, run, write_yaml


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_pairs(tmp_path / 'data' / 'train', 8, scale=2)  # 4 iterations per epoch
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    return tmp_path


def models_of(workdir: Path, name: str) -> Path:
    return workdir / 'experiments' / name / 'models'


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(workdir):
    straight = write_yaml(workdir / 'straight.yml', ibsd_options('straight', workdir / 'data', 8))
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(straight)], cwd=workdir)
    for term in ('l_est', 'l_pix', 'l_mi', 'l_wav', 'alpha'):
        assert f'{term}: ' in output
    assert 'Validation val' in output

    halves = write_yaml(workdir / 'halves.yml', ibsd_options('halves', workdir / 'data', 4))
    run([sys.executable, str(REPO / 'ibsd' / 'train.py'), '-opt', str(halves)], cwd=workdir)
    output = run([sys.executable, '-m', 'ibsd.train', '-opt', str(halves), '--auto_resume',
                  '--force_yml', 'train:total_iter=8'], cwd=workdir, env={'PYTHONPATH': str(REPO)})
    assert 'Resuming training from epoch: 1, iter: 4.' in output

    resumed = torch.load(models_of(workdir, 'halves') / 'net_g_8.pth', weights_only=True)
    uninterrupted = torch.load(models_of(workdir, 'straight') / 'net_g_8.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        assert resumed[key].keys() == uninterrupted[key].keys()
        assert all(torch.equal(resumed[key][k], uninterrupted[key][k]) for k in resumed[key])
    states = [torch.load(workdir / 'experiments' / n / 'training_states' / '8.state', weights_only=False)
              for n in ('halves', 'straight')]
    for a, b in zip(states[0]['ibsd']['net_est'].values(), states[1]['ibsd']['net_est'].values()):
        assert torch.equal(a, b)
    assert states[0]['ibsd']['soft_target']['snapshot_iter'] == 4


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def torchrun(workdir: Path, option_file: Path, *extra: str) -> str:
    """``torchrun --nproc_per_node 2 ibsd/train.py ... --launcher pytorch`` on CPU (gloo); its output.

    One retry on a fresh port: the port chosen here can be taken by another process before
    torchrun binds it, which says nothing about the code under test.
    """
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            [str(SCRIPTS / 'torchrun'), '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port',
             str(free_port()), str(REPO / 'ibsd' / 'train.py'), '-opt', str(option_file), '--launcher', 'pytorch',
             *extra], cwd=workdir, capture_output=True, text=True, timeout=600,
            env={**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo'})
        outputs.append(result.stdout + result.stderr)
        if result.returncode == 0:
            return outputs[-1]
    raise AssertionError('\n---- retry ----\n'.join(o[-3000:] for o in outputs))


@pytest.mark.slow
def test_two_process_ddp_training_resumes_each_rank_exactly(workdir):
    """2-process DDP on CPU, IBSD included: 3 + 5 resumed iterations equal 8 uninterrupted ones.

    The state at iteration 3 falls mid-epoch; each rank must get its own random streams back (a
    state with rank 0's streams on both ranks diverges) and its place in the epoch. The IB terms
    sample half of the positions, from a stream of each rank's own.
    """
    def options(name: str, total_iter: int) -> Path:
        opt = ibsd_options(name, workdir / 'data', total_iter)
        opt['train']['mi_opt']['mode'] = 'full'
        opt['train']['ibsd'] = {'positions': 0.5, 'log_grad_ratios': True}  # autograd.grad under DDP too
        opt['logger']['save_checkpoint_freq'] = 3  # 2 iterations per epoch on each of 2 ranks: mid-epoch states
        return write_yaml(workdir / f'{name}.yml', opt)

    output = torchrun(workdir, options('ddp', 8))
    assert 'World size (gpu number): 2' in output and 'g_wav: ' in output
    state = torch.load(workdir / 'experiments' / 'ddp' / 'training_states' / '6.state', weights_only=False)
    per_rank = state['ibsd']['random']
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]['torch'], per_rank[1]['torch'])
    assert not torch.equal(per_rank[0]['positions']['generator'], per_rank[1]['positions']['generator'])

    halves = options('ddp_halves', 3)
    torchrun(workdir, halves)
    output = torchrun(workdir, halves, '--auto_resume', '--force_yml', 'train:total_iter=8')
    assert 'Resuming training from epoch: 1, iter: 3.' in output
    assert 'Resuming epoch 1 after its first 1 of 2 iterations' in output
    resumed = torch.load(models_of(workdir, 'ddp_halves') / 'net_g_latest.pth', weights_only=True)
    straight = torch.load(models_of(workdir, 'ddp') / 'net_g_latest.pth', weights_only=True)
    IMDN(num_feat=16, num_block=6, upscale=2).load_state_dict(straight['params'], strict=True)
    for key in ('params', 'params_ema'):
        assert all(torch.equal(resumed[key][k], straight[key][k]) for k in straight[key]), key


def kill_at_iteration(command: list[str], cwd: Path, iteration: int) -> str:
    """Start ``command`` and SIGKILL it as soon as it logs ``iteration`` (or fail if it ends first)."""
    lines = []
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        for line in process.stdout:
            lines.append(line)
            if f'iter: {iteration:7d},' in line:
                process.send_signal(signal.SIGKILL)
                break
    assert process.returncode == -signal.SIGKILL, ''.join(lines)[-3000:]
    return ''.join(lines)


@pytest.mark.slow
@pytest.mark.parametrize('workers, persistent', [(0, False), (2, False), (2, True)])
def test_a_run_killed_at_a_random_iteration_resumes_to_the_same_weights(workdir, workers, persistent):
    """Saves every 3 iterations, epochs of 4: the state a killed run resumes from is mostly mid-epoch.
    With ``persistent_workers`` (workers kept between epochs) the killed run is compared with a run
    without it: keeping the workers must not change a single sample."""
    def options(name: str, keep_workers: bool) -> Path:
        opt = ibsd_options(name, workdir / 'data', 10)
        opt['logger']['save_checkpoint_freq'] = 3
        opt['datasets']['train'].update(num_worker_per_gpu=workers, persistent_workers=keep_workers)
        return write_yaml(workdir / f'{name}.yml', opt)

    kill_at = random.Random().randint(4, 9)
    run([str(SCRIPTS / 'ibsd-train'), '-opt', str(options('straight', False))], cwd=workdir)
    killed = options('killed', persistent)
    kill_at_iteration([str(SCRIPTS / 'ibsd-train'), '-opt', str(killed)], workdir, kill_at)
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(killed), '--auto_resume'], cwd=workdir)
    saved = 3 * ((kill_at - 1) // 3)  # the newest state a kill during iteration kill_at can leave
    assert f'iter: {saved}.' in output and 'Resuming training from' in output, f'killed at {kill_at}'
    resumed = torch.load(models_of(workdir, 'killed') / 'net_g_latest.pth', weights_only=True)
    straight = torch.load(models_of(workdir, 'straight') / 'net_g_latest.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        assert all(torch.equal(resumed[key][k], straight[key][k]) for k in straight[key]), (key, kill_at)


@pytest.mark.slow
def test_resume_keeps_the_runs_seed_and_restarts_the_epoch_when_the_loader_changed(workdir):
    """Without manual_seed BasicSR draws a new seed at each launch; a state saved mid-epoch must still
    resume exactly. With another batch size the saved place means nothing: the epoch restarts."""
    opt = ibsd_options('noseed', workdir / 'data', 6)
    del opt['manual_seed']
    opt['logger']['save_checkpoint_freq'] = 3  # epochs of 4 iterations: state 3 is mid-epoch
    run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(workdir / 'noseed.yml', opt))], cwd=workdir)
    states = workdir / 'experiments' / 'noseed' / 'training_states'
    models = models_of(workdir, 'noseed')
    straight = torch.load(models / 'net_g_6.pth', weights_only=True)
    assert torch.load(states / '3.state', weights_only=False)['sampling']['anchor'] == [0, 0]

    opt['path']['resume_state'] = str(states / '3.state')
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(workdir / 'again.yml', opt))], cwd=workdir)
    assert 'Resuming epoch 0 after its first 3 of 4 iterations' in output
    resumed = torch.load(models / 'net_g_6.pth', weights_only=True)
    for key in ('params', 'params_ema'):
        assert all(torch.equal(resumed[key][k], straight[key][k]) for k in straight[key]), key

    opt['datasets']['train']['batch_size_per_gpu'] = 4  # 2 iterations per epoch
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(workdir / 'batch.yml', opt))], cwd=workdir)
    assert 'The data loader changed since the training state was saved (iters_per_epoch 4 -> 2, ' \
           'batch_size_per_gpu 2 -> 4): epoch 0 restarts from its first batch at iteration 3' in output
    state = torch.load(states / '6.state', weights_only=False)  # epoch 0 ran 4-5, epoch 1 runs 6-7
    assert state['sampling']['anchor'] == [0, 3] and state['epoch'] == 1


def test_enough_epochs_for_the_iterations_with_dropped_batches_and_after_an_anchor():
    import logging

    from ibsd.training.resume import epochs_needed
    logger = logging.getLogger('test')
    # 9 pairs, batch 4: basicsr counts ceil(9 / 4) = 3 iterations per epoch, the loader gives 2
    assert epochs_needed({'iters_per_epoch': 2}, 4, 12, logger) == 6
    # resumed at iteration 6 of epoch 6 with 8 iterations per epoch now: 8 more iterations, epochs 6 and 7
    assert epochs_needed({'iters_per_epoch': 8, 'sampling_anchor': [6, 6]}, 2, 14, logger) == 7
    assert epochs_needed({'iters_per_epoch': 2}, 10, 12, logger) == 10  # never fewer than basicsr's
