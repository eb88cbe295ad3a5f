"""ID loss with label smoothing, against a hand computation."""
import math

import pytest
import torch

from bpm.losses.cross_entropy import CrossEntropyLabelSmooth


def test_label_smoothing_matches_the_formula_by_hand():
    # Two classes, logits (0, ln 3): softmax (1/4, 3/4). Target class 1, epsilon 0.1: the smoothed
    # target puts 1 - eps + eps/2 = 0.95 on class 1 and 0.05 on class 0.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss, stats = CrossEntropyLabelSmooth(0.1)(logits, torch.tensor([1]))
    expected = -(0.95 * math.log(0.75) + 0.05 * math.log(0.25))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert stats == {"loss": pytest.approx(expected, rel=1e-6), "id_accuracy": 1.0}


def test_no_smoothing_is_plain_cross_entropy_and_half_logits_are_computed_in_fp32():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5) * 30, torch.randint(0, 5, (8,))
    loss, stats = CrossEntropyLabelSmooth(0.0)(logits.half(), targets)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits.half().float(), targets)))
    assert stats["id_accuracy"] == pytest.approx(float((logits.half().float().argmax(1) == targets).float().mean()))


def test_epsilon_out_of_range_is_refused():
    with pytest.raises(ValueError, match="label smoothing"):
        CrossEntropyLabelSmooth(1.0)
