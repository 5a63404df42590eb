"""``ibsd-prepare``: real-world SR data sets -> BasicSR folders and LMDBs (see ibsd.data.real_pairs).

Subcommands::

    ibsd-prepare drealsr   --root DRealSR --scale 4 --out datasets/DRealSR
    ibsd-prepare realsr    --root RealSR_V3 --scale 4 --out datasets/RealSR
    ibsd-prepare same-size --input City100_iPhoneX --hr-suffix H --lr-suffix L --scale 2 \\
                           --out datasets/City100 --val-count 20 [--train-count 10]
    ibsd-prepare subimages --hr-dir A --lr-dir B --scale 4 --crop-size 192 --step 96 --out datasets/sub

Each writes ``<out>/x{s}/{split}_HR``, ``{split}_LR`` (identical names) and, for training splits,
``{split}_HR.lmdb`` / ``{split}_LR.lmdb`` (subimages: ``<out>/train_{HR,LR}_sub``).
A manifest, ``<out>/ibsd-prepare-x{s}.json`` (subimages: ``ibsd-prepare-subimages.json``),
records the command, its options, every source file (size, mtime, SHA-256) and every file
written. A rerun with the same sources and options continues an interrupted run and writes only
missing files; a rerun with anything different, or into a folder holding outputs without a
manifest, is refused, and with --overwrite first deletes the outputs the manifest lists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ibsd.data.real_pairs import (Pair, PairError, drealsr_pairs, folder_pairs, plan_subimages, realsr_pairs,
                                  suffix_pairs, write_lmdb, write_pairs,
                                  write_subimages)
from ibsd.data.manifest import LMDB_FILES, Job, claim, manifest_path, write_manifest



def _scale(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument('--scale', type=int, required=default is None, default=default, choices=(2, 3, 4),
                        help='upscaling factor')


def _overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--overwrite', action='store_true',
                        help='delete the outputs of an earlier run into --out that differs (or has no manifest) '
                             'and prepare again')


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
        _overwrite(sub)
    same = commands.add_parser('same-size', help='LR registered at the HR size (City100, RealSR V1/V2, NTIRE19)',
                               description='LR registered at the HR size: LR is resampled to 1/scale')
    same.add_argument('--input', type=Path, help='one folder holding both, told apart by --hr-suffix/--lr-suffix')
    same.add_argument('--hr-suffix', default='H', help='HR name suffix before the extension (default: H)')
    same.add_argument('--lr-suffix', default='L', help='LR name suffix before the extension (default: L)')
    same.add_argument('--hr-dir', type=Path, help='HR folder (with --lr-dir, instead of --input)')
    same.add_argument('--lr-dir', type=Path, help='LR folder with the same file names')
    _scale(same)
    same.add_argument('--out', type=Path, required=True, help='output root')
    same.add_argument('--val-count', type=int, default=0,
                      help='the last N pairs (sorted) form the val split (all: an evaluation set, no train split)')
    same.add_argument('--train-count', type=int, default=None,
                      help='keep only the first N pairs (sorted by file name) of the train split, for scarce-data '
                           'training; the val split is the same as without it (default: all)')
    same.add_argument('--no-lmdb', action='store_true', help='skip the training LMDBs')
    _overwrite(same)
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
    _overwrite(sub)
    return parser


# --------------------------------------------------------------------------- what a run reads and writes
# Options added after the manifest format: recorded only when given, so that folders prepared by earlier
# versions (whose manifests do not name them) still match a rerun without them.
RECORDED_WHEN_GIVEN = {'train_count'}


def _options(args: argparse.Namespace) -> dict[str, object]:
    """Every option that shapes the outputs, by its command-line name; folders as absolute paths."""
    return {f'--{key.replace("_", "-")}': str(value.resolve()) if isinstance(value, Path) else value
            for key, value in sorted(vars(args).items())
            if key not in ('command', 'out', 'overwrite') and not (key in RECORDED_WHEN_GIVEN and value is None)}


def _lmdb_outputs(folder: str) -> list[str]:
    return [f'{folder}.lmdb/{name}' for name in LMDB_FILES]


def _sources(pairs: list[Pair]) -> list[Path]:
    return sorted({path for pair in pairs for path in (pair.hr, pair.lr)})


def _finish(pairs_by_split: dict[str, list[Pair]], out: Path, scale: int, same_size: bool, lmdb: bool) -> None:
    for split, pairs in pairs_by_split.items():
        hr_dir, lr_dir = write_pairs(pairs, out, split, scale, same_size)
        if lmdb and split == 'train':
            names = [f'{pair.key}.png' for pair in pairs]
            write_lmdb(hr_dir, names)
            write_lmdb(lr_dir, names)
        print(f'{split}: {len(pairs)} pairs in {hr_dir} and {lr_dir}')


def pairs_job(args: argparse.Namespace) -> Job:
    """drealsr, realsr and same-size: ``<out>/x{s}/{split}_{HR,LR}`` (+ LMDBs of the train split)."""
    if args.command in ('drealsr', 'realsr'):
        collect = drealsr_pairs if args.command == 'drealsr' else realsr_pairs
        splits = {split: collect(args.root, args.scale, split) for split in ('train', 'test')}
        same_size, possible_splits = args.command == 'realsr', ('train', 'test')
    else:
        if args.input is not None:
            pairs = suffix_pairs(args.input, args.hr_suffix, args.lr_suffix)
        elif args.hr_dir is not None and args.lr_dir is not None:
            pairs = folder_pairs(args.hr_dir, args.lr_dir)
        else:
            raise PairError('same-size: give --input, or both --hr-dir and --lr-dir')
        if not 0 <= args.val_count <= len(pairs):
            raise PairError(f'--val-count must be between 0 and {len(pairs)} (all: an evaluation-only set), '
                            f'got {args.val_count}')
        cut = len(pairs) - args.val_count
        if args.train_count is not None and not cut:
            raise PairError(f'--train-count {args.train_count}: --val-count {args.val_count} leaves no pairs for '
                            f'training')
        if args.train_count is not None and not 1 <= args.train_count <= cut:
            raise PairError(f'--train-count must be between 1 and {cut} (the pairs left for training after '
                            f'--val-count {args.val_count}), got {args.train_count}')
        if args.train_count == cut:
            args.train_count = None  # all of them: the same outputs, and the same manifest, as without it
        kept = cut if args.train_count is None else args.train_count
        splits = {**({'train': pairs[:kept]} if cut else {}), **({'val': pairs[cut:]} if args.val_count else {})}
        same_size, possible_splits = True, ('train', 'val')
    base, lmdb = f'x{args.scale}', not args.no_lmdb
    outputs = []
    for split, pairs in splits.items():
        for side in ('HR', 'LR'):
            outputs += [f'{base}/{split}_{side}/{pair.key}.png' for pair in pairs]
            if lmdb and split == 'train':
                outputs += _lmdb_outputs(f'{base}/{split}_{side}')
    folders = [f'{base}/{split}_{side}' for split in possible_splits for side in ('HR', 'LR')]
    return Job(base, args.command, _options(args), _sources([p for pairs in splits.values() for p in pairs]), outputs,
               folders, lambda: _finish(splits, args.out / base, args.scale, same_size, lmdb))


def subimages_job(args: argparse.Namespace) -> Job:
    """subimages: ``<out>/train_{HR,LR}_sub`` (+ LMDBs with --lmdb)."""
    pairs = folder_pairs(args.hr_dir, args.lr_dir)
    plan = plan_subimages(pairs, args.scale, args.crop_size, args.step, args.thresh_size)
    out_hr, out_lr = args.out / 'train_HR_sub', args.out / 'train_LR_sub'
    names = [name for cuts in plan.values() for name, _, _ in cuts]
    outputs = []
    for folder in ('train_HR_sub', 'train_LR_sub'):
        outputs += [f'{folder}/{name}' for name in names] + (_lmdb_outputs(folder) if args.lmdb else [])

    def build() -> None:
        count = write_subimages(pairs, plan, out_hr, out_lr, args.scale, args.crop_size)
        if args.lmdb:
            write_lmdb(out_hr, names)
            write_lmdb(out_lr, names)
        print(f'{count} sub-image pairs in {out_hr} and {out_lr}')

    return Job('subimages', args.command, _options(args), _sources(pairs), outputs, ['train_HR_sub', 'train_LR_sub'],
               build)


# --------------------------------------------------------------------------- the manifest
def run(args: argparse.Namespace) -> None:
    job = subimages_job(args) if args.command == 'subimages' else pairs_job(args)
    manifest = claim(args.out, job, args.overwrite)
    job.build()
    write_manifest(manifest_path(args.out, job), {**manifest, 'complete': True})


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
