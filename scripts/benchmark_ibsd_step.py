"""Cost of one IBSD training iteration against its floor, with a per-part breakdown.

The floor of an IBSD iteration is a plain ``SRModel`` iteration (L1) plus one no-grad forward of
the teacher (the student's snapshot); the estimators are small 1x1-conv networks. All timings are
taken in one process, interleaved (plain, teacher, IBSD, parts, plain, ...), after warm-up, and
reported as min / median / max over the repeats.

Parts of the IBSD step (each timed on its own, same shapes):
- estimator step: forward, NLL, backward and Adam step of the estimators on detached nodes;
- bound: the CLUB bound of every node pair, forward and backward into the nodes;
- teacher: the snapshot teacher's no-grad forward;
- wavelet: the wavelet loss against the soft target, forward and backward into the output;
- bookkeeping: the rest (IBSD step - plain step - the parts above).

With ``--positions p1 p2 ...`` one IBSD model per fraction ``train: ibsd: positions`` is timed in
the same rounds (the estimator step and the bound depend on it; the rest does not).

    python scripts/benchmark_ibsd_step.py                        # the paper's setting, CPU
    python scripts/benchmark_ibsd_step.py --positions 1 0.5 0.25 0.125
    python scripts/benchmark_ibsd_step.py --device cuda --amp bf16
    python scripts/benchmark_ibsd_step.py --batch 4 --patch 24 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

import torch

import ibsd  # noqa: F401  (registers the archs, losses and models)
from basicsr.models import build_model

ITER = 1000  # the iteration passed to optimize_parameters: past the ramp, alpha = alpha_max


def options(model_type: str, folder: str, args: argparse.Namespace, positions: float = 1.0) -> dict:
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4}, 'total_iter': 10 * ITER,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 6], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    if args.amp:
        train['amp'] = args.amp
    if model_type == 'IBSDModel':
        train.update(mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 1e-3, 'mode': args.club},
                     wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0},
                     soft_target={'source': 'snapshot', 'refresh_iters': 10 * ITER, 'alpha_max': 0.8,
                                  'ramp_iters': 1},
                     ibsd={'positions': positions})
    network = {'type': args.arch, 'upscale': args.scale}
    if args.arch == 'RFDN':
        network.update(num_feat=48, num_block=6, attention='cca')
    return {'name': 'bench', 'model_type': model_type, 'scale': args.scale,
            'num_gpu': 1 if args.device == 'cuda' else 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'manual_seed': 0, 'network_g': network,
            'network_est': {'type': 'IBEstimator'}, 'datasets': {'train': {'gt_size': args.patch * args.scale}},
            'path': {'pretrain_network_g': None, 'resume_state': None, 'models': folder, 'training_states': folder},
            'train': train}


class Timer:
    """Wall time of a callable, synchronising the device around it."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def __call__(self, work: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        work()
        self.sync()
        return time.perf_counter() - start


