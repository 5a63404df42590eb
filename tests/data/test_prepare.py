"""``ibsd-prepare`` reruns: a manifest in --out records sources and options; a different rerun is refused,
--overwrite deletes exactly the recorded outputs, so no pair is left over in another split."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ibsd.data.prepare import main as prepare
from tests.data.helpers import drealsr_fixture, image, realsr_fixture


def city(folder: Path, count: int = 4) -> Path:
    """City100-like pairs ``0H.png`` / ``0L.png`` ... of 96x80 pixels."""
    for index in range(count):
        image(folder / f'{index}H.png', 96, 80, index)
        image(folder / f'{index}L.png', 96, 80, index + 10)
    return folder


def same_size(source: Path, out: Path, *extra: str) -> list[str]:
    return ['same-size', '--input', str(source), '--scale', '2', '--out', str(out), *extra]


def refused(capsys, arguments: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        prepare(arguments)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def lmdb_keys(folder: Path) -> list[str]:
    return [line.split(' ')[0] for line in (folder / 'meta_info.txt').read_text().splitlines()]


def files_under(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}


def test_another_val_count_is_refused_and_overwrite_leaves_no_val_pair_in_train(tmp_path, capsys):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '1'))
    (out / 'notes.txt').write_text('mine')
    (out / 'x2' / 'train_HR' / 'notes.txt').write_text('mine too')
    error = refused(capsys, same_size(source, out, '--val-count', '2'))
    assert '--val-count: 1 -> 2' in error and '--overwrite' in error and 'ibsd-prepare-x2.json' in error
    assert names(out / 'x2' / 'train_LR') == ['0.png', '1.png', '2.png']  # refused: nothing touched

    prepare(same_size(source, out, '--val-count', '2', '--overwrite'))
    x2 = out / 'x2'
    assert names(x2 / 'train_HR') == ['0.png', '1.png', 'notes.txt'] and names(x2 / 'train_LR') == ['0.png', '1.png']
    assert names(x2 / 'val_HR') == names(x2 / 'val_LR') == ['2.png', '3.png']
    assert lmdb_keys(x2 / 'train_HR.lmdb') == lmdb_keys(x2 / 'train_LR.lmdb') == ['0.png', '1.png']
    assert (out / 'notes.txt').read_text() == 'mine'
    manifest = json.loads((out / 'ibsd-prepare-x2.json').read_text())
    assert manifest['complete'] and manifest['options']['--val-count'] == 2
    assert 'x2/val_LR/3.png' in manifest['outputs'] and 'x2/train_LR/2.png' not in manifest['outputs']


def test_an_unchanged_rerun_says_so_keeps_its_files_and_writes_missing_ones(tmp_path, capsys):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '1'))
    kept = out / 'x2' / 'train_HR' / '0.png'
    stamp = kept.stat().st_mtime_ns
    (out / 'x2' / 'val_LR' / '3.png').unlink()
    os.utime(source / '1H.png', ns=(stamp + 10**9, stamp + 10**9))  # touched, same content
    capsys.readouterr()
    prepare(same_size(source, out, '--val-count', '1'))
    assert 'same sources and options as the finished run' in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp and (out / 'x2' / 'val_LR' / '3.png').is_file()


def test_a_replaced_source_with_the_same_name_is_refused(tmp_path, capsys):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    prepare(same_size(source, out, '--no-lmdb'))
    replaced = source / '2L.png'
    stamp = replaced.stat().st_mtime_ns
    image(replaced, 96, 80, seed=99)
    os.utime(replaced, ns=(stamp + 10**9, stamp + 10**9))
    error = refused(capsys, same_size(source, out, '--no-lmdb'))
    assert f'source files changed (1): {replaced.resolve()}' in error and '--overwrite' in error
    prepare(same_size(source, out, '--no-lmdb', '--overwrite'))
    lr = cv2.imread(str(out / 'x2' / 'train_LR' / '2.png'))
    assert np.array_equal(lr, cv2.resize(cv2.imread(str(replaced)), (40, 48), interpolation=cv2.INTER_AREA))


def test_outputs_without_a_manifest_are_refused_and_overwrite_clears_them(tmp_path, capsys):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '2'))
    (out / 'ibsd-prepare-x2.json').unlink()  # as an older version left it
    image(out / 'x2' / 'train_HR' / 'stale.png', 96, 80)
    (out / 'x2' / 'train_HR' / 'notes.txt').write_text('mine')
    error = refused(capsys, same_size(source, out, '--val-count', '1'))
    assert 'without a manifest' in error and 'ibsd-prepare-x2.json' in error and '--overwrite' in error
    prepare(same_size(source, out, '--val-count', '1', '--overwrite'))
    assert names(out / 'x2' / 'train_HR') == ['0.png', '1.png', '2.png', 'notes.txt']
    assert lmdb_keys(out / 'x2' / 'train_HR.lmdb') == ['0.png', '1.png', '2.png']
    assert names(out / 'x2' / 'val_HR') == ['3.png']


def test_a_manifest_listing_a_path_outside_out_deletes_nothing(tmp_path, capsys):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    prepare(same_size(source, out, '--no-lmdb'))
    victim = tmp_path / 'keep.png'
    image(victim, 4, 4)
    path = out / 'ibsd-prepare-x2.json'
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, 'outputs': manifest['outputs'] + ['../keep.png']}))
    error = refused(capsys, same_size(source, out, '--no-lmdb', '--overwrite'))
    assert "'../keep.png'" in error and victim.is_file() and len(names(out / 'x2' / 'train_HR')) == 4


def subimage_fixture(root: Path) -> Path:
    hr = np.random.default_rng(0).integers(0, 256, (96, 120, 3), dtype=np.uint8)
    for name in ('a', 'b'):
        (root / 'hr').mkdir(parents=True, exist_ok=True)
        (root / 'lr').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / 'hr' / f'{name}.png'), hr)
        cv2.imwrite(str(root / 'lr' / f'{name}.png'), hr[::4, ::4])
    return root


COMMANDS = {  # first run, a changed option and the line naming it
    'drealsr': (lambda t: ['drealsr', '--root', str(drealsr_fixture(t / 'src')), '--scale', '4'],
                ['--no-lmdb'], '--no-lmdb: False -> True', 'ibsd-prepare-x4.json'),
    'realsr': (lambda t: ['realsr', '--root', str(realsr_fixture(t / 'src')), '--scale', '2'],
               ['--no-lmdb'], '--no-lmdb: False -> True', 'ibsd-prepare-x2.json'),
    'same-size': (lambda t: ['same-size', '--input', str(city(t / 'src')), '--scale', '2'], ['--val-count', '1'],
                  '--val-count: 0 -> 1', 'ibsd-prepare-x2.json'),
    'subimages': (lambda t: ['subimages', '--hr-dir', str(subimage_fixture(t / 'src') / 'hr'), '--lr-dir',
                             str(t / 'src' / 'lr'), '--scale', '4', '--crop-size', '48', '--step', '24', '--lmdb'],
                  ['--step', '48'], '--step: 24 -> 48', 'ibsd-prepare-subimages.json'),
}


@pytest.mark.parametrize('command', COMMANDS)
def test_every_subcommand_refuses_a_changed_rerun_and_overwrite_leaves_only_listed_files(tmp_path, capsys,
                                                                                         command):
    first, change, line, manifest_name = COMMANDS[command]
    out = tmp_path / 'out'
    arguments = first(tmp_path) + ['--out', str(out)]
    prepare(arguments)
    manifest = json.loads((out / manifest_name).read_text())
    assert files_under(out) == set(manifest['outputs']) | {manifest_name}
    assert line in refused(capsys, arguments + change)
    prepare(arguments + change + ['--overwrite'])
    manifest = json.loads((out / manifest_name).read_text())
    assert files_under(out) == set(manifest['outputs']) | {manifest_name}
    assert manifest['complete'] and manifest['command'] == command


def test_an_interrupted_run_is_continued(tmp_path, capsys, monkeypatch):
    import ibsd.data.prepare as module
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    write_pairs = module.write_pairs

    def stop_at_val(pairs, folder, split, *rest):
        if split == 'val':
            raise KeyboardInterrupt
        return write_pairs(pairs, folder, split, *rest)

    monkeypatch.setattr(module, 'write_pairs', stop_at_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(same_size(source, out, '--val-count', '1'))
    assert not json.loads((out / 'ibsd-prepare-x2.json').read_text())['complete']
    monkeypatch.undo()
    capsys.readouterr()
    prepare(same_size(source, out, '--val-count', '1'))
    assert 'same sources and options as the interrupted run' in capsys.readouterr().out
    assert json.loads((out / 'ibsd-prepare-x2.json').read_text())['complete']
    assert names(out / 'x2' / 'val_LR') == ['3.png']


def test_all_pairs_as_val_makes_an_evaluation_only_set(tmp_path, capsys):
    source, out = city(tmp_path / 'src', 3), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '3'))
    assert names(out / 'x2') == ['val_HR', 'val_LR'] and len(names(out / 'x2' / 'val_LR')) == 3
    error = refused(capsys, same_size(source, tmp_path / 'o2', '--val-count', '4'))
    assert '--val-count must be between 0 and 3' in error


def kill_during_lmdb_write(monkeypatch) -> None:
    """BasicSR's LMDB writer stops half-way, as a killed process does (its output stays on disk)."""
    import basicsr.utils.lmdb_util as lmdb_util

    def killed(folder, lmdb_path, *args, **kwargs):
        os.makedirs(lmdb_path)
        Path(lmdb_path, 'data.mdb').write_bytes(b'\0' * 4096)
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', killed)


