"""Turn real-world SR data sets in their official layouts into BasicSR-ready folders and LMDBs.

Supported layouts (each pair is checked; every malformed input raises :class:`PairError` naming
the file or folder):

- DRealSR (Wei et al., ECCV 2020): ``<root>/Train_x{s}/train_HR|train_LR`` and
  ``<root>/Test_x{s}/test_HR|test_LR``; HR and LR names differ by their ``_x1`` / ``_x{s}`` token
  (``DSC_1454_x1.png`` / ``DSC_1454_x4.png``). LR is at true 1/s size.
- RealSR V3 (Cai et al., ICCV 2019): ``<root>/{Canon,Nikon}/{Train,Test}/{s}/*_HR.png`` and
  ``*_LR{s}.png``; LR is registered at the HR size.
- Same-size pairs (RealSR V1/V2, City100, NTIRE 2019 Real-SR): LR registered at the HR size, in
  one folder with name suffixes (City100: ``001H.PNG`` / ``001L.PNG``) or in two folders.

Same-size LR images are resampled to 1/s (area interpolation) after cropping both images to a
multiple of s. Outputs, under ``<out>/x{s}/``: ``{split}_HR/<key>.png`` and
``{split}_LR/<key>.png`` with identical names, and for training splits ``{split}_HR.lmdb`` /
``{split}_LR.lmdb`` with BasicSR's ``meta_info.txt``. Every PNG is written whole (through a
temporary ``.tmp.png``) and files already written are kept, so an interrupted run continues where
it stopped; ``ibsd.data.prepare`` makes sure the files kept come from the same inputs and options.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ibsd.errors import IBSDError
from ibsd.progress import progress_bar

IMAGE_SUFFIXES = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'}


class PairError(IBSDError, ValueError):
    """A malformed input: the message names the file or folder."""


@dataclass(frozen=True)
class Pair:
    key: str
    hr: Path
    lr: Path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise PairError(f'{what} folder {path} does not exist')
    return path


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_color(path: Path) -> np.ndarray:
    """uint8 BGR with 3 channels; unreadable or greyscale files raise :class:`PairError`."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise PairError(f'{path}: not a readable image')
    if image.ndim == 2 or image.shape[2] == 1:
        raise PairError(f'{path}: greyscale image, expected colour (3 channels)')
    if image.dtype == np.uint16:
        image = np.round(image / 257.).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def match_pairs(hr_files: Iterable[Path], lr_files: Iterable[Path], hr_key: Callable[[Path], str | None],
                lr_key: Callable[[Path], str | None], where: str) -> list[Pair]:
    """Pair files by key; files whose key is None are ignored, unpaired ones are an error."""
    hr = {k: p for p in hr_files if (k := hr_key(p)) is not None}
    lr = {k: p for p in lr_files if (k := lr_key(p)) is not None}
    if not hr and not lr:
        raise PairError(f'{where}: no images found')
    missing_lr, missing_hr = sorted(hr.keys() - lr.keys()), sorted(lr.keys() - hr.keys())
    if missing_lr or missing_hr:
        details = []
        if missing_lr:
            details.append(f'HR without LR: {[hr[k].name for k in missing_lr[:5]]}')
        if missing_hr:
            details.append(f'LR without HR: {[lr[k].name for k in missing_hr[:5]]}')
        raise PairError(f'{where}: unpaired files ({"; ".join(details)})')
    return [Pair(k, hr[k], lr[k]) for k in sorted(hr)]


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    height, width = image.shape[:2]
    return image[:height - height % scale, :width - width % scale]


