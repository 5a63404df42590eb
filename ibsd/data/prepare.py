"""``ibsd-prepare``: real-world SR data sets -> BasicSR folders and LMDBs (see ibsd.data.real_pairs).

Subcommands::

    ibsd-prepare drealsr   --root DRealSR --scale 4 --out datasets/DRealSR
    ibsd-prepare realsr    --root RealSR_V3 --scale 4 --out datasets/RealSR
    ibsd-prepare same-size --input City100_iPhoneX --hr-suffix H --lr-suffix L --scale 2 \\
                           --out datasets/City100 --val-count 20
    ibsd-prepare subimages --hr-dir A --lr-dir B --scale 4 --crop-size 192 --step 96 --out datasets/sub

Each writes ``<out>/x{s}/{split}_HR``, ``{split}_LR`` (identical names) and, for training splits,
``{split}_HR.lmdb`` / ``{split}_LR.lmdb``. Rerunning continues an interrupted run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ibsd.data.real_pairs import (Pair, PairError, drealsr_pairs, extract_subimages, folder_pairs, realsr_pairs,
                                  suffix_pairs, write_lmdb, write_pairs)


def _scale(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument('--scale', type=int, required=default is None, default=default, choices=(2, 3, 4),
                        help='upscaling factor')


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or 'ibsd-prepare', description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.split('\n')[2:]))
    commands = parser.add_subparsers(dest='command', required=True)
    for name, help_text, default_out in (('drealsr', 'DRealSR official layout (Train_x{s}, Test_x{s})',
                                          'datasets/DRealSR'),
                                         ('realsr', 'RealSR V3 official layout (Canon|Nikon/Train|Test/{s})',
                                          'datasets/RealSR')):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument('--root', required=True, type=Path, help='the data set folder as downloaded')
        _scale(sub)
        sub.add_argument('--out', type=Path, default=Path(default_out), help=f'output root (default: {default_out})')
        sub.add_argument('--no-lmdb', action='store_true', help='skip the training LMDBs')
    same = commands.add_parser('same-size', help='LR registered at the HR size (City100, RealSR V1/V2, NTIRE19)',
                               description='LR registered at the HR size: LR is resampled to 1/scale')
    same.add_argument('--input', type=Path, help='one folder holding both, told apart by --hr-suffix/--lr-suffix')
    same.add_argument('--hr-suffix', default='H', help='HR name suffix before the extension (default: H)')
    same.add_argument('--lr-suffix', default='L', help='LR name suffix before the extension (default: L)')
    same.add_argument('--hr-dir', type=Path, help='HR folder (with --lr-dir, instead of --input)')
    same.add_argument('--lr-dir', type=Path, help='LR folder with the same file names')
    _scale(same)
    same.add_argument('--out', type=Path, required=True, help='output root')
    same.add_argument('--val-count', type=int, default=0, help='the last N pairs (sorted) form the val split')
    same.add_argument('--no-lmdb', action='store_true', help='skip the training LMDBs')
    sub = commands.add_parser('subimages', help='cut aligned sub-images from large paired training images',
                              description='BasicSR extract_subimages for HR/LR pairs')
    sub.add_argument('--hr-dir', type=Path, required=True)
    sub.add_argument('--lr-dir', type=Path, required=True)
    _scale(sub)
    sub.add_argument('--crop-size', type=int, default=480, help='HR sub-image size (default: 480)')
    sub.add_argument('--step', type=int, default=240, help='HR step between sub-images (default: 240)')
    sub.add_argument('--thresh-size', type=int, default=0, help='keep a last sub-image if this much is left')
    sub.add_argument('--out', type=Path, required=True, help='writes <out>/train_HR_sub and train_LR_sub')
    sub.add_argument('--lmdb', action='store_true', help='also write LMDBs of the sub-images')
    return parser


def _finish(pairs_by_split: dict[str, list[Pair]], out: Path, scale: int, same_size: bool, lmdb: bool) -> None:
    for split, pairs in pairs_by_split.items():
        hr_dir, lr_dir = write_pairs(pairs, out, split, scale, same_size)
        if lmdb and split == 'train':
            write_lmdb(hr_dir)
            write_lmdb(lr_dir)
        print(f'{split}: {len(pairs)} pairs in {hr_dir} and {lr_dir}')


def run(args: argparse.Namespace) -> None:
    if args.command == 'subimages':
        out_hr, out_lr = args.out / 'train_HR_sub', args.out / 'train_LR_sub'
        count = extract_subimages(args.hr_dir, args.lr_dir, out_hr, out_lr, args.scale, args.crop_size, args.step,
                                  args.thresh_size)
        if args.lmdb:
            write_lmdb(out_hr)
            write_lmdb(out_lr)
        print(f'{count} sub-image pairs in {out_hr} and {out_lr}')
        return
    out = args.out / f'x{args.scale}'
    if args.command in ('drealsr', 'realsr'):
        collect = drealsr_pairs if args.command == 'drealsr' else realsr_pairs
        splits = {split: collect(args.root, args.scale, split) for split in ('train', 'test')}
        _finish(splits, out, args.scale, same_size=args.command == 'realsr', lmdb=not args.no_lmdb)
        return
    if args.input is not None:
        pairs = suffix_pairs(args.input, args.hr_suffix, args.lr_suffix)
    elif args.hr_dir is not None and args.lr_dir is not None:
        pairs = folder_pairs(args.hr_dir, args.lr_dir)
    else:
        raise PairError('same-size: give --input, or both --hr-dir and --lr-dir')
    if not 0 <= args.val_count < len(pairs):
        raise PairError(f'--val-count must be between 0 and {len(pairs) - 1}, got {args.val_count}')
    cut = len(pairs) - args.val_count
    splits = {'train': pairs[:cut], **({'val': pairs[cut:]} if args.val_count else {})}
    _finish(splits, out, args.scale, same_size=True, lmdb=not args.no_lmdb)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        run(args)
    except PairError as error:
        parser.exit(2, f'{parser.prog}: error: {error}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
