"""``ibsd-infer``: upscale a photo or a folder of photos with a trained student.

Examples::

    ibsd-infer -i photo.jpg --arch IMDN --scale 4 --model-path experiments/X/models/net_g_latest.pth
    ibsd-infer -i photos/ -o results/ --opt options/train_ibsd_x4.yml --model-path net_g_400000.pth --compare
    ibsd-infer -i photos/ --arch RFDN --model-path RFDN_AIM.pth
    ibsd-infer -i photos/ --arch IMDN_AS --scale 2 --model-path IMDN_AS.pth

The network comes from ``--opt`` (its ``network_g``) or from ``--arch`` / ``--scale`` /
``--arch-opt key=value``. Checkpoints may be BasicSR ``net_g_*.pth`` (``params_ema`` preferred)
or official releases. Outputs are PNG files ``<stem>_<suffix>.png`` at the input's bit depth,
with its alpha channel and EXIF orientation. Unreadable files and failed writes are reported;
the exit status is 1 if any image was not written.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ibsd.image_io import Picture, read_picture, to_pixels, write_png
from ibsd.errors import OptionError
from ibsd.inference import (AUTO_TILE_PIXELS, AUTO_TILE_SIZE, COMPARE_SUFFIX, OUTPUT_MARK, InferenceError, Upscaler,
                            add_network_arguments, list_images, load_network, network_from_command_line)
from ibsd.progress import progress_bar
from ibsd.threads import apply_threads, choose_threads, parse_threads

MIN_TILE = 32
"""Smallest ``--tile``: below it the context around each tile costs many times the tile (``--tile 1`` ran
6 CPU minutes on a 120 px image)."""

InferError = InferenceError
"""The one-line error of this command (the library's :class:`~ibsd.inference.InferenceError`)."""


def tile_option(value: str) -> str | int:
    if value == 'auto':
        return value
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of pixels, got '{value}'") from None
    if tile < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {tile}')
    if 0 < tile < MIN_TILE:
        raise argparse.ArgumentTypeError(f'must be 0 (whole image) or at least {MIN_TILE} pixels, got {tile}')
    return tile


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-infer', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.split('\n')[2:]))
    parser.add_argument('-i', '--input', required=True, help='image file or folder of images')
    parser.add_argument('-o', '--output', help='output folder (default: next to each input)')
    add_network_arguments(parser)
    parser.add_argument('--tile', type=tile_option, default='auto',
                        help=f'tile size in LR pixels; auto (default): whole image up to {AUTO_TILE_PIXELS} pixels, '
                        f'tiles of {AUTO_TILE_SIZE} above; 0: always the whole image')
    parser.add_argument('--tile-pad', type=int, default=16, help='context around each tile (default: 16)')
    parser.add_argument('--alpha', choices=('model', 'bicubic'), default='model',
                        help='how to upscale an alpha channel (default: model, run on it as grey)')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--suffix', default='sr', help='output name: <stem>_<suffix>.png (default: sr)')
    parser.add_argument('--compare', action='store_true', help='also save <stem>_compare.png: bicubic | model')
    parser.add_argument('--threads',
                        help='CPU threads (default: OMP_NUM_THREADS, else auto: the idle cores, on the CPU)')
    args = parser.parse_args(argv)
    try:
        args.threads = parse_threads(args.threads, '--threads')
    except OptionError as error:
        parser.error(str(error))
    if not args.opt and not args.arch:
        parser.error('give --opt (a YAML with network_g) or --arch')
    if args.tile_pad < 0:
        parser.error('--tile-pad must be >= 0')
    if args.scale is not None and args.scale < 1:
        parser.error('--scale must be >= 1')
    if not args.suffix or any(c in args.suffix for c in '/\\') or args.suffix == COMPARE_SUFFIX:
        parser.error(f"--suffix must be a non-empty name other than '{COMPARE_SUFFIX}', without path separators")
    return args


@dataclass
class Job:
    source: Path
    target: Path
    compare: Path | None


def plan_outputs(images: list[Path], out_dir: Path | None, suffix: str,
                 compare: bool) -> tuple[list[Job], list[str]]:
    """Output paths, distinct within the run, and log lines for the names that had to change.

    Inputs that share a stem (``x.png``, ``x.jpg``; compared case-insensitively) keep their
    extension in the output name (``x_png_sr.png``, ``x_jpg_sr.png``); a name still taken gets
    a number.
    """
    def names(base: str) -> list[str]:
        return [f'{base}_{suffix}.png'] + ([f'{base}_{COMPARE_SUFFIX}.png'] if compare else [])

    groups = defaultdict(list)
    for image in images:
        groups[((out_dir or image.parent), image.stem.casefold())].append(image)
    bases, notes = {}, []
    for members in groups.values():
        for image in members:
            bases[image] = image.stem if len(members) == 1 else f'{image.stem}_{image.suffix[1:]}'
        if len(members) > 1:
            notes.append(f"{', '.join(m.name for m in members)} share the name '{members[0].stem}': writing "
                         + ', '.join(names(bases[m])[0] for m in members))
    taken, jobs = set(), []
    for image in images:
        folder = out_dir or image.parent
        base = candidate = bases[image]
        number = 2
        while any(str(folder / name).casefold() in taken for name in names(candidate)):
            candidate, number = f'{base}_{number}', number + 1
        if candidate != base:
            notes.append(f'{image.name}: {names(base)[0]} is taken in this run, writing {names(candidate)[0]}')
        outputs = [folder / name for name in names(candidate)]
        taken.update(str(p).casefold() for p in outputs)
        jobs.append(Job(image, outputs[0], outputs[1] if compare else None))
    return jobs, notes


def side_by_side(lr: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """Bicubic upscale of ``lr`` | 8 px gap | ``sr``, both in [0, 1] with the same channels."""
    height, width = sr.shape[:2]
    up = np.clip(cv2.resize(lr, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    up = up.reshape(sr.shape)
    gap = np.ones((height, 8) + sr.shape[2:], np.float32)
    return np.concatenate([up, gap, sr], axis=1)


def upscale_picture(upscaler: Upscaler, picture: Picture, alpha_mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = upscaler(picture.rgb)
    alpha = None if picture.alpha is None else upscaler.alpha(picture.alpha, rgb.shape[:2], alpha_mode)
    return rgb, alpha


def process(job: Job, upscaler: Upscaler, alpha_mode: str, log) -> None:
    picture = read_picture(job.source)
    height, width = (side * upscaler.pre_scale for side in picture.rgb.shape[:2])
    tile = upscaler.tile_for(*picture.rgb.shape[:2])
    if tile and upscaler.tile == 'auto':
        log(f'{job.source.name}: network input {width}x{height} is above {upscaler.auto_pixels} pixels, running tiles '
            f'of {tile} px with {upscaler.tile_pad} px context (--tile 0: whole image)')
    rgb, alpha = upscale_picture(upscaler, picture, alpha_mode)
    write_png(job.target, to_pixels(rgb, alpha, picture.peak), dict([OUTPUT_MARK]))
    if job.compare is not None:
        lr = picture.rgb if picture.alpha is None else np.dstack([picture.rgb, picture.alpha])
        sr = rgb if alpha is None else np.dstack([rgb, alpha])
        both = side_by_side(lr, sr)
        write_png(job.compare, to_pixels(both[:, :, :3], both[:, :, 3] if alpha is not None else None, picture.peak),
                  dict([OUTPUT_MARK]))


def select_device(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise InferError('--device cuda but CUDA is not available')
    device = torch.device('cuda' if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
                          else 'cpu')
    if args.fp16 and device.type != 'cuda':
        print('ibsd-infer: --fp16 needs CUDA; running in fp32 on the CPU', file=sys.stderr)
    return device, torch.float16 if args.fp16 and device.type == 'cuda' else torch.float32


def prepare(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, log) -> Upscaler:
    """Build and load the network, check its pixel range and scale, and decide the pre-upscale."""
    spec = network_from_command_line(args.opt, args.arch, args.arch_opt, args.scale)
    loaded = load_network(spec, args.model_path, param_key=args.param_key, device=device, dtype=dtype, log=log)
    return Upscaler.of(loaded, args.tile, args.tile_pad)


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        tqdm.write(f'ibsd-infer: {message}', file=sys.stderr)

    device, dtype = select_device(args)
    default = torch.get_num_threads()
    threads, source = choose_threads(args.threads, None, device.type == 'cpu', default)
    apply_threads(threads)
    images, outputs = list_images(Path(args.input), args.suffix)
    if outputs:
        log(f'left out {len(outputs)} outputs of ibsd-infer in {args.input} (named *_{args.suffix}.png or '
            f'*_{COMPARE_SUFFIX}.png, or marked in the PNG; give one as -i to upscale it)')
    upscaler = prepare(args, device, dtype, log)
    if device.type == 'cpu' and threads != default:
        log(f'{threads} CPU thread(s) ({source})')
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InferError(f'cannot create output folder {out_dir}: {error.strerror or error}') from error
    jobs, notes = plan_outputs(images, out_dir, args.suffix, args.compare)
    for note in notes:
        log(note)
    failures = []
    for job in progress_bar(jobs, desc='ibsd-infer', unit='image'):
        try:
            process(job, upscaler, args.alpha, log)
        except OSError as error:  # a failed write: name the file, go on with the others
            failures.append(job.source)
            log(f'not written {job.source}: {error}')
        except Exception as error:  # one bad file never stops the batch
            failures.append(job.source)
            log(f'skipped {job.source}: {error}')
    done = len(jobs) - len(failures)
    print(f'ibsd-infer: {done} of {len(jobs)} images written to {out_dir or "the input folders"}'
          + (f'; {len(failures)} failed (listed above)' if failures else ''))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except InferError as error:
        print(f'ibsd-infer: error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
