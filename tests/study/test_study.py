"""ibsd-study: study files, generated run options, paired comparisons, and a tiny study end to end."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ibsd.errors import OptionError
from ibsd.study.results import Key, compare, read_training_log
from ibsd.study.spec import evaluation_options, load_study, run_options
from tests.helpers import REPO, make_pairs
from tests.study.helpers import assert_study_error, study_file, table


def test_variants_edit_the_base_and_the_plain_baseline_has_no_ibsd_key(tmp_path):
    path = study_file(tmp_path, variants={
        'L1': {'plain': True}, 'IBSD': {}, 'MI': {'remove': ['train:wavelet_opt'], 'seeds': [0]},
        'lambda_MI=1e-2': {'set': {'train:mi_opt:loss_weight': 0.01}}},
        set={'train:total_iter': 6})
    study = load_study(path)
    assert [(r.variant, r.seed) for r in study.runs] == [('L1', 0), ('L1', 1), ('IBSD', 0), ('IBSD', 1), ('MI', 0),
                                                          ('lambda_MI=1e-2', 0), ('lambda_MI=1e-2', 1)]
    options = {r.name: run_options(study, r, tmp_path) for r in study.runs}
    plain = options['tiny_L1_s1']
    assert plain['model_type'] == 'TiledSRModel' and plain['manual_seed'] == 1
    assert not {'mi_opt', 'wavelet_opt', 'soft_target', 'optim_est', 'ibsd'} & set(plain['train'])
    assert 'network_est' not in plain
    assert options['tiny_IBSD_s0']['model_type'] == 'IBSDModel'
    assert 'wavelet_opt' not in options['tiny_MI_s0']['train'] and 'mi_opt' in options['tiny_MI_s0']['train']
    assert options['tiny_lambda_MI_1e-2_s0']['train']['mi_opt']['loss_weight'] == 0.01
    for opt in options.values():
        assert opt['train']['total_iter'] == 6 and opt['logger']['save_checkpoint_freq'] == 1  # gcd(2, 6), then 4 saves
        assert opt['datasets']['train']['dataroot_gt'] == str(tmp_path / 'data' / 'train' / 'hr')
    test = evaluation_options(study, study.runs[2], options['tiny_IBSD_s0'], tmp_path / 'w.pth', 6, tmp_path)
    assert test['tile'] == {'tile_size': None} and test['path']['param_key_g'] == 'params_ema'
    assert [d['name'] for d in test['datasets'].values()] == ['val_set', 'other']


@pytest.mark.parametrize('changes, message', [
    ({'variants': {'L1': {'plian': True}}}, "variants:L1: unknown key 'plian': did you mean 'plain'"),
    ({'baseline': 'L2'}, "baseline: 'L2' is not one of the variants ['L1', 'IBSD']"),
    ({'seeds': ['a']}, "seeds[0]: expected a number, got 'a'"),
    ({'test_sets': {'x': {'dataroot_gt': 'a'}}}, 'test_sets:x: dataroot_lq is missing'),
    ({'eval_iters': [8]}, 'eval_iters [8] are beyond train:total_iter 4'),
    ({'variants': {'L1': {}, 'WAV': {'remove': ['train:mi_otp']}}}, "variants:WAV: remove: 'train:mi_otp' is not in"),
    ({'sedes': [1]}, "unknown key 'sedes': did you mean 'seeds'"),
    ({'variants': {'L1': {'plain': True, 'set': {'train:ema_decy': 0.999}}}},
     "run tiny_L1_s0 (variant L1): train: unknown key 'ema_decy': did you mean 'ema_decay'?"),
    ({'variants': {'L1': {'plain': True}, 'IBSD': {'set': {'datasets:train:gt_sise': 64}}}},
     "run tiny_IBSD_s0 (variant IBSD): datasets:train: unknown key 'gt_sise': did you mean 'gt_size'?"),
    ({'variants': {'L1': {'plain': True}, 'IBSD': {'set': {'train:ibsd:estimator_step': 5}}}},
     "run tiny_IBSD_s0 (variant IBSD): train:ibsd: unknown key 'estimator_step': did you mean 'estimator_steps'?"),
    ({'variants': {'L1': {'plain': True, 'set': {'train:mi_opt': {'type': 'IBCLUBLoss'}}}}},
     'run tiny_L1_s0 (variant L1): train:mi_opt: read only by IBSDModel, and model_type TiledSRModel ignores it'),
    ({'base': '.'}, 'base: . ('),
    ({'contrasts': [['IBSD', 'L1']]}, "contrasts[0]: every variant is compared with the baseline 'L1'"),
    ({'contrasts': [['IBSD', 'IBDS']]}, "contrasts[0]: 'IBDS' is not one of the variants ['L1', 'IBSD']"),
    ({'contrasts': [['IBSD', 'IBSD']]}, "contrasts[0]: 'IBSD' against itself"),
    ({'contrasts': ['IBSD']}, "contrasts[0]: expected a pair [variant, reference], got 'IBSD'"),
    ({'contrasts': {'IBSD': 'L1'}}, 'contrasts: expected a list of [variant, reference] pairs'),
])
def test_a_bad_study_file_is_an_error_naming_the_key(tmp_path, changes, message):
    assert_study_error(tmp_path, changes, message)


def test_paired_differences_per_seed_and_per_image(tmp_path):
    study = load_study(study_file(tmp_path))
    scores = {Key('L1', 0, 4, 'other'): table({'a': 20.0, 'b': 30.0}),
              Key('IBSD', 0, 4, 'other'): table({'a': 20.5, 'b': 29.9}),
              Key('L1', 1, 4, 'other'): table({'a': 21.0, 'b': 30.0}),
              Key('IBSD', 1, 4, 'other'): table({'a': 21.2, 'b': 30.2}),
              Key('IBSD', 2, 4, 'other'): table({'a': 99.0, 'b': 99.0})}  # seed 2 has no baseline: not paired
    result = compare(scores, study, 'IBSD', 'other', {'L1': 4, 'IBSD': 4})
    assert result.per_seed == pytest.approx({0: 0.2, 1: 0.2})
    assert result.mean == pytest.approx(0.2) and result.positive == 2
    assert (result.images_better, result.images) == (2, 2)  # a: +0.35, b: +0.05 over the two seeds


def test_contrasts_pair_two_variants_by_seed_in_both_tables(tmp_path):
    from scipy import stats

    from ibsd.study.report import contrast_rows, markdown, summary_rows, write_contrasts_csv
    from ibsd.study.selection import SELECTED
    study = load_study(study_file(tmp_path, variants={'L1': {'plain': True}, 'IBSD': {}, 'MI': {}},
                                  seeds=[0, 1, 2], contrasts=[['MI', 'IBSD']]))
    ibsd = {0: (20.0, 30.0), 1: (21.0, 30.5), 2: (20.5, 29.0)}
    mi = {0: (20.3, 30.1), 1: (21.1, 30.1), 2: (20.0, 29.6)}  # MI - IBSD per seed: +0.2, -0.15, +0.05
    scores = {}
    for seed in range(3):
        scores[Key('L1', seed, 4, 'other')] = table({'a': 10.0, 'b': 10.0})
        for name, values, iteration in (('IBSD', ibsd, 4), ('MI', mi, 4), ('IBSD', ibsd, 2), ('MI', mi, 2)):
            shift = 0.0 if iteration == 4 else -1.0  # the earlier checkpoints score 1 dB lower
            scores[Key(name, seed, iteration, 'other')] = table({'a': values[seed][0] + shift,
                                                                 'b': values[seed][1] + shift})
    selected = {'tiny_IBSD_s0': 4, 'tiny_IBSD_s1': 2, 'tiny_IBSD_s2': 4, 'tiny_MI_s0': 4, 'tiny_MI_s1': 4,
                'tiny_MI_s2': 4, 'tiny_L1_s0': 4, 'tiny_L1_s1': 4, 'tiny_L1_s2': 4}
    iterations = {'L1': 4, 'IBSD': 4, 'MI': 4}
    rows = contrast_rows(study, scores, iterations, selected)
    assert [(r['test_set'], r['variant'], r['reference'], r['iteration']) for r in rows] == [
        ('other', 'MI', 'IBSD', '4'), ('other', 'MI', 'IBSD', 'selected')]
    last, early = rows[0]['d_psnr'], rows[1]['d_psnr']
    expected = [0.2, -0.15, 0.05]
    assert list(last.per_seed.values()) == pytest.approx(expected)
    assert last.positive == 2 and (last.images_better, last.images) == (1, 2)  # a: -0.033, b: +0.1
    mean, sem = sum(expected) / 3, stats.sem(expected)
    assert last.t_interval == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=sem))
    assert early.per_seed[1] == pytest.approx(-0.15 + 1.0)  # seed 1's reference was chosen at 2
    assert rows[1]['selected_iterations'] == '0:4/4 1:4/2 2:4/4'
    text = markdown(study, summary_rows(study, scores, iterations), ['psnr'], scores, iterations, rows)
    assert '| MI − IBSD | 4 | 0 1 2 | +0.200, -0.150, +0.050 | +0.033 | 2/3 | 1/2 |' in text
    assert '| MI − IBSD | best val: 4/4, 4/2, 4/4 | 0 1 2 |' in text
    write_contrasts_csv(tmp_path / 'contrasts.csv', rows, ['psnr'])
    with open(tmp_path / 'contrasts.csv', newline='') as handle:
        written = list(csv.DictReader(handle))
    assert float(written[0]['d_psnr_t_low']) == pytest.approx(last.t_interval[0], abs=1e-6)
    assert written[1]['selected_iterations'] == '0:4/4 1:4/2 2:4/4' and written[0]['reference'] == 'IBSD'
    assert SELECTED not in {r['iteration'] for r in written}


def test_the_table_shows_a_spread_only_over_several_seeds(tmp_path):
    from ibsd.study.report import markdown, summary_rows
    study = load_study(study_file(tmp_path, variants={'L1': {'plain': True}, 'IBSD': {}, 'MI': {'seeds': [0]}}))
    scores = {Key('L1', 0, 4, 'other'): table({'a': 20.0}), Key('L1', 1, 4, 'other'): table({'a': 21.0}),
              Key('IBSD', 0, 4, 'other'): table({'a': 20.5}), Key('IBSD', 1, 4, 'other'): table({'a': 21.5}),
              Key('MI', 0, 4, 'other'): table({'a': 20.25})}
    iterations = {'L1': 4, 'IBSD': 4, 'MI': 4}
    rows = summary_rows(study, scores, iterations)
    text = markdown(study, rows, ['psnr'], scores, iterations)
    line = {row.split(' | ')[0].strip('| '): row for row in text.splitlines() if row.startswith('| ')}
    assert '| 20.500 ± 0.707 |' in line['L1'] and '| 21.000 ± 0.707 |' in line['IBSD']
    assert '| 20.250 |' in line['MI'] and '±' not in line['MI']


def test_a_collapsed_variant_is_left_out_of_the_plots_and_named_in_the_table(tmp_path):
    from ibsd.study.report import off_scale_variants, summary_rows
    study = load_study(study_file(tmp_path, variants={'L1': {'plain': True}, 'IBSD': {}, 'MI': {'seeds': [0]}}))
    scores = {Key('L1', 0, 4, 'other'): table({'a': 20.0}), Key('IBSD', 0, 4, 'other'): table({'a': 19.5}),
              Key('MI', 0, 4, 'other'): table({'a': 12.0})}
    rows = summary_rows(study, scores, {'L1': 4, 'IBSD': 4, 'MI': 4})
    assert off_scale_variants(study, rows) == ['MI']


def test_hidden_variants_leave_the_plots_and_the_others_keep_their_colours(tmp_path, monkeypatch):
    import ibsd.study.plots as plots
    import ibsd.study.visual as visual
    study = load_study(study_file(tmp_path, variants={'L1': {'plain': True}, 'MI': {}, 'IBSD': {}}))
    seen = []
    for name in ('validation_curves', 'test_curves', 'loss_terms'):
        monkeypatch.setattr(plots, name, lambda s, *args: seen.append((list(s.variants), args[-1])) or False)
    monkeypatch.setattr(plots, 'information_plane', lambda *args: False)
    monkeypatch.setattr(plots, 'per_image', lambda s, *args: seen.append((list(s.variants), args[-1])) or False)
    monkeypatch.setattr(visual, 'crop_strip', lambda *args: None)
    plots.write_all(study, tmp_path, {}, {}, {}, None, hidden=['MI'])
    assert len(seen) == 4
    for variants, colours in seen:
        assert variants == ['L1', 'IBSD'] and colours['IBSD'] == plots._colours(study)['IBSD'] == 'C2'


def test_report_of_a_folder_without_results_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'ibsd.study', str(study_file(tmp_path)), '--report', '--out',
                             str(tmp_path / 'nowhere')], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and 'holds no evaluated run' in result.stderr and 'Traceback' not in result.stderr


def test_training_logs_are_read_with_the_newest_launch_winning(tmp_path):
    log = tmp_path / 'run.log'
    log.write_text(
        '2026 INFO: [tiny_..][epoch:  0, iter:       2, lr:(1.000e-03,)] [eta: 0:00:01, time (data): 0.1 (0.0)] '
        'l_pix: 2.0000e-01 l_mi: -1.0000e-04 \n2026 INFO: Validation val\n\t # psnr: 20.5000\tBest: 20.5 @ 2 iter\n'
        '2026 INFO: [tiny_..][epoch:  0, iter:       2, lr:(1.000e-03,)] [eta: 0:00:01, time (data): 0.1 (0.0)] '
        'l_pix: 1.5000e-01 mi_1: 3.0000e+00 \n')
    parsed = read_training_log(log)
    assert parsed.terms['l_pix'] == {2: 0.15} and parsed.terms['mi_1'] == {2: 3.0}
    assert parsed.validation == {'val psnr': {2: 20.5}}


@pytest.mark.slow
def test_a_tiny_study_trains_evaluates_reports_and_resumes(tmp_path):
    make_pairs(tmp_path / 'data' / 'train', 8, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    make_pairs(tmp_path / 'data' / 'other', 3, scale=2, seed=2)
    path = study_file(tmp_path)
    command = [sys.executable, '-m', 'ibsd.study', str(path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / 'studies' / 'tiny'
    with open(out / 'table.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert [(r['test_set'], r['variant'], r['seeds']) for r in rows] == [
        ('val set', 'L1', '0 1'), ('val set', 'IBSD', '0 1'), ('other', 'L1', '0 1'), ('other', 'IBSD', '0 1')]
    ibsd_row = rows[1]
    per_seed = dict(item.split(':') for item in ibsd_row['d_psnr_per_seed'].split())
    assert set(per_seed) == {'0', '1'}
    assert float(ibsd_row['d_psnr_mean']) == pytest.approx(sum(map(float, per_seed.values())) / 2, abs=1e-5)
    for low, high in (('d_psnr_t_low', 'd_psnr_t_high'), ('d_psnr_boot_low', 'd_psnr_boot_high')):
        assert float(ibsd_row[low]) <= float(ibsd_row['d_psnr_mean']) <= float(ibsd_row[high])
    assert ibsd_row['d_psnr_verdict'] in ('better', 'worse', 'no measured difference')
    assert '| IBSD | 4 | 0 1 |' in (out / 'table.md').read_text()
    for name in ('validation.png', 'test_curves.png', 'losses.png', 'per_image.png', 'crops.png'):
        assert (out / name).stat().st_size > 1000, name
    run = yaml.safe_load((out / 'options' / 'tiny_IBSD_s1.yml').read_text())
    assert run['manual_seed'] == 1 and run['model_type'] == 'IBSDModel'
    assert (out / 'results' / 'tiny_L1_s0_i2' / 'other_metrics.csv').is_file()

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and 'started' not in again.stdout
    assert '0 to train, 0 evaluations' in again.stdout

    # a study restored from its logs and evaluations: the crop strip moves to a seed that kept its
    # checkpoints, and without any it is skipped with a message while the tables are still written
    shutil.rmtree(out / 'experiments' / 'tiny_L1_s0')
    report = command + ['--report']
    moved = subprocess.run(report, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    assert ', seed 1: IBSD - L1' in (out / 'crops.txt').read_text()
    shutil.rmtree(out / 'experiments')
    (out / 'table.md').unlink()
    bare = subprocess.run(report, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert bare.returncode == 0, bare.stdout[-3000:] + bare.stderr[-3000:]
    assert 'crops.png not written' in bare.stdout + bare.stderr and 'tiny_L1_s0' in bare.stdout + bare.stderr
    assert '| IBSD | 4 | 0 1 |' in (out / 'table.md').read_text()


@pytest.mark.parametrize('path', sorted((REPO / 'options' / 'study').glob('*.yml')),
                         ids=lambda p: p.stem)
def test_every_shipped_study_file_makes_valid_ibsd_options(path):
    from basicsr.models import build_model  # noqa: F401  (registries filled by ibsd)

    from ibsd.options.train_sections import check_ibsd_options
    study = load_study(path)
    assert study.baseline in study.variants and len(study.seeds) >= 2  # a t-interval needs two
    for run in study.runs:
        options = run_options(study, run, Path.cwd())
        if options['model_type'] == 'IBSDModel':
            check_ibsd_options(options)
        assert all(i < options['train']['total_iter'] for i in study.eval_iters)


def test_every_run_is_checked_before_any_trains(tmp_path):
    """A typo in the last variant stops the study before the first run starts."""
    path = study_file(tmp_path, variants={'L1': {'plain': True}, 'IBSD': {'set': {'train:ibsd:estimator_step': 5}}})
    result = subprocess.run([sys.executable, '-m', 'ibsd.study', str(path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "did you mean 'estimator_steps'?" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / 'studies').exists()


def test_invalid_yaml_in_a_study_file_names_file_and_line(tmp_path):
    path = tmp_path / 'study.yml'
    path.write_text('name: x\nvariants: {L1: {plain: true}\n')
    with pytest.raises(OptionError, match=rf'^{path}:3:1: invalid YAML: .* at line 2, column 11\)$'):
        load_study(path)


def test_a_part_of_the_study_is_trained_by_variant_and_seed(tmp_path):
    from ibsd.study.cli import selected_runs
    from ibsd.study.runner import plan
    study = load_study(study_file(tmp_path))
    assert selected_runs(study, None, None) == {r.name for r in study.runs}
    part = selected_runs(study, ['IBSD'], [1])
    assert part == {'tiny_IBSD_s1'}
    assert [t.label for t in plan(study, tmp_path / 'out', tmp_path, part)] == ['IBSD s1']
    assert [t.label for t in plan(study, tmp_path / 'out', tmp_path, selected_runs(study, None, [0]))] == \
        ['L1 s0', 'IBSD s0']
    with pytest.raises(OptionError, match=r"--variants: \['L2'\] not in the study"):
        selected_runs(study, ['L2'], None)
    with pytest.raises(OptionError, match=r'--seeds \[7\]: no run of the study has these seeds'):
        selected_runs(study, None, [7])


@pytest.mark.parametrize('signal_name', ['SIGTERM', 'SIGHUP'])
def test_a_killed_study_stops_its_runs(tmp_path, signal_name):
    """``kill`` of the study terminates the runs it started: none is left to train beside its restart."""
    import signal
    import time
    script = tmp_path / 'study.py'
    script.write_text(
        'import signal, sys, subprocess\nfrom pathlib import Path\nfrom ibsd.study.runner import Task, execute\n'
        'signal.signal(signal.SIGHUP, signal.SIG_DFL)\n'  # as started from a terminal, not under nohup
        'out = Path(sys.argv[1])\n'
        'task = Task("sleeper", [sys.executable, "-c", "import time; print(\\"up\\", flush=True); time.sleep(120)"],'
        ' out / "sleeper.log", 1)\n'
        'try:\n    execute([task], 1, out, 1, print_line=lambda line: None)\n'
        'except KeyboardInterrupt as stop:\n'
        '    print("stopped", getattr(stop, "number", None), task.process.poll(), flush=True)\n')
    study = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while 'up' not in ((tmp_path / 'sleeper.log').read_text() if (tmp_path / 'sleeper.log').exists() else ''):
        assert time.monotonic() < deadline and study.poll() is None
        time.sleep(0.1)
    study.send_signal(getattr(signal, signal_name))
    output, _ = study.communicate(timeout=60)
    number = getattr(signal, signal_name).value
    assert output.split() == ['stopped', str(number), str(-signal.SIGTERM.value)]  # the run was terminated


def test_a_study_that_switches_to_reading_from_memory_keeps_its_runs(tmp_path):
    """io_backend memory and persistent_workers give the same samples: finished runs keep their fingerprint
    and a started run continues; any other change of the data set is still a new run."""
    from ibsd.study.runner import write_options
    from ibsd.study.spec import options_fingerprint
    one_worker = {'datasets:train:num_worker_per_gpu': 1}
    before = {r.name: options_fingerprint(load_study(study_file(tmp_path, set=one_worker)), r)
              for r in load_study(study_file(tmp_path, set=one_worker)).runs}
    faster = {**one_worker, 'datasets:train:io_backend': {'type': 'memory'}, 'datasets:train:persistent_workers': True}
    study = load_study(study_file(tmp_path, set=faster))
    assert {r.name: options_fingerprint(study, r) for r in study.runs} == before
    run = next(r for r in study.runs if r.variant == 'IBSD')
    options = run_options(study, run, tmp_path)
    assert options['datasets']['train']['io_backend'] == {'type': 'memory'}
    out = tmp_path / 'out'
    (out / 'experiments' / run.name).mkdir(parents=True)
    path = out / 'options' / f'{run.name}.yml'
    path.parent.mkdir(parents=True)
    slower = run_options(load_study(study_file(tmp_path, set=one_worker)), run, tmp_path)
    path.write_text(yaml.safe_dump(slower, sort_keys=False))
    write_options(path, options, study, 'train', out)  # trains the same: taken over, not refused
    assert yaml.safe_load(path.read_text())['datasets']['train']['persistent_workers'] is True
    other = load_study(study_file(tmp_path, set={**one_worker, 'datasets:train:io_backend': {'type': 'lmdb'}}))
    assert options_fingerprint(other, run) != before[run.name]


def test_stamps_written_before_the_memory_backend_still_count_and_other_data_sets_are_not_normalised(tmp_path):
    import hashlib

    from ibsd.study.spec import accepted_fingerprints, as_read_from_disk, relative_run_options
    study = load_study(study_file(tmp_path, set={'datasets:train:persistent_workers': True,
                                                 'datasets:train:num_worker_per_gpu': 1}))
    run = study.runs[0]
    options = relative_run_options(study, run)
    options['model_type'] = 'SRModel' if options['model_type'] == 'TiledSRModel' else options['model_type']
    earlier = hashlib.sha256(yaml.safe_dump(options, sort_keys=True).encode()).hexdigest()  # kept the key
    assert earlier in accepted_fingerprints(study, run)
    custom = {'type': 'MyDataset', 'io_backend': {'type': 'memory'}, 'persistent_workers': True}
    assert as_read_from_disk(custom) == custom


def test_a_plain_run_written_as_srmodel_by_an_earlier_version_continues(tmp_path):
    from ibsd.study.runner import write_options
    from ibsd.study.spec import options_fingerprint
    study = load_study(study_file(tmp_path))
    run = next(r for r in study.runs if r.variant == 'L1' and r.seed == 0)
    options = run_options(study, run, tmp_path)
    assert options['model_type'] == 'TiledSRModel'
    before = options_fingerprint(study, run)
    out = tmp_path / 'out'
    (out / 'experiments' / run.name).mkdir(parents=True)
    path = out / 'options' / f'{run.name}.yml'
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({**options, 'model_type': 'SRModel'}, sort_keys=False))
    write_options(path, options, study, 'train', out)  # trains the same: taken over, not refused
    assert yaml.safe_load(path.read_text())['model_type'] == 'TiledSRModel'
    assert options_fingerprint(study, run) == before
    path.write_text(yaml.safe_dump({**options, 'manual_seed': 7}, sort_keys=False))
    with pytest.raises(OptionError, match='already started with other options'):
        write_options(path, options, study, 'train', out)
