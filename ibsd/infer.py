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
import inspect
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

import ibsd  # noqa: F401  (registers the archs)
from basicsr.utils.registry import ARCH_REGISTRY

from ibsd.archs.checkpoint import CheckpointError, load_pretrained
from ibsd.image_io import Picture, png_text, read_picture, to_pixels, write_png
from ibsd.errors import IBSDError, OptionError
from ibsd.models.tiling import tiled_forward
from ibsd.progress import progress_bar
from ibsd.threads import apply_threads, choose_threads, parse_threads

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}
COMPARE_SUFFIX = 'compare'
OUTPUT_MARK = ('Software', 'ibsd-infer')
"""PNG ``tEXt`` chunk written into every output: a later run over the folder leaves them out."""
MIN_TILE = 32
"""Smallest ``--tile``: below it the context around each tile costs many times the tile (``--tile 1`` ran
6 CPU minutes on a 120 px image)."""
SCALE_KEYWORDS = ('upscale', 'scale', 'upscale_factor', 'upsampling')
"""Constructor keywords through which archs take their scale (IMDN/RFDN: ``upscale``; RRDBNet: ``scale``)."""
AUTO_TILE_PIXELS = 512 * 512
"""``--tile auto`` runs network inputs up to this many pixels whole (IMDN x4 on the CPU: about 1.3 GiB)."""
AUTO_TILE_SIZE = 256
"""Tile side for larger inputs: 2000x1500 px then peak at about 2.2 GiB instead of 15 GiB."""
PROBE_SIZE = 48
TRAINED_PSNR = 20.
"""Below this PSNR against bicubic on the probe pattern a network is not a trained SR network."""
RANGE_MISMATCH_PSNR = 30.
RANGE_GAIN_PSNR = 10.


class InferError(IBSDError):
    """A problem that ends the run, reported as one line."""


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
    parser.add_argument('--model-path', required=True, help='checkpoint: BasicSR net_g_*.pth or official weights')
    parser.add_argument('--param-key', default='params_ema', help='checkpoint key to prefer (default: params_ema)')
    parser.add_argument('--opt', help='BasicSR YAML whose network_g describes the network')
    parser.add_argument('--arch', help='arch type, e.g. IMDN (when --opt is not given)')
    parser.add_argument('--scale', type=int,
                        help="output scale (default: 4 for --arch, the network's own for --opt or a fixed-scale "
                        'arch). A same-size network such as IMDN_AS gets a bicubic upscale by it first')
    parser.add_argument('--arch-opt', action='append', default=[], metavar='KEY=VALUE',
                        help='extra arch keyword, repeatable (e.g. num_feat=48)')
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
class NetworkSpec:
    """Keyword arguments of the network, which of them the user gave, and the scale asked for."""

    options: dict
    explicit: set
    scale: int | None


def scale_keyword(arch: type) -> str | None:
    """Name of the constructor argument that sets ``arch``'s scale; ``None`` for a fixed-scale arch."""
    parameters = inspect.signature(arch.__init__).parameters
    return next((name for name in SCALE_KEYWORDS if name in parameters), None)


def arch_class(name: str) -> type:
    if name not in ARCH_REGISTRY:
        known = sorted(ARCH_REGISTRY.keys())
        raise InferError(f"unknown arch '{name}'; registered archs: {', '.join(known)}")
    return ARCH_REGISTRY.get(name)


def network_spec(args: argparse.Namespace) -> NetworkSpec:
    if args.opt:
        try:
            with open(args.opt) as handle:
                options = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as error:
            raise InferError(f'cannot read --opt {args.opt}: {error}') from error
        if not isinstance(options, dict) or not isinstance(options.get('network_g'), dict):
            raise InferError(f'{args.opt} has no network_g')
        network = dict(options['network_g'])
        return NetworkSpec(network, set(network) - {'type'}, args.scale)
    network = {'type': args.arch}
    explicit = set()
    for item in args.arch_opt:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise InferError(f"--arch-opt expects KEY=VALUE, got '{item}'")
        network[key.strip()] = yaml.safe_load(value)
        explicit.add(key.strip())
    keyword = scale_keyword(arch_class(args.arch))
    if keyword and keyword not in network:
        network[keyword] = args.scale or 4
    return NetworkSpec(network, explicit, args.scale)


