"""Every registered neck and pooling, taken from the registries: shapes, the model's train/eval paths, names."""
import pytest
import torch

from bpm.errors import BpmError
from bpm.models.necks import NECKS, build_neck
from bpm.models.pooling import POOLINGS, build_pooling


@pytest.mark.parametrize("name", NECKS.names())
def test_each_neck_keeps_the_feature_size(name):
    neck = build_neck(name, 6).train()
    out = neck(torch.randn(4, 6))
    assert out.shape == (4, 6) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", POOLINGS.names())
def test_each_pooling_gives_one_vector_per_image(name):
    out = build_pooling(name)(torch.rand(2, 5, 4, 3))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_unknown_names_are_one_line_errors_naming_the_switch():
    with pytest.raises(BpmError, match=r"^--neck: unknown neck 'x'; expected one of none, bnneck"):
        build_neck("x", 4)
    with pytest.raises(BpmError, match=r"^--pooling: unknown pooling 'x'; expected one of avg, gem"):
        build_pooling("x")
