"""IBSDModel paths CPU runs rarely take: the DDP reduction, DataParallel, autocast, frozen and released tensors."""
from __future__ import annotations

import contextlib
import gc
import socket
import weakref

import pytest
import torch
import torch.distributed as dist
from basicsr.models import build_model
from basicsr.models.base_model import BaseModel

from ibsd.archs.rfdn_arch import RFDN
from ibsd.models.ibsd_model import IBSDModel, stack_log_values
from tests.helpers import cpu_bf16, feed, make_opt

RFDN_SHARED = {'type': 'RFDN', 'num_feat': 8, 'num_block': 6, 'upscale': 2, 'attention': 'cca',
               'share_block4': True}


def test_log_values_are_moved_to_the_model_device():
    """BasicSR stacks the loss dict for the DDP reduction: a value on another device used to crash it."""
    values = [torch.tensor(0.5), 0.8, torch.tensor([1.0, 3.0])]
    stacked = stack_log_values(values, torch.device('meta'))
    assert stacked.device.type == 'meta' and stacked.shape == (3,) and stacked.dtype == torch.float32
    assert stack_log_values(values, torch.device('cpu')).tolist() == [0.5, pytest.approx(0.8), 2.0]


def test_one_step_logs_every_value_from_one_tensor_on_the_model_device(tmp_path):
    model = build_model(make_opt(tmp_path, ibsd={'grad_clip_norm': 10.0}))
    feed(model)
    model.optimize_parameters(3)
    assert model._log_values.device == model.device and model._log_values.dtype == torch.float32
    log = model.get_current_log()
    assert set(log) == {'l_est', 'l_pix', 'l_mi', 'l_wav', 'alpha', 'grad_norm'}
    assert all(isinstance(v, float) for v in log.values())


@contextlib.contextmanager
def single_process_group():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('network', [None, RFDN_SHARED], ids=['IMDN', 'RFDN-share_block4'])
def test_ddp_path_reduces_the_log_and_trains_without_unused_parameters(tmp_path, network):
    """DDP on a one-process gloo group: the reduction and DDP's unused-parameter check both run."""
    opt = make_opt(tmp_path, network, ema_decay=0.5)
    opt['dist'] = True
    (tmp_path / 'states').mkdir()
    with single_process_group():
        model = build_model(opt)
        assert isinstance(model.net_g, torch.nn.parallel.DistributedDataParallel)
        for step in (1, 2, 3):  # DDP reports parameters without gradients at the step after
            feed(model, seed=step)
            model.optimize_parameters(step)
        log = model.get_current_log()
        model.save_training_state(0, 3)
    assert set(log) == {'l_est', 'l_pix', 'l_mi', 'l_wav', 'alpha'}
    state = torch.load(tmp_path / 'states' / '3.state', weights_only=False)
    assert isinstance(state['ibsd']['random'], list) and len(state['ibsd']['random']) == 1


def test_rfdn_unused_shared_blocks_take_no_gradient():
    net = RFDN(**{k: v for k, v in RFDN_SHARED.items() if k != 'type'})
    unused = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert unused and all(name.startswith(('B5.', 'B6.')) for name in unused)
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_dataparallel_is_refused_with_the_ddp_command(tmp_path, monkeypatch):
    monkeypatch.setattr(BaseModel, 'model_to_device', lambda self, net: torch.nn.DataParallel(net.to(self.device)))
    with pytest.raises(ValueError, match=r'torchrun --nproc_per_node=N .*--launcher pytorch'):
        build_model(make_opt(tmp_path))


def test_training_without_a_launcher_uses_one_gpu_not_dataparallel(tmp_path, monkeypatch):
    seen = {}

    def record_and_stop(self, opt):
        seen['num_gpu'] = opt['num_gpu']
        raise RuntimeError('stop before any device is touched')

    monkeypatch.setattr(IBSDModel.__mro__[1], '__init__', record_and_stop)
    opt = make_opt(tmp_path)
    opt['num_gpu'] = 4  # num_gpu: auto on a 4-GPU machine
    with pytest.raises(RuntimeError, match='stop before'):
        IBSDModel(opt)
    assert seen['num_gpu'] == 1


