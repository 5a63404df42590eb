"""ibsd-infer: real photos without ground truth (../shared/data/real/RealSRSet) and its output rules."""
from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ibsd import infer
from ibsd.inference import upscaler as upscaling
from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.archs.rfdn_arch import RFDN
from tests.helpers import nearest_rfdn, shared_path

INFER = Path(sysconfig.get_path('scripts')) / 'ibsd-infer'
TINY = ['--arch', 'IMDN', '--scale', '4', '--arch-opt', 'num_feat=16', '--arch-opt', 'num_block=2']
NEAREST = ['--arch', 'RFDN', '--arch-opt', 'num_feat=8', '--arch-opt', 'num_block=1', '--arch-opt', 'attention=cca',
           '--device', 'cpu']


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'net_g_latest.pth'
    net = IMDN(num_feat=16, num_block=2, upscale=4)
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path


def nearest(image: np.ndarray, scale: int = 4) -> np.ndarray:
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def infer_here(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``ibsd-infer`` in this process: (exit status, stdout, stderr)."""
    status = infer.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / 'photos'
    shutil.copytree(shared_path('real', 'RealSRSet'), folder)
    (folder / 'broken.png').write_bytes(b'not an image')
    return folder


def run_infer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INFER), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('tile', ['0', '48'])
def test_folder_is_upscaled_with_progress_and_bad_files_skipped(photos, checkpoint, tmp_path, tile):
    out = tmp_path / f'out_{tile}'
    result = run_infer('-i', str(photos), '-o', str(out), '--model-path', str(checkpoint), '--tile', tile,
                       '--compare', *TINY)
    assert result.returncode == 1  # one file failed, the others were written
    assert 'skipped' in result.stderr and 'broken.png' in result.stderr
    assert '20 of 21 images' in result.stdout
    assert '%|' not in result.stderr  # no progress bar in a pipe or a log file (only on a terminal)
    for source in sorted(photos.glob('*')):
        if source.name == 'broken.png':
            continue
        lq = cv2.imread(str(source), cv2.IMREAD_COLOR)
        sr = cv2.imread(str(out / f'{source.stem}_sr.png'))
        assert sr.shape == (lq.shape[0] * 4, lq.shape[1] * 4, 3)
        compare = cv2.imread(str(out / f'{source.stem}_compare.png'))
        assert compare.shape == (sr.shape[0], sr.shape[1] * 2 + 8, 3)


def test_tiled_and_whole_outputs_agree(photos, checkpoint, tmp_path):
    (photos / 'broken.png').unlink()
    first = sorted(photos.iterdir())[0]
    for tile in ('0', '40'):
        assert run_infer('-i', str(first), '-o', str(tmp_path / tile), '--model-path', str(checkpoint),
                         '--tile', tile, *TINY).returncode == 0
    whole = cv2.imread(str(tmp_path / '0' / f'{first.stem}_sr.png')).astype(int)
    tiled = cv2.imread(str(tmp_path / '40' / f'{first.stem}_sr.png')).astype(int)
    assert np.abs(whole - tiled).max() <= 2  # CCA pools globally: tiles differ by rounding at most


def test_output_next_to_input_and_option_errors(tmp_path, checkpoint):
    image = tmp_path / 'grey.png'
    cv2.imwrite(str(image), np.full((20, 24), 128, np.uint8))
    assert run_infer('-i', str(image), '--model-path', str(checkpoint), *TINY).returncode == 0
    assert cv2.imread(str(tmp_path / 'grey_sr.png')).shape == (80, 96, 3)
    result = run_infer('-i', str(image), '--model-path', str(checkpoint))
    assert result.returncode == 2 and '--opt' in result.stderr
    result = run_infer('-i', str(tmp_path / 'missing'), '--model-path', str(checkpoint), *TINY)
    assert result.returncode == 1 and 'missing does not exist' in result.stderr
    result = run_infer('-i', str(image), '--model-path', str(checkpoint), *TINY[:2], '--scale', '2', *TINY[4:])
    assert result.returncode == 1 and 'Traceback' not in result.stderr and len(result.stderr.splitlines()) == 1
    assert 'net_g_latest.pth holds weights for a different network than this IMDN (IMDN weights: num_feat=16, ' \
        'num_block=2, upscale=4' in result.stderr
    assert 'upsampler.0.weight shape (12, 16, 3, 3) in the network vs (48, 16, 3, 3) in the file' in result.stderr


def test_training_state_as_weights_is_one_line(tmp_path):
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    state = tmp_path / '400.state'
    torch.save({'epoch': 1, 'iter': 400, 'optimizers': [{'state': {}, 'param_groups': [{'lr': 1e-4}]}],
                'schedulers': [{'milestones': {200: 1}}], 'random': np.random.get_state()}, state)
    result = run_infer('-i', str(image), '--model-path', str(state), *TINY)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'ibsd-infer: error: {state} is a training state (optimizers, schedulers), not network weights: pass the '
        'matching models/net_g_<iter>.pth instead (a .state file resumes training, via path: resume_state)']
    assert not (tmp_path / 'a_sr.png').exists()


def test_failed_write_is_reported_and_counted(tmp_path, capsys):
    image = tmp_path / 'in' / 'a.png'
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((16, 16, 3), 90, np.uint8))
    model = nearest_rfdn(tmp_path / 'nearest.pth')
    out = tmp_path / 'out'
    (out / 'a_sr.png').mkdir(parents=True)  # the output path is taken by a folder
    status, stdout, stderr = infer_here(capsys, '-i', image, '-o', out, '--model-path', model, *NEAREST)
    assert status == 1 and '0 of 1 images written' in stdout and '1 failed' in stdout
    assert f'not written {image}: cannot write {out / "a_sr.png"}' in stderr
    assert not list(out.glob('.*.tmp'))  # no temporary file left behind

    status, _, stderr = infer_here(capsys, '-i', image, '-o', image, '--model-path', model, *NEAREST)
    assert status == 1 and f'cannot create output folder {image}' in stderr


def test_unwritable_system_folder(tmp_path, capsys):
    try:
        (Path('/sys') / '.ibsd-probe').touch()
    except OSError:
        pass
    else:
        pytest.skip('/sys accepts files here')
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.full((16, 16, 3), 90, np.uint8))
    status, stdout, stderr = infer_here(capsys, '-i', image, '-o', '/sys', '--model-path',
                                        nearest_rfdn(tmp_path / 'n.pth'), *NEAREST)
    assert status == 1 and '0 of 1 images written' in stdout and 'cannot write /sys/a_sr.png' in stderr


def test_rerun_without_output_folder_leaves_own_outputs_alone(tmp_path, capsys):
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), np.full((16, 20, 3), 60, np.uint8))
    cv2.imwrite(str(folder / 'b.jpg'), np.full((16, 20, 3), 160, np.uint8))
    model = nearest_rfdn(tmp_path / 'nearest.pth')
    for run in range(2):
        status, stdout, stderr = infer_here(capsys, '-i', folder, '--model-path', model, '--compare', *NEAREST)
        assert status == 0 and '2 of 2 images written' in stdout
    assert 'left out 4 outputs of ibsd-infer' in stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        'a.png', 'a_compare.png', 'a_sr.png', 'b.jpg', 'b_compare.png', 'b_sr.png']
    status, stdout, _ = infer_here(capsys, '-i', folder / 'a_sr.png', '--model-path', model, *NEAREST)
    assert status == 0 and (folder / 'a_sr_sr.png').exists()  # named explicitly, it is upscaled


def test_outputs_of_a_run_with_another_suffix_are_not_upscaled_again(tmp_path, capsys):
    from ibsd.image_io import png_text
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), np.full((16, 20, 3), 60, np.uint8))
    model = nearest_rfdn(tmp_path / 'nearest.pth')
    status, _, _ = infer_here(capsys, '-i', folder, '--model-path', model, '--suffix', 'x4', *NEAREST)
    assert status == 0 and png_text(folder / 'a_x4.png', 'Software') == 'ibsd-infer'
    assert cv2.imread(str(folder / 'a_x4.png')).shape == (64, 80, 3)  # the mark leaves a valid PNG
    status, stdout, stderr = infer_here(capsys, '-i', folder, '--model-path', model, '--suffix', 'big', *NEAREST)
    assert status == 0 and '1 of 1 images written' in stdout and 'left out 1 outputs of ibsd-infer' in stderr
    assert sorted(p.name for p in folder.iterdir()) == ['a.png', 'a_big.png', 'a_x4.png']
    assert png_text(folder / 'a.png', 'Software') is None


@pytest.mark.parametrize('tile', ['1', '31'])
def test_a_tile_below_the_minimum_is_refused(tmp_path, capsys, tile):
    with pytest.raises(SystemExit) as exit_info:
        infer.parse_args(['-i', str(tmp_path), '--model-path', 'm.pth', '--arch', 'IMDN', '--tile', tile])
    assert exit_info.value.code == 2
    assert f'must be 0 (whole image) or at least 32 pixels, got {tile}' in capsys.readouterr().err


def test_same_stem_inputs_keep_their_extension(tmp_path, capsys):
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'x.png'), np.full((16, 16, 3), 40, np.uint8))
    cv2.imwrite(str(folder / 'x.jpg'), np.full((16, 16, 3), 200, np.uint8))
    cv2.imwrite(str(folder / 'y.png'), np.full((16, 16, 3), 100, np.uint8))
    status, stdout, stderr = infer_here(capsys, '-i', folder, '-o', tmp_path / 'out', '--model-path',
                                        nearest_rfdn(tmp_path / 'nearest.pth'), *NEAREST)
    assert status == 0 and '3 of 3 images written' in stdout
    assert "x.jpg, x.png share the name 'x': writing x_jpg_sr.png, x_png_sr.png" in stderr
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['x_jpg_sr.png', 'x_png_sr.png', 'y_sr.png']
    assert abs(cv2.imread(str(tmp_path / 'out' / 'x_png_sr.png')).mean() - 40) < 1
    assert abs(cv2.imread(str(tmp_path / 'out' / 'x_jpg_sr.png')).mean() - 200) < 2


def test_output_names_stay_distinct_in_contrived_cases(tmp_path):
    images = [tmp_path / name for name in ('x.png', 'X.jpg', 'x_png.bmp', 'z.png')]
    jobs, notes = infer.plan_outputs(images, None, 'sr', compare=True)
    names = [p.name for job in jobs for p in (job.target, job.compare)]
    assert len({n.casefold() for n in names}) == len(names) == 8
    assert [job.target.name for job in jobs] == ['x_png_sr.png', 'X_jpg_sr.png', 'x_png_2_sr.png', 'z_sr.png']
    assert any('x_png.bmp: x_png_sr.png is taken' in note for note in notes)


@pytest.mark.parametrize('arch, options, scale, expected', [
    (IMDN, {'num_feat': 8, 'num_block': 1, 'upscale': 2}, '2', 2),
    (RFDN, {'num_feat': 8, 'num_block': 1, 'upscale': 3}, '3', 3),
    (IMDN_AS, {'num_feat': 8, 'num_block': 1}, '2', 2),  # same-size net: bicubic x2 first
    (IMDN_AS, {'num_feat': 8, 'num_block': 1}, None, 1),  # no --scale: its own size
])
def test_every_builtin_arch_runs_from_arch_and_scale(tmp_path, capsys, arch, options, scale, expected):
    torch.manual_seed(0)
    net_options = {k: v for k, v in options.items() if k != 'upscale'}
    path = tmp_path / 'weights.pth'
    torch.save(arch(**options).state_dict(), path)
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (18, 22, 3), dtype=np.uint8))
    args = ['-i', image, '--model-path', path, '--arch', arch.__name__, '--device', 'cpu']
    args += [f'--arch-opt={k}={v}' for k, v in net_options.items()] + (['--scale', scale] if scale else [])
    status, stdout, stderr = infer_here(capsys, *args)
    assert status == 0, stderr
    assert cv2.imread(str(tmp_path / 'a_sr.png')).shape == (18 * expected, 22 * expected, 3)
    assert ('keeps the input size: inputs get a bicubic x2 upscale first' in stderr) == (arch is IMDN_AS and
                                                                                          expected == 2)


def test_scale_that_the_network_cannot_give_is_one_line(tmp_path, capsys):
    path = nearest_rfdn(tmp_path / 'x2.pth', scale=2)
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    status, _, stderr = infer_here(capsys, '-i', image, '--model-path', path, *NEAREST, '--arch-opt', 'upscale=2',
                                   '--scale', '4')
    assert status == 1 and stderr.strip() == (
        'ibsd-infer: error: RFDN as configured upscales x2, not x4: set its scale in --arch-opt or --opt, or drop '
        '--scale')


def test_weights_for_0_255_pixels_switch_img_range(tmp_path, capsys):
    path = nearest_rfdn(tmp_path / 'range255.pth', bias=1.)
    image = tmp_path / 'a.png'
    pixels = np.random.default_rng(1).integers(0, 200, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(image), pixels)
    status, _, stderr = infer_here(capsys, '-i', image, '--model-path', path, *NEAREST)
    assert status == 0 and 'range255.pth expects pixel values 0-255: using img_range=255' in stderr
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'a_sr.png')), nearest(pixels) + 1)

    status, _, stderr = infer_here(capsys, '-i', image, '--model-path', path, *NEAREST, '--arch-opt', 'img_range=1')
    assert status == 0 and 'keeping img_range=1 as given' in stderr
    assert (cv2.imread(str(tmp_path / 'a_sr.png')) == 255).all()  # as asked: saturated


def test_official_rfdn_weights_get_img_range_255(tmp_path, capsys):
    weights = shared_path('weights', 'RFDN_AIM.pth')
    lr = shared_path('benchmarks', 'Set5', 'LR_bicubic', 'x4', 'babyx4.bmp')
    hr = cv2.imread(str(shared_path('benchmarks', 'Set5', 'HR', 'baby.bmp'))).astype(np.float64)
    status, _, stderr = infer_here(capsys, '-i', lr, '-o', tmp_path, '--model-path', weights, '--arch', 'RFDN',
                                   '--device', 'cpu')
    assert status == 0 and 'RFDN_AIM.pth expects pixel values 0-255: using img_range=255' in stderr
    sr = cv2.imread(str(tmp_path / 'babyx4_sr.png')).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((sr[4:-4, 4:-4] - hr[4:-4, 4:-4]) ** 2))
    assert psnr > 30, psnr  # 32.3 dB; with img_range=1: 26.9 dB


def test_large_inputs_are_tiled_by_default(tmp_path, capsys, monkeypatch):
    calls = []

    def spy(net, lq, tile_size, tile_pad):
        calls.append(tile_size)
        return net(lq)

    monkeypatch.setattr(upscaling, 'tiled_forward', spy)
    monkeypatch.setattr(upscaling, 'AUTO_TILE_PIXELS', 30 * 30)
    monkeypatch.setattr(upscaling, 'AUTO_TILE_SIZE', 24)
    model = nearest_rfdn(tmp_path / 'nearest.pth')
    small, large = tmp_path / 'small.png', tmp_path / 'large.png'
    cv2.imwrite(str(small), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(large), np.zeros((30, 40, 3), np.uint8))
    for image, tiles in ((small, []), (large, [24])):
        status, _, stderr = infer_here(capsys, '-i', image, '--model-path', model, *NEAREST)
        assert status == 0 and calls == tiles
        assert ('large.png: network input 40x30 is above 900 pixels, running tiles of 24 px with 16 px context'
                in stderr) == bool(tiles)
    status, _, stderr = infer_here(capsys, '-i', large, '--model-path', model, *NEAREST, '--tile', '0')
    assert status == 0 and calls == [24] and 'tiles' not in stderr


def test_auto_tiling_threshold():
    upscaler = infer.Upscaler(None, torch.device('cpu'), torch.float32, 1, 'auto', 16)
    assert infer.parse_args(['-i', 'x', '--model-path', 'y', '--arch', 'IMDN']).tile == 'auto'
    assert upscaler.tile_for(1500, 2000) == infer.AUTO_TILE_SIZE  # ~15 GB whole on the CPU for IMDN x4
    assert upscaler.tile_for(300, 400) == 0
    assert infer.Upscaler(None, torch.device('cpu'), torch.float32, 4, 'auto', 16).tile_for(300, 400) > 0


@pytest.mark.parametrize('mode', ['model', 'bicubic'])
def test_alpha_channel_is_kept(tmp_path, capsys, mode):
    rng = np.random.default_rng(2)
    bgra = rng.integers(0, 256, (16, 20, 4), dtype=np.uint8)
    bgra[:, :, 3] = np.linspace(0, 255, 20, dtype=np.uint8)[None, :]
    bgra[4:8, 4:8, 3] = 0
    image = tmp_path / 'logo.png'
    cv2.imwrite(str(image), bgra)
    status, _, _ = infer_here(capsys, '-i', image, '--model-path', nearest_rfdn(tmp_path / 'n.pth'), *NEAREST,
                              '--alpha', mode, '--compare')
    assert status == 0
    out = cv2.imread(str(tmp_path / 'logo_sr.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (64, 80, 4)
    np.testing.assert_array_equal(out[:, :, :3], nearest(bgra[:, :, :3]))
    if mode == 'model':
        np.testing.assert_array_equal(out[:, :, 3], nearest(bgra[:, :, 3]))
    else:
        expected = cv2.resize(bgra[:, :, 3].astype(np.float32) / 255, (80, 64), interpolation=cv2.INTER_CUBIC)
        assert np.abs(out[:, :, 3] - np.round(np.clip(expected, 0, 1) * 255)).max() <= 1
    assert cv2.imread(str(tmp_path / 'logo_compare.png'), cv2.IMREAD_UNCHANGED).shape == (64, 168, 4)


def test_16_bit_input_gives_16_bit_output(tmp_path, capsys):
    rgb16 = np.random.default_rng(3).integers(0, 65536, (12, 14, 3), dtype=np.uint16)
    image = tmp_path / 'scan.png'
    cv2.imwrite(str(image), rgb16)
    status, _, _ = infer_here(capsys, '-i', image, '--model-path', nearest_rfdn(tmp_path / 'n.pth'), *NEAREST)
    assert status == 0
    out = cv2.imread(str(tmp_path / 'scan_sr.png'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (48, 56, 3)
    assert np.abs(out.astype(int) - nearest(rgb16).astype(int)).max() <= 1


@pytest.mark.parametrize('suffix', ['.png', '.jpg'])
def test_exif_orientation_is_applied(tmp_path, capsys, suffix):
    stored = np.random.default_rng(4).integers(0, 256, (10, 16, 3), dtype=np.uint8)  # RGB, 16 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 10 wide, 16 high
    image = tmp_path / f'phone{suffix}'
    Image.fromarray(stored).save(image, exif=exif, **({'quality': 100} if suffix == '.jpg' else {}))
    status, _, _ = infer_here(capsys, '-i', image, '--model-path', nearest_rfdn(tmp_path / 'n.pth'), *NEAREST)
    assert status == 0
    out = cv2.imread(str(tmp_path / 'phone_sr.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (64, 40, 3)
    displayed = cv2.imread(str(image), cv2.IMREAD_COLOR)  # OpenCV applies EXIF with IMREAD_COLOR
    np.testing.assert_array_equal(out, nearest(displayed))
    if suffix == '.png':
        np.testing.assert_array_equal(out[:, :, ::-1], nearest(np.rot90(stored, k=-1)))


@pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')  # basicsr's SwinIR
def test_swinir_inputs_are_padded_to_its_window(tmp_path, capsys):
    """BasicSR's SwinIR takes only sides that are multiples of its window: a 13x10 photo is padded to 16x12."""
    from basicsr.archs.swinir_arch import SwinIR
    options = {'upscale': 2, 'img_size': 8, 'window_size': 4, 'embed_dim': 12, 'depths': [1], 'num_heads': [1],
               'mlp_ratio': 1, 'upsampler': 'pixelshuffledirect'}
    torch.manual_seed(0)
    path = tmp_path / 'swinir.pth'
    torch.save(SwinIR(**options).state_dict(), path)
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.random.default_rng(5).integers(0, 256, (10, 13, 3), dtype=np.uint8))
    args = ['-i', image, '--model-path', path, '--arch', 'SwinIR', '--device', 'cpu', '--tile', '0']
    args += [f'--arch-opt={key}={value}' for key, value in options.items()]
    status, stdout, stderr = infer_here(capsys, *args)
    assert status == 0 and '1 of 1 images written' in stdout, stderr
    assert cv2.imread(str(tmp_path / 'a_sr.png')).shape == (20, 26, 3)


def test_infer_and_export_name_the_network_with_the_same_arguments():
    from ibsd.export.cli import parse_args as export_args
    from ibsd.infer import parse_args as infer_args
    given = ['--model-path', 'net.pth', '-opt', 'run.yml', '--scale', '2', '--arch-opt', 'num_feat=48']
    infer, export = infer_args(['-i', 'photo.png', *given]), export_args(given)
    for name in ('model_path', 'param_key', 'opt', 'arch', 'scale', 'arch_opt'):
        assert getattr(infer, name) == getattr(export, name), name
    assert (infer.opt, infer.scale, infer.arch_opt, infer.param_key) == ('run.yml', 2, ['num_feat=48'], 'params_ema')
