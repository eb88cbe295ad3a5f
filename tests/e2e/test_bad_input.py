"""Bad input through the real command line: one clear line, non-zero exit, nothing good overwritten."""
import subprocess
import sys

import pytest
import torch

from bpm.models.reid import ReidModel


def bpm(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpm", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    return lines[0]


def test_missing_data_folder(tmp_path):
    line = one_error_line(bpm("train", "-d", "()", "--dataset", "market1501", "--data_root", str(tmp_path / "nope"),
                              "--exp_dir", str(tmp_path / "exp"), "--net_pretrained_path", "none"))
    assert str(tmp_path / "nope") in line
    assert not (tmp_path / "exp").exists()


def test_unknown_net(tmp_path, tiny_world):
    line = one_error_line(bpm("train", "-d", "()", "--net", "shufflenetV2", "--dataset", "market1501",
                              "--data_root", str(tiny_world), "--exp_dir", str(tmp_path / "exp")))
    assert "--net" in line and "shufflenetV2" in line


def test_gpu_requested_without_cuda(tmp_path, tiny_world):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_error_line(bpm("train", "-d", "(0,)", "--dataset", "market1501", "--data_root", str(tiny_world),
                              "--exp_dir", str(tmp_path / "exp")))
    assert "-d" in line and "-d '()'" in line


def test_mismatched_weights_file_leaves_results_alone(tmp_path, tiny_world):
    weights = tmp_path / "resnet.pth"
    torch.save(ReidModel("resnet50").state_dict(), weights)
    exp_dir = tmp_path / "exp"
    exp_dir.mkdir()
    (exp_dir / "results.json").write_text('{"good": true}')
    line = one_error_line(bpm("test", "-d", "()", "--net", "mobilenetV2", "--dataset", "market1501",
                              "--data_root", str(tiny_world), "--model_weight_file", str(weights),
                              "--exp_dir", str(exp_dir)))
    assert str(weights) in line and "resnet50" in line
    assert (exp_dir / "results.json").read_text() == '{"good": true}'


def test_unreadable_image(tmp_path, tiny_world):
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    victim = sorted((world / "query").iterdir())[0]  # every query is read at evaluation
    victim.write_bytes(b"not a jpeg")
    line = one_error_line(bpm("train", "-d", "()", "--dataset", "market1501", "--data_root", str(world),
                              "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2",
                              "--total_epochs", "1", "--workers", "0", "--exp_dir", str(tmp_path / "exp"),
                              "--net_pretrained_path", "none"))
    assert victim.name in line
