"""One visual crop strip, LR | baseline | variant | HR, where the two students differ most."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from ibsd.study.results import per_image_differences
from ibsd.study.runner import checkpoint
from ibsd.study.spec import Study, evaluated_weights

LABEL_HEIGHT = 22


def compared_variant(study: Study) -> str | None:
    """``IBSD`` when the study has it, else the first variant that is not the baseline."""
    others = [v for v in study.variants if v != study.baseline]
    return 'IBSD' if 'IBSD' in others else (others[0] if others else None)


def find_image(folder: str, stem: str) -> Path | None:
    matches = sorted(p for p in Path(folder).iterdir() if p.stem == stem) if Path(folder).is_dir() else []
    return matches[0] if matches else None


def upscale(options_path: Path, weights: Path, lr_bgr: np.ndarray, key: str) -> np.ndarray:
    """The student of a run (built from its options, the evaluated weights ``key``) on one image, padded
    to the arch's size multiple as its evaluation pads it (:mod:`ibsd.inference`); the run's options
    are known to be right, so its pixel range is not second-guessed."""
    from ibsd.inference import Upscaler, load_network, network_spec
    options = yaml.safe_load(options_path.read_text())
    loaded = load_network(network_spec(options['network_g']), weights, param_key=key, detect_pixel_range=False)
    out = Upscaler.of(loaded)(np.ascontiguousarray(lr_bgr[..., ::-1]).astype(np.float32) / 255.0)
    return np.round(out[..., ::-1] * 255).astype(np.uint8)


def most_different_window(a: np.ndarray, b: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the largest summed |a - b|."""
    difference = np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(axis=2)
    box = cv2.boxFilter(difference, -1, (size, size), normalize=False, anchor=(0, 0),
                        borderType=cv2.BORDER_CONSTANT)
    valid = box[:difference.shape[0] - size + 1, :difference.shape[1] - size + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


def labelled(image: np.ndarray, label: str) -> np.ndarray:
    bar = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def crop_strip(study: Study, out: Path, scores: dict, iteration_of: dict[str, int]) -> Path | None:
    """``crops.png`` on the test image whose PSNR differs most between the baseline and the compared
    variant (the first seed with both checkpoints on disk); None when the study has not evaluated both
    yet or their checkpoints are gone."""
    variant = compared_variant(study)
    if variant is None:
        return None
    best = None
    for test_set in study.test_sets:
        for image, diff in per_image_differences(scores, study, variant, test_set, iteration_of).items():
            if best is None or abs(diff) > abs(best[2]):
                best = (test_set, image, diff)
    if best is None:
        return None
    test_set, image, diff = best
    seeds = sorted({k.seed for k in scores if k.variant == variant} & {k.seed for k in scores
                                                                       if k.variant == study.baseline})
    chosen = _seed_with_checkpoints(study, out, seeds, (study.baseline, variant), iteration_of)
    if chosen is None:
        return None
    seed, runs, weights_of = chosen
    spec = study.test_sets[test_set]
    lr_path, hr_path = find_image(_resolve(spec['dataroot_lq'], out), image), find_image(_resolve(
        spec['dataroot_gt'], out), image)
    if lr_path is None or hr_path is None:
        return None
    lr, hr = cv2.imread(str(lr_path), cv2.IMREAD_COLOR), cv2.imread(str(hr_path), cv2.IMREAD_COLOR)
    outputs = {}
    for name, run in runs.items():
        options_path = out / 'options' / f'{run.name}.yml'
        key = evaluated_weights(study, yaml.safe_load(options_path.read_text()))
        outputs[name] = upscale(options_path, weights_of[name], lr, key)
    scale = outputs[variant].shape[0] // lr.shape[0]
    size = min(study.crop_size, *outputs[variant].shape[:2])
    size -= size % scale
    y, x = most_different_window(outputs[study.baseline], outputs[variant], size)
    y, x = y - y % scale, x - x % scale
    lr_crop = cv2.resize(lr[y // scale:(y + size) // scale, x // scale:(x + size) // scale], (size, size),
                         interpolation=cv2.INTER_NEAREST)
    zoom = max(1, 192 // size)
    crops = {'LR (nearest)': lr_crop, study.baseline: outputs[study.baseline][y:y + size, x:x + size],
             variant: outputs[variant][y:y + size, x:x + size], 'HR': hr[y:y + size, x:x + size]}
    strip = np.concatenate([labelled(cv2.resize(crop, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST),
                                     label) for label, crop in crops.items()], axis=1)
    path = out / 'crops.png'
    cv2.imwrite(str(path), strip)
    (out / 'crops.txt').write_text(f'{test_set}, image {image}, seed {seed}: {variant} - {study.baseline} = '
                                   f'{diff:+.3f} dB (image mean over seeds); window {size}x{size} at x={x}, y={y}\n')
    return path


def _seed_with_checkpoints(study: Study, out: Path, seeds: list[int], variants: tuple[str, str],
                           iteration_of: dict[str, int]) -> tuple[int, dict, dict[str, Path]] | None:
    """The first seed whose runs of both ``variants`` still have their evaluated checkpoints, with those
    runs and checkpoint paths. A study restored from its logs and evaluations alone (``experiments/``
    removed) has none: the strip is skipped with a message and the rest of the report is written."""
    missing = []
    for seed in seeds:
        runs = {r.variant: r for r in study.runs if r.seed == seed and r.variant in variants}
        weights = {name: checkpoint(out, run, iteration_of[name]) for name, run in runs.items()}
        absent = [path for path in weights.values() if not path.is_file()]
        if len(runs) == len(variants) and not absent:
            return seed, runs, weights
        missing.extend(absent)
    if missing:
        print(f'crops.png not written: no seed has both checkpoints (missing: {", ".join(map(str, missing))})')
    return None


def _resolve(path: str, out: Path) -> str:
    """Test-set paths in the study are relative to where ibsd-study runs; the test options hold them absolute."""
    return path if Path(path).is_absolute() else str(Path.cwd() / path)
