"""Non-finite loss, gradients and activations: the step is skipped (model untouched) and counted;
a run of them stops training with one line, leaving the last good checkpoint intact."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _runner import TALLY, make_trainer

from bpm.data.records import ImageRecord
from bpm.engine.checkpoint import load_checkpoint
from bpm.errors import BpmError

NAN_LOSS, INF_GRAD, INF_INPUT = 2, 3, 4  # global steps (1-based) that get each fault


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _inject(trainer, faults: dict[int, str], record: list) -> None:
    """Wrap ``train_step`` so chosen steps get a fault, and record the model around every step."""
    step_fn, criterion = trainer.train_step, trainer.criterion
    current = {"fault": None}

    def faulty_loss(outputs, targets, gather=None):
        loss, stats = criterion(outputs, targets, gather)
        if current["fault"] == "nan_loss":
            loss = loss * float("nan")
        elif current["fault"] == "inf_grad":
            outputs.pre_neck.register_hook(lambda grad: grad * float("inf"))
        return loss, stats

    def faulty_step(images, labels, indices=None):
        fault = faults.get(trainer.position.global_step + 1)
        current["fault"] = fault
        if fault == "inf_input":
            images = images.clone()
            images[0] = float("inf")
        before = _snapshot(trainer.model)
        stepped, stats = step_fn(images, labels, indices)
        record.append((fault, stepped, before, _snapshot(trainer.model)))
        if fault is not None:
            TALLY.fault(f"non-finite {fault.replace('_', ' ')}")
        return stepped, stats

    trainer.criterion = faulty_loss
    trainer.train_step = faulty_step


@pytest.mark.parametrize("opt_level", ["O0", "O2"])
def test_non_finite_steps_are_skipped_counted_and_leave_the_model_untouched(tiny_world, tmp_path, capsys, opt_level):
    extra = ["--total_epochs", "1", "--ckpt_every_steps", "1", "--opt-level", opt_level]
    if opt_level == "O2":
        extra += ["--loss-scale", "dynamic"]  # exercise the scaler's back-off too
    trainer = make_trainer(tiny_world, tmp_path, *extra)
    record: list = []
    _inject(trainer, {NAN_LOSS: "nan_loss", INF_GRAD: "inf_grad", INF_INPUT: "inf_input"}, record)
    trainer.fit()

    assert [(fault, stepped) for fault, stepped, _, _ in record] == [
        (None, True), ("nan_loss", False), ("inf_grad", False), ("inf_input", False)
    ]
    for fault, stepped, before, after in record:
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        if stepped:
            assert changed, "a good step must update the model"
        else:
            # Weights AND BatchNorm running statistics: a skipped step leaves no trace.
            assert changed == [], f"{fault}: skipped step changed {changed[:3]}"
    assert trainer.stepper.skipped_steps == 3
    out = capsys.readouterr().out
    assert out.count("non-finite loss or gradients, step skipped") == 3
    assert "skipped 3" in out
    if opt_level == "O2":
        assert trainer.stepper.scale < 2.0**16  # dynamic loss scale backed off on the skipped steps
    ckpt = load_checkpoint(tmp_path / "ckpt.pth")
    assert ckpt["precision"]["skipped_steps"] == 3
    assert all(torch.isfinite(v.float()).all() for v in ckpt["state_dicts"][0].values())


def test_a_run_of_non_finite_steps_stops_with_the_last_good_checkpoint_intact(tiny_world, tmp_path):
    trainer = make_trainer(tiny_world, tmp_path, "--total_epochs", "2", "--ckpt_every_steps", "1",
                           "--max_nonfinite_steps", "3")
    record: list = []
    _inject(trainer, {step: "nan_loss" for step in range(3, 9)}, record)
    with pytest.raises(BpmError) as raised:
        trainer.fit()
    message = str(raised.value)
    assert "\n" not in message
    assert "3 consecutive non-finite steps" in message and str(tmp_path / "ckpt.pth") in message
    assert len(record) == 5  # two good steps, then three skipped ones
    good = record[1][3]  # the model after the last good step
    ckpt = load_checkpoint(tmp_path / "ckpt.pth")
    assert ckpt["global_step"] == 4  # saved after each skipped step below the limit; the 3rd stops first
    for key, value in ckpt["state_dicts"][0].items():
        assert torch.equal(value, good[key]), key
        assert torch.isfinite(value.float()).all()
    assert math.isfinite(trainer.stepper.scale)


# ----------------------------------------------------------------------------- issue #20 item 5
def _brute_force(q: np.ndarray, g: np.ndarray, qp, gp, qc, gc) -> tuple[float, float]:
    """mAP and rank-1 from float64 distances, one query at a time, ties in gallery order (stable sort)."""
    aps, firsts = [], []
    for i in range(len(q)):
        d = np.sqrt(((q[i].astype(np.float64) - g.astype(np.float64)) ** 2).sum(axis=1))
        keep = ~((gp == qp[i]) & (gc == qc[i])) & (gp != -1)
        order = np.argsort(d, kind="stable")
        order = order[keep[order]]
        match = gp[order] == qp[i]
        if not match.any():
            continue
        hits = np.flatnonzero(match)
        aps.append(np.mean([(k + 1) / (pos + 1) for k, pos in enumerate(hits)]))
        firsts.append(hits[0] == 0)
    return float(np.mean(aps)), float(np.mean(firsts))


@pytest.mark.parametrize("kind", ["offset 100", "nearly constant", "constant"])
def test_degenerate_features_are_flagged_and_ranked_as_a_float64_brute_force(kind, capsys):
    from bpm.engine.evaluator import evaluate_features
    from bpm.evaluation.features import degenerate_rows

    rng = np.random.default_rng(0)
    ids = 8
    gp, gc = np.repeat(np.arange(1, ids + 1), 4), np.tile([1, 2, 3, 4], ids)
    gp = np.concatenate([gp, np.zeros(6, np.int64)])  # distractors, last in gallery order
    gc = np.concatenate([gc, np.ones(6, np.int64)])
    qp, qc = np.arange(1, ids + 1), np.full(ids, 5)
    centres = rng.normal(size=(ids + 1, 16))
    noise = {"offset 100": 0.3, "nearly constant": 1e-7, "constant": 0.0}[kind]
    scale = {"offset 100": 1.0, "nearly constant": 1e-3, "constant": 0.0}[kind]
    g = 100.0 + scale * centres[np.where(gp > 0, gp, 0)] + noise * rng.normal(size=(len(gp), 16))
    q = 100.0 + scale * centres[qp] + noise * rng.normal(size=(ids, 16))
    q, g = q.astype(np.float32), g.astype(np.float32)
    records = lambda pids, cams: [ImageRecord(f"/x/{i}.jpg", int(p), int(c)) for i, (p, c) in enumerate(zip(pids, cams))]  # noqa: E731
    TALLY.fault(f"degenerate features ({kind})")
    result = evaluate_features(q, g, records(qp, qc), records(gp, gc), rerank=False)["plain"]
    mAP, rank1 = _brute_force(q, g, qp, gp, qc, gc)
    assert result["mAP"] == pytest.approx(mAP, abs=1e-6) and result["cmc"][0] == pytest.approx(rank1, abs=1e-6)
    flagged = degenerate_rows(g)["near_constant"] == len(g)
    assert flagged == (kind != "offset 100")
