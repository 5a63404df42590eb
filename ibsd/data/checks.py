"""Data set checks run before the first iteration, and read errors that name the files.

basicsr finds most data problems only when a bad sample is drawn, possibly hours in, and then
without naming it (a corrupt PNG gives ``'NoneType' object has no attribute 'astype'``; a missing
``dataroot_gt`` is a bare ``KeyError``). :func:`check_dataset` checks a data set's options and
every pair from headers only (image headers on disk, ``meta_info.txt`` for LMDB), so that it is
fast on large sets; :func:`name_files_on_error` makes a data set's read errors name the pair.
"""
from __future__ import annotations

import functools
import math
import os
import re
import time
from os import path as osp
from typing import Callable, Iterable

from ibsd.data.memory_backend import BACKEND as MEMORY_BACKEND
from ibsd.errors import IBSDError

IMAGE_EXTENSIONS = frozenset({'.png', '.jpg', '.jpeg', '.jpe', '.bmp', '.dib', '.tif', '.tiff', '.webp', '.ppm',
                              '.pgm', '.pbm', '.pnm', '.jp2', '.hdr', '.pic', '.exr', '.pfm', '.sr', '.ras'})
META_LINE = re.compile(r'^(?P<name>.+?) \((?P<h>\d+),\s*(?P<w>\d+)(?:,\s*\d+)?\)(?:\s+\S+)?\s*$')
PAIRED_TYPES = ('PairedImageDataset',)
SHOWN = 3


class DataCheckError(IBSDError, ValueError):
    """A data set whose options or files cannot work, with the data set and file named."""


def _where(dataset_opt: dict) -> str:
    return f"datasets:{dataset_opt.get('phase', '?')} ({dataset_opt.get('name', 'unnamed')})"


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f' and {len(names) - SHOWN} more' if len(names) > SHOWN else ''
    return ', '.join(names[:SHOWN]) + more


def read_meta_info(lmdb_path: str) -> dict[str, tuple[int, int]]:
    """``key -> (height, width)`` from an LMDB's ``meta_info.txt`` (lines ``name (h,w,c) compression``).

    The key is what basicsr pairs GT and LQ by: the line up to its first ``'.'``.
    """
    meta = osp.join(lmdb_path, 'meta_info.txt')
    if not osp.isfile(meta):
        raise DataCheckError(f'{lmdb_path}: no meta_info.txt (an LMDB written by basicsr or ibsd-prepare has one)')
    sizes = {}
    with open(meta) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            match = META_LINE.match(line.strip())
            if match is None:
                raise DataCheckError(f"{meta}:{number}: cannot read '{line.strip()}' "
                                     "(expected 'name (h,w,c) compression')")
            if '.' not in match['name']:
                raise DataCheckError(f"{meta}:{number}: '{match['name']}' has no extension: basicsr keys the "
                                     "entries by the name up to its first '.'")
            sizes[line.split('.')[0]] = (int(match['h']), int(match['w']))
    return sizes