def test_estimator_parameters_frozen_by_the_user_stay_frozen(tmp_path):
    model = build_model(make_opt(tmp_path))
    frozen = model.net_est.pairs[0].mean[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    for step in (1, 2):
        feed(model, seed=step)
        model.optimize_parameters(step)
    assert not frozen.requires_grad and frozen.grad is None and torch.equal(frozen, before)
    assert all(p.requires_grad for p in model.net_est.parameters() if p is not frozen)


def test_nodes_are_released_after_the_step(tmp_path):
    model = build_model(make_opt(tmp_path))
    feed(model)
    seen = []
    module = model.node_recorder.modules[model.node_recorder.parsed[0][0]]
    handle = module.register_forward_hook(lambda m, i, output: seen.append(weakref.ref(output)))
    model.optimize_parameters(1)
    handle.remove()
    gc.collect()
    assert seen and seen[0]() is None
    assert not model.node_recorder._outputs


def test_autocast_runs_the_forwards_in_bf16_and_every_loss_in_float32(tmp_path):
    plain, mixed = (build_model(make_opt(tmp_path, ema_decay=0.5, soft_target={
        'source': 'ema', 'ramp_iters': 1})) for _ in range(2))
    mixed.net_g.load_state_dict(plain.net_g.state_dict())
    mixed.net_est.load_state_dict(plain.net_est.state_dict())
    mixed.net_g_ema.load_state_dict(plain.net_g_ema.state_dict())
    cpu_bf16(mixed)
    dtypes = set()
    mixed.cri_mi.register_forward_pre_hook(lambda m, args: dtypes.add(args[0].dtype))
    logs = []
    for model in (plain, mixed):
        feed(model, batch=4, size=16)
        model.optimize_parameters(1)
        logs.append(model.get_current_log())
    assert dtypes == {torch.bfloat16} and mixed.output.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in mixed.net_g.parameters())
    for name in ('l_pix', 'l_wav', 'l_est'):
        assert logs[1][name] == pytest.approx(logs[0][name], rel=0.05), name
    assert abs(logs[1]['l_mi'] - logs[0]['l_mi']) < 0.05 * abs(logs[0]['l_est'])


@pytest.mark.parametrize('amp, message', [('bf16', 'for CUDA training'), ('fp16', 'must be ~ .off. or one of')])
def test_amp_option_is_checked(tmp_path, amp, message):
    with pytest.raises(ValueError, match=f'train:amp: .*{message}'):
        build_model(make_opt(tmp_path, amp=amp))


def test_a_bound_below_minus_the_pixel_loss_is_flagged_once(tmp_path, monkeypatch):
    import ibsd.models.ibsd_model as ibsd_model
    assert ibsd_model.bound_exploited(-0.5, 0.1)
    assert not ibsd_model.bound_exploited(-0.05, 0.1)  # estimate noise, not exploitation
    assert not ibsd_model.bound_exploited(0.5, 0.1)
    model = build_model(make_opt(tmp_path))
    warnings = []
    monkeypatch.setattr(ibsd_model, 'get_root_logger', lambda: type('Log', (), {'warning': warnings.append})())
    feed(model)
    model.optimize_parameters(1)
    model.get_current_log()
    assert warnings == []  # a healthy step: the bound is small
    model._mi_bound = lambda nodes: torch.tensor(-5.0, requires_grad=True)
    for iteration in (2, 3):
        feed(model)
        model.optimize_parameters(iteration)
        assert model.get_current_log()['l_mi'] == -5.0
    assert len(warnings) == 1 and 'iteration 2' in warnings[0] and 'exploiting the estimators' in warnings[0]
