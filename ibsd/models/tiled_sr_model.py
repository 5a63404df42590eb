"""TiledSRModel: BasicSR's SRModel with tiled inference for large photos and per-image metric tables."""
from __future__ import annotations

import contextlib
from os import path as osp
from typing import Callable

import torch
import torch.nn.functional as F

from basicsr.models import sr_model
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from ibsd.metrics.summary_table import write_summary
from ibsd.errors import OptionError
from ibsd.models.tiling import tiled_forward


def tile_options(opt: dict) -> tuple[int, int] | None:
    """``(tile_size, tile_pad)`` from the top-level ``tile`` option; None (whole images) when the
    option is absent or ``tile_size`` is null, so that ``--force_yml tile:tile_size=256`` turns
    tiling on in a YAML that ships ``tile: {tile_size: null}``."""
    tile = opt.get('tile')
    if not tile:
        return None
    if not isinstance(tile, dict) or 'tile_size' not in tile:
        raise OptionError(f'tile: expected {{tile_size: N, tile_pad: P}}, got {tile!r}')
    size, pad = tile['tile_size'], tile.get('tile_pad', 16)
    if size is None:
        return None
    for key, value in (('tile_size', size), ('tile_pad', pad)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f'tile: {key} must be an integer (tile_size null: whole images), got {value!r}')
    return size, pad


def window_multiple(net: torch.nn.Module) -> int | None:
    """The side multiple an arch needs but does not pad to itself (BasicSR's SwinIR: its window size)."""
    from basicsr.archs.swinir_arch import SwinIR, SwinTransformerBlock
    if not isinstance(net, SwinIR):
        return None
    return max(int(m.window_size) for m in net.modules() if isinstance(m, SwinTransformerBlock))


def padded_to_multiple(net: Callable[[torch.Tensor], torch.Tensor], multiple: int):
    """``net`` on inputs reflect-padded at the bottom and right to a multiple of ``multiple``, output cropped."""
    def run(lq: torch.Tensor) -> torch.Tensor:
        height, width = lq.shape[2:]
        pad_h, pad_w = -height % multiple, -width % multiple
        mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
        out = net(F.pad(lq, (0, pad_w, 0, pad_h), mode=mode))
        scale = out.shape[2] // (height + pad_h)
        return out[:, :, :height * scale, :width * scale]
    return run


@MODEL_REGISTRY.register()
class TiledSRModel(SRModel):
    """SRModel whose ``test()`` (validation and ``ibsd-test``) runs tile by tile when the YAML has
    ``tile: {tile_size: 256, tile_pad: 16}`` (LR pixels) and on whole images otherwise, and whose
    test runs write ``<dataset>_metrics.csv`` / ``.md`` (per image, mean and the tile setting) in
    the results folder."""

    def feed_data(self, data):
        super().feed_data(data)
        self._image_name = osp.splitext(osp.basename(data['lq_path'][0]))[0] if 'lq_path' in data else None

    @contextlib.contextmanager
    def _recording_metrics(self, records: list):
        """Record every value SRModel's validation computes, with the image it belongs to."""
        compute = sr_model.calculate_metric

        def record(data, options):
            value = compute(data, options)
            records.append((self._image_name, float(value)))
            return value

        sr_model.calculate_metric = record
        try:
            yield
        finally:
            sr_model.calculate_metric = compute

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        metrics = list((self.opt['val'].get('metrics') or {}).keys())
        if self.is_train or not metrics:
            return super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        records: list = []
        with self._recording_metrics(records):
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        rows = [(records[i][0], [v for _, v in records[i:i + len(metrics)]])
                for i in range(0, len(records), len(metrics))]
        write_summary(self.opt['path']['results_root'], dataloader.dataset.opt['name'], metrics, rows,
                      tiling=tile_options(self.opt))

    def test(self):
        tiling = tile_options(self.opt)
        net = getattr(self, 'net_g_ema', self.net_g)
        multiple = window_multiple(self.get_bare_model(net))
        if tiling is None and multiple is None:
            return super().test()
        was_training = net.training
        net.eval()
        run = padded_to_multiple(net, multiple) if multiple else net
        with torch.no_grad():
            self.output = tiled_forward(run, self.lq, *tiling) if tiling else run(self.lq)
        net.train(was_training)
