"""Model card of the built-in students: size, cost and CPU latency, and what IBSD adds only in training.

For each student in its paper configuration (x4), on a 320x180 LR input (1280x720 output):
parameters; multiply-accumulates (MACs, in G: convolutions and matrix products, counted with
``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per MAC); CPU latency (median
of ``--runs`` forwards at batch 1 after one warm-up forward). Then IBSD's training-only extras:
the estimator's parameters (``IBSDModel`` built for the student's default nodes; for BasicSR's
SwinIR-light, which declares none, the nodes of the shipped YAML) and the time of one IBSD
training step against a plain L1 step (``scripts/benchmark_ibsd_step.py``'s settings, every IBSD
term on; ``--train-batch``, ``--train-patch``). Inference extras: parameters of the student an
IBSD run saves (``net_g``) beyond the plain network's (0), and the parameters its ONNX graph
stores (``ibsd.export``, unoptimised so that every weight keeps its name).
SwinIR has no padding of its own: its input is reflect-padded to a multiple of its window (8).

    python scripts/model_card.py                      # print the table (a few minutes on 2 cores)
    python scripts/model_card.py --write              # also docs/model_card.md and docs/networks.md's marked block
    python scripts/model_card.py --runs 2 --train-repeats 1 --students IMDN RFDN

On cores that other processes keep busy, give ``--threads`` the number of free cores: with more
threads than that, PyTorch's CPU kernels wait on each other (IMDN's training step at batch 4,
patch 32 took 6.2 s with 2 threads and 0.13 s with 1 on two shared cores).

One script, longer than most files, because the card is one table: each column's measurement sits
beside the code that writes it.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ibsd  # noqa: F401  (registers the archs, losses and models)
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY

from ibsd.inference import build_network, network_spec, padded_to_multiple, round_up, size_multiple

REPO = Path(__file__).resolve().parents[1]
START, END = '<!-- model-card:start -->', '<!-- model-card:end -->'
DOC = REPO / 'docs' / 'networks.md'
"""The page whose block between :data:`START` and :data:`END` ``--write`` replaces with the table."""
LR_SIZE = (180, 320)
"""Height and width of the LR input: 1280x720 output at x4, the usual setting of lightweight SR papers."""
ITER = 1000


def load_benchmark():
    """``scripts/benchmark_ibsd_step.py`` as a module (its options, model building and timer)."""
    spec = importlib.util.spec_from_file_location('benchmark_ibsd_step', Path(__file__).with_name(
        'benchmark_ibsd_step.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class StudentSpec:
    """A network in the configuration the card reports."""

    label: str
    network: dict
    note: str = ''
    scale: int = 4
    nodes: list[str] | None = None
    """IBSD nodes for an arch that declares none (``train: ibsd: nodes``)."""
    ibsd: bool = True
    """Whether IBSD's columns apply."""


def shipped_nodes(name: str) -> list[str] | None:
    """``train: ibsd: nodes`` of a shipped YAML in ``options/train/IBSD``, ``None`` if it is absent."""
    path = REPO / 'options' / 'train' / 'IBSD' / name
    if not path.is_file():
        return None
    nodes = ((yaml.safe_load(path.read_text()) or {}).get('train') or {}).get('ibsd', {}).get('nodes')
    return list(nodes) if nodes else None


