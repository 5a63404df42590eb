"""``ibsd-prepare``: real-world SR data sets -> BasicSR folders and LMDBs (see ibsd.data.real_pairs).

Subcommands::

    ibsd-prepare drealsr   --root DRealSR --scale 4 --out datasets/DRealSR
    ibsd-prepare realsr    --root RealSR_V3 --scale 4 --out datasets/RealSR
    ibsd-prepare same-size --input City100_iPhoneX --hr-suffix H --lr-suffix L --scale 2 \\
                           --out datasets/City100 --val-count 20
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
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ibsd.data.real_pairs import (Pair, PairError, drealsr_pairs, folder_pairs, plan_subimages, realsr_pairs,
                                  remove_partial_lmdbs, suffix_pairs, temporary_png, write_lmdb, write_pairs,
                                  write_subimages)
from ibsd.progress import progress_bar

MANIFEST_FORMAT = 1
LMDB_FILES = ('data.mdb', 'lock.mdb', 'meta_info.txt')  # what BasicSR's make_lmdb_from_imgs writes


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
@dataclass
class Job:
    """One run: its manifest name, options, source files, the files it writes (relative to --out, POSIX
    separators) and the folders an older version without manifests may have filled."""
    name: str
    command: str
    options: dict[str, object]
    sources: list[Path]
    outputs: list[str]
    folders: list[str]
    build: Callable[[], None]


def _options(args: argparse.Namespace) -> dict[str, object]:
    """Every option that shapes the outputs, by its command-line name; folders as absolute paths."""
    return {f'--{key.replace("_", "-")}': str(value.resolve()) if isinstance(value, Path) else value
            for key, value in sorted(vars(args).items()) if key not in ('command', 'out', 'overwrite')}


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
        splits = {**({'train': pairs[:cut]} if cut else {}), **({'val': pairs[cut:]} if args.val_count else {})}
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
def manifest_path(out: Path, job: Job) -> Path:
    return out / f'ibsd-prepare-{job.name}.json'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(sources: list[Path], known: dict[str, dict]) -> list[dict]:
    """Path, size, mtime and SHA-256 of each source; the hash of a ``known`` record is reused when its
    size and mtime are unchanged, so a rerun reads only files that were touched."""
    records = []
    for path in progress_bar(sources, desc='checking sources', unit='file', leave=False):
        stat, name = path.stat(), str(path.resolve())
        old = known.get(name)
        same = old is not None and (old.get('size'), old.get('mtime_ns')) == (stat.st_size, stat.st_mtime_ns)
        records.append({'path': name, 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns,
                        'sha256': old['sha256'] if same else _sha256(path)})
    return records


def _listing(items: list[str], limit: int = 5) -> str:
    return ', '.join(items[:limit]) + (f' and {len(items) - limit} more' if len(items) > limit else '')


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two manifests, one line per option and per kind of source change."""
    lines = []
    for key in ('format', 'command'):
        if old.get(key) != new[key]:
            lines.append(f'{key}: {old.get(key)} -> {new[key]}')
    old_options, new_options = old['options'], new['options']
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key, '(not given)') != new_options.get(key, '(not given)'):
            lines.append(f'{key}: {old_options.get(key, "(not given)")} -> {new_options.get(key, "(not given)")}')
    before = {r['path']: (r['size'], r['sha256']) for r in old['inputs']}
    after = {r['path']: (r['size'], r['sha256']) for r in new['inputs']}
    for label, paths in (('source files added', sorted(after.keys() - before.keys())),
                         ('source files removed', sorted(before.keys() - after.keys())),
                         ('source files changed', sorted(p for p in before.keys() & after.keys()
                                                         if before[p] != after[p]))):
        if paths:
            lines.append(f'{label} ({len(paths)}): {_listing(paths)}')
    if not lines and old['outputs'] != new['outputs']:  # same inputs, but this version names its files otherwise
        lines.append(f'files written: {len(old["outputs"])} listed before, {len(new["outputs"])} now, not the same')
    return lines


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
        valid = (isinstance(manifest, dict) and isinstance(manifest.get('options'), dict)
                 and all(isinstance(manifest.get(key), list) for key in ('inputs', 'outputs'))
                 and all(isinstance(r, dict) and {'path', 'size', 'mtime_ns', 'sha256'} <= r.keys()
                         for r in manifest['inputs']))
        if not valid:
            raise ValueError('not an ibsd-prepare manifest')
        return manifest
    except (OSError, ValueError) as error:
        raise PairError(f'{path}: unreadable manifest ({error}); rerun with --overwrite to delete the outputs '
                        f'in the folders it would list and prepare again') from error


