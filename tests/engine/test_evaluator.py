"""Evaluation glue: degenerate features (half-precision underflow/overflow) are flagged, not passed off."""
import json

import numpy as np
import pytest
import torch

from bpm.data.datasets import build_dataset
from bpm.distributed import DistContext
from bpm.models.input_spec import InputSpec
from bpm.engine.evaluator import EvalSettings, evaluate_model, evaluate_test_set, write_results
from bpm.errors import BpmError
from bpm.evaluation.features import degenerate_rows, extract_features
from bpm.evaluation.features_file import read_features_file, read_test_sets
from bpm.precision import PrecisionPolicy


class ConstantNet(torch.nn.Module):
    """Embeds every image as the same vector: zeros (underflow) or inf (overflow) or a real signal."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = images.mean(dim=(2, 3)) * self.scale
        if self.mode == "zero":
            return pooled * 0
        if self.mode == "inf":
            return pooled / 0
        return pooled


def test_degenerate_rows_counts_zero_and_non_finite_rows():
    features = np.array([[0, 0], [1, 0], [np.nan, 1], [np.inf, 0], [0, 0]], dtype=np.float32)
    assert degenerate_rows(features) == {"non_finite": 2, "all_zero": 2, "near_constant": 0}
    assert degenerate_rows(np.zeros((0, 3), dtype=np.float32)) == {"non_finite": 0, "all_zero": 0, "near_constant": 0}


def _evaluate(tiny_world, mode: str) -> dict:
    test_set = build_dataset("market1501", tiny_world).test_sets[0]
    settings = EvalSettings(InputSpec.for_size((32, 16)), batch_size=8, workers=0)
    return evaluate_test_set(ConstantNet(mode).eval(), test_set, PrecisionPolicy.create("O0"), settings)


def test_all_zero_features_are_flagged_in_the_log_and_results(tiny_world, tmp_path, capsys):
    report = _evaluate(tiny_world, "zero")
    out = capsys.readouterr().out
    assert "WARNING test set" in out and "all zero" in out and "not meaningful" in out
    n_query = report["single_query"]["degenerate_features"]["query"]["all_zero"]
    assert n_query == len(build_dataset("market1501", tiny_world).test_sets[0].query)
    payload = write_results(tmp_path / "results.json", "market1501", "net", "O0", {"t": report})
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["test_sets"]["t"]["single_query"]["degenerate_features"] == payload["test_sets"]["t"]["single_query"]["degenerate_features"]


def test_non_finite_features_stop_the_evaluation_with_one_line(tiny_world):
    with pytest.raises(BpmError, match=r"query features are not finite at O0") as info:
        _evaluate(tiny_world, "inf")
    assert "\n" not in str(info.value)


def test_healthy_features_carry_no_flag(tiny_world, capsys):
    report = _evaluate(tiny_world, "real")
    assert "WARNING" not in capsys.readouterr().out
    assert all("degenerate_features" not in result for result in report.values())


def test_the_distributed_context_is_passed_in_and_one_process_needs_none(tiny_world, tmp_path):
    """No module-level lookup: a world of one (or no context) evaluates alone, with the same numbers."""
    test_set = build_dataset("market1501", tiny_world).test_sets[0]
    settings = EvalSettings(InputSpec.for_size((32, 16)), batch_size=8, workers=0, save_features=str(tmp_path / "f.h5"))
    model, policy = ConstantNet("real").eval(), PrecisionPolicy.create("O0")
    alone = evaluate_model(model, [test_set], policy, settings)
    with_context = evaluate_model(model, [test_set], policy, settings, ctx=DistContext())
    for key, result in alone[test_set.name].items():
        assert with_context[test_set.name][key]["mAP"] == result["mAP"]
        assert np.array_equal(with_context[test_set.name][key]["cmc"], result["cmc"])
    import bpm.distributed

    assert not hasattr(bpm.distributed, "current_context")


def test_save_features_writes_the_one_features_file_with_the_evaluated_features(tiny_world, tmp_path):
    test_set = build_dataset("market1501", tiny_world).test_sets[0]
    path = tmp_path / "f.h5"
    settings = EvalSettings(InputSpec.for_size((32, 16)), batch_size=8, workers=0, flip=True, save_features=str(path),
                            features_attrs={"weights": "/w.pth"})
    model, policy = ConstantNet("real").eval(), PrecisionPolicy.create("O0")
    evaluate_model(model, [test_set], policy, settings)
    file = read_features_file(path)
    assert file.format_version == 2 and file.attrs["weights"] == "/w.pth" and file.attrs["flip"] == 1
    (saved,) = read_test_sets(path)
    assert saved.name == test_set.name and saved.query == test_set.query and saved.gallery == test_set.gallery
    want = extract_features(model, test_set.gallery, policy, (32, 16), batch_size=8, workers=0, flip=True)
    assert np.array_equal(saved.gallery_features, want)