def killed_leftovers(out: Path) -> list[Path]:
    """What SIGKILL during the LMDB write leaves (no clean-up runs): this version's partial LMDB, and the
    ``tempfile`` folder of versions that wrote there."""
    leftovers = [out / 'x2' / '.partial.train_HR.lmdb', out / 'x2' / 'tmpab12cd_9' / 'train_LR.lmdb']
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / 'data.mdb').write_bytes(b'\0' * 4096)
    return [leftovers[0], leftovers[1].parent]


@pytest.mark.parametrize('rerun', [[], ['--overwrite']])
def test_a_killed_lmdb_write_leaves_nothing_after_the_rerun(tmp_path, capsys, monkeypatch, rerun):
    source, out = city(tmp_path / 'city'), tmp_path / 'out'
    kill_during_lmdb_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        prepare(same_size(source, out, '--val-count', '1'))
    monkeypatch.undo()
    leftovers = killed_leftovers(out)
    prepare(same_size(source, out, '--val-count', '1', *rerun))
    assert names(out / 'x2') == ['train_HR', 'train_HR.lmdb', 'train_LR', 'train_LR.lmdb', 'val_HR', 'val_LR']
    assert not any(p.exists() for p in leftovers)
    assert lmdb_keys(out / 'x2' / 'train_HR.lmdb') == ['0.png', '1.png', '2.png']


