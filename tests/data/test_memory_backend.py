"""``io_backend: {type: memory}``: files read once per process, kept as copies that decode exactly as the
originals do, so training samples and whole runs are the same as with ``disk``."""
from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.utils import imfrombytes

from ibsd.data.checks import DataCheckError, check_dataset
from ibsd.data.memory_backend import MemoryBackend, uncompressed_copy, warn_if_cache_is_dropped
from tests.helpers import SCRIPTS, ibsd_options, make_pairs, paired, run, write_yaml


def encoded(image: np.ndarray, extension: str, *params: int) -> bytes:
    ok, data = cv2.imencode(extension, image, list(params))
    assert ok
    return data.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment holding one Orientation tag (little-endian TIFF)."""
    tiff = (b'II*\x00' + (8).to_bytes(4, 'little') + (1).to_bytes(2, 'little')
            + (0x0112).to_bytes(2, 'little') + (3).to_bytes(2, 'little') + (1).to_bytes(4, 'little')
            + orientation.to_bytes(2, 'little') + b'\x00\x00' + (0).to_bytes(4, 'little'))
    payload = b'Exif\x00\x00' + tiff
    return jpeg[:2] + b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload + jpeg[2:]


RNG = np.random.default_rng(3)
COLOUR = (RNG.random((20, 30, 3)) * 255).astype(np.uint8)
CASES = {
    'colour png': (encoded(COLOUR, '.png'), True),
    'grey png': (encoded(COLOUR[:, :, 0], '.png'), True),
    '16-bit png': (encoded((RNG.random((20, 30, 3)) * 65535).astype(np.uint16), '.png'), True),
    'png with alpha': (encoded(np.dstack([COLOUR, COLOUR[:, :, :1]]), '.png'), True),
    'bmp (its grey decode is not libpng\'s)': (encoded(COLOUR, '.bmp'), False),
    'jpeg rotated by exif': (with_exif_orientation(encoded(COLOUR, '.jpg'), 6), False),
}


@pytest.mark.parametrize('name', CASES)
def test_a_copy_decodes_as_the_original_under_every_flag_or_the_original_is_kept(name):
    data, copied = CASES[name]
    copy = uncompressed_copy(data)
    assert (copy != data) == copied and (not copied or copy.startswith(b'\x89PNG'))
    for flag in ('color', 'grayscale', 'unchanged'):
        for float32 in (False, True):
            expected, got = imfrombytes(data, flag, float32), imfrombytes(copy, flag, float32)
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (flag, float32)


def test_the_exif_case_would_differ_if_it_were_converted():
    """Shows the JPEG case tests something: its colour decode is rotated, its unchanged decode is not."""
    data = CASES['jpeg rotated by exif'][0]
    assert imfrombytes(data, 'color').shape[:2] == (30, 20) and imfrombytes(data, 'unchanged').shape[:2] == (20, 30)


def test_each_file_is_read_once_per_backend(tmp_path):
    path = tmp_path / 'a.png'
    path.write_bytes(CASES['colour png'][0])
    backend = MemoryBackend()
    first = backend.get(path)
    path.unlink()
    assert backend.get(str(path)) is first and np.array_equal(imfrombytes(first, 'color'), COLOUR)
    with pytest.raises(FileNotFoundError):
        MemoryBackend().get(path)  # another process (backend) reads the disk again


def test_training_samples_are_the_ones_disk_gives(tmp_path):
    make_pairs(tmp_path, 3, scale=2, size=40)
    samples = {}
    for backend in ('disk', 'memory'):
        dataset = build_dataset(paired('t', tmp_path, io_backend={'type': backend}, phase='train', scale=2,
                                       gt_size=16, use_hflip=True, use_rot=True))
        random.seed(0)  # basicsr's crops and flips draw from the global stream
        samples[backend] = [dataset[i % 3] for i in range(6)]  # every file twice: read, then from memory
    for disk, memory in zip(samples['disk'], samples['memory']):
        assert disk['gt_path'] == memory['gt_path']
        assert torch.equal(disk['gt'], memory['gt']) and torch.equal(disk['lq'], memory['lq'])


@pytest.mark.parametrize('workers, persistent, warned', [(1, False, True), (1, True, False), (0, False, False)])
def test_workers_restarted_every_epoch_are_warned_about(caplog, workers, persistent, warned):
    logger = logging.getLogger('test_memory_backend')
    with caplog.at_level(logging.WARNING, logger='test_memory_backend'):
        warn_if_cache_is_dropped({'io_backend': {'type': 'memory'}, 'num_worker_per_gpu': workers,
                                  'persistent_workers': persistent}, logger)
    assert any('persistent_workers: true' in r.getMessage() for r in caplog.records) == warned


@pytest.mark.slow
def test_a_run_from_memory_with_persistent_workers_equals_the_run_from_disk(tmp_path):
    make_pairs(tmp_path / 'data' / 'train', 8, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    weights = {}
    for name, backend, workers in (('from_disk', 'disk', 0), ('from_memory', 'memory', 2)):
        opt = ibsd_options(name, tmp_path / 'data', 6)
        opt['datasets']['train'].update(io_backend={'type': backend}, num_worker_per_gpu=workers,
                                        persistent_workers=workers > 0)
        output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / f'{name}.yml', opt))],
                     cwd=tmp_path)
        assert 'persistent_workers: true' not in output
        weights[name] = torch.load(Path(tmp_path, 'experiments', name, 'models', 'net_g_latest.pth'),
                                   weights_only=True)
    for key in ('params', 'params_ema'):
        disk, memory = weights['from_disk'][key], weights['from_memory'][key]
        assert all(torch.equal(disk[k], memory[k]) for k in disk), key


def memory_set(root: Path, phase: str = 'train', **extra) -> dict:
    return {**paired('pairs', root, io_backend={'type': 'memory'}), 'phase': phase, 'scale': 2, 'gt_size': 16,
            **extra}


def test_the_check_line_says_how_much_memory_the_copies_take(tmp_path, monkeypatch):
    make_pairs(tmp_path, 4, scale=2, size=40)  # 4 x (40x40 + 20x20) pixels x 3 channels x 2 workers
    line = check_dataset(memory_set(tmp_path, num_worker_per_gpu=2, persistent_workers=True))
    assert f'about {4 * 2000 * 3 * 2 / 2 ** 30:.2f} GiB in 2 reading process(es)' in line and 'WARNING' not in line
    import ibsd.data.checks as checks
    monkeypatch.setattr(checks.os, 'sysconf', lambda name: {'SC_PAGE_SIZE': 4096, 'SC_PHYS_PAGES': 10}[name])
    line = check_dataset(memory_set(tmp_path, num_worker_per_gpu=2, persistent_workers=True))
    assert 'WARNING: that is more than half of this machine' in line
    assert 'GiB' not in check_dataset(memory_set(tmp_path, io_backend={'type': 'disk'}))


@pytest.mark.parametrize('extra, message', [
    ({'persistent_workers': True}, 'persistent_workers: true needs num_worker_per_gpu >= 1'),
    ({'persistent_workers': True, 'num_worker_per_gpu': 1, 'prefetch_mode': 'cpu'},
     'persistent_workers with prefetch_mode cpu'),
    ({'persistent_workers': True, 'phase': 'val'}, 'BasicSR loads this set without workers: remove it')])
def test_persistent_workers_that_cannot_work_are_refused_by_name(tmp_path, extra, message):
    make_pairs(tmp_path, 2, scale=2, size=40)
    with pytest.raises(DataCheckError, match=re.escape(message)):
        check_dataset(memory_set(tmp_path, **extra))


def test_an_lmdb_folder_read_from_memory_is_named(tmp_path):
    make_pairs(tmp_path, 2, scale=2, size=40)
    (tmp_path / 'hr' / 'data.mdb').write_bytes(b'')
    with pytest.raises(DataCheckError, match='is an LMDB: read it with io_backend type lmdb'):
        check_dataset(memory_set(tmp_path))
    with pytest.raises(ValueError, match="takes no other keys, got \\['db_paths'\\]"):
        MemoryBackend(db_paths=['x'])


def test_a_copy_that_would_change_the_dtype_is_not_kept():
    """An all-black Radiance HDR decodes as float32; its PNG copy would decode as uint8 zeros."""
    data = encoded(np.zeros((4, 5, 3), np.float32), '.hdr')
    assert imfrombytes(data, 'unchanged').dtype == np.float32
    assert uncompressed_copy(data) == data