def aligned_pair(pair: Pair, scale: int, same_size: bool) -> tuple[np.ndarray, np.ndarray]:
    """The HR image and its LR at exactly 1/scale of it."""
    hr, lr = read_color(pair.hr), read_color(pair.lr)
    if same_size:
        if hr.shape != lr.shape:
            raise PairError(f'{pair.lr}: size {lr.shape[1]}x{lr.shape[0]} differs from {pair.hr} '
                            f'{hr.shape[1]}x{hr.shape[0]} (same-size pairs expected)')
        hr, lr = crop_to_multiple(hr, scale), crop_to_multiple(lr, scale)
        lr = cv2.resize(lr, (lr.shape[1] // scale, lr.shape[0] // scale), interpolation=cv2.INTER_AREA)
        return hr, lr
    expected = (lr.shape[0] * scale, lr.shape[1] * scale)
    if not (expected[0] <= hr.shape[0] < expected[0] + scale and expected[1] <= hr.shape[1] < expected[1] + scale):
        raise PairError(f'{pair.hr}: size {hr.shape[1]}x{hr.shape[0]} is not x{scale} of {pair.lr} '
                        f'{lr.shape[1]}x{lr.shape[0]}')
    return hr[:expected[0], :expected[1]], lr


def temporary_png(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (``a.png`` -> ``a.tmp.png``)."""
    return path.with_suffix('.tmp.png')


def write_png(path: Path, image: np.ndarray) -> None:
    temporary = temporary_png(path)
    if not cv2.imwrite(str(temporary), image):
        raise PairError(f'{temporary}: could not be written')
    os.replace(temporary, path)  # a killed run never leaves half a PNG


def write_pairs(pairs: list[Pair], out: Path, split: str, scale: int, same_size: bool) -> tuple[Path, Path]:
    """Write ``{split}_HR`` / ``{split}_LR`` PNG folders (existing outputs are kept)."""
    hr_dir, lr_dir = out / f'{split}_HR', out / f'{split}_LR'
    hr_dir.mkdir(parents=True, exist_ok=True)
    lr_dir.mkdir(parents=True, exist_ok=True)
    for pair in progress_bar(pairs, desc=f'{split} x{scale}', unit='pair'):
        hr_path, lr_path = hr_dir / f'{pair.key}.png', lr_dir / f'{pair.key}.png'
        if hr_path.is_file() and lr_path.is_file():
            continue
        hr, lr = aligned_pair(pair, scale, same_size)
        write_png(hr_path, hr)
        write_png(lr_path, lr)
    return hr_dir, lr_dir


PARTIAL_LMDB = '.partial.{}'
"""Where ``<name>.lmdb`` is written before it is moved into place (``.partial.train_HR.lmdb``: BasicSR's
writer wants the ``.lmdb`` ending)."""
OLD_SCRATCH = re.compile(r'^tmp[a-z0-9_]{8}$')
"""Scratch folders of earlier versions (``tempfile``'s names), left behind when a write was killed."""


def partial_lmdbs(target: Path) -> list[Path]:
    """What a killed write of the LMDB ``target`` left beside it: this version's partial folder and the
    ``tmpXXXXXXXX/`` scratch folders of earlier versions that hold only a copy of it."""
    found = [target.with_name(PARTIAL_LMDB.format(target.name))]
    if target.parent.is_dir():
        found += sorted(folder for folder in target.parent.iterdir()
                        if folder.is_dir() and OLD_SCRATCH.match(folder.name)
                        and [p.name for p in folder.iterdir()] == [target.name])
    return [path for path in found if path.exists()]


def remove_partial_lmdbs(target: Path) -> int:
    """Delete what :func:`partial_lmdbs` finds; returns how many folders were removed."""
    leftovers = partial_lmdbs(target)
    for folder in leftovers:
        shutil.rmtree(folder)
    return len(leftovers)


def write_lmdb(folder: Path, names: list[str] | None = None) -> Path:
    """``<folder>.lmdb`` of the PNGs ``names`` in ``folder`` (default: all of them) with BasicSR's
    ``make_lmdb_from_imgs``; kept if its ``meta_info.txt`` already lists exactly those images. It is written
    to a partial folder beside it and moved into place, so a killed write never leaves a usable-looking
    LMDB, and the partial folder of an earlier killed write is removed first."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    target = folder.with_suffix('.lmdb')
    remove_partial_lmdbs(target)
    names = sorted(names if names is not None else (p.name for p in folder.glob('*.png')))
    meta = target / 'meta_info.txt'
    if meta.is_file() and [line.split(' ')[0] for line in meta.read_text().splitlines()] == names:
        return target
    if target.exists():
        shutil.rmtree(target)
    partial = target.with_name(PARTIAL_LMDB.format(target.name))
    # BasicSR sizes the map from the first image only, too small when later ones are much larger
    # (or all are tiny); the map is reserved address space, not disk
    map_size = 10 * sum((folder / name).stat().st_size for name in names) + (64 << 20)
    try:
        with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet):
            make_lmdb_from_imgs(str(folder), str(partial), names, [Path(n).stem for n in names], map_size=map_size)
        os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return target


def subimage_positions(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """BasicSR's extract_subimages positions: every ``step``, plus the end if ``thresh`` is left."""
    positions = list(range(0, max(length - crop, 0) + 1, step))
    if length - (positions[-1] + crop) > thresh:
        positions.append(length - crop)
    return positions


def subimage_name(key: str, index: int) -> str:
    return f'{key}_s{index + 1:03d}.png'


def plan_subimages(pairs: list[Pair], scale: int, crop_size: int, step: int,
                   thresh_size: int = 0) -> dict[str, list[tuple[str, int, int]]]:
    """``(name, top, left)`` of every HR sub-image of each pair, keyed by pair; reads only the LR images
    (the HR image is used at exactly ``scale`` times their size), so the names are known before writing."""
    if crop_size % scale or step % scale:
        raise PairError(f'--crop-size {crop_size} and --step {step} must be multiples of --scale {scale}')
    plan = {}
    for pair in progress_bar(pairs, desc='sub-image grid', unit='image', leave=False):
        height, width = (side * scale for side in read_color(pair.lr).shape[:2])
        if min(height, width) < crop_size:
            raise PairError(f'{pair.hr}: smaller than --crop-size {crop_size} (its LR {pair.lr} is '
                            f'{width // scale}x{height // scale})')
        rows = subimage_positions(height, crop_size, step, thresh_size)
        cols = subimage_positions(width, crop_size, step, thresh_size)
        plan[pair.key] = [(subimage_name(pair.key, index), y, x)
                          for index, (y, x) in enumerate((y, x) for y in rows for x in cols)]
    return plan


def write_subimages(pairs: list[Pair], plan: dict[str, list[tuple[str, int, int]]], out_hr: Path, out_lr: Path,
                    scale: int, crop_size: int) -> int:
    """Write the sub-images of :func:`plan_subimages`; a pair whose sub-images all exist is skipped."""
    out_hr.mkdir(parents=True, exist_ok=True)
    out_lr.mkdir(parents=True, exist_ok=True)
    small = crop_size // scale
    for pair in progress_bar(pairs, desc='sub-images', unit='image'):
        cuts = plan[pair.key]
        if all((out_hr / name).is_file() and (out_lr / name).is_file() for name, _, _ in cuts):
            continue
        hr, lr = aligned_pair(pair, scale, same_size=False)
        for name, y, x in cuts:
            write_png(out_hr / name, hr[y:y + crop_size, x:x + crop_size])
            write_png(out_lr / name, lr[y // scale:y // scale + small, x // scale:x // scale + small])
    return sum(len(cuts) for cuts in plan.values())


def extract_subimages(hr_dir: Path, lr_dir: Path, out_hr: Path, out_lr: Path, scale: int, crop_size: int,
                      step: int, thresh_size: int = 0) -> int:
    """Cut aligned HR/LR sub-images (HR ``crop_size``, LR ``crop_size / scale``) from paired folders."""
    pairs = folder_pairs(hr_dir, lr_dir)
    plan = plan_subimages(pairs, scale, crop_size, step, thresh_size)
    return write_subimages(pairs, plan, out_hr, out_lr, scale, crop_size)


# --------------------------------------------------------------------------- layouts
def strip_scale_token(path: Path, token: str) -> str | None:
    """``DSC_1454_x4`` -> ``DSC_1454`` for token ``x4``; None when the token is absent."""
    stem, count = re.subn(rf'_{token}(?=_|$)', '', path.stem)
    return stem if count else None


def drealsr_pairs(root: Path, scale: int, split: str) -> list[Pair]:
    """Pairs of DRealSR's ``Train_x{s}`` (split ``train``) or ``Test_x{s}`` (split ``test``)."""
    folder = require_dir(root / f'{split.capitalize()}_x{scale}', f'DRealSR {split} x{scale}')
    hr_dir = require_dir(folder / f'{split}_HR', f'DRealSR {split} HR')
    lr_dir = require_dir(folder / f'{split}_LR', f'DRealSR {split} LR')
    return match_pairs(images_in(hr_dir), images_in(lr_dir), lambda p: strip_scale_token(p, 'x1'),
                       lambda p: strip_scale_token(p, f'x{scale}'), str(folder))


def realsr_pairs(root: Path, scale: int, split: str) -> list[Pair]:
    """Pairs of RealSR V3 ``{Canon,Nikon}/{Train,Test}/{s}`` (keys ``Canon_001`` ...)."""
    pairs = []
    for camera in ('Canon', 'Nikon'):
        folder = require_dir(root / camera / split.capitalize() / str(scale), f'RealSR {camera} {split} x{scale}')
        files = images_in(folder)
        hr_key = lambda p: p.stem[:-3] if p.stem.endswith('_HR') else None  # noqa: E731
        lr_key = lambda p: p.stem[:-4] if p.stem.endswith(f'_LR{scale}') else None  # noqa: E731
        pairs += match_pairs(files, files, hr_key, lr_key, str(folder))
    return pairs


def suffix_pairs(folder: Path, hr_suffix: str, lr_suffix: str) -> list[Pair]:
    """Pairs in one folder told apart by a name suffix (City100: ``001H.PNG`` / ``001L.PNG``)."""
    files = images_in(require_dir(folder, 'input'))
    return match_pairs(files, files, lambda p: p.stem[:-len(hr_suffix)] if p.stem.endswith(hr_suffix) else None,
                       lambda p: p.stem[:-len(lr_suffix)] if p.stem.endswith(lr_suffix) else None, str(folder))


def folder_pairs(hr_dir: Path, lr_dir: Path) -> list[Pair]:
    """Pairs across two folders with identical file stems."""
    return match_pairs(images_in(require_dir(hr_dir, 'HR')), images_in(require_dir(lr_dir, 'LR')),
                       lambda p: p.stem, lambda p: p.stem, f'{hr_dir} / {lr_dir}')
