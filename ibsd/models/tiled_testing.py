"""Tiled testing for BasicSR models: the one ``test()`` path of every paired comparison.

Both arms of a comparison (the plain baseline, ``TiledSRModel``, and ``IBSDModel``) test through
:class:`TiledTestMixin`, so their validation and test scores come from the same pixels: whole
images or tiles as the ``tile`` option says, and inputs padded to the arch's size multiple
(:func:`ibsd.inference.size_multiple`: BasicSR's SwinIR's window) by the same padding.
"""
from __future__ import annotations

import contextlib
from os import path as osp

import torch

from basicsr.models import sr_model

from ibsd.errors import OptionError
from ibsd.inference.sizes import padded_to_multiple, size_multiple
from ibsd.inference.tiling import tiled_forward
from ibsd.metrics.summary_table import write_summary


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


class TiledTestMixin:
    """For a BasicSR ``SRModel`` subclass (listed before it in the bases): ``test()`` (validation and
    ``ibsd-test``) runs tile by tile when the YAML has ``tile: {tile_size: 256, tile_pad: 16}`` (LR
    pixels) and on whole images otherwise, on inputs padded to the network's size multiple; test runs
    write ``<dataset>_metrics.csv`` / ``.md`` (per image, mean and the tile setting) in the results folder."""

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
        multiple = size_multiple(self.get_bare_model(net))
        if tiling is None and multiple == 1:
            return super().test()
        was_training = net.training
        net.eval()
        run = padded_to_multiple(net, multiple)
        with torch.no_grad():
            self.output = tiled_forward(run, self.lq, *tiling) if tiling else run(self.lq)
        net.train(was_training)
