"""``io_backend: {type: memory}``: BasicSR's disk backend, but each image file is read once per process
and kept as an uncompressed PNG, so that later reads skip the costly part of the decode.

BasicSR's paired data sets read and decode a whole image for every training sample, however small the
patch they crop from it: with City100's 840x600 PNGs that is about 20-30 ms per image on one core, a
large share of a small student's training step on CPU. The same pixels stored without compression and
without PNG row filters decode several times faster (4 ms), through the same decoder. A copy is kept
only where decoding it gives exactly the array the original file gives (values and dtype) for each
of BasicSR's ``imfrombytes`` flags (``color``, ``grayscale``, ``unchanged``); anything else keeps its
original bytes: colour JPEG, WebP, TIFF and BMP files (OpenCV's grey decode of them is not libpng's),
PNGs with an EXIF orientation, files OpenCV cannot read. The samples of data sets that decode with
``imfrombytes`` (all of BasicSR's image data sets) are therefore the same as with ``disk``, bit for
bit; in practice PNG data sets get faster, others only skip the disk.

The copies live in the process that reads: a DataLoader worker's cache ends with the worker, which
BasicSR restarts every epoch unless ``persistent_workers: true`` (:func:`warn_if_cache_is_dropped`).
Memory: about height x width x channels bytes per image and reading process, with no limit: each
worker ends up holding the whole set (City100's 80 training pairs: 150 MB; DIV2K's 800 x2 pairs:
about 8.5 GB per worker). :func:`ibsd.data.checks.check_dataset` logs the estimate and warns when
it approaches the machine's memory.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np
from basicsr.utils.file_client import FileClient, HardDiskBackend

BACKEND = 'memory'
EXACT_DATASET_TYPES = frozenset({'PairedImageDataset', 'SingleImageDataset', 'RealESRGANDataset',
                                 'RealESRGANPairedDataset', 'FFHQDataset'})
"""BasicSR's image data sets: each decodes every file it reads with ``imfrombytes``."""
_FLAGS = (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE, cv2.IMREAD_UNCHANGED)
_PNG_STORED = [cv2.IMWRITE_PNG_COMPRESSION, 0,  # OpenCV before 4.10 has no filter option: still exact, slower
               *([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if hasattr(cv2, 'IMWRITE_PNG_FILTER') else [])]


def _decoded(data: bytes, flag: int) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flag)


def uncompressed_copy(data: bytes) -> bytes:
    """PNG bytes without compression or row filters that decode exactly as ``data`` does (same array, same
    dtype) under every ``imfrombytes`` flag, else ``data`` itself."""
    unchanged = _decoded(data, cv2.IMREAD_UNCHANGED)
    if unchanged is None:
        return data
    encoded, copy = cv2.imencode('.png', unchanged, _PNG_STORED)
    if not encoded:
        return data
    copy = copy.tobytes()
    for flag in _FLAGS:
        original = unchanged if flag == cv2.IMREAD_UNCHANGED else _decoded(data, flag)
        again = _decoded(copy, flag)
        if original is None or again is None or original.dtype != again.dtype or \
                original.shape != again.shape or not np.array_equal(original, again):
            return data
    return copy


class MemoryBackend(HardDiskBackend):
    """Reads a file from disk the first time, then serves its uncompressed copy from this process's memory."""

    def __init__(self, **kwargs):
        if kwargs:
            raise ValueError(f'io_backend type {BACKEND} takes no other keys, got {sorted(kwargs)} '
                             '(an LMDB folder is read with type: lmdb)')
        self._copies: dict[str, bytes] = {}

    def get(self, filepath) -> bytes:
        filepath = str(filepath)
        copy = self._copies.get(filepath)
        if copy is None:
            copy = self._copies[filepath] = uncompressed_copy(super().get(filepath))
        return copy


def register() -> None:
    """Make ``memory`` a FileClient backend (idempotent)."""
    FileClient._backends.setdefault(BACKEND, MemoryBackend)


def warn_if_cache_is_dropped(train_set: Mapping, logger) -> None:
    """A memory backend in DataLoader workers that BasicSR restarts every epoch rereads every file each epoch."""
    backend = (train_set.get('io_backend') or {}).get('type')
    workers = int(train_set.get('num_worker_per_gpu') or 0)
    if backend == BACKEND and workers > 0 and not train_set.get('persistent_workers'):
        logger.warning('datasets:train: io_backend memory keeps its copies in each data-loader worker, and BasicSR '
                       'starts new workers every epoch, so every file is read and converted again each epoch: '
                       'set persistent_workers: true (or num_worker_per_gpu: 0, without persistent_workers)')


register()
