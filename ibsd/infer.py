"""``ibsd-infer``: upscale a photo or a folder of photos with a trained student.

Examples::

    ibsd-infer -i photo.jpg --arch IMDN --scale 4 --model-path experiments/X/models/net_g_latest.pth
    ibsd-infer -i photos/ -o results/ --opt options/train_ibsd_x4.yml --model-path net_g_400000.pth \\
        --tile 256 --compare
    ibsd-infer -i photos/ --arch RFDN --arch-opt img_range=255 --model-path RFDN_AIM.pth

The network comes from ``--opt`` (its ``network_g``) or from ``--arch`` / ``--scale`` /
``--arch-opt key=value``. Checkpoints may be BasicSR ``net_g_*.pth`` (``params_ema`` preferred)
or official releases. Unreadable files are reported and skipped; the exit status is 1 if any
file failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm

import ibsd  # noqa: F401  (registers the archs)
from basicsr.archs import build_network

from ibsd.archs.checkpoint import load_pretrained
from ibsd.models.tiling import tiled_forward

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}


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
    parser.add_argument('--scale', type=int, default=4, help='upscale of --arch (default: 4)')
    parser.add_argument('--arch-opt', action='append', default=[], metavar='KEY=VALUE',
                        help='extra arch keyword, repeatable (e.g. num_feat=48)')
    parser.add_argument('--tile', type=int, default=0, help='tile size in LR pixels (default: 0, whole image)')
    parser.add_argument('--tile-pad', type=int, default=16, help='context around each tile (default: 16)')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--suffix', default='sr', help='output name: <stem>_<suffix>.png (default: sr)')
    parser.add_argument('--compare', action='store_true', help='also save <stem>_compare.png: bicubic | model')
    args = parser.parse_args(argv)
    if not args.opt and not args.arch:
        parser.error('give --opt (a YAML with network_g) or --arch')
    if args.tile < 0 or args.tile_pad < 0:
        parser.error('--tile and --tile-pad must be >= 0')
    return args


def network_options(args: argparse.Namespace) -> dict:
    if args.opt:
        with open(args.opt) as handle:
            options = yaml.safe_load(handle) or {}
        if 'network_g' not in options:
            raise SystemExit(f'ibsd-infer: {args.opt} has no network_g')
        return dict(options['network_g'])
    network = {'type': args.arch, 'upscale': args.scale}
    for item in args.arch_opt:
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f"ibsd-infer: --arch-opt expects KEY=VALUE, got '{item}'")
        network[key.strip()] = yaml.safe_load(value)
    return network


def list_images(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    raise SystemExit(f'ibsd-infer: input {path} does not exist')


def read_image(path: Path) -> np.ndarray:
    """float32 BGR in [0, 1] with 3 channels; grey is replicated, alpha dropped, 16 bit scaled."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError('not a readable image')
    peak = 65535. if image.dtype == np.uint16 else 255.
    image = image.astype(np.float32) / peak
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@torch.no_grad()
def upscale(net: torch.nn.Module, image: np.ndarray, device: torch.device, dtype: torch.dtype,
            tile: int, tile_pad: int) -> np.ndarray:
    rgb = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)[None].to(device=device, dtype=dtype)
    out = tiled_forward(net, rgb, tile, tile_pad) if tile else net(rgb)
    out = out.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
    return np.round(out * 255.).astype(np.uint8)


def side_by_side(image: np.ndarray, sr: np.ndarray) -> np.ndarray:
    bicubic = cv2.resize(image, (sr.shape[1], sr.shape[0]), interpolation=cv2.INTER_CUBIC)
    bicubic = np.round(np.clip(bicubic, 0, 1) * 255.).astype(np.uint8)
    gap = np.full((sr.shape[0], 8, 3), 255, np.uint8)
    return np.concatenate([bicubic, gap, sr], axis=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device('cuda' if args.device == 'cuda' or (args.device == 'auto' and torch.cuda.is_available())
                          else 'cpu')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('ibsd-infer: --device cuda but CUDA is not available')
    dtype = torch.float16 if args.fp16 and device.type == 'cuda' else torch.float32
    if args.fp16 and device.type != 'cuda':
        print('ibsd-infer: --fp16 needs CUDA; running in fp32 on the CPU', file=sys.stderr)
    net = build_network(network_options(args))
    load_pretrained(net, args.model_path, param_key=args.param_key)
    net = net.to(device=device, dtype=dtype).eval()

    images = list_images(Path(args.input))
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in tqdm(images, desc='ibsd-infer', unit='image'):
        try:
            image = read_image(path)
            sr = upscale(net, image, device, dtype, args.tile, args.tile_pad)
            target = (out_dir or path.parent) / f'{path.stem}_{args.suffix}.png'
            cv2.imwrite(str(target), sr)
            if args.compare:
                cv2.imwrite(str(target.with_name(f'{path.stem}_compare.png')), side_by_side(image, sr))
        except Exception as error:  # one bad file never stops the batch
            failures.append((path, error))
            tqdm.write(f'ibsd-infer: skipped {path}: {error}', file=sys.stderr)
    done = len(images) - len(failures)
    print(f'ibsd-infer: {done} of {len(images)} images written to {out_dir or "the input folders"}'
          + (f'; {len(failures)} skipped' if failures else ''))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