def _write_manifest(path: Path, manifest: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix('.json.tmp')
    temporary.write_text(json.dumps(manifest, indent=1) + '\n')
    os.replace(temporary, path)


def _inside(out: Path, relative: str, manifest: Path) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or '..' in parts:
        raise PairError(f'{manifest}: lists {relative!r}, which is not a path inside {out}; not deleting anything')
    return out.joinpath(*parts)


def listed_files(out: Path, manifest: dict, path: Path) -> list[Path]:
    """The outputs a manifest lists, with the temporary ``.tmp.png`` of each PNG (an interrupted write)."""
    files = []
    for relative in manifest['outputs']:
        target = _inside(out, str(relative), path)
        files += [target, temporary_png(target)] if target.suffix == '.png' else [target]
    return files


def unlisted_files(out: Path, job: Job) -> list[Path]:
    """Outputs an older version (without manifests) may have left in this job's folders: their PNGs and
    LMDB files."""
    files = []
    for folder in job.folders:
        directory = out.joinpath(*PurePosixPath(folder).parts)
        if directory.is_dir():
            files += sorted(p for p in directory.glob('*.png') if p.is_file())
        files += [p for p in (lmdb_target(out, folder) / name for name in LMDB_FILES) if p.is_file()]
    return files


def delete(out: Path, files: list[Path]) -> int:
    """Delete ``files`` (those that exist), then the folders under ``out`` they leave empty."""
    count, folders = 0, set()
    for path in files:
        if path.is_file() or path.is_symlink():
            path.unlink()
            count += 1
            folders.update(parent for parent in path.parents if out in parent.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return count


def claim(out: Path, job: Job, overwrite: bool) -> dict:
    """Check ``out`` against the manifest of an earlier run of ``job``'s kind and record this run.

    Same sources and options: the outputs are kept (missing ones are written). Anything else, an
    unreadable manifest, or outputs without a manifest: :class:`PairError` naming what differs,
    unless ``overwrite``, which deletes the previous outputs (only those the manifest lists; without
    a manifest, the PNGs and LMDB files in this job's output folders) first.
    """
    path = manifest_path(out, job)
    previous = None
    if path.exists():
        try:
            previous = _read_manifest(path)
        except PairError:
            if not overwrite:
                raise
    known = {r['path']: r for r in previous['inputs']} if previous else {}
    manifest = {'format': MANIFEST_FORMAT, 'command': job.command, 'options': job.options,
                'inputs': fingerprint(job.sources, known), 'outputs': job.outputs, 'complete': False}
    if previous is not None:
        changes = differences(previous, manifest)
        if overwrite:
            count = delete(out, listed_files(out, previous, path))
            print(f'--overwrite: deleted {count} files listed in {path}')
        elif changes:
            raise PairError(f'{out} holds the outputs of a run with other sources or options (recorded in '
                            f'{path}):\n  ' + '\n  '.join(changes) + '\nRerun with --overwrite to delete those '
                            'outputs and prepare again, or choose another --out.')
        else:
            state = 'finished' if previous.get('complete') else 'interrupted'
            print(f'{path}: same sources and options as the {state} run that wrote it: keeping its outputs and '
                  f'writing any that are missing')
    else:
        stale = unlisted_files(out, job)
        if stale and not overwrite:
            raise PairError(f'{out} holds outputs without a manifest ({path} is missing; e.g. {stale[0]}), so what '
                            f'produced them is unknown. Rerun with --overwrite to delete the PNG and LMDB files in '
                            f'{", ".join(job.folders)} and prepare again, or choose another --out.')
        if stale:
            print(f'--overwrite: deleted {delete(out, stale)} files without a manifest')
    if overwrite:
        removed = sum(remove_partial_lmdbs(lmdb_target(out, folder)) for folder in job.folders)
        if removed:
            print(f'--overwrite: deleted {removed} partial LMDB folder(s) of an interrupted run')
    _write_manifest(path, manifest)
    return manifest


def lmdb_target(out: Path, folder: str) -> Path:
    """The LMDB written for an output folder (``x2/train_HR`` -> ``<out>/x2/train_HR.lmdb``)."""
    directory = out.joinpath(*PurePosixPath(folder).parts)
    return directory.with_name(directory.name + '.lmdb')


def run(args: argparse.Namespace) -> None:
    job = subimages_job(args) if args.command == 'subimages' else pairs_job(args)
    manifest = claim(args.out, job, args.overwrite)
    job.build()
    _write_manifest(manifest_path(args.out, job), {**manifest, 'complete': True})


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
