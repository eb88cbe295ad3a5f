"""Distillation terms against hand computations, and how the criterion feeds them."""
from __future__ import annotations

import math

import pytest
import torch

from bpm.losses.combine import LossConfig, ReidCriterion
from bpm.losses.cross_entropy import CrossEntropyLabelSmooth
from bpm.losses.distill import EmbeddingDistillation, RelationalDistillation
from bpm.models.reid import ReidOutput


def test_cosine_distillation_with_equal_sizes_has_no_projection():
    term = EmbeddingDistillation(2, 2)
    assert term.projection is None and not list(term.parameters())
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.0, 3.0], [2.0, 2.0]])  # normalised inside
    loss, stats = term(student, teacher)
    # cos = 0 for the first pair, 1 for the second: mean(1 - cos) = 0.5
    assert float(loss) == pytest.approx(0.5) and stats["distill_cosine"] == pytest.approx(0.5)


def test_projection_maps_the_student_to_the_teachers_size():
    term = EmbeddingDistillation(3, 2)
    with torch.no_grad():
        term.projection.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    student = torch.tensor([[1.0, 5.0, 0.0], [0.0, 1.0, 1.0]])  # projected: (1, 0) and (0, 2)
    teacher = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    loss, _ = term(student, teacher)
    assert float(loss.detach()) == pytest.approx(((1 - 1 / math.sqrt(2)) + 0.0) / 2, rel=1e-6)
    term_l2 = EmbeddingDistillation(3, 2, "l2")
    term_l2.load_state_dict(term.state_dict())
    l2, _ = term_l2(student, teacher)
    # ||(1, 0) - (0.7071, 0.7071)||^2 = 2 - 2 * 0.7071; ||(0, 2) - (0, 1)||^2 = 1
    assert float(l2.detach()) == pytest.approx(((2 - math.sqrt(2)) + 1.0) / 2, rel=1e-6)


def test_relational_distillation_matches_the_similarity_structure():
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    loss, stats = RelationalDistillation()(student, teacher)
    s = 1 / math.sqrt(2)
    # student cos: (0,1)=0, (0,2)=s, (1,2)=s; teacher cos: (0,1)=1, (0,2)=0, (1,2)=0
    want = (2 * (0 - 1) ** 2 + 2 * (s - 0) ** 2 + 2 * (s - 0) ** 2) / 6
    assert float(loss) == pytest.approx(want, rel=1e-6) and stats["loss"] == pytest.approx(want, rel=1e-6)
    rotated = teacher @ torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    assert float(RelationalDistillation()(teacher, rotated)[0]) == pytest.approx(0.0, abs=1e-7)  # blind to rotation


def _outputs(n=6, dim=4, classes=3):
    torch.manual_seed(0)
    return ReidOutput(torch.randn(n, dim), torch.randn(n, dim), torch.randn(n, classes))


def test_criterion_sums_the_distillation_terms_and_reports_them():
    outputs, targets, teacher = _outputs(), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(6, 5)
    config = LossConfig(triplet_weight=0.0, id_loss_weight=1.0, distill_weight=0.5, relational_weight=2.0)
    criterion = ReidCriterion(config, num_classes=3, feature_dim=4, teacher_dim=5)
    loss, stats = criterion(outputs, targets, teacher=teacher)
    ce = float(CrossEntropyLabelSmooth(0.1)(outputs.logits, targets)[0])
    # both terms distil the pooled trunk feature (pre_neck), not the neck's output (features)
    kd = float(criterion.distill(outputs.pre_neck, teacher)[0].detach())
    rel = float(RelationalDistillation()(outputs.pre_neck, teacher)[0])
    assert float(loss.detach()) == pytest.approx(ce + 0.5 * kd + 2.0 * rel, rel=1e-5)
    assert {"loss", "id_loss", "distill_loss", "relational_loss", "distill_cosine"} <= set(stats)
    assert [n for n, _ in criterion.named_parameters()] == ["distill.projection.weight"]


def test_unlabelled_samples_reach_only_the_distillation_terms():
    outputs, teacher = _outputs(), torch.randn(6, 4)
    targets = torch.tensor([0, 0, 1, 1, -1, -1])
    config = LossConfig(triplet_weight=1.0, id_loss_weight=1.0, relational_weight=1.0)
    _, stats = ReidCriterion(config, num_classes=3, feature_dim=4, teacher_dim=4)(outputs, targets, teacher=teacher)
    ce = float(CrossEntropyLabelSmooth(0.1)(outputs.logits[:4], targets[:4])[0])
    assert stats["id_loss"] == pytest.approx(ce)
    assert stats["relational_loss"] == pytest.approx(float(RelationalDistillation()(outputs.pre_neck, teacher)[0]))


def test_distillation_without_teacher_targets_is_refused():
    with pytest.raises(ValueError, match="teacher's embedding size"):
        ReidCriterion(LossConfig(distill_weight=1.0))
    criterion = ReidCriterion(LossConfig(relational_weight=1.0, triplet_weight=0.0))  # a term on its own is fine
    with pytest.raises(ValueError, match="teacher's embeddings"):
        criterion(_outputs(), torch.zeros(6, dtype=torch.long))


def test_distillation_reads_the_pre_neck_feature_which_a_bnneck_batch_cannot_replace():
    """After a training-mode BNNeck every feature is centred over the batch, so the batch's mean
    pairwise cosine is ~0, while a ReLU teacher's (non-negative) embeddings agree at ~0.5: the
    relational term cannot be met on the neck's output, and is on the pooled trunk feature."""
    torch.manual_seed(1)
    teacher = torch.rand(16, 8) + 0.5                        # non-negative, like OSNet's embeddings
    pre_neck = teacher @ torch.eye(8) * 3.0                 # a student that already agrees with it
    features = torch.nn.BatchNorm1d(8, affine=False).train()(pre_neck)  # what the BNNeck hands on
    outputs = ReidOutput(features, pre_neck, torch.randn(16, 3))
    config = LossConfig(triplet_weight=0.0, id_loss_weight=0.0, relational_weight=1.0)
    _, stats = ReidCriterion(config, num_classes=3, feature_dim=8, teacher_dim=8)(
        outputs, torch.zeros(16, dtype=torch.long), teacher=teacher)
    assert stats["loss"] == pytest.approx(0.0, abs=1e-6)
    assert float(RelationalDistillation()(features, teacher)[0]) > 0.05  # the neck's output cannot match
