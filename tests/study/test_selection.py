"""ibsd-study's early stopping (the best-validated checkpoint of each run) and its convergence table."""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

from ibsd.errors import OptionError
from ibsd.study.report import write_report
from ibsd.study.runner import evaluation_tasks, finished, mark_done, plan
from ibsd.study.selection import PLATEAU_DB, last_quarter, selected_iteration
from ibsd.study.spec import load_study, run_options
from tests.study.helpers import assert_study_error, study_file


def test_the_selection_is_the_best_checkpointed_validation_and_the_earliest_on_ties():
    curve = {2: 20.0, 3: 25.0, 4: 21.0, 6: 21.5, 8: 21.5, 10: 30.0}
    assert selected_iteration(curve, total=8, interval=2) == 6   # 3 has no checkpoint, 10 is past the end
    assert selected_iteration({2: math.nan, 4: 19.0}, total=8, interval=2) == 4
    assert selected_iteration({2: math.nan}, total=8, interval=2) is None
    assert selected_iteration({}, total=8, interval=2) is None


def test_the_last_quarter_gain_is_taken_on_the_mean_over_seeds():
    seeds = [{500: 30.0, 1500: 30.5, 2000: 30.51}, {500: 29.0, 1500: 29.7, 2000: 29.75}]
    quarter = last_quarter(seeds, total=2000)
    assert (quarter.start, quarter.end, quarter.seeds) == (1500, 2000, 2)
    assert quarter.gain == pytest.approx(0.03) and not quarter.plateau
    flat = last_quarter([{1500: 30.0, 2000: 30.0 + PLATEAU_DB / 2}], total=2000)
    assert flat.plateau
    assert last_quarter([{500: 30.0, 1000: 30.1}], total=2000) is None  # nothing validated after 3/4 yet
    assert last_quarter([{1500: 30.0, 2000: 31.0}, {2000: 31.0}], total=2000) is None  # no common start


def checkpoint_freqs(path: Path) -> dict[str, int]:
    study = load_study(path)
    return {r.name: run_options(study, r, path.parent)['logger']['save_checkpoint_freq'] for r in study.runs}


def test_early_stopping_saves_a_checkpoint_at_every_validation(tmp_path):
    plain = study_file(tmp_path, set={'train:total_iter': 12, 'val:val_freq': 4}, eval_iters=[6])
    assert set(checkpoint_freqs(plain).values()) == {3}   # gcd(6, 12) = 6, then at least 4 saves
    stopped = study_file(tmp_path, set={'train:total_iter': 12, 'val:val_freq': 4}, eval_iters=[6],
                         early_stopping='psnr')
    assert set(checkpoint_freqs(stopped).values()) == {2}  # and every validation: gcd(6, 12, 4)


@pytest.mark.parametrize('changes, message', [
    ({'early_stopping': 'lpips'}, "early_stopping: the validation metric to select on, one of ('psnr', 'ssim')"),
    ({'early_stopping': 'psnr', 'set': {'val:val_freq': 3, 'logger:print_freq': 2}},
     'early_stopping: logger:print_freq (2) must divide val:val_freq (3)'),
    ({'early_stopping': 'psnr', 'set': {'val:val_freq': 2.5}},
     'early_stopping: val:val_freq must be a whole number of iterations, got 2.5'),
])
def test_a_bad_early_stopping_setting_names_the_key(tmp_path, changes, message):
    assert_study_error(tmp_path, changes, message)


def fake_run(out: Path, run_name: str, validations: dict[int, float], iterations: list[int]) -> None:
    """A training log with validations, and empty checkpoints, as a finished run leaves them."""
    lines = []
    for iteration, psnr in validations.items():
        lines.append(f'2026 INFO: [x..][epoch:  0, iter:{iteration:>8,d}, lr:(1.000e-03,)] '
                     '[eta: 0:00:01, time (data): 0.1 (0.0)] l_pix: 1.0e-01 ')
        lines.append(f'2026 INFO: Validation val\n\t # psnr: {psnr:.4f}\tBest: 0 @ 0 iter')
    (out / 'logs').mkdir(parents=True, exist_ok=True)
    (out / 'logs' / f'{run_name}.log').write_text('\n'.join(lines) + '\n')
    models = out / 'experiments' / run_name / 'models'
    models.mkdir(parents=True, exist_ok=True)
    for iteration in iterations:
        (models / f'net_g_{iteration}.pth').write_bytes(b'')


def write_tables(out: Path, run_name: str, iteration: int, psnr: float) -> None:
    folder = out / 'results' / f'{run_name}_i{iteration}'
    folder.mkdir(parents=True, exist_ok=True)
    for name in ('val_set', 'other'):
        (folder / f'{name}_metrics.csv').write_text(f'image,psnr,ssim\na,{psnr},0.5\nb,{psnr + 1},0.5\n'
                                                    f'mean,{psnr + 0.5},0.5\n')


