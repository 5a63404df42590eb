"""Check IBSD under DDP on this machine's GPUs (or CPU with gloo): a few iterations, ranks in step, resume.

    torchrun --nproc_per_node 2 scripts/check_ibsd_ddp.py                 # CUDA (NCCL) when available
    torchrun --nproc_per_node 2 scripts/check_ibsd_ddp.py --amp bf16      # the same under bf16 autocast
    torchrun --nproc_per_node 2 scripts/check_ibsd_ddp.py --device cpu    # gloo, for a dry run

Each rank trains ``IBSDModel`` (IMDN x4, every IBSD term on, full CLUB, snapshot teacher) on its
own random batches; the script then checks that the student and the estimators are identical on
all ranks, that every log value is finite, saves a training state, resumes it into a fresh model
on every rank and checks that the resumed model continues exactly as the original one. Prints
one line per check and exits non-zero on the first failure.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
import torch.distributed as dist

import ibsd  # noqa: F401  (registers the archs, losses and models; patches basicsr)
from basicsr.models import build_model


def options(device: str, amp: str | None, folder: str, rank: int, world_size: int, mode: str = 'full',
            positions: float = 1.0) -> dict:
    train = {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4}, 'total_iter': 100,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [50], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
             'mi_opt': {'type': 'IBCLUBLoss', 'loss_weight': 1e-3, 'mode': mode},
             'wavelet_opt': {'type': 'WaveletHFLoss', 'loss_weight': 1.0},
             'soft_target': {'source': 'snapshot', 'refresh_iters': 2, 'ramp_iters': 4},
             'ibsd': {'positions': positions}}
    if amp:
        train['amp'] = amp
    return {'name': 'ddp_check', 'model_type': 'IBSDModel', 'scale': 4, 'num_gpu': 1 if device == 'cuda' else 0,
            'is_train': True, 'dist': True, 'rank': rank, 'world_size': world_size, 'manual_seed': 0,
            'network_g': {'type': 'IMDN', 'upscale': 4}, 'datasets': {'train': {'gt_size': 128}},
            'path': {'pretrain_network_g': None, 'resume_state': None, 'models': folder,
                     'training_states': folder},
            'train': train}


def batch(device: torch.device) -> dict:
    """A random batch from this rank's global torch stream (so that resume must restore it per rank)."""
    lq = torch.rand(4, 3, 32, 32)
    return {'lq': lq.to(device), 'gt': torch.nn.functional.interpolate(lq, scale_factor=4, mode='bicubic').to(device)}


def flat_weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])


def check(condition: bool, message: str) -> None:
    """Print the result (rank 0, or any rank that fails) and stop every rank on a failure."""
    if dist.get_rank() == 0 or not condition:
        print(('ok    ' if condition else f'FAIL  (rank {dist.get_rank()}) ') + message, flush=True)
    if not condition:
        sys.exit(1)


def same_on_all_ranks(tensor: torch.Tensor) -> bool:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def train(model, steps: range, device: torch.device) -> dict:
    log = {}
    for step in steps:
        model.feed_data(batch(device))
        model.optimize_parameters(step)
        log = model.get_current_log()
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--amp', default=None, choices=('bf16',))
    parser.add_argument('--iters', type=int, default=6)
    parser.add_argument('--club', default='full', choices=('full', 'sampled'))
    parser.add_argument('--positions', type=float, default=1.0, help='train:ibsd:positions (default: 1, exact)')
    args = parser.parse_args()
    rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    backend = 'gloo'
    if args.device == 'cuda':
        devices = torch.cuda.device_count()
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)) % devices)
        backend = 'nccl' if devices >= world_size else 'gloo'  # NCCL cannot put two ranks on one GPU
    dist.init_process_group(backend)
    device = torch.device('cuda', torch.cuda.current_device()) if args.device == 'cuda' else torch.device('cpu')
    folder = tempfile.mkdtemp(prefix='ibsd_ddp_check_') if rank == 0 else None
    shared = [folder]
    dist.broadcast_object_list(shared)
    folder = shared[0]

    torch.manual_seed(0)  # the same initial weights in every run: float32 and bf16 runs compare
    model = build_model(options(args.device, args.amp, folder, rank, world_size, args.club, args.positions))
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    check(isinstance(model.net_g, torch.nn.parallel.DistributedDataParallel),
          f'student wrapped in DDP ({world_size} ranks, {backend}, {name}, amp {args.amp or "off"}, '
          f'CLUB {args.club}, positions {args.positions:g})')
    torch.manual_seed(1 + rank)  # each rank its own batches, as BasicSR seeds seed + rank
    log = train(model, range(1, args.iters + 1), device)
    check(all(torch.isfinite(torch.tensor(v)) for v in log.values()), f'finite log after {args.iters} iterations: '
          + ', '.join(f'{k} {v:.4g}' for k, v in log.items()))
    check(same_on_all_ranks(flat_weights(model.net_g)), 'student weights identical on all ranks')
    check(same_on_all_ranks(flat_weights(model.net_est)), 'estimator weights identical on all ranks')

    state_student = {k: v.clone() for k, v in model.get_bare_model(model.net_g).state_dict().items()}
    state_ema = {k: v.clone() for k, v in model.net_g_ema.state_dict().items()}
    model.save_training_state(0, args.iters)
    dist.barrier()
    state = torch.load(os.path.join(folder, f'{args.iters}.state'), map_location=device, weights_only=False)
    check(len(state['ibsd']['random']) == world_size, f'training state holds {world_size} ranks\' random states')
    continued = range(args.iters + 1, args.iters + 3)
    train(model, continued, device)  # draws its batches from the streams saved above
    resumed = build_model(options(args.device, args.amp, folder, rank, world_size, args.club, args.positions))
    resumed.get_bare_model(resumed.net_g).load_state_dict(state_student)
    resumed.net_g_ema.load_state_dict(state_ema)
    resumed.resume_training(state)  # every rank gets its own streams back: the same batches again
    train(resumed, continued, device)
    difference = (flat_weights(model.net_g) - flat_weights(resumed.net_g)).abs().max().item()
    check(difference <= (0 if args.device == 'cpu' else 1e-4),
          f'resumed run continues as the original (max weight difference {difference:.3g})')
    difference = (flat_weights(model.net_est) - flat_weights(resumed.net_est)).abs().max().item()
    check(difference <= (0 if args.device == 'cpu' else 1e-4),
          f'resumed estimators continue as the original (max weight difference {difference:.3g})')
    check(same_on_all_ranks(flat_weights(resumed.net_g)), 'resumed student identical on all ranks')
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
