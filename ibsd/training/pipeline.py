"""IBSD's training features installed into BasicSR's own train and test pipelines (``import ibsd`` does it).

- options: the ``-opt`` file read with errors in one line, every run's options checked before any
  folder, data set or network is made (:mod:`ibsd.options`), the CPU threads set (:mod:`ibsd.threads`);
- data: every data set checked before it is built (:mod:`ibsd.data.checks`); training samples drawn
  from streams seeded by their place (:mod:`ibsd.data.resumable_sampling`); a training set without
  one full batch refused;
- resume: the loader continues a resumed run where the state was saved (:mod:`ibsd.training.resume`);
- checkpoints: written atomically, never with non-finite weights (:mod:`ibsd.training.checkpoints`).
"""
from __future__ import annotations

import sys

from ibsd.training.resume import epochs_needed, resume_part_way, share_drawn_seed, warn_about_threaded_sampling

_INSTALLED_FLAG = '_ibsd_training_installed'


def with_option_defaults(parse_options):
    """Wrap basicsr's ``parse_options``: the ``-opt`` file is read with errors in one line, optional keys basicsr
    indexes directly exist, iteration counts are numbers, and every run's options (an IBSD run's in full) are
    checked before any folder, data set or network is made (:mod:`ibsd.options.run_file`)."""

    def parse_options_with_defaults(root_path: str, is_train: bool = True):
        from ibsd.options.train_sections import check_ibsd_options, convert_iteration_counts
        from ibsd.options.run_file import check_option_file, check_run_options
        from ibsd.threads import apply_run_threads
        check_option_file(sys.argv)
        opt, args = parse_options(root_path, is_train)
        if isinstance(opt.get('val'), dict):
            opt['val'].setdefault('suffix', None)
        share_drawn_seed(opt)
        if is_train and isinstance(opt.get('train'), dict):
            convert_iteration_counts(opt['train'])
        check_run_options(opt, is_train)
        if is_train and opt.get('model_type') == 'IBSDModel':
            check_ibsd_options(opt)
        threads, source = apply_run_threads(opt)
        if opt.get('rank', 0) == 0:
            print(f'CPU threads: {threads} ({source})', flush=True)
        return opt, args

    parse_options_with_defaults.__wrapped__ = parse_options
    return parse_options_with_defaults


def position_seeded_train_sets(build_dataset):
    """Wrap ``basicsr.train.build_dataset``: training sets draw each sample from streams seeded by its place."""

    def build(dataset_opt: dict):
        from ibsd.data.resumable_sampling import PositionSeededDataset
        dataset = build_dataset(dataset_opt)
        return PositionSeededDataset(dataset) if dataset_opt.get('phase') == 'train' else dataset

    build.__wrapped__ = build_dataset
    return build


def recording_iters_per_epoch(create_train_val_dataloader):
    """Wrap ``basicsr.train.create_train_val_dataloader``: refuse a training set without one full batch, store
    ``opt['iters_per_epoch']``, seed the training samples from ``manual_seed`` and resume part-way into an epoch."""

    def create_and_record(opt, logger):
        import torch
        from ibsd.data.checks import check_full_batches
        from ibsd.data.memory_backend import warn_if_cache_is_dropped
        result = create_train_val_dataloader(opt, logger)
        loader, sampler = result[0], result[1]
        if loader is not None:
            check_full_batches(opt, loader, sampler)
            opt.update(iters_per_epoch=len(loader), batch_size_per_gpu=loader.batch_size,
                       world_size=int(opt.get('world_size') or 1),
                       samples_per_rank=getattr(sampler, 'num_samples', len(loader.dataset)))
            seed = int(opt.get('manual_seed') or 0)
            if hasattr(loader.dataset, 'seed'):
                loader.dataset.seed = seed
            loader.generator = torch.Generator().manual_seed(seed)  # worker seeds never draw from torch's stream
            warn_about_threaded_sampling(opt, logger)
            warn_if_cache_is_dropped(opt['datasets']['train'], logger)
            resume_part_way(opt, sampler, logger)
            result = (*result[:3], epochs_needed(opt, result[3], result[4], logger), *result[4:])
        return result

    create_and_record.__wrapped__ = create_train_val_dataloader
    return create_and_record


def install() -> None:
    """Install the features into the imported basicsr (idempotent; after :func:`ibsd.compat.patch_basicsr`)."""
    import basicsr
    if getattr(basicsr, _INSTALLED_FLAG, False):
        return
    import basicsr.test
    import basicsr.train
    from basicsr.models.base_model import BaseModel

    from ibsd.data.checks import checked_build_dataset
    from ibsd.data.resumable_sampling import ResumableSampler
    from ibsd.compat import ORIGINALS
    from ibsd.training import checkpoints
    ORIGINALS.update(load_resume_state=basicsr.train.load_resume_state, save_network=BaseModel.save_network,
                     save_training_state=BaseModel.save_training_state)
    basicsr.train.load_resume_state = checkpoints.load_resume_state
    for pipeline_module in (basicsr.train, basicsr.test):
        pipeline_module.build_dataset = checked_build_dataset(pipeline_module.build_dataset)
        pipeline_module.parse_options = with_option_defaults(pipeline_module.parse_options)
    basicsr.train.build_dataset = position_seeded_train_sets(basicsr.train.build_dataset)
    basicsr.train.EnlargedSampler = ResumableSampler
    basicsr.train.create_train_val_dataloader = recording_iters_per_epoch(basicsr.train.create_train_val_dataloader)
    BaseModel.save_network = checkpoints.save_network
    BaseModel.save_training_state = checkpoints.save_training_state
    setattr(basicsr, _INSTALLED_FLAG, True)
