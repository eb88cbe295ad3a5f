"""Training with a teacher: exact resume (projection head and its optimizer state included), nothing of
the head in the model or its released weights, unlabelled crops, and ``bpm train`` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bpm.cli import main
from bpm.cli.switches import train_config
from bpm.data.datasets import build_dataset
from bpm.distill.extra import extra_records
from bpm.engine.distillation import distill_targets
from bpm.models.input_spec import input_spec_of_model
from bpm.distill.teacher import open_teacher
from bpm.engine.checkpoint import load_checkpoint
from bpm.engine.build import build_training
from bpm.engine.trainer import Trainer, seed_everything
from bpm.export.weights import save_pt, weights_state
from bpm.models.loading import load_model
from bpm.models.reid import build_model
from bpm.precision import PrecisionPolicy
from train_helpers import train_args

DISTILL = ("--recipe", "bot", "--distill_weight", "1", "--relational_weight", "2", "--steps_per_log", "0")


@pytest.fixture(scope="module")
def extra_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extra")
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(folder / f"crop{i}.jpg")
    return folder


def _trainer(world, exp_dir, epochs, teacher_path, extra=None, per_step=False):
    args = train_args(world, exp_dir, "--total_epochs", str(epochs), *DISTILL, "--teacher", str(teacher_path),
                      "--teacher_input", "48x24,bgr,tf", "--teacher_per_step", str(per_step).lower(),
                      *(("--distill_extra", str(extra), "--distill_extra_per_batch", "3") if extra else ()))
    seed_everything(args.seed)
    dataset = build_dataset("market1501", str(world))
    config = train_config(args)
    teacher = open_teacher(config.teacher, config.teacher_input)
    extras = extra_records(extra) if extra else []
    model = build_model("mobilenetV2", pooling=args.pooling, neck=args.neck, num_classes=dataset.num_train_ids)
    targets = distill_targets(teacher, config, [*dataset.train, *extras], exp_dir,
                              input_spec_of_model(model, args.resize_h_w))
    parts = build_training(config, PrecisionPolicy.create("O0", "cpu"), model, dataset.train,
                           input_spec=input_spec_of_model(model, args.resize_h_w), distill=targets,
                           extra_records=extras)
    return Trainer(parts, exp_dir)


def test_resume_with_a_teacher_is_exact_and_the_head_stays_out_of_the_model(tiny_world, tiny_teacher_onnx,
                                                                           extra_folder, tmp_path, capsys):
    teacher = tiny_teacher_onnx[0]
    straight = _trainer(tiny_world, tmp_path / "straight", 2, teacher, extra_folder)
    straight.fit()
    first = _trainer(tiny_world, tmp_path / "split", 1, teacher, extra_folder)
    first.fit()
    resumed = _trainer(tiny_world, tmp_path / "split", 2, teacher, extra_folder)
    assert "reused" in capsys.readouterr().out  # the resumed run read the cache its first part wrote
    resumed.resume()
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    heads = straight.criterion.state_dict(), resumed.criterion.state_dict()
    assert list(heads[0]) == ["distill.projection.weight"] and torch.equal(*(h["distill.projection.weight"]
                                                                             for h in heads))
    ckpt = load_checkpoint(tmp_path / "split" / "ckpt.pth")
    assert "distill.projection.weight" in ckpt["criterion"]
    assert not any("distill" in k or "projection" in k for k in ckpt["state_dicts"][0])
    # The released weights file is made of the model alone, and loads as an ordinary re-ID model.
    released = tmp_path / "released.pt"
    save_pt(weights_state(resumed.bare_model), released)
    state = torch.load(released, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    assert not any("projection" in k for k in state)
    model, _spec = load_model(released)
    assert model.feature_dim == resumed.bare_model.feature_dim


def test_unlabelled_crops_reach_the_distillation_terms_only(tiny_world, tiny_teacher_onnx, extra_folder, tmp_path):
    trainer = _trainer(tiny_world, tmp_path / "run", 1, tiny_teacher_onnx[0], extra_folder)
    images, labels, _camids, indices = next(iter(trainer.loader))
    assert len(labels) == 4 * 2 + 3 and (labels[-3:] == -1).all() and (labels[:-3] >= 0).all()
    stepped, stats = trainer.train_step(images, labels, indices)
    assert stepped and {"id_loss", "distill_loss", "relational_loss"} <= set(stats)
    assert all(np.isfinite(v) for v in stats.values())


def test_per_step_teacher_trains_on_the_augmented_view(tiny_world, tiny_teacher_onnx, tmp_path):
    trainer = _trainer(tiny_world, tmp_path / "run", 1, tiny_teacher_onnx[0], per_step=True)
    assert not (tmp_path / "run" / "teacher_cache").exists()
    images, labels, _camids, indices = next(iter(trainer.loader))
    stepped, stats = trainer.train_step(images, labels, indices)
    assert stepped and stats["distill_loss"] > 0


@pytest.mark.slow
def test_bpm_train_with_a_bpm_weights_teacher_end_to_end(tiny_world, tmp_path, capsys):
    # A bpm weights file as the teacher (its input spec comes from the file); resnet-free and tiny.
    teacher_model = build_model("mobilenetV2", neck="bnneck")
    teacher_file = tmp_path / "teacher.pt"
    save_pt(weights_state(teacher_model), teacher_file, {"resize_h_w": [64, 32]})
    exp = tmp_path / "run"
    argv = ["train", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir", str(exp),
            "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", "1",
            "--workers", "0", "--rerank", "false", "--net_pretrained_path", "none", "--recipe", "distill",
            "--teacher", str(teacher_file), "--steps_per_log", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Teacher: teacher.pt (bpm mobilenet_v2, 1280-d" in out and "cached in" in out
    steps = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    # the preset: embedding distillation with the ID loss; the relational term is off (it measured worse)
    assert all({"distill_loss", "id_loss"} <= set(s) and "relational_loss" not in s for s in steps if s["kind"] == "step")
    assert (exp / "training_curves.png").is_file()
    assert main([*argv, "--total_epochs", "2", "--resume", "true"]) == 0
    assert "reused" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (("--recipe", "distill"), "--recipe distill: needs --teacher FILE"),
    (("--distill_weight", "1"), "--distill_weight 1.0: needs --teacher FILE"),
    (("--teacher", "TEACHER"), "--teacher: no distillation term is on"),
    (("--recipe", "distill", "--teacher", "missing.onnx"), "--teacher: missing.onnx not found"),
    (("--recipe", "distill", "--teacher", "TEACHER", "--teacher_input", "48x24,rgb,hsv"), "--teacher_input: expected"),
    (("--recipe", "distill", "--teacher", "TEACHER", "--teacher_input", "64x32"), "takes 48x24 images"),
    (("--recipe", "distill", "--teacher", "TEACHER"), "does not say how it wants its pixels"),
    (("--teacher_input", "48x24"), "--teacher_input: only means something with --teacher"),
    (("--recipe", "distill", "--teacher", "TEACHER", "--teacher_input", "48x24", "--distill_extra", "nowhere"),
     "--distill_extra: nowhere is not a folder"),
    (("--relational_weight", "-1"), "--relational_weight: expected a finite number >= 0"),
])
def test_bad_distillation_switches_are_one_line_before_any_file(tiny_world, tiny_teacher_onnx, tmp_path, capsys,
                                                                 extra, message):
    exp = tmp_path / "run"
    extra = tuple(str(tiny_teacher_onnx[0]) if v == "TEACHER" else v for v in extra)
    code = main(["train", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir",
                 str(exp), "--net_pretrained_path", "none", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not exp.exists()
