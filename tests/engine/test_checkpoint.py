import os

import pytest
import torch

from bpm.cli.switches import train_config
from bpm.data.datasets import build_dataset
from bpm.engine.checkpoint import atomic_torch_save, load_checkpoint
from bpm.engine.build import build_training
from bpm.engine.trainer import Trainer, seed_everything
from bpm.errors import BpmError
from bpm.models.reid import build_model
from bpm.precision import PrecisionPolicy
from bpm.models.input_spec import input_spec_of_model
from train_helpers import train_args


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dicts": [{"w": torch.ones(2)}, {}], "ep": 1}, path)

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BpmError, match="could not write checkpoint.*previous one is intact"):
        atomic_torch_save({"state_dicts": [{"w": torch.zeros(2)}, {}], "ep": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["ep"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind


def test_load_checkpoint_refuses_plain_weights(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(BpmError, match="not a training checkpoint"):
        load_checkpoint(path)


def _trainer(world, exp_dir, epochs, opt_level="O0", recipe="original"):
    # bot with the centre loss too, so its buffers' resume is covered as well
    extra = ("--center_loss_weight", "0.0005") if recipe == "bot" else ()
    args = train_args(world, exp_dir, "--total_epochs", str(epochs), "--opt-level", opt_level, "--recipe", recipe,
                      *extra)
    seed_everything(args.seed)
    dataset = build_dataset("market1501", str(world))
    policy = PrecisionPolicy.create(args.opt_level, "cpu")
    config = train_config(args)
    classes = dataset.num_train_ids if config.loss.needs_classes else 0
    model = build_model("mobilenetV2", pooling=args.pooling, neck=args.neck, num_classes=classes)
    return Trainer(build_training(config, policy, model, dataset.train,
                                  input_spec=input_spec_of_model(model, args.resize_h_w)), exp_dir)


@pytest.mark.parametrize("opt_level,recipe", [("O0", "original"), ("O2", "original"), ("O0", "bot")])
def test_resume_continues_exactly(tiny_world, tmp_path, opt_level, recipe):
    straight = _trainer(tiny_world, tmp_path / "straight", 2, opt_level, recipe)
    straight.fit()

    first = _trainer(tiny_world, tmp_path / "split", 1, opt_level, recipe)
    first.fit()
    ckpt = load_checkpoint(tmp_path / "split" / "ckpt.pth")
    assert ckpt["ep"] == 1 and set(ckpt) >= {"state_dicts", "ep", "scores"}
    resumed = _trainer(tiny_world, tmp_path / "split", 2, opt_level, recipe)
    resumed.resume()
    resumed.fit()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if recipe == "bot":
        assert "head.weight" in a and "neck.bn.weight" in a
        centres = straight.criterion.state_dict(), resumed.criterion.state_dict()
        assert all(torch.equal(centres[0][k], centres[1][k]) for k in centres[0])


def test_resume_keeps_fused_kernels_over_an_unfused_checkpoint(tiny_world, tmp_path):
    """Older and original checkpoints saved unfused Adam groups; O3 needs the fused (FP32-math) update."""
    first = _trainer(tiny_world, tmp_path / "run", 1)
    first.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "ckpt.pth")
    for group in ckpt["state_dicts"][1]["param_groups"]:
        group["fused"], group["foreach"] = None, None
    atomic_torch_save(ckpt, tmp_path / "run" / "ckpt.pth")
    resumed = _trainer(tiny_world, tmp_path / "run", 2)
    resumed.resume()
    assert all(group["fused"] for group in resumed.optimizer.param_groups)
    assert len(resumed.optimizer.state) > 0  # the moments themselves were restored