def image_size(path: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels where Pillow knows the format
    (other formats OpenCV reads, such as HDR or EXR, are decoded)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        reason = error
    import cv2
    decoded = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise DataCheckError(f'{path}: not a readable image ({reason}); basicsr reads every file in the folder: '
                             'move other files out')
    return decoded.shape[0], decoded.shape[1]


def folder_sizes(folder: str, template: str = '{}') -> dict[str, tuple[str, Callable[[], tuple[int, int]]]]:
    """``name -> (path, size reader)`` for the images in ``folder``; a ``filename_tmpl`` such as
    ``'{}x4'`` is undone, so that names match the GT names."""
    entries = {}
    prefix, _, suffix = template.partition('{}')
    for entry in sorted(os.listdir(folder)):
        stem, ext = osp.splitext(entry)
        if entry.startswith('.') or not osp.isfile(osp.join(folder, entry)):
            continue  # basicsr's scandir skips these too
        if ext.lower() not in IMAGE_EXTENSIONS:
            image_size(osp.join(folder, entry))  # a stray file is named before the pairs are compared
        if stem.startswith(prefix) and stem.endswith(suffix) and len(stem) >= len(prefix) + len(suffix):
            stem = stem[len(prefix):len(stem) - len(suffix)]
        path = osp.join(folder, entry)
        entries[stem + ext] = (path, functools.partial(image_size, path))
    return entries


def _pair_up(gt: dict, lq: dict, where: str, gt_root: str, lq_root: str) -> list[str]:
    missing_lq = set(gt) - set(lq)
    missing_gt = set(lq) - set(gt)
    if missing_lq:
        raise DataCheckError(f'{where}: {len(missing_lq)} GT image(s) in {gt_root} have no LQ partner in {lq_root}: '
                             f'{_listing(missing_lq)}')
    if missing_gt:
        raise DataCheckError(f'{where}: {len(missing_gt)} LQ image(s) in {lq_root} have no GT partner in {gt_root}: '
                             f'{_listing(missing_gt)}')
    if not gt:
        raise DataCheckError(f'{where}: no images in {gt_root}')
    return sorted(gt)


def check_sizes(gt_size: tuple[int, int], lq_size: tuple[int, int], scale: int, train: bool) -> bool:
    """Training pairs are exactly ``scale`` x apart; an evaluation GT may be larger (basicsr crops it to
    ``scale`` x the LQ, as benchmark sets whose size is not a multiple of the scale need)."""
    if train:
        return gt_size == (lq_size[0] * scale, lq_size[1] * scale)
    return all(g >= lq * scale for g, lq in zip(gt_size, lq_size))


def _check_paired(dataset_opt: dict, scale: int, where: str) -> tuple[int, list[str], int]:
    """The number of pairs, the evaluation GTs larger than needed, and the pixels of all the images."""
    for key in ('dataroot_gt', 'dataroot_lq'):
        if not dataset_opt.get(key):
            raise DataCheckError(f'{where}: {key} is missing ({dataset_opt["type"]} needs dataroot_gt and dataroot_lq)')
        if not osp.exists(dataset_opt[key]):
            raise DataCheckError(f'{where}: {key} {dataset_opt[key]} does not exist')
    gt_root, lq_root = dataset_opt['dataroot_gt'], dataset_opt['dataroot_lq']
    backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
    if backend == 'lmdb':
        gt = {k: (f'{gt_root}:{k}', functools.partial(tuple, v)) for k, v in read_meta_info(gt_root).items()}
        lq = {k: (f'{lq_root}:{k}', functools.partial(tuple, v)) for k, v in read_meta_info(lq_root).items()}
    elif backend in ('disk', MEMORY_BACKEND):  # memory: files read from disk once
        if backend == MEMORY_BACKEND:
            for root in (gt_root, lq_root):
                if osp.isfile(osp.join(root, 'data.mdb')):
                    raise DataCheckError(f'{where}: {root} is an LMDB: read it with io_backend type lmdb '
                                         '(type memory reads image folders)')
        if dataset_opt.get('meta_info_file'):
            return -1, [], 0  # basicsr pairs these by the listed names: checked when each pair is read
        gt = folder_sizes(gt_root)
        lq = folder_sizes(lq_root, dataset_opt.get('filename_tmpl', '{}'))
    else:
        return -1, [], 0
    names = _pair_up(gt, lq, where, gt_root, lq_root)
    train = dataset_opt.get('phase') == 'train'
    oversized, pixels = [], 0
    for name in names:
        (gt_path, gt_size), (lq_path, lq_size) = gt[name], lq[name]
        gt_hw, lq_hw = gt_size(), lq_size()
        pixels += gt_hw[0] * gt_hw[1] + lq_hw[0] * lq_hw[1]
        if not check_sizes(gt_hw, lq_hw, scale, train):
            raise DataCheckError(f'{where}: pair {name}: GT {gt_path} is {gt_hw[1]}x{gt_hw[0]} but LQ {lq_path} is '
                                 f'{lq_hw[1]}x{lq_hw[0]}; at scale {scale} the GT must be {lq_hw[1] * scale}x'
                                 f"{lq_hw[0] * scale}{'' if train else ' or larger'}")
        if not train and any(g >= (q + 1) * scale for g, q in zip(gt_hw, lq_hw)):
            oversized.append(name)
        if train and min(gt_hw) < int(dataset_opt.get('gt_size') or 0):
            raise DataCheckError(f"{where}: pair {name}: GT {gt_path} ({gt_hw[1]}x{gt_hw[0]}) is smaller than "
                                 f"gt_size {dataset_opt['gt_size']}")
    return len(names), oversized, pixels


def check_loader_options(dataset_opt: dict, where: str) -> None:
    """``persistent_workers`` needs workers (BasicSR's validation loaders have none), and BasicSR's CPU
    prefetcher reads a persistent loader from a thread that the next epoch's iterator would race."""
    if not dataset_opt.get('persistent_workers'):
        return
    if dataset_opt.get('phase') != 'train':
        raise DataCheckError(f'{where}: persistent_workers: BasicSR loads this set without workers: remove it')
    if not int(dataset_opt.get('num_worker_per_gpu') or 0):
        raise DataCheckError(f'{where}: persistent_workers: true needs num_worker_per_gpu >= 1 (with 0 the '
                             'main process reads the samples and nothing needs keeping)')
    if dataset_opt.get('prefetch_mode') == 'cpu':
        raise DataCheckError(f'{where}: persistent_workers with prefetch_mode cpu: BasicSR\'s prefetch thread '
                             'would still be reading the kept workers when the next epoch starts; use one of them')


def memory_note(dataset_opt: dict, pixels: int) -> str:
    """The memory an ``io_backend: memory`` set will hold, and a warning when it nears the machine's."""
    if (dataset_opt.get('io_backend') or {}).get('type') != MEMORY_BACKEND or not pixels:
        return ''
    processes = max(1, int(dataset_opt.get('num_worker_per_gpu') or 0)) if dataset_opt.get('phase') == 'train' else 1
    need = 3 * pixels * processes  # 8-bit colour, whole set in each reading process (per GPU)
    note = f'; io_backend memory: about {need / 2 ** 30:.2f} GiB in {processes} reading process(es)'
    try:
        machine = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, ValueError, OSError):
        return note
    if need > machine / 2:
        note += (f'; WARNING: that is more than half of this machine\'s {machine / 2 ** 30:.1f} GiB (and again per '
                 'GPU process): use type disk or lmdb, or fewer workers')
    return note


