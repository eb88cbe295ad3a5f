"""Bad files: truncated or bit-flipped checkpoints, pickles carrying code, weights for another
network, corrupt JPEGs, split files naming missing images. Each gives one line naming the file,
runs no code, and overwrites nothing that was there before."""
from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch
from _runner import TALLY, make_trainer, train_switches

from bpm.cli import main
from bpm.data.datasets import build_dataset
from bpm.data.images import read_image
from bpm.data.loader import ImageDataset
from bpm.data.convert import write_converted
from bpm.engine.checkpoint import atomic_torch_save, load_checkpoint
from bpm.errors import BpmError
from bpm.models.reid import build_model
from bpm.models.weights import load_model_weights, read_weights_file


def one_line_naming(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def cli_error(capsys, argv: list[str]) -> str:
    """Run ``bpm`` in-process; it must fail with exit status 2 and exactly one ``error:`` line."""
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real MobileNet-V2 training checkpoint, as bytes."""
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pth"
    model = build_model("mobilenetV2")
    atomic_torch_save({"state_dicts": [model.state_dict(), {}], "ep": 3, "step": 0, "scores": {}}, path)
    return path.read_bytes()


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1000, -1])
def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path, checkpoint_bytes, keep):
    path = tmp_path / "ckpt.pth"
    size = int(len(checkpoint_bytes) * keep) if isinstance(keep, float) else keep % len(checkpoint_bytes)
    path.write_bytes(checkpoint_bytes[:size])
    TALLY.fault("truncated checkpoint")
    with pytest.raises(BpmError) as raised:
        load_checkpoint(path)
    one_line_naming(raised.value, path)


def test_bit_flips_are_refused_or_harmless(tmp_path, checkpoint_bytes):
    """A flipped bit anywhere is either refused (CRC-32 of every record is verified) or lands in
    zip metadata that does not change what loads: never a silently different weight."""
    original = torch.load(_write(tmp_path / "good.pth", checkpoint_bytes), weights_only=True)
    rng = random.Random(0)
    refused = 0
    for trial in range(40):
        data = bytearray(checkpoint_bytes)
        # Half the flips in tensor data, half in the zip headers/central directory at the end.
        pos = rng.randrange(len(data)) if trial % 2 else rng.randrange(len(data) - 4096, len(data))
        data[pos] ^= 1 << rng.randrange(8)
        path = _write(tmp_path / f"flip{trial}.pth", bytes(data))
        TALLY.fault("bit-flipped checkpoint")
        try:
            loaded = load_checkpoint(path)
        except BpmError as exc:
            one_line_naming(exc, path)
            refused += 1
            continue
        assert loaded["ep"] == original["ep"]
        for key, value in original["state_dicts"][0].items():
            assert torch.equal(loaded["state_dicts"][0][key], value), f"flip at byte {pos} changed {key} silently"
    assert refused >= 20  # every flip in tensor data is caught


def test_resume_from_corrupt_checkpoint_fails_in_one_line_and_leaves_it(tiny_world, tmp_path, capsys):
    exp_dir = tmp_path / "exp"
    make_trainer(tiny_world, exp_dir).save_checkpoint()
    ckpt = exp_dir / "ckpt.pth"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    before = ckpt.read_bytes()
    TALLY.fault("truncated checkpoint")
    line = cli_error(capsys, ["train", *train_switches(tiny_world, exp_dir), "--resume", "true"])
    assert str(ckpt) in line and "corrupt" in line
    assert ckpt.read_bytes() == before
    assert not (exp_dir / "results.json").exists()


# ----------------------------------------------------------------------------- code in pickles
class _Payload:
    """Unpickling this runs ``touch <marker>``: the shape of a booby-trapped checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_payload_is_live(tmp_path):
    """Control: the payload does run when unpickled without protection (so the refusals below mean something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw-pickle", "inside-checkpoint"])
def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path, capsys, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = _Payload(marker)
    if layout == "zip":
        torch.save(payload, path)
    elif layout == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif layout == "raw-pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        model = build_model("mobilenetV2")
        torch.save({"state_dicts": [model.state_dict(), {"hook": payload}], "ep": 1}, path)
    TALLY.fault("pickle carrying code")
    for load in (read_weights_file, load_checkpoint, lambda p: load_model_weights(build_model("mobilenetV2"), p)):
        with pytest.raises(BpmError) as raised:
            load(path)
        assert "refused" in one_line_naming(raised.value, path)
    line = cli_error(capsys, ["test", "-d", "()", "--model_weight_file", str(path), "--exp_dir", str(tmp_path / "e"),
                              "--dataset", "market1501", "--data_root", str(tmp_path / "absent")])
    assert str(path) in line
    assert not marker.exists()


def test_partitions_pickle_carrying_code_is_refused(tiny_world, tmp_path):
    root = _converted(tiny_world, tmp_path)
    marker = tmp_path / "pwned"
    (root / "partitions.pkl").write_bytes(pickle.dumps({"trainval_im_names": _Payload(marker)}))
    TALLY.fault("pickle carrying code")
    with pytest.raises(BpmError) as raised:
        build_dataset("market1501", str(root))
    one_line_naming(raised.value, root / "partitions.pkl")
    assert not marker.exists()


# ----------------------------------------------------------------------------- weights files
def test_weights_for_another_network_are_refused(tmp_path, capsys):
    path = tmp_path / "resnet50.pth"
    torch.save(build_model("resnet50").state_dict(), path)
    TALLY.fault("wrong-net weights")
    with pytest.raises(BpmError) as raised:
        load_model_weights(build_model("mobilenetV2"), path)
    assert "resnet50" in one_line_naming(raised.value, path)
    line = cli_error(capsys, ["test", "-d", "()", "--net", "mobilenetV2", "--model_weight_file", str(path),
                              "--exp_dir", str(tmp_path / "e")])
    assert str(path) in line and not (tmp_path / "e").exists()


def test_weights_with_wrong_shapes_are_refused(tmp_path):
    state = build_model("mobilenetV2").state_dict()
    key = next(k for k, v in state.items() if v.dim() == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    TALLY.fault("wrong-net weights")
    with pytest.raises(BpmError) as raised:
        load_model_weights(build_model("mobilenetV2"), path)
    assert key in one_line_naming(raised.value, path)


def test_safetensors_weights_load_and_corrupt_ones_are_refused(tmp_path):
    from safetensors.torch import save_file

    source = build_model("mobilenetV2")
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("mobilenetV2")
    load_model_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    path.write_bytes(path.read_bytes()[:1000])
    TALLY.fault("truncated safetensors")
    with pytest.raises(BpmError) as raised:
        load_model_weights(target, path)
    one_line_naming(raised.value, path)


# ----------------------------------------------------------------------------- images and splits
def _truncate_jpeg(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_jpeg_is_one_line_naming_it_even_from_a_loader_worker(tiny_world, tmp_path, workers):
    good = sorted((tiny_world / "bounding_box_train").glob("*.jpg"))[0]
    bad = tmp_path / good.name
    shutil.copy(good, bad)
    _truncate_jpeg(bad)
    TALLY.fault("corrupt JPEG")
    with pytest.raises(BpmError) as raised:
        read_image(str(bad))
    one_line_naming(raised.value, bad)
    from bpm.data.records import ImageRecord
    from bpm.data.transforms import test_transform

    loader = torch.utils.data.DataLoader(
        ImageDataset([ImageRecord(str(good), 1, 1), ImageRecord(str(bad), 1, 2)], test_transform((64, 32))),
        batch_size=2, num_workers=workers,
    )
    with pytest.raises(BpmError) as raised:
        next(iter(loader))
    assert str(raised.value).startswith(f"{bad}: cannot decode image")
    one_line_naming(raised.value, bad)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_training_on_a_corrupt_jpeg_stops_in_one_line_with_its_checkpoint_whole(tiny_world, tmp_path, capsys, workers):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    # Every image of one identity, so the first epoch (a pass over all identities) must meet one.
    pid = sorted((world / "bounding_box_train").glob("*.jpg"))[0].name.split("_")[0]
    victims = sorted((world / "bounding_box_train").glob(f"{pid}_*.jpg"))
    assert victims
    for path in victims:
        _truncate_jpeg(path)
    TALLY.fault("corrupt JPEG")
    exp_dir = tmp_path / "exp"
    argv = ["train", *train_switches(world, exp_dir, "--workers", workers, "--ckpt_every_steps", "1")]
    line = cli_error(capsys, argv)
    assert any(f"{victim}: cannot decode image" in line for victim in victims), line
    if (exp_dir / "ckpt.pth").exists():
        assert load_checkpoint(exp_dir / "ckpt.pth")["global_step"] < 4


def test_split_file_naming_a_missing_image_is_one_line(tiny_world, tmp_path):
    root = _converted(tiny_world, tmp_path)
    missing = sorted((root / "images").glob("*.jpg"))[5]
    missing.unlink()
    TALLY.fault("split file naming a missing image")
    with pytest.raises(BpmError) as raised:
        build_dataset("market1501", str(root))
    message = one_line_naming(raised.value, root / "partitions.pkl")
    assert missing.name in message


# ----------------------------------------------------------------------------- helpers
def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _converted(world: Path, tmp_path: Path) -> Path:
    root = tmp_path / "converted"
    write_converted(build_dataset("market1501", str(world)), root)
    return root