def peak_memory(device: torch.device, work: Callable[[], object]) -> float | None:
    """Peak allocated device memory of ``work`` in MiB (CUDA only)."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def build(model_type: str, folder: str, args: argparse.Namespace, batch: dict, positions: float = 1.0):
    model = build_model(options(model_type, folder, args, positions))
    model.feed_data(batch)
    return model


def part_workloads(model) -> dict[str, Callable[[], object]]:
    """The parts of an IBSD step, each a callable on tensors shaped as in the real step."""
    with model.node_recorder.record():
        output = model.net_g(model.lq)
    nodes = [node.detach() for node in model.node_recorder.collect()]
    output = output.detach()
    target, _ = model.soft_target.target(ITER, model.lq, model.gt)

    def estimator_step():
        model._update_estimators(nodes)

    def bound():
        leaves = [node.clone().requires_grad_() for node in nodes]
        with model.autocast():
            bound_value = model._mi_bound(leaves)
        bound_value.backward()

    def teacher():
        with model.autocast():
            model.soft_target.teacher_output(model.lq, None)

    def wavelet():
        leaf = output.clone().requires_grad_()
        model.cri_wav(leaf, target).backward()

    return {'estimator step': estimator_step, 'bound': bound, 'teacher': teacher, 'wavelet': wavelet}


def summary(samples: list[float]) -> str:
    return f'{min(samples):8.4f} {statistics.median(samples):8.4f} {max(samples):8.4f}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='IMDN', choices=('IMDN', 'RFDN'))
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--patch', type=int, default=48, help='LR patch size')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: as torch chooses)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--club', default='full', choices=('full', 'sampled'))
    parser.add_argument('--amp', default=None, choices=('bf16', 'fp16'), help='autocast (CUDA only)')
    parser.add_argument('--positions', type=float, nargs='+', default=[1.0],
                        help='train:ibsd:positions fractions to time side by side (default: 1, exact)')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available on this machine')
    if args.amp and args.device != 'cuda':
        parser.error(f'--amp {args.amp}: autocast training is for CUDA (add --device cuda)')
    if any(not 0 < p <= 1 for p in args.positions):
        parser.error(f'--positions: every fraction must be in (0, 1], got {args.positions}')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    lq = torch.rand(args.batch, 3, args.patch, args.patch, generator=generator)
    hr_size = args.patch * args.scale
    batch = {'lq': lq, 'gt': torch.rand(args.batch, 3, hr_size, hr_size, generator=generator)}
    timer = Timer(device)
    fractions = list(dict.fromkeys(args.positions))

    with tempfile.TemporaryDirectory() as folder:
        plain = build('SRModel', folder, args, batch)
        steps: dict[str, Callable[[], object]] = {'plain step': lambda: plain.optimize_parameters(ITER)}
        models = {}
        for fraction in fractions:
            model = build('IBSDModel', folder, args, batch, fraction)
            model.soft_target.set_snapshot(model.get_bare_model(model.net_g).state_dict(), 0)  # a teacher exists
            models[fraction] = model
            parts = part_workloads(model)
            if len(models) == 1:
                steps['teacher forward'] = parts['teacher']
                steps['wavelet'] = parts['wavelet']
            steps[f'IBSD step {fraction:g}'] = lambda model=model: model.optimize_parameters(ITER)
            steps[f'estimator step {fraction:g}'] = parts['estimator step']
            steps[f'bound {fraction:g}'] = parts['bound']
        for _ in range(args.warmup):
            for work in steps.values():
                work()
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, work in steps.items():
                samples[name].append(timer(work))
        memory = {'plain step': peak_memory(device, steps['plain step'])}
        memory.update((f, peak_memory(device, steps[f'IBSD step {f:g}'])) for f in fractions)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = [p + t for p, t in zip(samples['plain step'], samples['teacher forward'])]
    medians['floor'] = statistics.median(floor)
    plain_median = medians['plain step']
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'{args.arch} x{args.scale}, batch {args.batch}, LR patch {args.patch}, {name}, CLUB {args.club}, '
          f'amp {args.amp or "off"}; {args.repeats} repeats after {args.warmup} warm-up rounds')
    print(f'{"seconds":28s} {"min":>8s} {"median":>8s} {"max":>8s}')
    rows = [('plain step', samples['plain step']), ('teacher forward', samples['teacher forward']),
            ('floor (plain + teacher)', floor)]
    rows += [(f'IBSD step, positions {f:g}', samples[f'IBSD step {f:g}']) for f in fractions]
    for label, values in rows:
        print(f'{label:28s} {summary(values)}')
    print('per positions fraction: IBSD / plain, IBSD / floor, and the parts of the IBSD step '
          '(median, as fractions of a plain step)')
    print(f'{"positions":>9s} {"/plain":>7s} {"/floor":>7s} {"est.step":>8s} {"bound":>7s} {"teacher":>7s} '
          f'{"wavelet":>7s} {"bookkeep":>8s}')
    for fraction in fractions:
        step = medians[f'IBSD step {fraction:g}']
        parts = [medians[f'estimator step {fraction:g}'], medians[f'bound {fraction:g}'],
                 medians['teacher forward'], medians['wavelet']]
        bookkeeping = step - plain_median - sum(parts)
        print(f'{fraction:9g} {step / plain_median:7.3f} {step / medians["floor"]:7.3f} ' +
              ' '.join(f'{v / plain_median:{w}.3f}' for v, w in zip(parts + [bookkeeping], (8, 7, 7, 7, 8))))
    if memory['plain step'] is not None:
        print(f'peak memory: plain {memory["plain step"]:.0f} MiB, ' +
              ', '.join(f'IBSD (positions {f:g}) {memory[f]:.0f} MiB' for f in fractions))


if __name__ == '__main__':
    main()
