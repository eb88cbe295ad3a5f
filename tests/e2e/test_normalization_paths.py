"""The model's test-time normalisation (its InputSpec) is the default wherever it embeds: ``bpm test``,
``bpm extract`` -> ``bpm evaluate`` and ``FeatureExtractor`` -> ``bpm.evaluation.evaluate`` give the
same metrics on one model, with a BNNeck (features L2-normalised) and without (raw features)."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

import bpm
from bpm.cli import main
from bpm.data.datasets.market1501 import read_split
from bpm.data.synthetic import WorldConfig, generate_world
from bpm.engine.evaluator import summarize
from bpm.evaluation import compute_distances, evaluate
from bpm.data.transforms import image_batch
from bpm.models.input_spec import input_spec_of_model
from bpm.models.meta import META_KEY, file_meta
from bpm.models.reid import build_model

SIZE = (64, 32)
BATCH = 16  # one batching for every path, so the same convolutions run on the same batches
WORLD = WorldConfig(num_train_ids=2, num_test_ids=6, num_cameras=3, max_cameras_per_id=3, num_distractors=3,
                    num_junk=0, image_height=64, image_width=32, seed=11)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A test-only folder (query/ + gallery/): what bpm test reads as --dataset folder and bpm extract as --images."""
    base = tmp_path_factory.mktemp("paths")
    world = generate_world(base / "world", WORLD)
    shutil.copytree(world / "query", base / "test" / "query")
    shutil.copytree(world / "bounding_box_test", base / "test" / "gallery")
    return base / "test"


def _checkpoint(folder, tmp_path, neck: str):
    """A checkpoint whose BatchNorm statistics are measured on the folder's images (a random network's
    features are all ~0 and rank by ties), recording its InputSpec as training does."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", neck=neck)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the batches below
    paths = [r.path for r in read_split(folder / "gallery")[0]]
    model.train()
    with torch.no_grad():
        for i in range(0, len(paths) - 1, 8):
            model(torch.from_numpy(image_batch(paths[i:i + 8], SIZE)))
    path = tmp_path / f"{neck}.pth"
    torch.save({"state_dicts": [model.state_dict(), {}], "ep": 1, "scores": 0.0,
                META_KEY: file_meta(input_spec_of_model(model, SIZE))}, path)
    return path


def _single_query(results_file) -> dict:
    report = json.loads(results_file.read_text())
    return next(iter(report["test_sets"].values()))["single_query"]


@pytest.mark.parametrize("neck", ["bnneck", "none"])
def test_test_extract_evaluate_and_feature_extractor_agree(folder, tmp_path, neck, capsys):
    weights = _checkpoint(folder, tmp_path, neck)
    assert main(["test", "-d", "()", "--dataset", "folder", "--data_root", str(folder), "--model_weight_file",
                 str(weights), "--exp_dir", str(tmp_path / "test"), "--workers", "0", "--rerank", "false",
                 "--batch_size_test", str(BATCH), "--log_to_file", "false"]) == 0
    by_test = _single_query(tmp_path / "test" / "results.json")

    features = tmp_path / "features.h5"
    assert main(["extract", "-d", "()", "--weights", str(weights), "--images", str(folder), "--out", str(features),
                 "--batch_size", str(BATCH)]) == 0
    with h5py.File(features, "r") as handle:
        assert handle.attrs["normalized"] == handle.attrs["test_normalize"] == int(neck == "bnneck")
    assert main(["evaluate", "--features_file", str(features), "--rerank", "false",
                 "--exp_dir", str(tmp_path / "evaluate")]) == 0
    by_extract = _single_query(tmp_path / "evaluate" / "results.json")

    extractor = bpm.FeatureExtractor(weights, batch_size=BATCH)
    assert extractor.normalize == (neck == "bnneck")
    query, gallery = read_split(folder / "query")[0], read_split(folder / "gallery")[0]
    q_feat, g_feat = extractor([r.path for r in query]), extractor([r.path for r in gallery])
    ids = lambda records: (np.array([r.pid for r in records]), np.array([r.camid for r in records]))  # noqa: E731
    (q_pids, q_cams), (g_pids, g_cams) = ids(query), ids(gallery)
    by_api = summarize(evaluate(compute_distances(q_feat, g_feat), q_pids, g_pids, q_cams, g_cams))

    assert "warning" not in capsys.readouterr().err
    assert 0 < by_test["mAP"] < 1
    assert by_extract == by_test
    assert by_api == by_test