def paper_students() -> list[StudentSpec]:
    """The built-in students in their papers' x4 configurations, and BasicSR's SwinIR-light."""
    swinir_nodes = shipped_nodes('train_ibsd_swinir_light_x4_drealsr.yml')
    return [
        StudentSpec('IMDN', {'type': 'IMDN', 'num_feat': 64, 'num_block': 6, 'upscale': 4},
                    '64 channels, 6 blocks (official `IMDN_x4.pth`)'),
        StudentSpec('RFDN', {'type': 'RFDN', 'num_feat': 50, 'num_block': 4, 'upscale': 4, 'attention': 'esa'},
                    '50 channels, 4 blocks, ESA (official `RFDN_AIM.pth`)'),
        StudentSpec('RFDN (IBSD variant)', {'type': 'RFDN', 'num_feat': 48, 'num_block': 6, 'upscale': 4,
                                            'attention': 'cca'}, '48 channels, 6 blocks, CCA (shipped YAMLs)'),
        StudentSpec('OmniSR', {'type': 'OmniSR', 'num_feat': 64, 'res_num': 5, 'block_num': 1, 'upsampling': 4,
                               'window_size': 8, 'pe': True}, '64 channels, 5 groups, window 8'),
        StudentSpec('HGSR_MHR', {'type': 'HGSR_MHR', 'upscale': 4}, 'CDC, 6 hourglasses (not lightweight)'),
        StudentSpec('SwinIR-light', {
            'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 64, 'window_size': 8, 'img_range': 1.,
            'depths': [6, 6, 6, 6], 'embed_dim': 60, 'num_heads': [6, 6, 6, 6], 'mlp_ratio': 2,
            'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}, "BasicSR's SwinIR, lightweight",
            nodes=swinir_nodes, ibsd=swinir_nodes is not None),
    ]


def student_network(spec: StudentSpec) -> nn.Module:
    """The student of ``spec`` in eval mode, freshly initialised."""
    return build_network(network_spec(spec.network)).eval()


@dataclass
class Settings:
    lr_size: tuple[int, int] = LR_SIZE
    runs: int = 3
    latency_budget: float = 20.
    train_batch: int = 4
    train_patch: int = 32
    train_repeats: int = 2
    export_check: bool = True


@dataclass
class Row:
    label: str
    note: str
    parameters: int
    macs: float
    latency: list[float]
    estimator: int | None = None
    step_ratio: float | None = None
    step_times: tuple[float, float] | None = None
    inference_extra: int | None = None
    """Parameters of the student an IBSD run saves, beyond the plain network's."""
    graph_parameters: int | None = None
    """Parameters stored in the student's ONNX graph."""
    remarks: list[str] = field(default_factory=list)


def count_macs(net: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates of one forward pass (FlopCounterMode counts 2 FLOPs per MAC)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 2


def latency(net: nn.Module, x: torch.Tensor, runs: int, budget: float) -> list[float]:
    """Seconds of up to ``runs`` forward passes, fewer (at least one) once they took ``budget`` seconds
    (the MAC count ran one pass before, as warm-up)."""
    times = []
    while len(times) < runs and (not times or sum(times) < budget):
        start = time.perf_counter()
        with torch.inference_mode():
            net(x)
        times.append(time.perf_counter() - start)
    return times


def ibsd_models(spec: StudentSpec, settings: Settings, folder: str):
    """A plain SRModel and an IBSDModel of the student, fed one batch, as the step benchmark builds them."""
    bench = load_benchmark()
    scale = spec.scale
    args = argparse.Namespace(arch=spec.network['type'], scale=scale, amp=None, club='full', device='cpu',
                              patch=settings.train_patch)
    generator = torch.Generator().manual_seed(0)
    patch, hr = settings.train_patch, settings.train_patch * scale
    batch = {'lq': torch.rand(settings.train_batch, 3, patch, patch, generator=generator),
             'gt': torch.rand(settings.train_batch, 3, hr, hr, generator=generator)}
    models = []
    for model_type in ('SRModel', 'IBSDModel'):
        opt = bench.options(model_type, folder, args)
        opt['network_g'] = dict(spec.network)
        if spec.nodes:
            opt['train']['ibsd'] = {'nodes': list(spec.nodes)}
        model = build_model(opt)
        model.feed_data(batch)
        models.append(model)
    plain, model = models
    model.soft_target.set_snapshot(model.get_bare_model(model.net_g).state_dict(), 0)  # a teacher exists
    return plain, model


def training_extras(spec: StudentSpec, settings: Settings, row: Row, net: nn.Module) -> None:
    """Estimator parameters, IBSD step / plain step, and the parameters an IBSD run saves."""
    with tempfile.TemporaryDirectory() as folder:
        plain, model = ibsd_models(spec, settings, folder)
        row.estimator = sum(p.numel() for p in model.net_est.parameters())
        saved = sum(p.numel() for p in model.get_bare_model(model.net_g).state_dict().values())
        row.inference_extra = saved - sum(v.numel() for v in net.state_dict().values())
        steps = {'plain': lambda: plain.optimize_parameters(ITER), 'ibsd': lambda: model.optimize_parameters(ITER)}
        for work in steps.values():  # warm-up
            work()
        samples = {name: [] for name in steps}
        for _ in range(settings.train_repeats):  # interleaved, as in the step benchmark
            for name, work in steps.items():
                start = time.perf_counter()
                work()
                samples[name].append(time.perf_counter() - start)
    plain_time, ibsd_time = (statistics.median(samples[name]) for name in ('plain', 'ibsd'))
    row.step_times = (plain_time, ibsd_time)
    row.step_ratio = ibsd_time / plain_time


def export_check(net: nn.Module, row: Row, multiple: int = 1) -> None:
    """Check that the student's ONNX graph stores exactly its parameters; a remark on the row if not.

    Exported without the exporter's optimiser, so that each parameter is stored under its name.
    """
    try:
        from ibsd import export
        export.require_onnx()
    except Exception as error:
        row.remarks.append(f'ONNX check skipped ({error})')
        return
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = export.export_onnx(net, export.example_input(multiple=multiple), Path(folder) / 'student.onnx',
                                      optimize=False)
        except export.ExportError as error:
            row.remarks.append(f'ONNX check failed: {error}')
            return
        weights = export.graph_weights(done.path, net)
    if weights.unused:
        row.remarks.append(f'{weights.unused:,} parameters unused by the ONNX graph')
    row.graph_parameters = weights.stored


def measure(spec: StudentSpec, settings: Settings, log: Callable[[str], None] = lambda message: None) -> Row:
    """One row of the card (inputs padded to the student's size multiple, as every evaluation pads them)."""
    net = student_network(spec)
    multiple = size_multiple(net)
    runnable = padded_to_multiple(net, multiple)
    x = torch.rand(1, 3, *settings.lr_size, generator=torch.Generator().manual_seed(0))
    log(f'{spec.label}: MACs and latency')
    macs = count_macs(runnable, x)
    row = Row(spec.label, spec.note, sum(p.numel() for p in net.parameters()), macs,
              latency(runnable, x, settings.runs, settings.latency_budget))
    if multiple > 1:
        height, width = settings.lr_size
        row.remarks.append(f'input padded to {round_up(width, multiple)}x{round_up(height, multiple)}')
    if spec.ibsd:
        log(f'{spec.label}: IBSD training step')
        training_extras(spec, settings, row, net)
        if settings.export_check:
            log(f'{spec.label}: ONNX export')
            export_check(net, row, multiple)
    return row


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_note() -> str:
    """The system load when the table was made (other processes share the cores and skew the timings)."""
    try:
        return ', load averages {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) at the end'.format(*os.getloadavg())
    except (AttributeError, OSError):
        return ''


def header(settings: Settings) -> list[str]:
    height, width = settings.lr_size
    threads = torch.get_num_threads()
    return [
        f'Measured {datetime.date.today().isoformat()} with torch {torch.__version__} on {cpu_model()}, '
        f'{threads} thread{"s" if threads > 1 else ""}{load_note()} (`python scripts/model_card.py`).',
        '',
        f'- MACs and latency: one {width}x{height} LR image, x4 ({width * 4}x{height * 4} output), batch 1, float32; '
        f'MACs count convolutions and matrix products; latency is the median of {settings.runs} forward passes after '
        f'one warm-up pass (fewer, as noted, once they took {settings.latency_budget:g} s).',
        f'- IBSD columns (training only): estimator parameters for the student\'s default nodes (SwinIR: those of its '
        f'shipped YAML), and the median time '
        f'of an IBSD training step over a plain L1 step (batch {settings.train_batch}, LR patch '
        f'{settings.train_patch}, every IBSD term on, {settings.train_repeats} interleaved repeats). Inference '
        'extras: parameters of the student an IBSD run saves beyond the plain network\'s, and the parameters '
        'stored in its ONNX graph (exported unoptimised, each weight under its own name).',
        '',
    ]


def table(rows: list[Row], settings: Settings) -> str:
    lines = header(settings) + [
        '| student (x4) | configuration | parameters | MACs (G) | CPU latency (s) | IBSD estimator parameters '
        '(training only) | IBSD step / L1 step (training only) | inference extras |',
        '|---|---|---:|---:|---:|---:|---:|---:|']
    for row in rows:
        estimator = f'{row.estimator:,}' if row.estimator is not None else '—'
        step = (f'{row.step_ratio:.2f} ({row.step_times[1]:.3f} s / {row.step_times[0]:.3f} s)'
                if row.step_ratio is not None else '—')
        extra = '—' if row.inference_extra is None else f'{row.inference_extra:,}'
        if row.graph_parameters is not None:
            extra += f' (ONNX graph: {row.graph_parameters:,} parameters)'
        remark = f' ({"; ".join(row.remarks)})' if row.remarks else ''
        runs = f' ({len(row.latency)} run{"s" if len(row.latency) > 1 else ""})' \
            if len(row.latency) < settings.runs else ''
        lines.append(f'| {row.label} | {row.note}{remark} | {row.parameters:,} | {row.macs / 1e9:.1f} | '
                     f'{statistics.median(row.latency):.3f}{runs} | '
                     f'{estimator} | {step} | {extra} |')
    return '\n'.join(lines) + '\n'


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the model-card markers replaced by ``block``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f'no {START} ... {END} block')
    return text[:start + len(START)] + '\n' + block + text[end:]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--students', nargs='+', metavar='NAME',
                        help='labels or arch types to measure (default: all registered ones)')
    parser.add_argument('--runs', type=int, default=Settings.runs, help='timed forward passes per student')
    parser.add_argument('--latency-budget', type=float, default=Settings.latency_budget,
                        help='stop timing a student\'s forward passes after this many seconds (at least one pass)')
    parser.add_argument('--train-repeats', type=int, default=Settings.train_repeats,
                        help='timed IBSD and plain training steps per student')
    parser.add_argument('--train-batch', type=int, default=Settings.train_batch)
    parser.add_argument('--train-patch', type=int, default=Settings.train_patch, help='LR patch size')
    parser.add_argument('--threads', type=int, help='CPU threads (default: as torch chooses)')
    parser.add_argument('--no-export-check', action='store_true', help='skip the ONNX export check')
    parser.add_argument('--write', action='store_true',
                        help=f'also write docs/model_card.md and replace the block between {START} and {END} in '
                        'the --doc page, if it has one')
    parser.add_argument('--doc', '--readme', dest='doc', default=str(DOC),
                        help=f'page whose model-card block --write replaces (default: {DOC.relative_to(REPO)}; '
                        '--readme: the former name)')
    args = parser.parse_args(argv)
    for name in ('runs', 'train_repeats', 'train_batch', 'train_patch'):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = Settings(runs=args.runs, latency_budget=args.latency_budget, train_batch=args.train_batch,
                        train_patch=args.train_patch, train_repeats=args.train_repeats,
                        export_check=not args.no_export_check)
    specs = paper_students()
    if args.students:
        wanted = set(args.students)
        unknown = wanted - {s.label for s in specs} - {s.network['type'] for s in specs}
        if unknown:
            print(f'model_card: unknown students {sorted(unknown)}; known: {[s.label for s in specs]}',
                  file=sys.stderr)
            return 2
        specs = [s for s in specs if s.label in wanted or s.network['type'] in wanted]
    absent = [s.label for s in specs if s.network['type'] not in ARCH_REGISTRY]
    if absent:
        print(f'model_card: not in this version, left out: {", ".join(absent)}', file=sys.stderr)

    start = time.perf_counter()

    def log(message: str) -> None:
        print(f'model_card: [{time.perf_counter() - start:4.0f} s] {message}', file=sys.stderr, flush=True)

    rows = [measure(spec, settings, log) for spec in specs if spec.network['type'] in ARCH_REGISTRY]
    card = table(rows, settings)
    print(card, end='')
    log(f'done in {time.perf_counter() - start:.0f} s')
    if args.write:
        target = REPO / 'docs' / 'model_card.md'
        target.parent.mkdir(exist_ok=True)
        target.write_text('# Model card\n\n' + card)
        log(f'wrote {target}')
        doc = Path(args.doc)
        try:
            doc.write_text(replace_block(doc.read_text(), card))
            log(f'updated the model card block in {doc}')
        except (OSError, ValueError) as error:
            log(f'{doc} left as it is: {error}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
