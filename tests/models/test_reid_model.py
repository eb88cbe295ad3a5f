"""ReidModel: trunk + pooling + neck + training-only head; what train and eval mode return."""
import pytest
import torch

from bpm.models.reid import ReidModel, ReidOutput, architecture_of, inference_state


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(4, 3, 64, 32)


def test_original_model_returns_pooled_features_and_has_only_trunk_keys(images):
    model = ReidModel("mobilenetV2").eval()
    assert all(k.startswith("base.") for k in model.state_dict())
    with torch.no_grad():
        features = model(images)
        pooled = model.base(images).mean((2, 3))
    assert torch.allclose(features, pooled, atol=1e-6)
    model.train()
    out = model(images)
    assert isinstance(out, ReidOutput) and out.logits is None and out.features is out.pre_neck


def test_bnneck_train_and_eval_paths(images):
    model = ReidModel("mobilenetV2", neck="bnneck", num_classes=7)
    assert not model.neck.bn.bias.requires_grad  # BNNeck: no shift
    model.train()
    out = model(images)
    assert out.pre_neck.shape == out.features.shape == (4, 1280) and out.logits.shape == (4, 7)
    # Train-mode neck normalises with the batch's own statistics.
    batch_norm = (out.pre_neck - out.pre_neck.mean(0)) / torch.sqrt(out.pre_neck.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(out.features, batch_norm * model.neck.bn.weight, atol=1e-3)
    model.eval()
    with torch.no_grad():
        features = model(images)
        pre = model.pool(model.base(images))
    assert features.shape == (4, 1280) and not torch.allclose(features, pre)  # eval: after the neck, running stats
    bn = model.neck.bn
    assert torch.allclose(features, (pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight, atol=1e-4)


def test_gem_pooling_between_average_and_max():
    from bpm.models.pooling import GeMPool

    x = torch.rand(2, 3, 4, 2) + 0.1
    gem = GeMPool(p=1.0)
    assert torch.allclose(gem(x), x.mean((2, 3)), atol=1e-6)
    gem.p.data.fill_(50.0)
    assert torch.allclose(gem(x), x.amax((2, 3)), rtol=0.05)


def test_architecture_is_read_back_from_the_keys_and_the_head_is_left_out():
    trained = ReidModel("mobilenetV2", pooling="gem", neck="bnneck", num_classes=5)
    state = trained.state_dict()
    assert "head.weight" in state and "pool.p" in state and "neck.bn.weight" in state
    assert architecture_of(state) == {"pooling": "gem", "neck": "bnneck"}
    assert architecture_of(ReidModel("mobilenetV2").state_dict()) == {"pooling": "avg", "neck": "none"}
    model = ReidModel("mobilenetV2", 1, **architecture_of(state))
    assert model.head is None
    model.load_state_dict(inference_state(state))  # strict: exactly the inference keys
    assert "head.weight" not in inference_state(state)
