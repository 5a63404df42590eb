"""Reading and writing keep bit depth, alpha and orientation; failed writes raise and leave nothing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from ibsd.image_io import apply_orientation, exif_orientation, read_picture, to_pixels, write_png

RNG = np.random.default_rng(0)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_orientation_matches_pillow(tmp_path, orientation):
    stored = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / 'o.png'
    Image.fromarray(stored).save(path, exif=exif)
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert exif_orientation(path) == orientation
    np.testing.assert_array_equal(apply_orientation(stored, orientation), displayed)
    picture = read_picture(path)
    assert picture.orientation == orientation
    np.testing.assert_array_equal(np.round(picture.rgb * 255).astype(np.uint8), displayed)


def test_tiff_orientation_is_not_applied_twice(tmp_path):
    stored = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 3
    path = tmp_path / 'o.tif'
    Image.fromarray(stored).save(path, exif=exif)
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    picture = read_picture(path)
    np.testing.assert_array_equal(np.round(picture.rgb * 255).astype(np.uint8), displayed)


def test_16_bit_alpha_and_grey(tmp_path):
    bgra16 = RNG.integers(0, 65536, (4, 6, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'a.png'), bgra16)
    picture = read_picture(tmp_path / 'a.png')
    assert picture.peak == 65535 and picture.rgb.dtype == np.float32
    np.testing.assert_allclose(picture.rgb, bgra16[:, :, 2::-1] / 65535, atol=1e-7)
    np.testing.assert_allclose(picture.alpha, bgra16[:, :, 3] / 65535, atol=1e-7)
    np.testing.assert_array_equal(to_pixels(picture.rgb, picture.alpha, picture.peak), bgra16)

    Image.fromarray(np.dstack([np.full((3, 3), 70, np.uint8), np.full((3, 3), 20, np.uint8)]), 'LA').save(
        tmp_path / 'la.png')
    picture = read_picture(tmp_path / 'la.png')
    assert picture.peak == 255 and picture.rgb.shape == (3, 3, 3) and np.allclose(picture.alpha, 20 / 255)


def test_unreadable_and_float_images_are_refused(tmp_path):
    (tmp_path / 'x.png').write_bytes(b'nothing')
    with pytest.raises(ValueError, match='not a readable image'):
        read_picture(tmp_path / 'x.png')
    cv2.imwrite(str(tmp_path / 'f.tiff'), np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match='float32 samples are not supported'):
        read_picture(tmp_path / 'f.tiff')


def test_write_png_raises_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / 'taken.png'
    target.mkdir()
    with pytest.raises(OSError, match='cannot write .*taken.png'):
        write_png(target, np.zeros((2, 2, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['taken.png']
    with pytest.raises(OSError, match='cannot write .*missing'):
        write_png(tmp_path / 'missing' / 'x.png', np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match='8- or 16-bit samples, got float64'):
        write_png(tmp_path / 'x.png', np.zeros((2, 2, 3), np.float64))
    with pytest.raises(OSError, match='cannot encode .*x.png'):
        write_png(tmp_path / 'x.png', np.zeros((2, 2, 5), np.uint8))
    write_png(tmp_path / 'ok.png', np.full((2, 2, 3), 7, np.uint8))
    assert (cv2.imread(str(tmp_path / 'ok.png')) == 7).all()
