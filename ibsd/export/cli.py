"""``ibsd-export``: write a trained student as ONNX and TorchScript files, checked against PyTorch.

Examples::

    ibsd-export --arch IMDN --model-path IMDN_x4.pth -o exports/imdn_x4.onnx
    ibsd-export -opt options/train/IBSD/train_ibsd_imdn_x4_drealsr.yml --model-path net_g_400000.pth --fp16
    ibsd-export --arch RFDN --model-path RFDN_AIM.pth --verify-images Set5/LR_bicubic/x4

The network and its weights are loaded as ``ibsd-infer`` loads them (``-opt``/``--opt`` with a
``network_g``, or ``--arch``/``--scale``/``--arch-opt``; BasicSR ``net_g_*.pth`` or official
weights; the pixel range of the weights detected). It writes:

- ``<output>.onnx``: float32, input ``input`` [batch, 3, height, width] in [0, 1], output
  ``output``, batch, height and width dynamic (opset: the exporter's default, or ``--opset``);
- ``<output>_fp16.onnx`` with ``--fp16``: float16 weights, input and output;
- ``<output>.torchscript.pt``: ``torch.jit.trace`` of the network (``torch.jit.load`` it).

Before anything is written, each file is run (onnxruntime on the CPU, TorchScript) on the
``--verify-images`` (centre crops of at most ``--verify-size`` pixels) or on synthetic crops of
random sizes, and on a batch of two, and compared with the PyTorch network: the largest absolute
difference per input is printed, and above ``--atol`` (``--fp16-atol`` for the float16 file) the
export fails, with exit status 1 and nothing written. Errors are one line ``ibsd-export: error: ...``.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ibsd.export.base import ExportError, example_input
from ibsd.export.onnx import EXPORTERS, export_onnx, onnx_runner, require_onnx
from ibsd.export.student import Student, load_student
from ibsd.export.torchscript import TORCHSCRIPT_SUFFIX, export_torchscript, torchscript_runner
from ibsd.export.verification import (Check, failure_message, image_inputs, report, synthetic_inputs, verify,
                                      with_batch)
from ibsd.inference import InferenceError, add_network_arguments, network_from_command_line

DEFAULT_ATOL = 1e-4
DEFAULT_FP16_ATOL = 2e-2
DEFAULT_VERIFY_SIZE = 256


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-export', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.split('\n')[2:]))
    add_network_arguments(parser)
    parser.add_argument('-o', '--output', help='ONNX file to write (default: <checkpoint name>.onnx in the current '
                        f'folder); the TorchScript file is <output stem>{TORCHSCRIPT_SUFFIX}, the float16 one '
                        '<output stem>_fp16.onnx')
    parser.add_argument('--fp16', action='store_true', help='also write a float16 ONNX file')
    parser.add_argument('--no-torchscript', action='store_true', help='do not write the TorchScript file')
    parser.add_argument('--exporter', choices=EXPORTERS, default='auto',
                        help='ONNX exporter: dynamo (torch.export based), torchscript (the older tracer) or auto '
                        '(default: dynamo, the TorchScript-based one if that fails)')
    parser.add_argument('--opset', type=int, help="ONNX opset (default: the exporter's own)")
    parser.add_argument('--verify-images', help='image file or folder to check the exports on (default: synthetic '
                        'crops of random sizes)')
    parser.add_argument('--verify-size', type=int, default=DEFAULT_VERIFY_SIZE,
                        help=f'largest side of the centre crop taken from each verify image (default: '
                        f'{DEFAULT_VERIFY_SIZE})')
    parser.add_argument('--atol', type=float, default=DEFAULT_ATOL,
                        help=f'largest accepted |export - PyTorch| for float32 files, on outputs in [0, 1] '
                        f'(default: {DEFAULT_ATOL:g})')
    parser.add_argument('--fp16-atol', type=float, default=DEFAULT_FP16_ATOL,
                        help=f'the same for the float16 ONNX file (default: {DEFAULT_FP16_ATOL:g})')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic crops (default: 0)')
    parser.add_argument('--size-multiple', type=int, default=1, metavar='N',
                        help='for a network that takes only sides that are multiples of N (BasicSR\'s SwinIR: its '
                        'window size): the tracing input and the verification crops are made so (default: 1)')
    parser.add_argument('--no-verify', action='store_true', help='write the files without checking them')
    args = parser.parse_args(argv)
    if not args.opt and not args.arch:
        parser.error('give -opt (a YAML with network_g) or --arch')
    if args.scale is not None and args.scale < 1:
        parser.error('--scale must be >= 1')
    if args.opset is not None and args.opset < 7:
        parser.error(f'--opset must be >= 7, got {args.opset}')
    if args.verify_size < 16:
        parser.error(f'--verify-size must be >= 16, got {args.verify_size}')
    if not 1 <= args.size_multiple <= 64:
        parser.error(f'--size-multiple must be between 1 and 64, got {args.size_multiple}')
    for name in ('atol', 'fp16_atol'):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if args.output is not None and Path(args.output).suffix.lower() != '.onnx':
        parser.error(f'--output must name a .onnx file, got {args.output}')
    return args


@dataclass
class Targets:
    """The files to write (``None``: not asked for)."""

    onnx: Path
    fp16: Path | None
    torchscript: Path | None

    def all(self) -> list[Path]:
        return [path for path in (self.onnx, self.fp16, self.torchscript) if path is not None]


def targets(args: argparse.Namespace) -> Targets:
    onnx = Path(args.output) if args.output else Path(Path(args.model_path).stem + '.onnx')
    stem = onnx.with_suffix('')
    return Targets(onnx=onnx, fp16=stem.with_name(stem.name + '_fp16.onnx') if args.fp16 else None,
                   torchscript=None if args.no_torchscript else stem.with_name(stem.name + TORCHSCRIPT_SUFFIX))


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f'ibsd-export: {message}', file=sys.stderr)

    require_onnx()
    inputs = None
    if not args.no_verify:
        inputs = with_batch(image_inputs(args.verify_images, args.verify_size, args.size_multiple)
                            if args.verify_images else synthetic_inputs(args.seed, args.size_multiple))
    spec = network_from_command_line(args.opt, args.arch, args.arch_opt, args.scale)
    student = load_student(spec, args.model_path, args.param_key, log)
    files = targets(args)
    folder = files.onnx.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix='.ibsd-export-', dir=folder))
    except OSError as error:
        raise ExportError(f'cannot write to folder {folder}: {error.strerror or error}') from error
    try:
        return export_all(student, files, work, inputs, args, log)
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()


def export_all(student: Student, files: Targets, work: Path, inputs: list | None, args: argparse.Namespace,
               log: Callable[[str], None]) -> int:
    """Export into ``work``, verify, then move the files to their places."""
    print(f'ibsd-export: {student.name} x{student.scale} from {args.model_path} ({student.parameters:,} parameters)')
    multiple = args.size_multiple
    done = [export_onnx(student.net, example_input(multiple=multiple), work / files.onnx.name, args.exporter,
                        args.opset)]
    checks = [Check('ONNX', done[0].path, onnx_runner, args.atol)]
    if files.fp16 is not None:
        half = copy.deepcopy(student.net).half()
        done.append(export_onnx(half, example_input(torch.float16, multiple), work / files.fp16.name,
                                args.exporter, args.opset))
        checks.append(Check('ONNX fp16', done[-1].path, onnx_runner, args.fp16_atol))
    if files.torchscript is not None:
        done.append(export_torchscript(student.net, example_input(multiple=multiple), work / files.torchscript.name))
        checks.append(Check('TorchScript', done[-1].path, torchscript_runner, args.atol))
    for item in done:
        for note in item.notes:
            log(f'{item.path.name}: {note}')
    size = done[0].path.stat().st_size / 2**20
    print(f'ibsd-export: ONNX by the {done[0].exporter} exporter, opset {done[0].opset}, dynamic batch/height/width, '
          f'{size:.1f} MiB')
    if inputs is not None:
        verify(student.net, checks, inputs)
        for line in report(checks, inputs):
            print(f'  {line}')
        problem = failure_message(checks, inputs)
        if problem is not None:
            raise ExportError(f'verification failed: {problem}; nothing written')
    else:
        log('--no-verify: the files are not checked')
    for item, target in zip(done, files.all()):
        try:
            os.replace(item.path, target)
        except OSError as error:
            raise ExportError(f'cannot write {target}: {error.strerror or error}') from error
    print('ibsd-export: wrote ' + ', '.join(str(path) for path in files.all()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``ibsd-export``: the exit status (0: written; 1: an error, printed as one line; 2: a usage error)."""
    args = parse_args(argv)
    try:
        return run(args)
    except (ExportError, InferenceError) as error:
        print(f'ibsd-export: error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