def test_the_selected_checkpoint_is_evaluated_and_a_study_kept_without_checkpoints_is_finished(tmp_path):
    path = study_file(tmp_path, set={'train:total_iter': 8}, eval_iters=[4], early_stopping='psnr')
    study = load_study(path)
    out = tmp_path / 'studies' / 'tiny'
    run = next(r for r in study.runs if r.name == 'tiny_IBSD_s0')
    options = run_options(study, run, tmp_path)
    fake_run(out, run.name, {2: 20.0, 4: 21.0, 6: 22.0, 8: 21.5}, [2, 4, 6, 8])
    labels = [task.label for task in evaluation_tasks(study, run, options, out, tmp_path)()]
    assert labels == ['IBSD s0 test @4', 'IBSD s0 test @6', 'IBSD s0 test @8']

    for iteration in (4, 6, 8):
        write_tables(out, run.name, iteration, 20.0)
    assert evaluation_tasks(study, run, options, out, tmp_path)() == []
    shutil.rmtree(out / 'experiments')  # the study folder kept without its checkpoints
    assert not finished(study, out, run, 8)  # no record that it trained with these options
    mark_done(study, out, run)
    assert finished(study, out, run, 8)
    assert evaluation_tasks(study, run, options, out, tmp_path)() == []
    assert run.name not in [task.log.stem for task in plan(study, out, tmp_path)]
    changed = load_study(study_file(tmp_path, set={'train:total_iter': 8, 'train:optim_g:lr': 0.005}, eval_iters=[4],
                                    early_stopping='psnr'))
    assert not finished(changed, out, run, 8)  # its tables are of other options: it trains again
    assert run.name in [task.log.stem for task in plan(changed, out, tmp_path)]
    (out / 'results' / f'{run.name}_i6' / 'other_metrics.csv').unlink()
    with pytest.raises(OptionError, match='net_g_6.pth is missing, and the evaluation of iteration 6 has not'):
        evaluation_tasks(study, run, options, out, tmp_path)()


def test_the_report_compares_each_run_at_its_selected_checkpoint_and_shows_convergence(tmp_path):
    path = study_file(tmp_path, set={'train:total_iter': 8}, eval_iters=[4], early_stopping='psnr')
    study = load_study(path)
    out = tmp_path / 'studies' / 'tiny'
    options = {r.name: run_options(study, r, tmp_path) for r in study.runs}
    best = {'tiny_L1_s0': 4, 'tiny_L1_s1': 8, 'tiny_IBSD_s0': 6, 'tiny_IBSD_s1': 6}
    for run in study.runs:
        mark_done(study, out, run)
    for name, chosen in best.items():
        fake_run(out, name, {i: 20.0 + (i == chosen) + i / 100 for i in (2, 4, 6, 8)}, [])
        for iteration in sorted({4, 8, chosen}):
            # IBSD's students are 0.5 dB better at their selected iteration, and equal to L1 at the end
            bonus = 0.5 if name.startswith('tiny_IBSD') and iteration == chosen else 0.0
            write_tables(out, name, iteration, 20.0 + bonus)
    write_report(study, out, options, plots=False)
    with open(out / 'table.csv', newline='') as handle:
        rows = [r for r in csv.DictReader(handle) if r['test_set'] == 'other']
    assert [(r['variant'], r['iteration'], r['selected_iterations']) for r in rows] == [
        ('L1', '8', ''), ('IBSD', '8', ''), ('L1', 'selected', '0:4 1:8'), ('IBSD', 'selected', '0:6 1:6')]
    assert float(rows[1]['d_psnr_mean']) == pytest.approx(0.0)
    assert float(rows[3]['d_psnr_mean']) == pytest.approx(0.5)
    text = (out / 'table.md').read_text()
    assert '| IBSD | best val: 6, 6 | 0 1 |' in text and '| L1 | best val: 4, 8 | 0 1 |' in text
    assert '## Convergence: validation Y-PSNR on val during training' in text
    # L1's mean curve: 20.06 at iteration 6 (seed 0: 20.06, seed 1: 20.06), 20.58 at 8 (20.08, 21.08)
    assert '| L1 | 2 | 20.060 @ 6 | 20.580 @ 8 | +0.520 | no |' in text


def test_the_validation_after_training_is_not_dated_by_the_last_logged_iteration(tmp_path):
    """BasicSR validates the final weights once more after 'End of training'; with print_freq not dividing
    total_iter, the last iteration line is an earlier one, whose validation must keep its own score."""
    from ibsd.study.results import read_training_log
    log = tmp_path / 'run.log'
    log.write_text(
        '2026 INFO: [x..][epoch:  0, iter:     900, lr:(1.0e-03,)] [eta: 0:00:01, time (data): 0.1 (0.0)] l: 1 \n'
        '2026 INFO: Validation val\n\t # psnr: 20.0000\tBest: 20.0 @ 900 iter\n'
        '2026 INFO: End of training. Time consumed: 0:01:00\n2026 INFO: Save the latest model.\n'
        '2026 INFO: Validation val\n\t # psnr: 25.0000\tBest: 25.0 @ 1050 iter\n')
    assert read_training_log(log).validation == {'val psnr': {900: 20.0}}