def check_dataset(dataset_opt: dict) -> str:
    """Check one data set's options and files before it is built; returns a line for the log.

    Raises:
        DataCheckError: naming the data set, the option or the file.
    """
    where = _where(dataset_opt)
    started = time.perf_counter()
    kind = dataset_opt.get('type')
    scale = int(dataset_opt.get('scale') or 1)
    oversized: list[str] = []
    pixels = 0
    check_loader_options(dataset_opt, where)
    if kind in PAIRED_TYPES:
        count, oversized, pixels = _check_paired(dataset_opt, scale, where)
    else:
        for key, value in dataset_opt.items():
            if not key.startswith('dataroot') or not value:
                continue
            for root in (value if isinstance(value, (list, tuple)) else [value]):
                if not osp.exists(str(root)):
                    raise DataCheckError(f'{where}: {key} {root} does not exist')
        count = -1
    seconds = time.perf_counter() - started
    found = f'{count} pairs, names and sizes' if count >= 0 else 'paths'
    line = f'{where}: {found} checked in {seconds:.2f} s' + memory_note(dataset_opt, pixels)
    if oversized:
        line += (f'; WARNING: {len(oversized)} GT image(s) are larger than {scale} x their LQ by {scale} pixels or '
                 f'more ({_listing(oversized)}): BasicSR crops them to the top-left corner; is scale {scale} right?')
    return line


def check_full_batches(opt: dict, loader, sampler) -> None:
    """The training loader yields at least one batch per epoch: it drops the last partial batch, so a set
    smaller than one batch would end the run at once with random weights saved and exit status 0."""
    if len(loader) > 0:
        return
    dataset_opt = opt['datasets']['train']
    pairs, batch = len(loader.dataset), loader.batch_size
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
    world = int(opt.get('world_size') or 1)
    per_rank = getattr(sampler, 'num_samples', pairs)
    spread = f' spread over {world} processes ({per_rank} each)' if world > 1 else ''
    needed = math.ceil(batch * world / max(1, pairs))
    raise DataCheckError(f'{_where(dataset_opt)}: {pairs} training pair(s) x dataset_enlarge_ratio {ratio}{spread} '
                         f'make no full batch of batch_size_per_gpu {batch}: the run would train nothing. Set '
                         f'batch_size_per_gpu to at most {per_rank} or dataset_enlarge_ratio to at least {needed}')


def worker_error_message(message: str, error_type: type) -> str:
    """The message an error had in a DataLoader worker: torch re-raises it with the worker's traceback
    prepended (``Caught DataCheckError in DataLoader worker process 0. Original Traceback ...``)."""
    if 'Original Traceback' not in message:
        return message
    marker = f'{error_type.__module__}.{error_type.__qualname__}: '
    start = message.rfind(marker)
    if start >= 0:
        return message[start + len(marker):].strip()
    return message.strip().splitlines()[-1]


def name_files_on_error(cls: type) -> type:
    """Make ``cls.__getitem__`` errors name the sample's files (once per class)."""
    if getattr(cls.__getitem__, '_names_files', False):
        return cls
    original = cls.__getitem__

    @functools.wraps(original)
    def getitem(self, index):
        try:
            return original(self, index)
        except Exception as error:
            paths = getattr(self, 'paths', None)
            try:
                sample = paths[index] if paths is not None else None
            except (IndexError, KeyError, TypeError):
                sample = None
            if sample is None:
                raise
            files = ', '.join(f'{k} {v}' for k, v in sample.items()) if isinstance(sample, dict) else str(sample)
            name = self.opt.get('name', type(self).__name__) if isinstance(getattr(self, 'opt', None), dict) else ''
            raise DataCheckError(f'{name}: cannot read sample {index} ({files}): '
                                 f'{type(error).__name__}: {error}') from error

    getitem._names_files = True
    cls.__getitem__ = getitem
    return cls


def checked_build_dataset(build_dataset: Callable) -> Callable:
    """Wrap basicsr's ``build_dataset``: check the data set first, then make its read errors name files."""

    def build_checked(dataset_opt: dict):
        from basicsr.utils import get_root_logger
        get_root_logger().info(check_dataset(dataset_opt))
        dataset = build_dataset(dataset_opt)
        name_files_on_error(type(dataset))
        return dataset

    build_checked.__wrapped__ = build_dataset
    return build_checked