def test_an_interrupted_lmdb_write_removes_its_partial_folder(tmp_path, monkeypatch):
    import basicsr.utils.lmdb_util as lmdb_util

    from ibsd.data.real_pairs import write_lmdb
    image(tmp_path / 'hr' / 'a.png', 16, 16, 0)

    def failing(folder, lmdb_path, *args, **kwargs):
        os.makedirs(lmdb_path)
        raise OSError('disk full')

    monkeypatch.setattr(lmdb_util, 'make_lmdb_from_imgs', failing)
    with pytest.raises(OSError, match='disk full'):
        write_lmdb(tmp_path / 'hr')
    assert names(tmp_path) == ['hr']


def test_a_scratch_folder_that_holds_other_files_is_left_alone(tmp_path):
    from ibsd.data.real_pairs import remove_partial_lmdbs
    keep = tmp_path / 'tmpab12cd_9'
    (keep / 'train_HR.lmdb').mkdir(parents=True)
    (keep / 'notes.txt').write_text('mine')
    assert remove_partial_lmdbs(tmp_path / 'train_HR.lmdb') == 0
    assert (keep / 'notes.txt').is_file()


def test_train_count_keeps_the_first_training_pairs_and_the_same_val_split(tmp_path, capsys):
    source, out = city(tmp_path / 'src', 5), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '2', '--train-count', '2'))
    x2 = out / 'x2'
    assert names(x2 / 'train_HR') == names(x2 / 'train_LR') == ['0.png', '1.png']
    assert names(x2 / 'val_HR') == ['3.png', '4.png']
    assert lmdb_keys(x2 / 'train_HR.lmdb') == ['0.png', '1.png']
    assert json.loads((out / 'ibsd-prepare-x2.json').read_text())['options']['--train-count'] == 2
    error = refused(capsys, same_size(source, out, '--val-count', '2', '--train-count', '1'))
    assert '--train-count: 2 -> 1' in error
    error = refused(capsys, same_size(source, tmp_path / 'o2', '--val-count', '2', '--train-count', '4'))
    assert '--train-count must be between 1 and 3' in error and '--val-count 2' in error


def test_a_manifest_without_train_count_still_matches_a_rerun_without_it(tmp_path, capsys):
    source, out = city(tmp_path / 'src'), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '1'))
    manifest_file = out / 'ibsd-prepare-x2.json'
    manifest = json.loads(manifest_file.read_text())
    assert '--train-count' not in manifest['options']  # as versions without the option wrote it
    capsys.readouterr()
    prepare(same_size(source, out, '--val-count', '1'))
    assert 'same sources and options as the finished run' in capsys.readouterr().out


def test_a_new_train_count_on_an_existing_folder_is_refused_until_overwrite(tmp_path, capsys):
    source, out = city(tmp_path / 'src', 5), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '0'))
    error = refused(capsys, same_size(source, out, '--val-count', '0', '--train-count', '2'))
    assert '--train-count: (not given) -> 2' in error and 'source files no longer read (6)' in error
    prepare(same_size(source, out, '--val-count', '0', '--train-count', '2', '--overwrite'))
    assert {p for p in files_under(out) if p.endswith('.png')} == {
        f'x2/train_{side}/{index}.png' for side in ('HR', 'LR') for index in (0, 1)}
    assert lmdb_keys(out / 'x2' / 'train_LR.lmdb') == ['0.png', '1.png']
    capsys.readouterr()
    prepare(same_size(source, out, '--val-count', '0', '--train-count', '2'))  # the same again: kept
    assert 'same sources and options as the finished run' in capsys.readouterr().out


def test_train_count_of_every_training_pair_is_the_same_run_as_none_and_needs_a_train_split(tmp_path, capsys):
    source, out = city(tmp_path / 'src', 3), tmp_path / 'out'
    prepare(same_size(source, out, '--val-count', '1', '--train-count', '2'))
    assert '--train-count' not in json.loads((out / 'ibsd-prepare-x2.json').read_text())['options']
    capsys.readouterr()
    prepare(same_size(source, out, '--val-count', '1'))
    assert 'same sources and options as the finished run' in capsys.readouterr().out
    error = refused(capsys, same_size(source, tmp_path / 'o2', '--val-count', '3', '--train-count', '1'))
    assert '--train-count 1: --val-count 3 leaves no pairs for training' in error