def build(spec: NetworkSpec) -> torch.nn.Module:
    options = dict(spec.options)
    name = options.pop('type', None)
    if not name:
        raise InferError('network_g has no type')
    try:
        return arch_class(name)(**options)
    except (TypeError, ValueError) as error:
        raise InferError(f'cannot build {name} with {options}: {error}') from error


def probe_pattern(size: int = PROBE_SIZE) -> torch.Tensor:
    """A smooth colour image [1, 3, size, size] with a soft edge, on which trained SR networks
    stay within a few grey levels of bicubic upscaling."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing='ij')
    disc = ((x - .5)**2 + (y - .5)**2 < .08).float()
    image = torch.stack([.5 + .3 * torch.sin(6 * x + 2 * y), (.3 + .5 * y) * (1 - .3 * disc) + .3 * disc,
                         .2 + .4 * x * (1 - y)]).clamp(.05, .95)
    return F.avg_pool2d(F.pad(image[None], (1, 1, 1, 1), mode='replicate'), 3, 1)


def bicubic(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1:
        return image
    return F.interpolate(image, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)


@torch.no_grad()
def probe(net: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[int, float]:
    """The network's own scale, and the PSNR (dB) of its output against bicubic on the probe pattern."""
    pattern = probe_pattern().to(device=device, dtype=dtype)
    try:
        out = net(pattern)
    except (RuntimeError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        name = net.__class__.__name__
        raise InferError(f'{name} fails on a {PROBE_SIZE}x{PROBE_SIZE} test image: {reason}') from error
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != 3:
        raise InferError(f'{net.__class__.__name__} does not map an RGB image to an RGB image')
    scale = out.shape[2] // PROBE_SIZE
    if scale < 1 or out.shape[2] != scale * PROBE_SIZE or out.shape[3] != scale * PROBE_SIZE:
        raise InferError(f'{net.__class__.__name__} maps {PROBE_SIZE}x{PROBE_SIZE} pixels to '
                         f'{out.shape[3]}x{out.shape[2]}: not an integer scale')
    error = (out.float().clamp(0, 1) - bicubic(pattern.float(), scale)).pow(2).mean().item()
    return scale, 10 * math.log10(1 / max(error, 1e-12))


def fit_pixel_range(net: torch.nn.Module, explicit: bool, device: torch.device, dtype: torch.dtype,
                    source: str) -> list[str]:
    """Check that ``net.img_range`` (1 or 255) suits the loaded weights; returns log lines.

    Weights trained on 0-255 pixel values (the official ``RFDN_AIM.pth``) run on 0-1 inputs give
    worse images (Set5 baby x4: 26.9 instead of 32.3 dB), and no error. Both ranges are tried on
    the probe pattern: if the other one is much closer to bicubic, it is used, unless the user
    set ``img_range``, in which case only a warning is given.
    """
    current = getattr(net, 'img_range', None)
    if current not in (1, 255):
        return []
    _, psnr = probe(net, device, dtype)
    if psnr >= RANGE_MISMATCH_PSNR:
        return []
    other = 255. if current == 1 else 1.
    net.img_range = other
    _, other_psnr = probe(net, device, dtype)
    if other_psnr < psnr + RANGE_GAIN_PSNR:
        net.img_range = current
        return []
    pixels = '0-255' if other == 255 else '0-1'
    if explicit:
        net.img_range = current
        return [f'warning: {source} looks trained on pixel values {pixels}: with img_range={current:g} the output '
                f'is {psnr:.1f} dB from bicubic on a test pattern, with img_range={other:g} {other_psnr:.1f} dB; '
                f'keeping img_range={current:g} as given']
    return [f'{source} expects pixel values {pixels}: using img_range={other:g} (output {other_psnr:.1f} dB from '
            f'bicubic on a test pattern, {psnr:.1f} dB with img_range={current:g}); '
            f'--arch-opt img_range={current:g} overrides']


class Upscaler:
    """Runs the network on one image: optional bicubic pre-upscale, whole or tiled."""

    def __init__(self, net: torch.nn.Module, device: torch.device, dtype: torch.dtype, pre_scale: int,
                 tile: str | int, tile_pad: int):
        self.net, self.device, self.dtype = net, device, dtype
        self.pre_scale, self.tile, self.tile_pad = pre_scale, tile, tile_pad

    def tile_for(self, height: int, width: int) -> int:
        """Tile size for an LR image of this size (0: whole image)."""
        if self.tile != 'auto':
            return int(self.tile)
        pixels = height * width * self.pre_scale ** 2
        return AUTO_TILE_SIZE if pixels > AUTO_TILE_PIXELS else 0

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 RGB ``[H, W, 3]`` in [0, 1] to the upscaled image, in [0, 1]."""
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        tensor = bicubic(tensor.to(device=self.device, dtype=torch.float32), self.pre_scale).to(self.dtype)
        tile = self.tile_for(*rgb.shape[:2])
        out = tiled_forward(self.net, tensor, tile, self.tile_pad) if tile else self.net(tensor)
        return out.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()

    def alpha(self, alpha: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
        """Upscale an alpha channel to ``size`` (height, width): with the network on grey, or bicubic."""
        if alpha.min() == alpha.max():
            return np.full(size, alpha.flat[0], np.float32)
        if mode == 'model':
            return self(np.repeat(alpha[:, :, None], 3, axis=2)).mean(axis=2)
        return np.clip(cv2.resize(alpha, (size[1], size[0]), interpolation=cv2.INTER_CUBIC), 0, 1)


def own_output(path: Path, suffix: str) -> bool:
    """Whether ``path`` is an output of this command: named like one (``*_<suffix>.png``, ``*_compare.png``)
    or carrying the mark it writes into every PNG (so outputs of a run with another ``--suffix`` count too)."""
    if path.name.endswith((f'_{suffix}.png', f'_{COMPARE_SUFFIX}.png')):
        return True
    return path.suffix.lower() == '.png' and png_text(path, OUTPUT_MARK[0]) == OUTPUT_MARK[1]


def list_images(path: Path, suffix: str = 'sr') -> tuple[list[Path], list[Path]]:
    """Images to upscale, and the files left out as outputs of an earlier run (folders only)."""
    if path.is_file():
        return [path], []
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return [p for p in found if not own_output(p, suffix)], [p for p in found if own_output(p, suffix)]
    raise InferError(f'input {path} does not exist')


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
        log(f'{job.source.name}: network input {width}x{height} is above {AUTO_TILE_PIXELS} pixels, running tiles '
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
    spec = network_spec(args)
    net = build(spec)
    try:
        load_pretrained(net, args.model_path, param_key=args.param_key)
    except (CheckpointError, OSError) as error:
        raise InferError(str(error)) from error
    net = net.to(device=device, dtype=dtype).eval()
    name = Path(args.model_path).name
    for line in fit_pixel_range(net, 'img_range' in spec.explicit, device, dtype, name):
        log(line)
    native, psnr = probe(net, device, dtype)
    if psnr < TRAINED_PSNR:
        log(f'warning: on a test pattern the output of {name} is {psnr:.1f} dB from bicubic upscaling (a trained '
            f'network: over {TRAINED_PSNR:.0f} dB); check the network options and the checkpoint')
    pre_scale = 1
    if spec.scale is not None and spec.scale != native:
        if native != 1:
            raise InferError(f'{net.__class__.__name__} as configured upscales x{native}, not x{spec.scale}: set its '
                             f'scale in --arch-opt or --opt, or drop --scale')
        pre_scale = spec.scale
        log(f'{net.__class__.__name__} keeps the input size: inputs get a bicubic x{pre_scale} upscale first')
    return Upscaler(net, device, dtype, pre_scale, args.tile, args.tile_pad)


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
