"""Realistic synthetic degradations for the built-in default data set.

Classical real-world degradation model ``LR = JPEG(noise(resize(HR * k)))`` with BasicSR's own
kernels and noise (``basicsr.data.degradations``). Training and validation use deliberately
different families so that validation measures generalisation to an unseen camera pipeline:

============  ======================================  =======================================
step          training                                validation (unseen)
============  ======================================  =======================================
blur          iso/aniso/generalized/plateau Gaussian  linear motion blur
downsample    area, bilinear or bicubic               nearest after blur
noise         Gaussian, colour or grey, sigma 1-12    Poisson (shot) noise
JPEG          quality 60-95                           quality 35-50
============  ======================================  =======================================

All randomness comes from NumPy's global generator (BasicSR's functions use it): seed it.
Images are float32 BGR in [0, 1], the BasicSR convention.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from basicsr.data.degradations import (add_jpg_compression, random_add_gaussian_noise, random_add_poisson_noise,
                                       random_mixed_kernels)

TRAIN_KERNELS = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
TRAIN_KERNEL_PROB = (0.35, 0.35, 0.1, 0.1, 0.05, 0.05)
TRAIN_INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def _downsample(img: np.ndarray, scale: int, interpolation: int) -> np.ndarray:
    height, width = img.shape[:2]
    return cv2.resize(img, (width // scale, height // scale), interpolation=interpolation)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised linear motion-blur kernel of odd size ``length`` along ``angle`` (radians)."""
    kernel = np.zeros((length, length), np.float32)
    centre = length // 2
    for t in np.linspace(-centre, centre, 4 * length):
        kernel[int(round(centre + t * math.sin(angle))), int(round(centre + t * math.cos(angle)))] = 1.
    return kernel / kernel.sum()


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """BasicSR's JPEG round trip of a float image in [0, 1], without OpenCV's warning that it encodes the
    float array as 8-bit (which is what it is meant to do: the pixels are the same)."""
    logging = getattr(getattr(cv2, 'utils', None), 'logging', None)  # absent from some OpenCV builds
    if logging is None:
        return add_jpg_compression(img, quality=quality)
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        return add_jpg_compression(img, quality=quality)
    finally:
        logging.setLogLevel(level)


def degrade_train(hr: np.ndarray, scale: int) -> np.ndarray:
    """One random training degradation of ``hr`` (its sides must be multiples of ``scale``)."""
    kernel_size = int(np.random.choice([7, 9, 11, 13, 15]))
    kernel = random_mixed_kernels(TRAIN_KERNELS, TRAIN_KERNEL_PROB, kernel_size, sigma_x_range=(0.2, 2.5),
                                  sigma_y_range=(0.2, 2.5), betag_range=(0.5, 4), betap_range=(1, 2))
    img = cv2.filter2D(hr, -1, kernel)
    img = _downsample(img, scale, int(np.random.choice(TRAIN_INTERPOLATIONS)))
    if np.random.uniform() < 0.8:
        img = random_add_gaussian_noise(img, sigma_range=(1, 12), gray_prob=0.3, clip=True, rounds=False)
    return jpeg(img, quality=int(np.random.uniform(60, 95)))


def degrade_val(hr: np.ndarray, scale: int) -> np.ndarray:
    """One validation degradation of ``hr``, from families never used for training."""
    kernel = motion_kernel(int(np.random.choice([5, 7, 9])), np.random.uniform(0, math.pi))
    img = cv2.filter2D(hr, -1, kernel)
    img = _downsample(img, scale, cv2.INTER_NEAREST)
    img = random_add_poisson_noise(img, scale_range=(0.5, 1.5), gray_prob=0., clip=True, rounds=False)
    return jpeg(img, quality=int(np.random.uniform(35, 50)))
