"""Exact resume of a training run: where a saved iteration falls in its epoch, and continuing there.

BasicSR resumes a state saved mid-epoch at the start of its epoch and replays it. Every training
state records what the place of a training sample depends on (:func:`sampling_record`: the
samples' seed and the loader's layout); a resumed run continues after the saved iteration when
the layout is unchanged and restarts the epoch, saying why, when it changed.
"""
from __future__ import annotations


def sampling_layout(opt: dict) -> dict:
    """What the place of a training sample in an epoch depends on (recorded by the data loader set-up)."""
    return {key: opt.get(key) for key in ('iters_per_epoch', 'batch_size_per_gpu', 'world_size', 'samples_per_rank')}


def sampling_record(opt: dict) -> dict:
    """Saved in every training state (``'sampling'``): the samples' seed, the loader's layout and the
    anchor ``[epoch, iteration]`` at which an epoch of this layout began."""
    return {'seed': int(opt.get('manual_seed') or 0), **sampling_layout(opt),
            'anchor': list(opt.get('sampling_anchor') or (0, 0))}


def state_epoch(opt: dict, epoch: int, current_iter: int) -> int:
    """The epoch a state saved after ``current_iter`` resumes in: the next one when the iteration ended
    its epoch (BasicSR would replay the finished epoch)."""
    per_epoch = opt.get('iters_per_epoch')
    if not per_epoch:
        return epoch
    anchor_epoch, anchor_iter = opt.get('sampling_anchor') or (0, 0)
    done = current_iter - anchor_iter - (epoch - anchor_epoch) * per_epoch
    return epoch + 1 if done >= per_epoch else epoch


def share_drawn_seed(opt: dict) -> None:
    """Under DDP every rank takes rank 0's ``manual_seed``: basicsr draws one per rank when the YAML sets
    none, and a training state records rank 0's (each rank's streams are then seeded ``seed + rank``)."""
    import torch.distributed as dist
    if not (opt.get('dist') and dist.is_available() and dist.is_initialized()):
        return
    seed = [opt.get('manual_seed')]
    dist.broadcast_object_list(seed, src=0)
    if seed[0] != opt.get('manual_seed'):
        from basicsr.utils import set_random_seed
        opt['manual_seed'] = seed[0]
        set_random_seed(seed[0] + opt['rank'])


def resume_part_way(opt: dict, sampler, logger) -> None:
    """Make the training loader continue a resumed run at the saved iteration's place in its epoch.

    The place is counted from the anchor recorded in the state; when the loader's layout changed
    (batch size, GPUs, data), the epoch restarts from its first batch, and that becomes the anchor.
    """
    opt['sampling_anchor'] = [0, 0]
    position = opt.get('resume_from')
    if not position or not hasattr(sampler, 'start_part_way'):
        return
    epoch, iteration = position['epoch'], position['iter']
    recorded, layout = position.get('sampling'), sampling_layout(opt)
    if recorded is None:
        logger.warning('The training state records no sampling layout (written by an older version): the epoch '
                       'is assumed to have begun at iteration epoch x iterations per epoch')
        anchor = [0, 0]
    else:
        changed = [f'{key} {recorded.get(key)} -> {value}' for key, value in layout.items()
                   if recorded.get(key) != value]
        if changed:
            logger.warning(f"The data loader changed since the training state was saved ({', '.join(changed)}): "
                           f'epoch {epoch} restarts from its first batch at iteration {iteration}')
            opt['sampling_anchor'] = [epoch, iteration]
            return
        anchor = list(recorded['anchor'])
        if position.get('seed_was') != recorded['seed']:
            logger.warning(f"The training samples keep the run's seed {recorded['seed']} (manual_seed is now "
                           f"{position.get('seed_was')}; BasicSR draws a new one at each launch when the YAML "
                           'sets none): start a new experiment to train with another seed')
    per_epoch = layout['iters_per_epoch']
    done = iteration - anchor[1] - (epoch - anchor[0]) * per_epoch
    if recorded is None and done == per_epoch:  # older states did not move on to the next epoch
        sampler.start_part_way(epoch, done * layout['batch_size_per_gpu'])
        opt['sampling_anchor'] = anchor
        logger.info(f'Epoch {epoch} was complete: resuming with the next one')
        return
    if not 0 <= done < per_epoch:
        logger.warning(f'The training state (epoch {epoch}, iteration {iteration}) does not fall in an epoch of '
                       f'{per_epoch} iterations: epoch {epoch} restarts from its first batch')
        opt['sampling_anchor'] = [epoch, iteration]
        return
    opt['sampling_anchor'] = anchor
    sampler.start_part_way(epoch, done * layout['batch_size_per_gpu'])
    logger.info(f'Resuming epoch {epoch} after its first {done} of {per_epoch} iterations')


def warn_about_threaded_sampling(opt: dict, logger) -> None:
    """``prefetch_mode: cpu`` without workers draws training samples on a thread that seeds the global random
    streams while the training step runs: whatever the step draws from them could then differ."""
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if train_set.get('prefetch_mode') == 'cpu' and not int(train_set.get('num_worker_per_gpu') or 0):
        logger.warning('datasets:train: prefetch_mode cpu with num_worker_per_gpu 0 draws the samples on a '
                       'background thread that shares the global random streams with the training step: a network '
                       'that draws from them (dropout) may not resume exactly; set num_worker_per_gpu >= 1')


def epochs_needed(opt: dict, total_epochs: int, total_iters: int, logger) -> int:
    """Enough epochs for ``total_iters``: basicsr counts ``ceil(samples / batch)`` iterations per epoch although
    its loader drops the last partial batch, and a resumed run whose epochs changed length counts from the
    anchor (:func:`resume_part_way`). Too few epochs would end training early with exit status 0."""
    import math
    anchor_epoch, anchor_iter = opt.get('sampling_anchor') or (0, 0)
    per_epoch = max(1, int(opt['iters_per_epoch']))
    needed = anchor_epoch + math.ceil(max(0, total_iters - anchor_iter) / per_epoch)
    if needed > total_epochs:
        logger.info(f'Total epochs: {needed} (not {total_epochs}: {per_epoch} full batches per epoch)')
    return max(total_epochs, needed)


