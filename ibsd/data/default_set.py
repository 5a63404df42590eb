"""Build the default data set from the sample photos that ship inside scikit-image.

Nothing is downloaded: the photos are files of the installed ``scikit-image`` package. Layout
under ``root`` (BasicSR conventions)::

    train_HR.lmdb, train_LR_x{s}.lmdb   HR sub-images and their degraded LR, with meta_info.txt
    val/HR, val/LR_x{s}                 held-out photos (PNG) with unseen degradations
    manifest.json                       what was built, with which settings

Training photos and validation photos are disjoint, and so are their degradation families (see
:mod:`ibsd.data.degradation_mix`). A finished build is detected by its manifest and reused; an
interrupted one is rebuilt from scratch (it takes seconds).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from ibsd.data.degradation_mix import degrade_train, degrade_val

TRAIN_PHOTOS = ('astronaut', 'chelsea', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'camera', 'brick',
                'grass', 'gravel')
VAL_PHOTOS = ('coffee', 'rocket')


@dataclass
class DefaultSetConfig:
    """Settings of the default data set (stored in its manifest)."""
    scale: int = 4
    patch_size: int = 128
    max_patches_per_photo: int = 40
    seed: int = 0
    train_photos: tuple[str, ...] = TRAIN_PHOTOS
    val_photos: tuple[str, ...] = VAL_PHOTOS
    version: int = 2
    notes: list[str] = field(default_factory=lambda: [
        'photos: scikit-image sample data', 'degradations: ibsd.data.degradation_mix'])


def load_photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as uint8 BGR with 3 channels."""
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError('the default data set is built from scikit-image sample photos: '
                          'pip install scikit-image') from error
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, 2::-1])


def crop_patches(image: np.ndarray, size: int, limit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Non-overlapping ``size`` x ``size`` tiles, at most ``limit`` of them chosen at random."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    tiles = [image[r * size:(r + 1) * size, c * size:(c + 1) * size] for r in range(rows) for c in range(cols)]
    if len(tiles) > limit:
        tiles = [tiles[i] for i in sorted(rng.choice(len(tiles), limit, replace=False))]
    return tiles


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.), 0, 255).astype(np.uint8)


def _write_lmdb(images: dict[str, np.ndarray], lmdb_path: Path, scratch: Path) -> None:
    folder = scratch / lmdb_path.stem
    folder.mkdir()
    for key, image in images.items():
        cv2.imwrite(str(folder / f'{key}.png'), image)
    keys = sorted(images)
    with open(os.devnull, 'w') as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        make_lmdb_from_imgs(str(folder), str(scratch / lmdb_path.name), [f'{k}.png' for k in keys], keys)
    shutil.move(str(scratch / lmdb_path.name), str(lmdb_path))


def paths(root: Path, scale: int) -> dict[str, Path]:
    """Where each part of the default set lives under ``root``."""
    return {'train_gt': root / 'train_HR.lmdb', 'train_lq': root / f'train_LR_x{scale}.lmdb',
            'val_gt': root / 'val' / 'HR', 'val_lq': root / 'val' / f'LR_x{scale}', 'manifest': root / 'manifest.json'}


def build_default_set(root: str | os.PathLike, config: DefaultSetConfig | None = None) -> dict[str, Path]:
    """Build (or reuse) the default data set under ``root`` and return its paths."""
    config = config or DefaultSetConfig()
    root = Path(root)
    where = paths(root, config.scale)
    wanted = json.loads(json.dumps(asdict(config)))
    if where['manifest'].is_file() and json.loads(where['manifest'].read_text()).get('config') == wanted:
        return where
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with seeded_global_random(config.seed):
        train_pairs = _build(where, config)
    where['manifest'].write_text(json.dumps({'config': wanted, 'train_pairs': train_pairs,
                                             'val_pairs': len(config.val_photos)}, indent=2))
    return where


@contextlib.contextmanager
def seeded_global_random(seed: int):
    """Seed Python's and NumPy's global generators (basicsr's degradations draw from both), then restore them."""
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


def _build(where: dict[str, Path], config: DefaultSetConfig) -> int:
    """Write the training LMDBs and validation folders; return the number of training pairs."""
    rng = np.random.default_rng(config.seed)

    train_gt, train_lq = {}, {}
    for name in config.train_photos:
        for index, tile in enumerate(crop_patches(load_photo(name), config.patch_size,
                                                  config.max_patches_per_photo, rng)):
            key = f'{name}_{index:03d}'
            train_gt[key] = tile
            train_lq[key] = to_uint8(degrade_train(tile.astype(np.float32) / 255., config.scale))

    for folder in (where['val_gt'], where['val_lq']):
        folder.mkdir(parents=True)
    for name in config.val_photos:
        photo = load_photo(name)
        height, width = (s - s % config.scale for s in photo.shape[:2])
        photo = photo[:height, :width]
        cv2.imwrite(str(where['val_gt'] / f'{name}.png'), photo)
        cv2.imwrite(str(where['val_lq'] / f'{name}.png'),
                    to_uint8(degrade_val(photo.astype(np.float32) / 255., config.scale)))

    with tempfile.TemporaryDirectory(dir=where['manifest'].parent) as scratch:
        _write_lmdb(train_gt, where['train_gt'], Path(scratch))
        _write_lmdb(train_lq, where['train_lq'], Path(scratch))
    return len(train_gt)
