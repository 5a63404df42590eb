"""The manifest of an ``ibsd-prepare`` run: what it read and wrote, so that reruns never mix outputs.

``<out>/ibsd-prepare-<name>.json`` records the command, its options, every source file (size, mtime,
SHA-256) and every file written. :func:`claim` lets a rerun with the same sources and options continue
an interrupted run, refuses one with anything different (or a folder holding outputs without a
manifest) and, with ``--overwrite``, first deletes the outputs the manifest lists.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from ibsd.data.real_pairs import PairError, remove_partial_lmdbs, temporary_png
from ibsd.progress import progress_bar

MANIFEST_FORMAT = 1
LMDB_FILES = ('data.mdb', 'lock.mdb', 'meta_info.txt')  # what BasicSR's make_lmdb_from_imgs writes


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
                         ('source files no longer read', sorted(before.keys() - after.keys())),
                         ('source files changed', sorted(p for p in before.keys() & after.keys()
                                                         if before[p] != after[p]))):
        if paths:
            lines.append(f'{label} ({len(paths)}): {_listing(paths)}')
    if not lines and old['outputs'] != new['outputs']:  # same inputs, but this version names its files otherwise
        lines.append(f'files written: {len(old["outputs"])} listed before, {len(new["outputs"])} now, not the same')
    return lines


def read_manifest(path: Path) -> dict:
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


def write_manifest(path: Path, manifest: dict) -> None:
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
            previous = read_manifest(path)
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
    write_manifest(path, manifest)
    return manifest


def lmdb_target(out: Path, folder: str) -> Path:
    """The LMDB written for an output folder (``x2/train_HR`` -> ``<out>/x2/train_HR.lmdb``)."""
    directory = out.joinpath(*PurePosixPath(folder).parts)
    return directory.with_name(directory.name + '.lmdb')
