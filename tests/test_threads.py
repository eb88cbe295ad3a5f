"""bpm.threads: torch's thread count changes only for a scope, or once when a process becomes a rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bpm
from bpm.models.reid import build_model
from bpm.threads import share_cores_between_ranks, torch_threads


@pytest.fixture
def one_thread():
    """Start from a known count and leave the process as it was."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_scope_sets_and_restores_the_count_even_after_an_error(one_thread):
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError), torch_threads(3):
        raise RuntimeError("a failing extraction")
    assert torch.get_num_threads() == 1
    with torch_threads(0):
        assert torch.get_num_threads() == 1


def test_ranks_share_the_cores_unless_omp_num_threads_decides(one_thread, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    share_cores_between_ranks(1)
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    share_cores_between_ranks(2)
    assert torch.get_num_threads() == 2


def test_feature_extractor_holds_its_threads_only_while_it_embeds(one_thread, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "ckpt.pth"
    torch.save({"state_dicts": [build_model("mobilenetV2").state_dict()]}, weights)
    extractor = bpm.FeatureExtractor(weights, net="mobilenetV2", resize_h_w=(64, 32), threads=2)
    assert torch.get_num_threads() == 1
    during = []
    extractor.model.register_forward_hook(lambda *_: during.append(torch.get_num_threads()))
    features = extractor(np.zeros((64, 32, 3), dtype=np.uint8))
    assert features.shape == (1, extractor.feature_dim)
    assert during == [2]
    assert torch.get_num_threads() == 1
